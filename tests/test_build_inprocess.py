"""Layered builds driven in-process by a fake uv: the command lines of each layer, the outcome of a
failing layer, the partial directory, reuse without uv, and one env through ``pipeline.run_env``.

The fake runner stands in for :func:`envlab.proc.run` under :class:`envlab.build.uv.Uv`: it records
every argv and simulates uv on disk (a venv with a stub ``python``, one ``.dist-info`` directory
per installed package, ``uv pip list`` JSON read back from them).
"""

from __future__ import annotations

import json
import platform as platform_module
import stat
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import make_project
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from envlab import pipeline
from envlab.build import layers, mirrors
from envlab.build.interpreters import Interpreter
from envlab.build.uv import Uv
from envlab.errors import CommandError
from envlab.outcome import LayerStatus, Outcome
from envlab.pipeline import Options
from envlab.proc import Completed
from envlab.project import Project
from envlab.results.schema import Host
from envlab.spec import indexes, platforms
from envlab.spec.envspec import Matrix

PY = f"{sys.version_info.major}.{sys.version_info.minor}"
PYPI = "https://pypi.example/simple"
TORCH_URL = "https://torch.example/whl/cu128"
NIGHTLY_URL = "https://torch.example/whl/nightly/cu128"
CATALOG = {
    TORCH_URL: {
        "torch": "2.10.0+cu128",
        "torchvision": "0.25.0+cu128",
        "filelock": "3.0",
        "nvidia-cublas-cu12": "12.8.4.1",
    },
    PYPI: {"timmish": "1.0", "oldtorchpkg": "1.0", "numpy": "2.3.4"},
    NIGHTLY_URL: {
        "torch": "2.12.0.dev20261120+cu128",
        "filelock": "3.0",
        "nvidia-cublas-cu12": "12.8.4.1",
    },
}
DEPENDS = {"torch": ["filelock", "nvidia-cublas-cu12"], "timmish": ["numpy"]}
SPEC = """
description = "demo"
python = "{py}"
platforms = ["{platform}"]
[torch]
packages = ["torch==2.10.0", "torchvision"]
index = "torchidx"
[stack]
add = [{stack}]
[expect]
torch-version = "2.10.0"
"""
NIGHTLY = SPEC.replace(
    "[expect]", '[nightly]\npackages = ["torch"]\nindex = "nightlyidx"\n[expect]'
)
# uv's words for the failures a layer can end with
NETWORK = (
    f"error: Failed to fetch: `{TORCH_URL}/torch/`\n"
    f"  Caused by: error sending request for url ({TORCH_URL}/torch/)\n"
    "  Caused by: tcp connect error: Connection refused (os error 111)\n"
)
CONFLICT = (
    "  × No solution found when resolving dependencies:\n"
    "  ╰─▶ Because oldtorchpkg==1.0 depends on torch<2 and you require oldtorchpkg, we can "
    "conclude that your requirements and torch==2.10.0+cu128 are incompatible.\n"
)
HASH = (
    "error: Failed to download `timmish==1.0`\n"
    "  Caused by: Hash mismatch for `timmish==1.0`\n\n"
    "Expected:\n  sha256:aaaa\n\nComputed:\n  sha256:bbbb\n"
)
FAKE_PYTHON = """#!/bin/sh
# Stand-in for the env's interpreter: prints the facts the probe would find in this env, or what
# the installed-files scan finds (every file in place).
case "$1" in
  *installed_files.py) echo '{"distributions": 0, "files": 0, "problems": [], "deep": false}' ;;
  *) cat "$(dirname "$0")/../fake-facts.json" ;;
esac
"""


class FakeUv:
    """Simulates uv for a build: records argv, creates venvs and dist-info directories.

    ``fail`` maps a substring of a command line to the output uv prints when that command fails.
    """

    def __init__(self, fail: dict[str, str] | None = None) -> None:
        self.fail = fail or {}
        self.calls: list[list[str]] = []
        self.constraints: list[str] = []  # the constraint files' text, as uv read them
        self.locks: list[str] = []  # the pylock files' text, as uv read them

    def __call__(self, argv: list[Any], *, check: bool = True, **_: Any) -> Completed:
        args = [str(a) for a in argv]
        self.calls.append(args)
        for needle, output in self.fail.items():
            if needle in " ".join(args):
                if check:
                    raise CommandError(args, 1, output)
                return Completed(args, 1, output, 0.01)
        output = self._simulate(args[1:])
        return Completed(args, 0, output, 0.01)

    def installs(self) -> list[list[str]]:
        return [c for c in self.calls if c[1:3] == ["pip", "install"]]

    def _simulate(self, args: list[str]) -> str:
        if args[0] == "venv":
            self._venv(Path(args[-1]))
            return ""
        if args[:2] == ["python", "find"]:
            return sys.executable + "\n"
        opts, positional = _parse(args[2:])
        env = Path(opts["--python"][0]).parent.parent
        if args[:2] == ["pip", "list"]:
            rows = [{"name": n, "version": v} for n, v in _dists(env).items()]
            return f"Using Python {PY} environment at: {env}\n{json.dumps(rows)}\n"
        if args[:2] == ["pip", "check"]:
            return f"Checked {len(_dists(env))} packages\nAll installed packages are compatible\n"
        assert args[:2] == ["pip", "install"], args
        self.constraints += [Path(c).read_text() for c in opts.get("--constraint", [])]
        if "-r" in opts:
            text = Path(opts["-r"][0]).read_text()
            self.locks.append(text)
            wanted = {p["name"]: p["version"] for p in tomllib.loads(text)["packages"]}
        else:
            wanted = self._resolve(opts["--index-url"][0], positional)
        for name, version in wanted.items():
            _install(env, name, version)
        _write_facts(env)
        return ""

    @staticmethod
    def _venv(target: Path) -> None:
        python = layers.env_python(target)
        python.parent.mkdir(parents=True)
        (target / "lib" / f"python{PY}" / "site-packages").mkdir(parents=True)
        python.write_text(FAKE_PYTHON)
        python.chmod(python.stat().st_mode | stat.S_IEXEC)

    @staticmethod
    def _resolve(index_url: str, requirements: list[str]) -> dict[str, str]:
        wanted: dict[str, str] = {}
        todo = [canonicalize_name(Requirement(r).name) for r in requirements]
        while todo:
            name = todo.pop()
            wanted[name] = CATALOG[index_url][name]
            todo += [d for d in DEPENDS.get(name, []) if d not in wanted]
        return wanted


def _parse(args: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    valued = {"--python", "--index-url", "--reinstall-package", "--constraint", "--editable", "-r"}
    valued |= {"--preview-features"}
    opts: dict[str, list[str]] = {}
    positional: list[str] = []
    it = iter(args)
    for arg in it:
        if arg in valued:
            opts.setdefault(arg, []).append(next(it))
        elif arg.startswith("-"):
            opts.setdefault(arg, [])
        else:
            positional.append(arg)
    return opts, positional


def _site(env: Path) -> Path:
    return env / "lib" / f"python{PY}" / "site-packages"


def _install(env: Path, name: str, version: str) -> None:
    dist = name.replace("-", "_")
    for old in _site(env).glob(f"{dist}-*.dist-info"):
        old.rmdir()  # a reinstall replaces the distribution
    (_site(env) / f"{dist}-{version}.dist-info").mkdir()


def _dists(env: Path) -> dict[str, str]:
    """{dist-info name: version}, as uv lists them (underscores, not canonical names)."""
    found = (p.name.removesuffix(".dist-info").split("-", 1) for p in _site(env).iterdir())
    return {name: version for name, version in found}


def _write_facts(env: Path) -> None:
    dists = {canonicalize_name(n): v for n, v in _dists(env).items()}
    facts = {
        "python": {"version": platform_module.python_version()},
        "torch": {"version": dists.get("torch"), "cuda": "12.8"},
        "distributions": {n: {"version": v, "installer": "uv"} for n, v in dists.items()},
    }
    (env / "fake-facts.json").write_text(json.dumps(facts) + "\n")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("ENVLAB_ENVS_DIR", "ENVLAB_RUNS_DIR", "ENVLAB_HISTORY_DB"):
        monkeypatch.delenv(var, raising=False)
    for name in ("PYPI", "TORCHIDX", "NIGHTLYIDX"):
        monkeypatch.delenv(f"ENVLAB_INDEX_{name}", raising=False)
    return make_project(
        tmp_path,
        indexes={"pypi": PYPI, "torchidx": TORCH_URL, "nightlyidx": NIGHTLY_URL},
        envs={},
        stack=[],
    )


Planner = Callable[..., layers.BuildPlan]


@pytest.fixture
def plan_for(root: Path) -> Planner:
    """A build plan of env ``demo`` from a spec text; the interpreter is this test's Python."""

    def make(text: str = SPEC, stack: str = '"timmish"', **kwargs: Any) -> layers.BuildPlan:
        spec_path = root / "envspecs" / "demo.toml"
        spec_path.write_text(text.format(py=PY, platform="linux-64", stack=stack))
        matrix = Matrix(root / "envspecs")
        interpreter = Interpreter(Path(sys.executable), platform_module.python_version())
        return layers.plan(
            matrix,
            matrix.get("demo"),
            root / "envs",
            platform="linux-64",
            interpreter=interpreter,
            **kwargs,
        )

    return make


def fake_uv(fake: FakeUv) -> Uv:
    return Uv(runner=fake, exe="uv")


def build(plan: layers.BuildPlan, fake: FakeUv) -> layers.BuildResult:
    return layers.build(plan, probe_indexes=False, uv=fake_uv(fake))


# --------------------------------------------------------------------------- layers.build


def test_layers_are_built_aside_each_from_its_own_index(plan_for: Planner) -> None:
    p = plan_for()
    fake = FakeUv()
    result = build(p, fake)
    assert result.outcome is Outcome.BUILT, result.reason
    venv, torch_install, stack_install = (c for c in fake.calls if c[1] != "pip" or c[2] != "list")
    assert venv[1] == "venv" and Path(venv[-1]).name.startswith(".demo.partial-")
    # the torch layer: the torch index and nothing else
    assert torch_install.count("--index-url") == 1
    assert torch_install[torch_install.index("--index-url") + 1] == TORCH_URL
    assert not any("extra-index" in a for c in fake.calls for a in c)
    assert torch_install[-2:] == ["torch==2.10.0", "torchvision"]
    # the stack layer: its own index, with the torch family pinned as installed
    assert stack_install[stack_install.index("--index-url") + 1] == PYPI
    assert "--constraint" in stack_install and stack_install[-1] == "timmish"
    assert fake.constraints == [
        "nvidia-cublas-cu12==12.8.4.1\ntorch==2.10.0+cu128\ntorchvision==0.25.0+cu128\n"
    ]  # filelock is not tied to the torch build: the stack may move it
    assert result.layer_packages == {
        "torch": {
            "torch": "2.10.0+cu128",
            "torchvision": "0.25.0+cu128",
            "filelock": "3.0",
            "nvidia-cublas-cu12": "12.8.4.1",
        },
        "stack": {"timmish": "1.0", "numpy": "2.3.4"},
    }
    assert [layer.name for layer in result.record.layers] == ["base", "torch", "stack"]
    assert result.record.layers[1].commands[0].argv == torch_install
    assert result.python == p.env_dir / "bin" / "python" and result.python.exists()
    assert [e.name for e in p.env_dir.parent.iterdir()] == ["demo"]


def test_nightly_is_a_forced_reinstall_with_prereleases_last(plan_for: Planner) -> None:
    fake = FakeUv()
    result = build(plan_for(NIGHTLY), fake)
    assert result.outcome is Outcome.BUILT, result.reason
    nightly = fake.installs()[-1]
    assert nightly[nightly.index("--index-url") + 1] == NIGHTLY_URL
    assert "--prerelease=allow" in nightly
    assert nightly[nightly.index("--reinstall-package") + 1] == "torch"
    assert "--constraint" not in nightly  # the nightly replaces the torch layer on purpose
    assert result.layer_packages["nightly"] == {"torch": "2.12.0.dev20261120+cu128"}
    assert [layer.name for layer in result.record.layers][-1] == "nightly"


@pytest.mark.parametrize(
    ("stack", "fail", "outcome", "layer", "reason"),
    [
        (
            '"timmish"',
            {TORCH_URL: NETWORK},
            Outcome.UNAVAILABLE,
            "torch",
            f"torch layer: index 'torchidx' ({TORCH_URL}) unreachable; "
            f"set ENVLAB_INDEX_TORCHIDX to a reachable mirror of {TORCH_URL}",
        ),
        (
            '"oldtorchpkg"',
            {"oldtorchpkg": CONFLICT},
            Outcome.BUILD_FAILED,
            "stack",
            "stack layer: oldtorchpkg requires torch<2, which conflicts with the installed torch "
            "layer (torch is a layer, never a transitive dependency)",
        ),
        (
            '"timmish"',
            {PYPI: HASH},
            Outcome.BUILD_FAILED,
            "stack",
            "stack layer: a downloaded file does not match its locked hash, install refused "
            "(Caused by: Hash mismatch for `timmish==1.0`)",
        ),
    ],
    ids=["network-unavailable", "stack-needs-another-torch", "hash-mismatch"],
)
def test_a_failing_layer_ends_the_build_with_its_outcome_and_leaves_nothing(
    plan_for: Planner,
    stack: str,
    fail: dict[str, str],
    outcome: Outcome,
    layer: str,
    reason: str,
) -> None:
    p = plan_for(stack=stack)
    fake = FakeUv(fail)
    result = build(p, fake)
    assert (result.outcome, result.reason) == (outcome, reason)
    failed = result.record.layers[-1]
    assert failed.name == layer
    assert failed.outcome is LayerStatus.for_outcome(outcome) and failed.message == reason
    assert failed.commands[0].returncode == 1
    partial = Path(fake.calls[0][-1])
    assert partial.name.startswith(".demo.partial-") and not partial.exists()
    assert list(p.env_dir.parent.iterdir()) == []


def test_an_unchanged_key_reuses_without_running_uv(
    plan_for: Planner, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build(plan_for(), FakeUv())
    assert first.outcome is Outcome.BUILT
    reads: list[Path] = []
    read_marker = layers.read_marker
    monkeypatch.setattr(layers, "read_marker", lambda d: reads.append(d) or read_marker(d))
    again = FakeUv()
    result = build(plan_for(), again)
    assert again.calls == []
    assert result.outcome is Outcome.BUILT and result.record.reused
    assert result.layer_packages == first.layer_packages
    assert result.record.build_key == first.record.build_key
    assert len(reads) == 1  # the marker is read once for the decision and the result
    # another stack is another key: built again
    changed = FakeUv()
    result = build(plan_for(stack='"timmish", "numpy"'), changed)
    assert not result.record.reused and changed.installs()


def test_locked_layers_install_the_mirrored_copy_of_the_lock(
    plan_for: Planner, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = "http://127.0.0.1:9/torch"
    monkeypatch.setenv("ENVLAB_INDEX_TORCHIDX", mirror)
    locks = {}
    for layer, (name, version) in {
        "torch": ("torch", "2.10.0+cu128"),
        "stack": ("timmish", "1.0"),
    }.items():
        url = (TORCH_URL if layer == "torch" else PYPI) + f"/{name}/{name}-{version}.whl"
        locks[layer] = root / f"pylock.linux-64-{layer}.toml"
        locks[layer].write_text(
            f'[[packages]]\nname = "{name}"\nversion = "{version}"\n'
            f'wheels = [{{ url = "{url}" }}]\n'
        )
    p = plan_for(locks=locks)
    key = p.key
    locks["stack"].write_text("changed after planning")
    assert p.key == key  # computed once per plan, not re-read on each access
    locks["stack"].write_text(
        '[[packages]]\nname = "timmish"\nversion = "1.0"\n'
        f'wheels = [{{ url = "{PYPI}/timmish/timmish-1.0.whl" }}]\n'
    )
    p = plan_for(locks=locks)

    def mirror_page(index: indexes.Index, name: str) -> list[indexes.IndexFile]:
        # the mirror's project page lists the locked file under its own URL
        assert index.url == mirror, "only the mirrored index's page is asked for"
        return [indexes.IndexFile(f"{name}-2.10.0+cu128.whl", f"{mirror}/files/{name}.whl")]

    monkeypatch.setattr(mirrors, "project_files", mirror_page)
    fake = FakeUv()
    result = build(p, fake)
    assert result.outcome is Outcome.BUILT, result.reason
    for argv in fake.installs():
        assert argv[4:6] == ["--preview-features", "pylock"] and "--index-url" not in argv
        assert Path(argv[argv.index("-r") + 1]).name.startswith("pylock.linux-64-")
    assert f'url = "{mirror}/files/torch.whl"' in fake.locks[0]  # the mirror serves it
    assert TORCH_URL not in fake.locks[0] and f"{PYPI}/timmish/" in fake.locks[1]
    torch_files = result.record.layers[1].files
    assert [(f.name, f.url, f.mirror) for f in torch_files] == [
        ("torch", f"{mirror}/files/torch.whl", True)
    ]
    assert [(f.url, f.mirror) for f in result.record.layers[2].files] == [
        (f"{PYPI}/timmish/timmish-1.0.whl", False)
    ]
    assert result.layer_packages == {
        "torch": {"torch": "2.10.0+cu128"},
        "stack": {"timmish": "1.0"},
    }


# --------------------------------------------------------------------------- pipeline.run_env


HOST = Host(
    id="h",
    hostname="h",
    os="linux",
    platform=platforms.current(),
    machine="x86_64",
    cpu="test",
    cpu_count=1,
)


@pytest.fixture
def project(root: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    # the indexes are fictitious: nothing may go to the network, the fake uv answers instead
    monkeypatch.setattr(indexes, "probe", lambda *args, **kwargs: None)
    spec = SPEC.format(py=PY, platform=platforms.current(), stack='"timmish"')
    (root / "envspecs" / "demo.toml").write_text(spec)
    return Project(root)


@pytest.mark.skipif(sys.platform == "win32", reason="the fake interpreter is a shell script")
def test_run_env_builds_probes_and_verifies_through_the_injected_uv(project: Project) -> None:
    fake = FakeUv()
    matrix = Matrix(project.envspecs)
    result = pipeline.run_env(
        project, matrix, "demo", "r1", HOST, Options(compat=False), uv=fake_uv(fake)
    )
    assert result.outcome is Outcome.BUILT, (result.reason, result.checks)
    assert fake.calls[0][1:3] == ["python", "find"]  # the interpreter search asked the fake too
    recorded = [cmd.argv for layer in result.build.layers for cmd in layer.commands]
    assert recorded == [c for c in fake.calls if c[1] == "venv" or c[1:3] == ["pip", "install"]]
    assert [layer.name for layer in result.build.layers] == ["base", "torch", "stack"]
    assert result.facts.distributions["torch"].version == "2.10.0+cu128"  # the fake probe's
    # verification ran on what the fake uv installed, as the fake interpreter reported it
    assert {"torch-layer-intact", "torch-version"} <= {c.name for c in result.checks}
    assert all(c.ok for c in result.checks)
    env = project.envs / "demo"
    assert (env / layers.MARKER).exists()
    again = FakeUv()
    result = pipeline.run_env(
        project, matrix, "demo", "r2", HOST, Options(compat=False), uv=fake_uv(again)
    )
    # reused: nothing installed; only the checks that run every time (uv pip check)
    assert result.build.reused
    assert not [c for c in again.calls if c[1] != "python" and c[1:3] != ["pip", "check"]]


def test_run_env_records_a_failed_layer_as_the_env_outcome(project: Project) -> None:
    spec = project.envspecs / "demo.toml"
    spec.write_text(spec.read_text().replace('"timmish"', '"oldtorchpkg"'))
    fake = FakeUv({"oldtorchpkg": CONFLICT})
    result = pipeline.run_env(
        project,
        Matrix(project.envspecs),
        "demo",
        "r1",
        HOST,
        Options(compat=False),
        uv=fake_uv(fake),
    )
    assert result.outcome is Outcome.BUILD_FAILED
    assert result.reason is not None and result.reason.startswith(
        "stack layer: oldtorchpkg requires torch<2"
    )
    # nothing half-built is left (the env's lock file may stay: it is no env)
    assert not project.envs.exists() or [p for p in project.envs.iterdir() if p.is_dir()] == []


def test_availability_asks_the_injected_uv(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    probed: list[str] = []
    monkeypatch.setattr(pipeline, "probe_index", lambda index, *a, **k: probed.append(index.name))
    fake = FakeUv()
    matrix = Matrix(project.envspecs)
    assert pipeline.availability(project, matrix, "demo", "r1", HOST, uv=fake_uv(fake)) is None
    assert fake.calls == [["uv", "python", "find", "--no-config", "--no-python-downloads", PY]]
    assert probed == ["torchidx", "pypi"]
