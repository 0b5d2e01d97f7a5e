"""The shipped ``legacy`` envspec locked, built and verified end to end from a fake cu126 index.

A local index on 127.0.0.1 stands in for download.pytorch.org/whl/cu126 (through the mirror
variable, exactly as a user would point envlab at a mirror): its torch reports the compiled arch
list the way a real CUDA torch does without a GPU (``torch._C._cuda_getArchFlags()``), so the arch
coverage check runs on the build's real answer. A torch without ``sm_50`` must fail verification
naming the GPU it no longer covers; an unreachable cu126 index must make ``lock`` report the env
unavailable with the variable that points it at a mirror.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, envlab, make_project
from localindex import LocalIndexes, serve

from envlab.build import lock
from envlab.outcome import Outcome
from envlab.project import Project

PY = f"{sys.version_info.major}.{sys.version_info.minor}"
CU126_FLAGS = "sm_50 sm_60 sm_70 sm_75 sm_80 sm_86 sm_90"
NO_MAXWELL = "sm_60 sm_70 sm_75 sm_80 sm_86 sm_90"
DECLARED = "https://download.pytorch.org/whl/cu126"


def legacy_spec() -> str:
    """The shipped envspec, on the interpreter running the tests (always installed here)."""
    text = (ROOT / "envspecs" / "legacy.toml").read_text(encoding="utf-8")
    assert 'python = "3.11"' in text
    return text.replace('python = "3.11"', f'python = "{PY}"')


def populate(idx: LocalIndexes, flags: str) -> None:
    idx.add("cu126", "torch", "2.10.0+cu126", ["filelock"], arch_flags=flags)
    idx.add("cu126", "torchvision", "0.25.0+cu126", ["torch==2.10.0"])
    idx.add("cu126", "torchaudio", "2.10.0+cu126", ["torch==2.10.0"])
    idx.add("cu126", "filelock", "3.20.0")
    # PyTorch's indexes also carry CPU/other-variant builds; the pin must still pick cu126
    idx.add("cu126", "torch", "2.9.1+cu126", ["filelock"], arch_flags=flags)
    idx.add("pypi", "numpy", "1.26.4")
    idx.add("pypi", "numpy", "2.3.5")
    idx.add("pypi", "torch", "2.10.0", ["filelock"])  # PyPI's (cu128) torch: must not be used
    idx.add("pypi", "filelock", "3.20.0")
    idx.add("pypi", "torchcodec", "0.10.0")  # the shipped envspec pins torchaudio's I/O backend


def project(tmp_path: Path, idx: LocalIndexes) -> tuple[Path, dict[str, str]]:
    root = make_project(tmp_path, envs={"legacy": legacy_spec()}, stack=[])
    env = {
        "ENVLAB_INDEX_PYTORCH_CU126": idx.url("cu126"),
        **idx.mirrors("pypi"),
        "ENVLAB_HOST_ID": "testhost",
        "ENVLAB_RUN_ID": "run1",
    }
    return root, env


def result(root: Path) -> dict:
    files = list((root / "reports" / "runs").glob("*/*/legacy.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text(encoding="utf-8"))


@pytest.fixture
def cu126(tmp_path: Path) -> Iterator[LocalIndexes]:
    with serve(tmp_path / "index") as idx:
        populate(idx, CU126_FLAGS)
        yield idx


def test_legacy_locks_builds_and_verifies_from_a_cu126_index(
    cu126: LocalIndexes, tmp_path: Path
) -> None:
    root, env = project(tmp_path, cu126)
    done = envlab("--root", str(root), "lock", "legacy", env=env)
    assert done.returncode == 0, done.stderr
    proj = Project(root)
    for platform in ("linux-64", "win-64"):
        torch_lock = lock.read(lock.lock_path(proj, "legacy", platform, "torch"))
        assert torch_lock.packages["torch"] == "2.10.0+cu126"
        assert torch_lock.packages["torchvision"] == "0.25.0+cu126"
        # the lock keeps the declared index URL; the mirror is substituted when installing
        assert all(f.url.startswith(DECLARED + "/") for f in torch_lock.files)
        stack_lock = lock.read(lock.lock_path(proj, "legacy", platform, "stack"))
        assert stack_lock.packages["numpy"] == "2.3.5"
        assert "torch" not in stack_lock.packages
    done = envlab("--root", str(root), "test", "legacy", "--no-compat", env=env)
    assert done.returncode == 0, done.stderr
    found = result(root)
    assert found["outcome"] == Outcome.BUILT, found["reason"]
    checks = {c["name"]: c for c in found["checks"]}
    assert all(c["ok"] for c in checks.values()), [c for c in checks.values() if not c["ok"]]
    assert {"arch-covers-sm_52", "arch-covers-sm_61", "torch-cuda", "torch-local-tag"} <= set(
        checks
    )
    assert checks["arch-covers-sm_52"]["message"] == "sm_50 kernels run natively on sm_52"
    assert checks["arch-covers-sm_61"]["message"] == "sm_60 kernels run natively on sm_61"
    assert checks["torch-cuda"]["found"] == "CUDA 12.6"
    torch = found["facts"]["torch"]
    assert torch["version"] == "2.10.0+cu126" and torch["arch_flags"] == CU126_FLAGS.split()
    assert found["facts"]["distributions"]["numpy"]["version"] == "2.3.5"


def test_a_cu126_torch_without_sm_50_fails_verification_naming_the_arch(tmp_path: Path) -> None:
    with serve(tmp_path / "index") as idx:
        populate(idx, NO_MAXWELL)
        root, env = project(tmp_path, idx)
        done = envlab("--root", str(root), "test", "legacy", "--no-compat", env=env)
    assert done.returncode == 1, done.stderr
    found = result(root)
    assert found["outcome"] == Outcome.VERIFY_FAILED
    failed = {c["name"]: c for c in found["checks"] if not c["ok"]}
    assert set(failed) == {"arch-covers-sm_52"}, failed
    check = failed["arch-covers-sm_52"]
    assert check["layer"] == "torch"
    assert check["message"] == (f"sm_52 is not covered by the compiled arch list ({NO_MAXWELL})")
    assert "arch-covers-sm_52" in found["reason"], found["reason"]


def test_lock_reports_legacy_unavailable_with_the_mirror_variable(tmp_path: Path) -> None:
    root = make_project(tmp_path, envs={"legacy": legacy_spec()}, stack=[])
    env = {"ENVLAB_INDEX_PYTORCH_CU126": "http://127.0.0.1:9/cu126"}
    done = envlab("--root", str(root), "lock", "legacy", "--platform", "linux-64", env=env)
    assert done.returncode == 0, done.stderr  # an unreachable index is not a failure of `lock`
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("legacy linux-64:"))
    assert line == (
        "legacy linux-64: unavailable: torch layer: index 'pytorch-cu126' "
        f"(http://127.0.0.1:9/cu126) unreachable; set ENVLAB_INDEX_PYTORCH_CU126 to a reachable "
        f"mirror of {DECLARED}"
    ), line
    assert not (root / "locks" / "legacy").exists() or not any(
        (root / "locks" / "legacy").iterdir()
    )
