"""Small helpers shared by envlab's tests: temporary projects and running the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_project(
    tmp: Path,
    indexes: dict[str, str] | None = None,
    envs: dict[str, str] | None = None,
    stack: list[str] | None = None,
    copy_suite: bool = False,
) -> Path:
    """A project directory with envspecs/ (given TOML texts) under ``tmp``."""
    root = tmp / "project"
    specs = root / "envspecs"
    specs.mkdir(parents=True)
    if indexes is None:
        shutil.copy(ROOT / "envspecs" / "indexes.toml", specs / "indexes.toml")
    else:
        specs.joinpath("indexes.toml").write_text(
            "".join(f'[{name}]\nurl = "{url}"\n\n' for name, url in indexes.items()),
            encoding="utf-8",
        )
    if stack is not None:
        quoted = ", ".join(f'"{p}"' for p in stack)
        specs.joinpath("stack.toml").write_text(f"packages = [{quoted}]\n", encoding="utf-8")
    for name, text in (envs or {}).items():
        specs.joinpath(f"{name}.toml").write_text(text, encoding="utf-8")
    if copy_suite:
        shutil.copytree(
            ROOT / "compat_tests",
            root / "compat_tests",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        shutil.copytree(
            ROOT / "benchmarks", root / "benchmarks", ignore=shutil.ignore_patterns("__pycache__")
        )
    return root


def envlab(
    *args: str, env: dict[str, str] | None = None, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m envlab.cli ARGS`` as a user would, capturing output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "envlab.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def ffmpeg_present() -> bool:
    """Whether the dynamic loader finds FFmpeg's libavutil (TorchCodec's system dependency)."""
    import ctypes

    for major in (56, 57, 58, 59, 60):
        try:
            ctypes.CDLL(f"libavutil.so.{major}")
        except OSError:
            continue
        return True
    return False


def known_stable_failures() -> dict[str, str]:
    """Compat checks (by test name) the real `stable` env fails on this host, each with a fragment
    of the reason it must give: pip's torch and scikit-learn each vendor a libgomp (two OpenMP
    runtimes; under GOMP_CPU_AFFINITY the second starts on one CPU), and TorchCodec needs FFmpeg
    from the system."""
    known = {
        "test_torch_threads_fill_the_pinned_cpus[GOMP_CPU_AFFINITY]": (
            "Fix: pin CPUs with taskset/numactl (not GOMP_CPU_AFFINITY)"
        ),
        "test_one_openmp_runtime_per_process": "2 OpenMP runtime libraries",
    }
    if not ffmpeg_present():
        known["test_audio_wav_roundtrip_and_resample"] = (
            "TorchCodec is installed but finds no FFmpeg shared library"
        )
    return known
