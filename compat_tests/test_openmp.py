"""Seed category 8: at most one OpenMP implementation loaded in one process."""

from __future__ import annotations

import atexit
import functools
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from compat_support import need

CATEGORY = "openmp"

# OpenMP runtime library name -> implementation (several copies of one implementation coexist;
# two implementations fight over threads: "OMP: Error #15").
_RUNTIMES = (
    (re.compile(r"^libgomp"), "GNU libgomp"),
    (re.compile(r"^(lib)?iomp5"), "Intel libiomp5"),
    (re.compile(r"^(lib)?omp(\d+)?[.-]"), "LLVM libomp"),
    (re.compile(r"^vcomp"), "MSVC vcomp"),
)


def loaded_openmp() -> dict[str, set[str]]:
    """Implementation -> paths of the OpenMP runtimes mapped into this process."""
    paths: set[str] = set()
    maps = Path("/proc/self/maps")
    if maps.exists():
        for line in maps.read_text().splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith("/"):
                paths.add(parts[5])
    try:
        threadpoolctl = __import__("threadpoolctl")
        paths.update(
            i["filepath"] for i in threadpoolctl.threadpool_info() if i.get("user_api") == "openmp"
        )
    except ImportError:
        if not maps.exists():
            raise AssertionError(
                f"cannot list loaded libraries on {sys.platform} without threadpoolctl. "
                "Fix: install threadpoolctl"
            ) from None
    found: dict[str, set[str]] = {}
    for path in paths:
        name = Path(path).name.lower()
        for pattern, implementation in _RUNTIMES:
            if pattern.search(name):
                found.setdefault(implementation, set()).add(path)
    return found


def _assert_single(context: str) -> None:
    found = loaded_openmp()
    assert len(found) <= 1, (
        f"{len(found)} OpenMP implementations loaded after importing {context}: "
        + "; ".join(f"{impl}: {', '.join(sorted(paths))}" for impl, paths in sorted(found.items()))
        + ". Fix: keep one OpenMP — in conda envs pin OpenBLAS (libblas=*=*openblas*) so MKL's "
        "libiomp5 is not installed next to torch's runtime; KMP_DUPLICATE_LIB_OK only hides it."
    )


def test_openmp_single_runtime_torch_numpy() -> None:
    """After importing torch, numpy and scipy.linalg, one OpenMP implementation is loaded.

    Fix: libiomp5 next to libgomp/libomp comes from MKL (conda's default BLAS); pin OpenBLAS.
    """
    for module in ("torch", "numpy", "scipy.linalg"):
        need(module)
    _assert_single("torch, numpy, scipy.linalg")


def test_openmp_single_runtime_full_stack() -> None:
    """After importing the whole stack (sklearn, cv2, torchvision, torchaudio too), still one.

    Fix: a package that vendors another OpenMP (e.g. an LLVM libomp) clashes with torch's;
    install that package from the same ecosystem (pip vs conda) as torch.
    """
    need("torch")
    # Missing packages are reported by their own checks; here only what is installed matters.
    optional = ("numpy", "scipy.linalg", "sklearn.linear_model", "cv2", "torchvision", "torchaudio")
    loaded = ["torch"]
    for module in optional:
        if importlib.util.find_spec(module.split(".")[0]) is not None:
            need(module)
            loaded.append(module)
    _assert_single(", ".join(loaded))


def test_openmp_parallel_region_works() -> None:
    """torch's OpenMP thread pool runs a parallel reduction correctly with 2+ threads.

    Fix: a hang or wrong sum usually means two OpenMP runtimes; OMP_NUM_THREADS=1 as a
    workaround, one runtime as the fix.
    """
    torch = need("torch")
    assert torch.backends.openmp.is_available() or sys.platform == "darwin", (
        "torch was built without OpenMP"
    )
    previous = torch.get_num_threads()
    torch.set_num_threads(max(2, previous))
    try:
        n = 2_000_000
        total = float(torch.arange(n, dtype=torch.float64).sum())
    finally:
        torch.set_num_threads(previous)
    assert total == n * (n - 1) / 2, f"parallel sum gave {total}, expected {n * (n - 1) / 2}"


# The stack imported in the worst order for threads: every package that brings an OpenMP runtime
# of its own (scikit-learn vendors a libgomp) before torch, whose runtime then starts second.
WORST_ORDER = ("sklearn.linear_model", "scipy.linalg", "numpy", "pandas", "cv2")
_THREADS_PROBE = """
import importlib, json, os, sys
for module in sys.argv[1:]:
    importlib.import_module(module)
import torch
paths = set()
with open("/proc/self/maps") as maps:
    for line in maps:
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith("/"):
            paths.add(parts[5].strip())
print(json.dumps({"threads": torch.get_num_threads(), "paths": sorted(paths)}))
"""


def _openmp_copies(paths: list[str]) -> list[str]:
    """The OpenMP runtime libraries among ``paths``, one per file (two copies count twice)."""
    return sorted(p for p in paths if any(rx.search(Path(p).name.lower()) for rx, _ in _RUNTIMES))


PINNINGS = ("sched_setaffinity", "GOMP_CPU_AFFINITY")


# The worst-order interpreters, by pinned CPUs: started once, as early as the suite allows.
_STARTED: dict[tuple[int, ...], dict[str, subprocess.Popen[str]]] = {}


def _start(cpus: tuple[int, ...]) -> dict[str, subprocess.Popen[str]]:
    """Start (once) a fresh process per way of pinning, pinned to ``cpus``, that imports the stack
    in the worst order and reports torch's thread count and the libraries it mapped."""
    if cpus in _STARTED:
        return _STARTED[cpus]
    modules = [m for m in WORST_ORDER if importlib.util.find_spec(m.split(".")[0]) is not None]
    base = {
        k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GOMP_CPU_AFFINITY")
    }
    started = {}
    for pinning in PINNINGS:
        env = dict(base)
        if pinning == "GOMP_CPU_AFFINITY":
            env["GOMP_CPU_AFFINITY"] = ",".join(map(str, cpus))
        started[pinning] = subprocess.Popen(
            [sys.executable, "-c", _THREADS_PROBE, *modules],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
        )
    # a run stopped before the checks read them (-x, ^C) leaves no process behind
    atexit.register(lambda: [child.kill() for child in started.values() if child.poll() is None])
    _STARTED[cpus] = started
    return started


def start_early() -> None:
    """Start the worst-order imports when the suite's checks are chosen (the suite's conftest
    calls this after collection): each imports the whole stack, seconds that then overlap the
    other checks instead of adding to them."""
    if sys.platform.startswith("linux") and importlib.util.find_spec("torch") is not None:
        cpus = tuple(sorted(os.sched_getaffinity(0)))[:4]
        if len(cpus) >= 2:
            _start(cpus)


@functools.cache
def _worst_order_runs(cpus: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """What the worst-order processes pinned to ``cpus`` found, one per way of pinning."""
    found = {}
    for pinning, child in _start(cpus).items():
        out, err = child.communicate(timeout=300)
        modules = child.args[3:]
        if child.returncode != 0:
            tail = (err.strip().splitlines() or ["no output"])[-1]
            pytest.fail(f"importing {', '.join(modules)} then torch failed: {tail}", pytrace=False)
        found[pinning] = {"modules": modules, **json.loads(out.strip().splitlines()[-1])}
    return found


def _pinned_cpus() -> tuple[int, ...]:
    if not sys.platform.startswith("linux"):
        pytest.skip(f"CPU affinity is set with sched_setaffinity, which {sys.platform} lacks")
    cpus = tuple(sorted(os.sched_getaffinity(0)))[:4]
    if len(cpus) < 2:
        pytest.skip(f"this process may use {len(cpus)} CPU: a thread count needs 2 or more")
    return cpus


@pytest.mark.parametrize("pinning", PINNINGS)
def test_torch_threads_fill_the_pinned_cpus(pinning: str) -> None:
    """With the CPUs pinned (taskset-style, or GOMP_CPU_AFFINITY) and scikit-learn imported before
    torch, torch.get_num_threads() equals the number of pinned CPUs.

    Fix: 1 thread under GOMP_CPU_AFFINITY means another libgomp (scikit-learn's vendored copy)
    started first and bound the process to one CPU before torch's copy counted them: pin CPUs
    with taskset/numactl instead, import torch first, or set OMP_NUM_THREADS explicitly.
    """
    need("torch")
    cpus = _pinned_cpus()
    found = _worst_order_runs(cpus)[pinning]
    copies = _openmp_copies(found["paths"])
    setting = (
        f"GOMP_CPU_AFFINITY={','.join(map(str, cpus))}"
        if pinning == "GOMP_CPU_AFFINITY"
        else f"affinity {','.join(map(str, cpus))} (as taskset sets it)"
    )
    assert found["threads"] == len(cpus), (
        f"torch.get_num_threads() is {found['threads']} with {len(cpus)} CPUs pinned by "
        f"{setting} after importing {', '.join(found['modules'])} before torch; OpenMP "
        f"runtimes loaded: {', '.join(copies) or 'none'}. Fix: pin CPUs with taskset/numactl "
        "(not GOMP_CPU_AFFINITY), import torch first, or set OMP_NUM_THREADS."
    )


def test_one_openmp_runtime_per_process() -> None:
    """After importing the stack (scikit-learn first), one OpenMP runtime library is loaded.

    Fix: two copies of libgomp (pip's torch and scikit-learn each vendor one) run two thread pools
    that oversubscribe the CPUs and, under GOMP_CPU_AFFINITY, starve torch to 1 thread; pip wheels
    cannot share one, so cap both (threadpoolctl, OMP_NUM_THREADS) or use an env whose packages
    link one shared libgomp (conda-forge's scikit-learn next to a torch on the same runtime).
    """
    need("torch")
    cpus = _pinned_cpus()
    found = _worst_order_runs(cpus)["sched_setaffinity"]
    copies = _openmp_copies(found["paths"])
    assert len(copies) <= 1, (
        f"{len(copies)} OpenMP runtime libraries in one process after importing "
        f"{', '.join(found['modules'])} and torch: {', '.join(copies)}. Fix: cap each pool "
        "(threadpoolctl.threadpool_limits, OMP_NUM_THREADS), or build the env from packages "
        "that share one libgomp."
    )
