"""The support matrix in knowledge.toml: which CUDA variants PyTorch publishes per torch release,
the warnings `lock --verify`/`--diff` and doctor give for a variant that is not published, and the
README's "which env do I need?" table generated from it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, envlab, make_project

from envlab.hardware import builds, knowledge, which
from envlab.spec.envspec import Matrix

MATRIX = Matrix(ROOT / "envspecs")
TOOL = ROOT / "tools" / "which_env.py"


def facts() -> knowledge.Knowledge:
    return knowledge.load()


# --------------------------------------------------------------------------- published variants


@pytest.mark.parametrize(
    ("variant", "torch", "state"),
    [
        ("cu118", "2.7.1", "published"),
        ("cu118", "2.8.0", "not-published"),  # cu118 ends at 2.7.x
        ("cu118", "2.1.2", "not-published"),  # removed from the cu118 index in Nov 2025
        ("cu126", "2.10.0", "published"),
        ("cu126", "2.14.0", "published"),  # still published for the newest recorded release
        ("cu126", "2.16.0", "unknown"),  # past checked-through: not guessed
        ("cu128", "2.11.0", "published"),
        ("cu128", "2.12.0", "not-published"),  # cu128 last published for 2.11
        ("cu128", "2.16.0", "not-published"),  # a closed range stays a fact
        ("cu130", "2.8.0", "not-published"),
        ("cu130", "2.9.0", "published"),
        ("cu132", "2.12.0.dev20260301", "published"),
        ("cu999", "2.10.0", "unknown"),
    ],
)
def test_variant_availability(variant: str, torch: str, state: str) -> None:
    assert facts().availability(variant, torch) == state


def test_variants_published_per_release() -> None:
    names = {r: [v.name for v in facts().published_for(r)] for r in ("2.7.1", "2.10.0", "2.12.0")}
    assert names == {
        "2.7.1": ["cu118", "cu126", "cu128"],
        "2.10.0": ["cu126", "cu128", "cu129", "cu130"],
        "2.12.0": ["cu126", "cu130", "cu132"],
    }
    assert facts().published_range("cu118") == (
        knowledge.Version("2.2"),
        knowledge.Version("2.7"),
    )
    assert facts().published_range("cu128")[1] == knowledge.Version("2.11")  # type: ignore[index]


def test_every_published_release_of_an_env_variant_has_an_arch_list() -> None:
    """What doctor needs to judge an env: each (variant, release) the table says exists for the
    variants the matrix uses has a known arch list."""
    used = {"cu118", "cu126", "cu128", "cu130"}
    for release in facts().releases():
        for entry in facts().published_for(str(release)):
            if entry.name in used and release >= knowledge.Version("2.4"):
                assert facts().wheel_for(entry.name, f"{release}.0"), (entry.name, release)


def test_nearest_published_variant() -> None:
    assert [v.name for v in facts().nearest_published("cu128", "2.12.0")] == [
        "cu126",
        "cu130",
        "cu132",
    ]
    # at equal distance the older CUDA first: it needs the older driver
    assert facts().nearest_published("cu118", "2.8.0")[0].name == "cu126"


def test_the_matrix_asks_only_for_published_variants() -> None:
    for spec in MATRIX.all():
        for platform in spec.platforms:
            assert builds.variant_warnings(spec, platform) == [], (spec.name, platform)


def test_a_variant_no_longer_published_is_a_warning_naming_the_nearest(tmp_path: Path) -> None:
    specs = tmp_path / "envspecs"
    specs.mkdir()
    shutil.copy(ROOT / "envspecs" / "indexes.toml", specs / "indexes.toml")
    (specs / "late.toml").write_text(
        'description = "cu128 past its last release"\npython = "3.11"\nplatforms = ["linux-64"]\n'
        '[torch]\npackages = ["torch==2.12.0"]\nindex = "pytorch-cu128"\n'
        '[expect]\ntorch-local = "cu128"\ncuda = "12.8"\n'
    )
    (warning,) = builds.variant_warnings(Matrix(specs).get("late"), "linux-64")
    assert warning == (
        "late: torch 2.12 is not published as cu128 (cu128 builds exist for torch 2.7-2.11); "
        "published for torch 2.12: cu126, cu130, cu132 (nearest: cu126)"
    )


LATE = """
description = "an old cu118 pin the index dropped"
python = "3.11"
platforms = ["linux-64"]
[torch]
packages = ["torch==2.1.2"]
index = "pytorch-cu118"
[expect]
torch-local = "cu118"
cuda = "11.8"
"""


@pytest.mark.parametrize("flag", ["--verify", "--diff"])
def test_lock_verify_and_diff_warn(tmp_path: Path, flag: str) -> None:
    root = make_project(tmp_path, envs={"old": LATE}, stack=[])
    # an unreachable mirror: --diff stops at resolving, after the warning
    env = {"ENVLAB_INDEX_PYTORCH_CU118": "http://127.0.0.1:9/cu118"}
    done = envlab("--root", str(root), "lock", flag, env=env)
    warnings = [ln for ln in done.stdout.splitlines() if ln.startswith("warning: ")]
    assert warnings == [
        "warning: old: torch 2.1 is not published as cu118 (cu118 builds exist for torch "
        "2.2-2.7); published for torch 2.1: cu121 (nearest: cu121)"
    ], done.stdout
    # a warning changes no exit status: --verify checked nothing (no lock), --diff found the
    # index unreachable (unavailable is not a failure)
    assert done.returncode == 0, done.stdout + done.stderr


def test_lock_check_does_not_warn(tmp_path: Path) -> None:
    root = make_project(tmp_path, envs={"old": LATE}, stack=[])
    done = envlab("--root", str(root), "lock", "--check")
    assert "warning:" not in done.stdout


# --------------------------------------------------------------------------- README table


def test_readme_table_matches_the_knowledge_file() -> None:
    done = subprocess.run(
        [sys.executable, str(TOOL), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert which.render(MATRIX) in text


def test_readme_table_says_what_doctor_picks() -> None:
    table = which.render(MATRIX)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()}
    maxwell = next(line for key, line in rows.items() if key.startswith("5.0"))
    assert maxwell.endswith("| `legacy` | `legacy` | `legacy-cu118` |")
    blackwell = next(line for key, line in rows.items() if key.endswith("12.1"))
    assert "`legacy" not in blackwell  # never a build without sm_120 kernels
    assert "No NVIDIA GPU: `cpu`." in table
    assert "--index-url https://download.pytorch.org/whl/cu126" in table


def test_a_knowledge_change_makes_the_readme_stale(tmp_path: Path) -> None:
    """Planted: cu126 wheels without Maxwell kernels change the picks, so the table differs."""
    text = (ROOT / "src" / "envlab" / "hardware" / "knowledge.toml").read_text(encoding="utf-8")
    changed = text.replace(
        'arch-flags = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]\n'
        'confidence = "measured"',
        'arch-flags = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]\nconfidence = "measured"',
    )
    assert changed != text
    path = tmp_path / "knowledge.toml"
    path.write_text(changed, encoding="utf-8")
    stale = which.render(MATRIX, knowledge.load(path))
    assert stale != which.render(MATRIX)
    # Maxwell/Pascal would be left with the cu118 series at every driver
    assert "| `legacy-cu118` | `legacy-cu118` | `legacy-cu118` |" in stale


def test_check_fails_on_a_stale_readme_and_the_tool_rewrites_it(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "envspecs", tmp_path / "envspecs")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    stale = readme.replace("| `legacy` | `legacy` | `legacy-cu118` |", "| `stable` | x | y |")
    assert stale != readme
    (tmp_path / "README.md").write_text(stale, encoding="utf-8")
    argv = [sys.executable, str(TOOL), "--root", str(tmp_path)]
    done = subprocess.run([*argv, "--check"], capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "run: python tools/which_env.py" in done.stderr
    assert subprocess.run(argv, capture_output=True, check=False).returncode == 0
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == readme


def test_missing_markers_are_a_one_line_error(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "envspecs", tmp_path / "envspecs")
    (tmp_path / "README.md").write_text("# no table here\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(TOOL), "--root", str(tmp_path), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "expected the markers" in done.stderr
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == "# no table here\n"
