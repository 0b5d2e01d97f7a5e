"""Factored envspecs: a ``[matrix]`` table expands into named envs that behave like hand-written
ones (sessions and tags, locks, results, the report's factor view), cells the published-releases
tables rule out are unavailable without a build, and a wheelhouse of one's own torch builds is a
torch source guarded like an index."""

from __future__ import annotations

import functools
import http.server
import json
import random
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import factories as f
import pytest
from helpers import ROOT, envlab, make_project
from localindex import build_wheel, serve

from envlab import pipeline
from envlab.build.interpreters import find as find_python
from envlab.build.uv import Uv
from envlab.errors import SpecError, UserError
from envlab.hardware import knowledge
from envlab.outcome import Outcome
from envlab.pipeline import Options
from envlab.project import Project
from envlab.report.render import build_report
from envlab.results.facts import Facts
from envlab.results.schema import load
from envlab.spec import catalog, factors, releases
from envlab.spec.envspec import EnvSpec, Matrix
from envlab.verify import expectations

PY = f"{sys.version_info.major}.{sys.version_info.minor}"
INDEXES = {
    "pypi": "https://pypi.org/simple",
    "pytorch-cu126": "https://download.pytorch.org/whl/cu126",
    "pytorch-cu130": "https://download.pytorch.org/whl/cu130",
    "pytorch-cu128": "https://download.pytorch.org/whl/cu128",
}
# 3 Pythons x 2 torch releases x 2 CUDA variants, one combination excluded: 11 cells, one of
# which (torch 2.15 on Python 3.10) the published-releases tables say does not exist
WIDE = """
description = "torch {torch} {variant} on Python {python}"
python = "{python}"
platforms = ["linux-64"]
tags = ["wide"]

[matrix]
name = "wide-py{python}-{variant}-t{torch}"
python = ["3.10", "3.11", "3.12"]
exclude = [{ python = "3.10", torch = "2.15", variant = "cu126" }]

[matrix.torch."2.10"]
torch.packages = ["torch==2.10.0"]
expect.torch-version = "2.10.0"

[matrix.torch."2.15"]
torch.packages = ["torch==2.15.0"]
expect.torch-version = "2.15.0"

[matrix.variant.cu126]
torch.index = "pytorch-cu126"
expect.cuda = "12.6"

[matrix.variant.cu130]
torch.index = "pytorch-cu130"
expect.cuda = "13.0"

[stack]
add = ["timmish"]

[expect]
torch-local = "{variant}"
"""
NAMES = [
    "wide-py310-cu126-t210",
    "wide-py310-cu130-t210",
    "wide-py310-cu130-t215",
    "wide-py311-cu126-t210",
    "wide-py311-cu130-t210",
    "wide-py311-cu126-t215",
    "wide-py311-cu130-t215",
    "wide-py312-cu126-t210",
    "wide-py312-cu130-t210",
    "wide-py312-cu126-t215",
    "wide-py312-cu130-t215",
]
IMPOSSIBLE = "wide-py310-cu130-t215"
PLAIN = """
description = "a hand-written env"
python = "3.11"
platforms = ["linux-64"]
[torch]
packages = ["torch==2.10.0"]
index = "pypi"
"""


def wide_project(tmp_path: Path, text: str = WIDE, **envs: str) -> Path:
    return make_project(tmp_path, indexes=INDEXES, envs={"wide": text, **envs}, stack=[])


def expand(text: str, stem: str = "m") -> list[factors.Cell]:
    return factors.expand(stem, tomllib.loads(text))


# --------------------------------------------------------------------------- expansion


def test_a_twelve_cell_matrix_with_one_exclude_expands_to_eleven_named_envs(
    tmp_path: Path,
) -> None:
    matrix = Matrix(wide_project(tmp_path) / "envspecs")
    assert matrix.names == NAMES
    cell = matrix.get("wide-py312-cu126-t210")
    assert cell.python == "3.12"
    assert cell.torch.packages == ["torch==2.10.0"] and cell.torch.index == "pytorch-cu126"
    assert cell.expect.cuda == "12.6" and cell.expect.torch_local == "cu126"
    assert cell.description == "torch 2.10 cu126 on Python 3.12"
    assert cell.tags == ["wide", "3.12", "2.10", "cu126"]
    assert cell.cell is not None and cell.cell.matrix == "wide"
    assert cell.cell.factors == {"python": "3.12", "torch": "2.10", "variant": "cu126"}
    assert cell.cell.no_such_build is None
    # each cell is an env of its own: its spec hash (so its build and lock) is its own
    assert len({matrix.get(n).spec_hash for n in NAMES}) == len(NAMES)


def test_catalog_entries_are_the_cells_with_their_tags(tmp_path: Path) -> None:
    root = wide_project(tmp_path, plain=PLAIN)
    entries = catalog.entries(root / "envspecs")
    assert [e.name for e in entries] == ["plain", *NAMES]
    by_name = {e.name: e for e in entries}
    assert by_name["wide-py311-cu130-t215"].tags == ("wide", "3.11", "2.15", "cu130")
    assert by_name["wide-py311-cu130-t215"].factors == (
        ("python", "3.11"),
        ("torch", "2.15"),
        ("variant", "cu130"),
    )
    assert by_name["plain"].matrix is None and by_name[NAMES[0]].matrix == "wide"
    matrix = Matrix(root / "envspecs")
    assert [(e.name, e.default, list(e.tags)) for e in entries] == [
        (s.name, s.default, s.tags) for s in matrix.all()
    ]


def test_include_adds_a_combination_and_exclude_takes_lists() -> None:
    text = """
description = "x"
python = "{python}"
platforms = ["linux-64"]
[matrix]
python = ["3.11", "3.12"]
variant = ["cpu", "cu126"]
exclude = [{ variant = "cu126", python = ["3.11", "3.12"] }]
include = [{ python = "3.13", variant = "cu126" }]
[torch]
packages = ["torch"]
index = "pypi"
"""
    cells = expand(text)
    assert [c.name for c in cells] == ["m-311-cpu", "m-312-cpu", "m-313-cu126"]
    assert cells[-1].values == {"python": "3.13", "variant": "cu126"}
    assert cells[-1].data["python"] == "3.13"


MATRIX_BASE = """
description = "x"
python = "{python}"
platforms = ["linux-64"]
[torch]
packages = ["torch"]
index = "pypi"
"""


@pytest.mark.parametrize(
    ("matrix", "fragments"),
    [
        ("python = [3.10, 3.11]", ["field 'matrix.python'", "quote numbers", "3.1"]),
        ("python = []", ["field 'matrix.python'", "at least one value"]),
        ('python = ["3.11", "3.11"]', ["distinct values"]),
        ('python = ["3.11"]\nexclude = [{ pyton = "3.11" }]', ["matrix.exclude.0", "'pyton'"]),
        (
            'python = ["3.11", "3.12"]\nexclude = [{ python = "3.13" }]',
            ["field 'matrix.exclude.0.python'", "expected one of 3.11, 3.12", "'3.13'"],
        ),
        (
            'python = ["3.11", "3.12"]\nexclude = [{ python = ["3.11", "3.12"] }]',
            ["every one excluded"],
        ),
        (
            'python = ["3.11"]\nv = ["a", "b"]\ninclude = [{ python = "3.11", v = "a" }]',
            ["field 'matrix.include.0'", "already a cell"],
        ),
        (
            'python = ["3.11"]\ninclude = [{ v = "a" }]',
            ["field 'matrix.include.0'", "a value for each factor (python)"],
        ),
        (
            'name = "same"\npython = ["3.11", "3.12"]',
            ["field 'matrix.name'", "both named 'same'"],
        ),
        ('name = "m-{pyton}"\npython = ["3.11"]', ["field 'matrix.name'", "'{pyton}'"]),
        ('name = "M_{python}"\npython = ["3.11"]', ["lowercase env name", "'M_311'"]),
        ("", ["at least one factor"]),
    ],
)
def test_a_malformed_matrix_is_one_line_naming_the_field(
    tmp_path: Path, matrix: str, fragments: list[str]
) -> None:
    root = make_project(tmp_path, envs={"m": MATRIX_BASE + "[matrix]\n" + matrix + "\n"})
    spec_matrix = Matrix(root / "envspecs")
    assert spec_matrix.names == ["m"]  # one env under the file's name carries the error
    with pytest.raises(SpecError) as info:
        spec_matrix.get("m")
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(root / "envspecs" / "m.toml"))
    for fragment in fragments:
        assert fragment in message, message


def test_two_factors_setting_one_field_is_an_error() -> None:
    text = (
        MATRIX_BASE
        + """
[matrix]
python = ["3.11"]
[matrix.variant.cu126]
torch.index = "pytorch-cu126"
[matrix.torch."2.10"]
torch.index = "pypi"
"""
    )
    with pytest.raises(factors.FactorError, match=r"'torch.index'.*variant=cu126 and torch=2.10"):
        expand(text)


def test_a_placeholder_naming_no_factor_is_an_error() -> None:
    text = MATRIX_BASE.replace('"x"', '"on {pyhton}"') + '[matrix]\npython = ["3.11"]\n'
    with pytest.raises(factors.FactorError, match=r"field 'description'.*'\{pyhton\}'"):
        expand(text)
    escaped = MATRIX_BASE.replace('"x"', '"literal {{braces}}"') + '[matrix]\npython = ["3.11"]\n'
    assert expand(escaped)[0].data["description"] == "literal {braces}"


def test_a_cell_named_like_a_hand_written_env_is_a_one_line_error(tmp_path: Path) -> None:
    root = make_project(
        tmp_path,
        indexes=INDEXES,
        envs={
            "wide": WIDE.replace("wide-py{python}", "clash-py{python}"),
            "clash-py310-cu126-t210": PLAIN,
        },
        stack=[],
    )
    matrix = Matrix(root / "envspecs")
    assert "wide" in matrix.names and not [n for n in matrix.names if n.startswith("clash-py311")]
    with pytest.raises(SpecError) as info:
        matrix.get("wide")
    assert str(info.value) == (
        f"{root / 'envspecs' / 'wide.toml'}: field 'matrix.name': expected env names of its own, "
        "found cell (python=3.10, torch=2.10, variant=cu126) named 'clash-py310-cu126-t210', "
        "the name of an env of clash-py310-cu126-t210.toml"
    )
    # the command line: one line, exit 2, nothing built
    done = envlab("--root", str(root), "test", "wide")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "expected env names of its own" in done.stderr
    # the hand-written env is unaffected
    assert matrix.get("clash-py310-cu126-t210").name == "clash-py310-cu126-t210"


def test_asking_for_the_factored_file_names_its_cells(tmp_path: Path) -> None:
    matrix = Matrix(wide_project(tmp_path) / "envspecs")
    with pytest.raises(UserError, match=r"wide.toml is a matrix of wide-py310-cu126-t210, "):
        matrix.get("wide")


# --------------------------------------------------------------------------- impossible cells


def test_impossible_cells_are_marked_with_the_reason_and_its_source(tmp_path: Path) -> None:
    text = WIDE.replace("cu130", "cu128").replace('expect.cuda = "13.0"', 'expect.cuda = "12.8"')
    text = text.replace('"2.15"', '"2.12"').replace("2.15.0", "2.12.0")
    matrix = Matrix(wide_project(tmp_path, text) / "envspecs")
    marked = {s.name: s.cell.no_such_build for s in matrix.all() if s.cell and s.cell.no_such_build}
    assert set(marked) == {
        "wide-py310-cu128-t212",
        "wide-py311-cu128-t212",
        "wide-py312-cu128-t212",
    }
    reason = marked["wide-py311-cu128-t212"]
    assert reason.startswith(
        "torch 2.12 is not published as cu128 (cu128 builds exist for torch >=2.7,<2.12; "
        "torch 2.12 is published as cu126, cu130, cu132; source: pytorch RELEASE.md"
    ), reason
    # the Python table: torch 2.15 has no Python 3.10 wheels
    python = Matrix(wide_project(tmp_path / "py") / "envspecs").get(IMPOSSIBLE)
    assert python.cell is not None and python.cell.no_such_build == (
        "torch 2.15 has no wheels for Python 3.10 (it has for 3.11, 3.12, 3.13, 3.14, 3.15; "
        "source: PyPI JSON API (pypi.org/pypi/torch/json), cpXY tags of the wheels of torch "
        "2.15.0 (dropped 3.10, added 3.15), read 2026-11-29)"
    )


def test_nothing_is_guessed_past_the_tables() -> None:
    table = releases.load()
    spec_of = {
        # no Python entry for 2.16, and cu126 is open-ended: not known, so not marked
        "past": ("torch==2.16.0", "3.12", "pytorch-cu126", "12.6"),
        "unpinned": ("torch", "3.9", "pytorch-cu128", "12.8"),
        "own": ("torch==2.12.0", "3.12", None, "12.8"),  # a wheelhouse: one's own builds
    }
    for name, (req, python, index, cuda) in spec_of.items():
        source = f'index = "{index}"' if index else 'wheelhouse = "wheels"'
        text = (
            f'description = "x"\npython = "{python}"\nplatforms = ["linux-64"]\n'
            f'[torch]\npackages = ["{req}"]\n{source}\n[expect]\ncuda = "{cuda}"\n'
        )
        spec = EnvSpec.model_validate({**tomllib.loads(text), "name": name})
        assert releases.no_such_build(spec, table) is None, name


def test_an_impossible_cell_is_unavailable_without_any_uv_command(tmp_path: Path) -> None:
    root = wide_project(tmp_path)
    calls: list[list[str]] = []

    def runner(argv: list[str], **_: object) -> None:
        calls.append(argv)
        raise AssertionError(f"uv ran: {argv}")

    result = pipeline.run_env(
        Project(root),
        Matrix(root / "envspecs"),
        IMPOSSIBLE,
        "run1",
        f.host(),
        Options(),
        uv=Uv(runner, exe="uv"),  # type: ignore[arg-type]
    )
    assert result.outcome is Outcome.UNAVAILABLE
    assert result.reason is not None and result.reason.startswith(
        "no such build: torch 2.15 has no wheels for Python 3.10"
    )
    assert "source: PyPI JSON API" in result.reason
    assert calls == [] and result.build.layers == []
    assert not (root / ".envlab" / "envs" / IMPOSSIBLE).exists()
    assert result.matrix == "wide"
    assert result.factors == {"python": "3.10", "torch": "2.15", "variant": "cu130"}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('name = "cu126"', 'name = "cuda126"'), "variant.3.name"),
        (lambda t: t.replace('torch = ">=2.7,<2.12"', 'torch = "2.7 to 2.11"'), "specifier"),
        (lambda t: t.replace('checked-through = "2.14"', 'checked-through = "late"'), "checked"),
        (
            lambda t: t.replace(
                'versions = ["3.11", "3.12", "3.13", "3.14", "3.15"]', 'versions = ["3.x"]'
            ),
            "python.4.versions",
        ),
        (lambda t: t + '\n[[python]]\ntorch = "==2.16.*"\nversions = ["3.12"]\n', "source"),
        (
            lambda t: (
                t
                + '\n[[python]]\ntorch = "==2.16.*"\nversions = ["3.12"]\nsource = "x"\nnote = 1\n'
            ),
            "unknown key",
        ),
    ],
)
def test_the_releases_tables_are_validated_strictly(edit: object, message: str) -> None:
    text = (ROOT / "src/envlab/spec/releases.toml").read_text(encoding="utf-8")
    changed = edit(text)  # type: ignore[operator]
    assert changed != text
    with pytest.raises(SpecError) as info:
        releases.parse(changed, "releases.toml")
    assert message in str(info.value) and str(info.value).startswith("releases.toml: ")
    assert "\n" not in str(info.value)


def test_the_variant_table_has_one_source(tmp_path: Path) -> None:
    """The hardware wing reads the published variants from the spec wing's table; a knowledge
    file that declares them again is refused, naming where they live."""
    facts = knowledge.load()
    assert [v.name for v in facts.variant] == [v.name for v in releases.load().variant]
    assert facts.checked_through == releases.load().checked_through
    text = (ROOT / "src/envlab/hardware/knowledge.toml").read_text(encoding="utf-8")
    path = tmp_path / "knowledge.toml"
    path.write_text(text + '\n[[variant]]\nname = "cu128"\ntorch = ">=2.7"\nsource = "x"\n')
    with pytest.raises(knowledge.KnowledgeError, match=r"'variant'.*spec/releases.toml"):
        knowledge.load(path)


# --------------------------------------------------------------------------- sessions


def test_nox_lists_a_session_per_cell_tagged_with_its_factor_values(tmp_path: Path) -> None:
    root = wide_project(tmp_path)
    shutil.copy(ROOT / "noxfile.py", root / "noxfile.py")
    (root / "src").symlink_to(ROOT / "src")

    def listed(*tags: str) -> dict[str, list[str]]:
        argv = [sys.executable, "-m", "nox", "-f", str(root / "noxfile.py"), "-l", "--json"]
        done = subprocess.run(
            [*argv, "-t", *tags], capture_output=True, text=True, check=True, timeout=120
        )
        return {s["session"]: s["tags"] for s in json.loads(done.stdout)}

    tests = listed("test")
    assert list(tests) == [f"test-{n}" for n in NAMES]
    assert tests["test-wide-py312-cu126-t210"] == [
        "test",
        "wide",
        "3.12",
        "2.10",
        "cu126",
        "opt-in",
    ]
    cu126 = [s for s in listed("cu126") if s.startswith("test-")]
    assert cu126 == [f"test-{n}" for n in NAMES if "-cu126-" in n]
    assert len(listed("wide")) == 2 * len(NAMES)  # test- and bench- per cell


# --------------------------------------------------------------------------- end to end


def _pythons(*versions: str) -> str | None:
    for version in versions:
        try:
            find_python(version)
        except UserError as exc:
            return str(exc)
    return None


def test_the_matrix_builds_end_to_end_on_a_local_index(tmp_path: Path) -> None:
    """11 cells on generated wheels: 10 built and verified, the impossible one unavailable
    with its reason and no build attempt; a cell locks and rebuilds from its lock like any env;
    the report pivots them."""
    missing = _pythons("3.10", "3.11", "3.12")
    if missing:
        pytest.skip(f"needs Python 3.10, 3.11 and 3.12 interpreters: {missing}")
    root = wide_project(tmp_path)
    with serve(tmp_path / "index") as idx:
        for variant in ("cu126", "cu130"):
            for release in ("2.10.0", "2.15.0"):
                flags = "sm_80 sm_90"  # what a CUDA torch reports without a GPU
                idx.add(
                    f"pytorch-{variant}", "torch", f"{release}+{variant}", ["filelock"], "", flags
                )
            idx.add(f"pytorch-{variant}", "filelock", "3.0")
        idx.add("pypi", "timmish", "1.0", ["torch>=2"])
        env = {
            **idx.mirrors("pypi", "pytorch-cu126", "pytorch-cu130"),
            "ENVLAB_HOST_ID": "testhost",
            "ENVLAB_RUN_ID": "run1",
        }
        done = envlab("--root", str(root), "test", *NAMES, "--no-compat", env=env)
        assert done.returncode == 1, done.stderr[-3000:]  # one cell is unavailable
        results = {p.stem: load(p) for p in (root / "reports/runs/run1/testhost").glob("*.json")}
        assert sorted(results) == sorted(NAMES)
        built = {n for n, r in results.items() if r.outcome is Outcome.BUILT}
        assert built == set(NAMES) - {IMPOSSIBLE}, {n: r.reason for n, r in results.items()}
        impossible = results[IMPOSSIBLE]
        assert impossible.outcome is Outcome.UNAVAILABLE and impossible.build.layers == []
        assert "torch 2.15 has no wheels for Python 3.10" in (impossible.reason or "")
        assert not (root / ".envlab/envs" / IMPOSSIBLE).exists()
        cell = results["wide-py312-cu130-t215"]
        assert cell.facts.torch.version == "2.15.0+cu130" and cell.facts.python.version.startswith(
            "3.12"
        )
        assert cell.tags == ["wide", "3.12", "2.15", "cu130"]
        assert cell.factors == {"python": "3.12", "torch": "2.15", "variant": "cu130"}
        # locks: a cell locks, checks and builds from its lock like a hand-written env
        name = "wide-py311-cu126-t210"
        done = envlab("--root", str(root), "lock", name, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert (root / f"locks/{name}/pylock.linux-64-torch.toml").exists()
        done = envlab("--root", str(root), "lock", "--check", name, env=env)
        assert done.returncode == 0 and "lock is up to date" in done.stderr
        done = envlab("--root", str(root), "lock", IMPOSSIBLE, env=env)
        assert done.returncode == 0 and f"{IMPOSSIBLE} linux-64: unavailable: no such build" in (
            done.stdout
        )
        locked_env = {**env, "ENVLAB_RUN_ID": "run2"}
        done = envlab("--root", str(root), "test", name, "--no-compat", "--force", env=locked_env)
        assert done.returncode == 0, done.stderr[-2000:]
        relocked = load(root / f"reports/runs/run2/testhost/{name}.json")
        assert relocked.build.lock and "matches-lock" in {c.name for c in relocked.checks}
    paths = build_report(root / "reports/runs", tmp_path / "out", tmp_path / "h.sqlite")
    assert paths.view is not None and len(paths.view.factors) == 1
    view = paths.view.factors[0]
    assert (view.matrix, view.panel_factors, view.row_factor, view.column_factor) == (
        "wide",
        ["python"],
        "torch",
        "variant",
    )
    assert [p.title for p in view.panels] == ["python=3.10", "python=3.11", "python=3.12"]
    first = view.panels[0]
    assert first.rows == ["2.10", "2.15"] and first.columns == ["cu126", "cu130"]
    assert first.grid[1][0] is None  # excluded
    assert first.grid[1][1] is not None and first.grid[1][1].outcome is Outcome.UNAVAILABLE
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert "### wide (11 cells: 10 built, 1 unavailable)" in markdown
    assert "| **2.15** | — | ⛔ unavailable |" in markdown


# --------------------------------------------------------------------------- own builds

OWN = """
description = "own torch build for {arch}"
python = "PY"
platforms = ["linux-64"]

[matrix]
name = "own-{arch}"
arch = ["sm_52", "sm_61", "sm_86"]

[torch]
packages = ["torch"]
wheelhouse = "wheelhouse/{arch}"

[stack]
add = ["timmish"]

[expect]
arch-exact = ["{arch}"]
cuda = "11.8"
""".replace("PY", PY)
CLOBBER = (
    OWN.replace('name = "own-{arch}"', 'name = "clobber-{arch}"')
    .replace('arch = ["sm_52", "sm_61", "sm_86"]', 'arch = ["sm_52"]')
    .replace('add = ["timmish"]', 'add = ["needs-newer-torch"]')
)


def own_builds(root: Path, flags: dict[str, str]) -> None:
    """A wheelhouse directory per arch list: a source build of torch and its dependency."""
    for arch, compiled in flags.items():
        folder = root / "wheelhouse" / arch
        build_wheel(
            folder, "torch", "2.4.0a0+gitee1b680", ["filelock"], arch_flags=compiled, cuda="11.8"
        )
        build_wheel(folder, "filelock", "3.0")


def test_own_builds_from_a_wheelhouse_build_verify_and_are_guarded(tmp_path: Path) -> None:
    root = make_project(tmp_path, envs={"own": OWN, "clobber": CLOBBER}, stack=[])
    # sm_61's build also has sm_70 kernels: not the build this cell declares
    own_builds(root, {"sm_52": "sm_52", "sm_61": "sm_61 sm_70", "sm_86": "sm_86"})
    with serve(tmp_path / "index") as idx:
        idx.add("pypi", "timmish", "1.0", ["torch>=2"])
        idx.add("pypi", "needs-newer-torch", "1.0", ["torch>=2.9"])
        idx.add("pypi", "torch", "2.9.1", ["filelock"])  # what PyPI would swap in
        idx.add("pypi", "filelock", "3.0")
        env = {"ENVLAB_INDEX_PYPI": idx.url("pypi"), "ENVLAB_HOST_ID": "h", "ENVLAB_RUN_ID": "r"}
        names = ["own-sm52", "own-sm61", "own-sm86", "clobber-sm52"]
        done = envlab("--root", str(root), "test", *names, "--no-compat", env=env)
        results = {n: load(root / f"reports/runs/r/h/{n}.json") for n in names}
        assert done.returncode == 1
        for name in ("own-sm52", "own-sm86"):
            assert results[name].outcome is Outcome.BUILT, results[name].reason
            assert results[name].facts.torch.version == "2.4.0a0+gitee1b680"
            torch_layer = results[name].build.layers[1]
            argv = torch_layer.commands[0].argv
            assert "--no-index" in argv and "--index-url" not in argv
            folder = root / "wheelhouse" / f"sm_{name[-2:]}"
            assert argv[argv.index("--find-links") + 1] == str(folder.resolve())
        mismatch = results["own-sm61"]
        assert mismatch.outcome is Outcome.VERIFY_FAILED
        assert mismatch.reason == (
            "arch-exact: expected exactly sm_61, found sm_61 sm_70 (not declared sm_70) "
            "(layer torch)"
        )
        clobbered = results["clobber-sm52"]
        assert clobbered.outcome is Outcome.BUILD_FAILED
        assert clobbered.reason is not None and clobbered.reason.startswith(
            "stack layer: needs-newer-torch requires torch>=2.9, which conflicts with the "
            "installed torch layer"
        )


def test_a_rebuilt_wheel_of_the_same_version_is_rebuilt_not_reused(tmp_path: Path) -> None:
    """Planted: a custom torch rebuilt for another arch keeps its version and file name; the
    env is rebuilt from the new wheel (not uv's cached copy of the old one)."""
    text = OWN.replace('arch = ["sm_52", "sm_61", "sm_86"]', 'arch = ["sm_52"]')
    text = text.replace('add = ["timmish"]', "add = []")
    root = make_project(tmp_path, envs={"own": text}, stack=[])
    env = {"ENVLAB_HOST_ID": "h", "ENVLAB_RUN_ID": "r1", "ENVLAB_INDEX_PYPI": "http://127.0.0.1:9/"}
    own_builds(root, {"sm_52": "sm_52"})
    first = envlab("--root", str(root), "test", "own-sm52", "--no-compat", env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    own_builds(root, {"sm_52": "sm_50"})  # same file name, other kernels
    done = envlab(
        "--root", str(root), "test", "own-sm52", "--no-compat", env={**env, "ENVLAB_RUN_ID": "r2"}
    )
    result = load(root / "reports/runs/r2/h/own-sm52.json")
    assert not result.build.reused
    assert result.outcome is Outcome.VERIFY_FAILED and result.facts.torch.arch_flags == ["sm_50"]
    assert done.returncode == 1


def test_a_wheelhouse_url_builds_and_locks(tmp_path: Path) -> None:
    """A wheelhouse served over HTTP (a page linking to the wheels, as a web server's directory
    listing is) is installed from alone, and locks like a directory."""
    house = tmp_path / "house"
    build_wheel(house, "torch", "2.4.0a0+gitee1b680", ["filelock"], arch_flags="sm_52", cuda="11.8")
    build_wheel(house, "filelock", "3.0")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(house))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        text = PLAIN.replace('index = "pypi"', f'wheelhouse = "{url}"').replace(
            '["torch==2.10.0"]', '["torch"]'
        )
        text = text.replace('"3.11"', f'"{PY}"') + "[stack]\nuse-shared = false\n"
        text += '[expect]\narch-exact = ["sm_52"]\n'
        root = make_project(tmp_path, envs={"own": text}, stack=[])
        env = {"ENVLAB_HOST_ID": "h", "ENVLAB_RUN_ID": "r"}
        done = envlab("--root", str(root), "test", "own", "--no-compat", env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        result = load(root / "reports/runs/r/h/own.json")
        assert result.facts.torch.version == "2.4.0a0+gitee1b680"
        assert result.build.layers[1].index_url == url
        done = envlab("--root", str(root), "lock", "own", env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        locked = (root / "locks/own/pylock.linux-64-torch.toml").read_text(encoding="utf-8")
        assert f"{url}/torch-2.4.0a0%2Bgitee1b680-py3-none-any.whl" in locked or (
            f"{url}/torch-2.4.0a0+gitee1b680-py3-none-any.whl" in locked
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_wheelhouse_without_the_build_is_unavailable(tmp_path: Path) -> None:
    root = make_project(tmp_path, envs={"own": OWN}, stack=[])
    done = envlab(
        "--root",
        str(root),
        "test",
        "own-sm52",
        "--no-compat",
        env={"ENVLAB_HOST_ID": "h", "ENVLAB_RUN_ID": "r"},
    )
    result = load(root / "reports/runs/r/h/own-sm52.json")
    assert result.outcome is Outcome.UNAVAILABLE and done.returncode == 2
    assert "no torch wheel in the wheelhouse" in (result.reason or "")
    assert str(root / "wheelhouse" / "sm_52") in (result.reason or "")


@pytest.mark.parametrize(
    ("torch", "extra"),
    [
        ('packages = ["torch"]', ["neither"]),
        ('packages = ["torch"]\nindex = "pypi"\nwheelhouse = "w"', ["both"]),
    ],
)
def test_the_torch_layer_has_one_source(tmp_path: Path, torch: str, extra: list[str]) -> None:
    text = PLAIN.split("[torch]")[0] + "[torch]\n" + torch + "\n"
    root = make_project(tmp_path, envs={"e": text})
    with pytest.raises(SpecError) as info:
        Matrix(root / "envspecs").get("e")
    assert "field 'torch': expected a source: one of index" in str(info.value)
    for fragment in extra:
        assert fragment in str(info.value)


def test_arch_exact_names_what_is_missing_and_what_is_extra(tmp_path: Path) -> None:
    text = PLAIN + '[expect]\narch-exact = ["sm_52", "sm_61"]\n'
    spec = Matrix(make_project(tmp_path, envs={"e": text}) / "envspecs").get("e")

    def checked(flags: list[str]) -> list:
        facts = Facts.model_validate(
            {"torch": {"version": "2.4.0", "cuda": "11.8", "arch_flags": flags}}
        )
        return [c for c in expectations.check(spec, facts) if c.name == "arch-exact"]

    (ok,) = checked(["sm_61", "sm_52"])
    assert ok.ok
    (bad,) = checked(["sm_52", "sm_70"])
    assert not bad.ok and bad.layer == "torch"
    assert bad.found == "sm_52 sm_70 (missing sm_61; not declared sm_70)"
    # arch-covers would accept a superset; arch-exact does not
    (superset,) = checked(["sm_52", "sm_61", "sm_86"])
    assert not superset.ok and "not declared sm_86" in superset.found


# --------------------------------------------------------------------------- the report


def cell_result(run: int, env: str, values: dict[str, str], **kw: object) -> object:
    result = f.result(run=run, env=env, **kw)  # type: ignore[arg-type]
    result.matrix, result.factors = "grid", values
    return result


def test_the_report_pivots_a_factored_spec_with_a_benchmark_heatmap(tmp_path: Path) -> None:
    rng = random.Random(3)
    results = []
    for python in ("3.10", "3.11"):
        for torch in ("2.10", "2.11"):
            for variant in ("cu126", "cu128"):
                env = f"grid-py{python.replace('.', '')}-{variant}-t{torch.replace('.', '')}"
                values = {"python": python, "torch": torch, "variant": variant}
                if python == "3.10" and torch == "2.11" and variant == "cu128":
                    results.append(
                        cell_result(
                            0, env, values, outcome="unavailable", reason="no such build: x"
                        )
                    )
                    continue
                failing = (
                    {"compat_tests/test_blas.py::test_0": "boom"} if variant == "cu126" else None
                )
                benches = [f.benchmark("gemm", f.samples(rng, 10.0 if torch == "2.10" else 8.0))]
                results.append(cell_result(0, env, values, benchmarks=benches, failing=failing))
    results.append(f.result(run=0, env="stable"))  # a hand-written env: no factor view
    f.write(tmp_path / "runs", results)
    paths = build_report(tmp_path / "runs", tmp_path / "out", tmp_path / "h.sqlite")
    assert paths.view is not None
    (view,) = paths.view.factors
    assert view.matrix == "grid" and view.bench_key == "gemm@v1 (ms)"
    assert [p.title for p in view.panels] == ["python=3.10", "python=3.11"]
    cell = view.panels[1].grid[0][0]
    assert cell is not None and cell.env == "grid-py311-cu126-t210"
    assert cell.compat == "29/30 compat" and cell.bench is not None and 9 < cell.bench < 11
    assert view.panels[0].grid[1][1] is not None
    assert view.panels[0].grid[1][1].outcome is Outcome.UNAVAILABLE
    assert view.figure is not None and Path(view.figure.path).exists()  # type: ignore[attr-defined]
    html = paths.html.read_text(encoding="utf-8")
    assert 'id="factors"' in html and html.count('class="factor-pivot"') == 2
    assert 'class="factor-heatmap"' in html
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert "### grid (8 cells: 7 built, 1 unavailable)" in markdown
    assert "| **2.10** | ✅ built · 29/30 compat · " in markdown
    assert "- `grid-py310-cu128-t211` unavailable: no such build: x" in markdown
    # the benchmark of choice
    chosen = build_report(
        tmp_path / "runs", tmp_path / "out2", tmp_path / "h2.sqlite", factor_bench="nothing-like"
    )
    assert chosen.view is not None and chosen.view.factors[0].figure is None
    assert "no benchmark matching 'nothing-like'" in chosen.view.factors[0].bench_note


def test_shipped_factored_spec_is_opt_in_and_valid() -> None:
    matrix = Matrix(ROOT / "envspecs")
    cells = matrix.cells_of("stable-pythons")
    assert cells == ["stable-py310", "stable-py311", "stable-py312", "stable-py313"]
    assert not set(cells) & set(matrix.default_names())
    for name in cells:
        spec = matrix.get(name)
        assert spec.cell is not None and spec.cell.no_such_build is None
        assert spec.torch.packages == matrix.get("stable").torch.packages
        assert spec.python == name.removeprefix("stable-py").replace("3", "3.", 1)


@pytest.mark.e2e
@pytest.mark.e2e_extra
@pytest.mark.network
def test_the_shipped_factored_spec_builds_for_real_on_two_pythons(tmp_path: Path) -> None:
    """stable-pythons' cells for Python 3.10 and 3.12 from their committed locks (real PyPI
    wheels): both built and verified, and the report pivots them."""
    missing = _pythons("3.10", "3.12")
    if missing:
        pytest.skip(f"needs Python 3.10 and 3.12 interpreters: {missing}")
    env = {
        "ENVLAB_ENVS_DIR": str(tmp_path / "envs"),
        "ENVLAB_RUNS_DIR": str(tmp_path / "runs"),
        "ENVLAB_HISTORY_DB": str(tmp_path / "history.sqlite"),
        "ENVLAB_HOST_ID": "e2e",
        "ENVLAB_RUN_ID": "pythons",
    }
    try:
        done = envlab(
            "--root", str(ROOT), "test", "stable-py310", "stable-py312", "--no-compat", env=env
        )
        assert done.returncode == 0, done.stderr[-4000:]
    finally:
        shutil.rmtree(tmp_path / "envs", ignore_errors=True)  # two real envs: ~15 GB
    for name, python in (("stable-py310", "3.10"), ("stable-py312", "3.12")):
        result = load(tmp_path / f"runs/pythons/e2e/{name}.json")
        assert result.outcome is Outcome.BUILT, result.reason
        assert result.facts.python.version is not None
        assert result.facts.python.version.startswith(python)
        assert result.facts.torch.version == "2.10.0+cu128"
        assert result.build.lock and "matches-lock" in {c.name for c in result.checks}
    paths = build_report(tmp_path / "runs", tmp_path / "out", tmp_path / "history.sqlite")
    assert paths.view is not None
    (view,) = paths.view.factors
    assert view.matrix == "stable-pythons" and view.column_factor == "python"
    assert view.panels[0].columns == ["3.10", "3.12"]
    assert "### stable-pythons (2 cells: 2 built)" in paths.markdown.read_text(encoding="utf-8")
