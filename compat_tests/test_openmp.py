"""Seed category 8: at most one OpenMP implementation loaded in one process."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

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
