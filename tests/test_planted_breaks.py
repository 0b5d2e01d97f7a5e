"""Breaks planted in a copy of the real `stable` env are each caught by verification, by the
right check, with expected vs found and a fix.

The copy is a second env built by envlab from the same locks (the session's `stable_env` is never
damaged); each break is planted, verified (`envlab test stable --no-compat` reuses the env and
checks it again), then repaired from the lock before the next.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import ROOT, envlab

from envlab.build.uv import Uv, find_executable
from envlab.results.schema import load
from envlab.spec import platforms

pytestmark = [pytest.mark.e2e, pytest.mark.network]

LOCKS = ROOT / "locks" / "stable"


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A second `stable` env, built by envlab from the committed lock: the one to damage."""
    base = tmp_path_factory.mktemp("stable-copy")
    env = {
        "ENVLAB_ENVS_DIR": str(base / "envs"),
        "ENVLAB_RUNS_DIR": str(base / "runs"),
        "ENVLAB_HISTORY_DB": str(base / "history.sqlite"),
        "ENVLAB_HOST_ID": "copy",
        "ENVLAB_RUN_ID": "build",
    }
    done = envlab("--root", str(ROOT), "test", "stable", "--no-compat", env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return {**env, "PYTHON": str(base / "envs" / "stable" / "bin" / "python")}


def uv_pip(python: str, *args: str) -> None:
    argv = [find_executable(), "pip", "install", "--no-config", "--python", python, *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]


def repair(python: str, *reinstall: str) -> None:
    """Reinstall exactly the locked files (and files of ``reinstall`` the lock already has), as
    envlab installs a lock: from uv's cache when every file is there."""
    for layer in ("torch", "stack"):
        lock = LOCKS / f"pylock.{platforms.current()}-{layer}.toml"
        Uv().install_locked(Path(python), lock, reinstall)


def site_packages(python: str) -> Path:
    return next(Path(python).parents[1].glob("lib/python3.*/site-packages"))


def delete_torch_library(python: str) -> None:
    (site_packages(python) / "torch" / "lib" / "libtorch_cuda_linalg.so").unlink()


def install_no_deps(*requirements: str):
    def plant(python: str) -> None:
        uv_pip(python, "--no-deps", "--index-url", "https://pypi.org/simple", *requirements)

    return plant


# Replacing one nvidia-* wheel removes nvidia/__init__.py, which a dozen of them list in their
# RECORD and the newer wheels no longer ship: a wheel that does puts it back (else the repaired env
# fails installed-files-intact, rightly: it is not what a clean install gives).
NVIDIA_NAMESPACE = ("nvidia-cublas-cu12",)
# (planting, packages to reinstall when repairing, {check: fragments its failure must show})
BREAKS = {
    "deleted-torch-so": (
        delete_torch_library,
        ("torch",),
        {
            "installed-files-intact": [
                "torch: torch/lib/libtorch_cuda_linalg.so missing",
                "Fix: reinstall them (uv pip install --reinstall-package torch",
            ]
        },
    ),
    "torchvision-torchaudio-of-another-release": (
        install_no_deps("torchvision==0.24.1", "torchaudio==2.9.1"),
        (),
        {
            "torchvision-matches-torch": ["Fix: install the torchvision 0.25.x"],
            "torchaudio-matches-torch": ["Fix: install the torchaudio 2.10.x"],
            "pip-check": ["`torchvision` requires `torch==2.9.1`", "Fix: rebuild the env"],
        },
    ),
    "old-cudnn": (
        install_no_deps("nvidia-cudnn-cu12==9.1.0.70"),
        NVIDIA_NAMESPACE,
        {
            "torch-pins": [
                "nvidia-cudnn-cu12 9.1.0.70 (torch requires ==9.10.2.21)",
                "Fix: uv pip install 'nvidia-cudnn-cu12==9.10.2.21'",
            ],
            "cudnn-matches-build": ["cuDNN 9.1.0 loaded", "Fix: uv pip install"],
            "pip-check": ["nvidia-cudnn-cu12==9.10.2.21"],
        },
    ),
    "numpy-1.26": (
        install_no_deps("numpy==1.26.4"),
        (),
        {
            "numpy-major": ["NumPy 1.26.4", "Fix: install numpy==2.*"],
            "pip-check": ["requires `numpy>="],
        },
    ),
    "nvidia-wheel-of-another-minor": (
        install_no_deps("nvidia-cublas-cu12==12.9.1.4"),
        NVIDIA_NAMESPACE,
        {
            "torch-pins": [
                "nvidia-cublas-cu12 12.9.1.4 (torch requires ==12.8.4.1)",
                "Fix: uv pip install 'nvidia-cublas-cu12==12.8.4.1'",
            ],
            "pip-check": ["nvidia-cublas-cu12==12.8.4.1"],
        },
    ),
}


@pytest.mark.parametrize("name", list(BREAKS))
def test_a_planted_break_is_caught_by_the_right_check(copy: dict[str, str], name: str) -> None:
    plant, reinstall, expected = BREAKS[name]
    python = copy["PYTHON"]
    plant(python)
    try:
        run_id = f"break-{name}"
        env = {**copy, "ENVLAB_RUN_ID": run_id}
        done = envlab("--root", str(ROOT), "test", "stable", "--no-compat", env=env)
        assert done.returncode == 1, done.stderr[-3000:]
        result = load(Path(copy["ENVLAB_RUNS_DIR"]) / run_id / "copy" / "stable.json")
        assert result.outcome == "verify-failed" and result.build.reused
        failed = {c.name: c for c in result.checks if not c.ok}
        assert "matches-lock" in failed or name == "deleted-torch-so", failed
        for check, fragments in expected.items():
            assert check in failed, (check, sorted(failed))
            shown = f"{failed[check].found} {failed[check].message}"
            assert all(fragment in shown for fragment in fragments), (check, shown)
    finally:
        repair(python, *reinstall)
    env = {**copy, "ENVLAB_RUN_ID": f"repaired-{name}"}
    done = envlab("--root", str(ROOT), "test", "stable", "--no-compat", env=env)
    assert done.returncode == 0, done.stderr[-3000:]  # repaired: every check holds again
