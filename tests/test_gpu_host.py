"""A GPU present means CUDA must work: on a host faked with a recorded nvidia-smi, an env whose
torch lacks the GPU's arch (or needs a newer driver) fails its GPU checks naming the reason, both
in verification and in the compat suite; on a host without a GPU they still skip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, envlab, make_project
from localindex import LocalIndexes, _module_source, serve

from envlab.results.schema import load

SUITE = ROOT / "compat_tests"
SMI = ROOT / "tests" / "data" / "doctor" / "smi"
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
# The stable build's compiled arch list: no Maxwell (sm_52) kernels.
CU128_FLAGS = "sm_70 sm_75 sm_80 sm_86 sm_90 sm_100 sm_120"
GPU_CHECKS = ("test_cuda.py::test_cuda_device_usable", "test_cuda.py::test_gpu_matmul")


def fake_smi(tmp_path: Path, recorded: str) -> Path:
    """A directory with an ``nvidia-smi`` printing a recorded answer (for the front of PATH)."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\ncat '{SMI / recorded}'\n", encoding="utf-8")
    smi.chmod(0o755)
    return bin_dir


def fake_torch(tmp_path: Path, version: str = "2.10.0+cu128") -> Path:
    """A torch package (on PYTHONPATH) that imports like a CUDA build on a machine where CUDA
    does not work: the compiled arch list, no usable device."""
    root = tmp_path / "fake-torch"
    (root / "torch").mkdir(parents=True)
    source = _module_source("torch", version, CU128_FLAGS)
    (root / "torch" / "__init__.py").write_text(source, encoding="utf-8")
    return root


def run_suite(
    tmp_path: Path, expect: dict[str, Any] | None, path_front: Path | None, *targets: str
) -> dict[str, dict[str, Any]]:
    """The compat suite run as envlab runs it, with a fake torch and, optionally, a fake GPU."""
    out = tmp_path / "out" / "compat.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pytest", *targets, "-q", "-p", "no:cacheprovider"]
    argv.append(f"--compat-json={out}")
    if expect is not None:
        (out.parent / "expect.json").write_text(json.dumps(expect), encoding="utf-8")
        argv.append(f"--compat-expect={out.parent / 'expect.json'}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(fake_torch(tmp_path))
    if path_front is not None:
        env["PATH"] = f"{path_front}{os.pathsep}{env['PATH']}"
    done = subprocess.run(
        argv, cwd=out.parent, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.exists(), done.stdout[-3000:] + done.stderr[-2000:]
    tests = json.loads(out.read_text(encoding="utf-8"))["tests"]
    return {t["id"].split("::", 1)[1]: t for t in tests}


def gpu_tests(found: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    tests = [t for t in found.values() if t["gpu"]]
    assert tests, found
    return tests


def test_gpu_checks_fail_naming_the_missing_arch_on_a_faked_gpu_host(tmp_path: Path) -> None:
    found = run_suite(tmp_path, None, fake_smi(tmp_path, "gtx970.csv"), str(SUITE / "test_cuda.py"))
    for test in gpu_tests(found):
        assert test["outcome"] == "failed", test
        message = test["message"]
        assert message.startswith(
            "this host has an NVIDIA GPU (GPU 0 NVIDIA GeForce GTX 970 (sm_52), "
            "driver 535.183.01) but CUDA is unusable: no CUDA device: torch.cuda.is_available() "
            "is False (torch 2.10.0+cu128, built for CUDA 12.8)"
        ), message
        assert (
            "GPU 0 NVIDIA GeForce GTX 970 (sm_52): sm_52 is not covered by the compiled arch"
            in (message)
        )
        assert "Fix: use the env whose build covers this GPU and driver" in message


def test_a_driver_too_old_for_the_build_is_named(tmp_path: Path) -> None:
    recorded = "gtx1080ti.csv"  # driver 550: new enough; the arch (sm_61) is what is missing
    found = run_suite(tmp_path, None, fake_smi(tmp_path, recorded), f"{SUITE}/{GPU_CHECKS[0]}")
    assert "sm_61 is not covered" in found["test_cuda_device_usable"]["message"]
    expect = {
        "env": "stable",
        "cuda": "12.8",
        "host_gpus": [{"index": 0, "name": "Tesla T4", "compute_capability": "7.5"}],
        "driver": "470.256.02",
    }
    old = run_suite(tmp_path / "old", expect, None, f"{SUITE}/{GPU_CHECKS[0]}")
    message = old["test_cuda_device_usable"]["message"]
    assert "driver 470.256.02 is older than 525.60.13, the oldest that runs CUDA 12.x" in message
    assert "sm_75" not in message.split("CUDA is unusable:")[1]  # the T4 itself is covered


def test_without_a_gpu_the_gpu_checks_still_skip(tmp_path: Path) -> None:
    no_gpu = {"env": "stable", "cuda": "12.8", "host_gpus": [], "driver": None}
    found = run_suite(tmp_path, no_gpu, None, f"{SUITE}/{GPU_CHECKS[0]}")
    test = found["test_cuda_device_usable"]
    assert test["outcome"] == "skipped" and test["skip_reason"].startswith("no CUDA device")


def test_the_compat_suite_s_driver_floors_follow_envlab_s_knowledge() -> None:
    sys.path.insert(0, str(SUITE))
    try:
        import compat_support
    finally:
        sys.path.remove(str(SUITE))
    table = tomllib.loads(
        (ROOT / "src" / "envlab" / "hardware" / "knowledge.toml").read_text(encoding="utf-8")
    )
    floors = {row["major"]: row["linux"] for row in table["minor-compat"]}
    assert compat_support.DRIVER_FLOOR == floors


# --------------------------------------------------------------------------- through envlab

DEMO = """
description = "a cu128 torch on a Maxwell GPU"
python = "{python}"
platforms = ["linux-64"]
[torch]
packages = ["torch==2.10.0"]
index = "torchidx"
[stack]
add = ["pytest"]
[expect]
cuda = "12.8"
"""


@pytest.fixture
def gpu_lab(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    with serve(tmp_path / "index") as idx:
        populate(idx)
        root = make_project(
            tmp_path,
            indexes={"pypi": "https://pypi.org/simple", "torchidx": "https://x/whl/cu128"},
            envs={"demo": DEMO.format(python=PY)},
            stack=[],
            copy_suite=True,
        )
        env = {
            **idx.mirrors("pypi", "torchidx"),
            "ENVLAB_HOST_ID": "fakegpu",
            "ENVLAB_RUN_ID": "run1",
            "PATH": f"{fake_smi(tmp_path, 'gtx970.csv')}{os.pathsep}{os.environ['PATH']}",
        }
        yield root, env


def populate(idx: LocalIndexes) -> None:
    idx.add("torchidx", "torch", "2.10.0+cu128", ["filelock"], arch_flags=CU128_FLAGS)
    idx.add("torchidx", "filelock", "3.0")
    idx.add("pypi", "filelock", "3.0")
    for name in ("pytest", "pluggy", "iniconfig", "packaging", "pygments"):
        idx.add_installed("pypi", name)


def test_an_env_without_the_gpu_s_arch_fails_verification_and_gpu_checks(
    gpu_lab: tuple[Path, dict[str, str]],
) -> None:
    root, env = gpu_lab
    selected = " or ".join(name.split("::")[1] for name in GPU_CHECKS)
    done = envlab("--root", str(root), "test", "demo", "--pytest-args", f"-k '{selected}'", env=env)
    assert done.returncode == 1, done.stderr[-3000:]
    result = load(root / "reports" / "runs" / "run1" / "fakegpu" / "demo.json")
    assert [gpu.name for gpu in result.host.gpus] == ["NVIDIA GeForce GTX 970"]
    failed = {c.name: c for c in result.checks if not c.ok}
    usable = failed["cuda-usable"]
    assert usable.expected.startswith("CUDA usable on this host's GPU 0 NVIDIA GeForce GTX 970")
    assert "GPU 0 NVIDIA GeForce GTX 970 (sm_52): sm_52 is not covered" in usable.found
    assert result.outcome == "verify-failed"
    assert result.compat is not None
    gpu = [t for t in result.compat.tests if t.gpu]
    assert gpu and all(t.outcome == "failed" for t in gpu), gpu
    assert all(t.message and "sm_52 is not covered" in t.message for t in gpu), gpu
