"""Seed category 6: which BLAS numpy/scipy use (checked against the env), and torch's own."""

from __future__ import annotations

import re
from typing import Any

from compat_support import Expect, need, python_json

CATEGORY = "blas"

# Runs in a fresh interpreter so only the BLAS that the named modules load is seen.
PROBE = """
import importlib, json
mods = {mods!r}
before = set()
try:
    import threadpoolctl
except ImportError:
    threadpoolctl = None
found = {{}}
for mod in mods:
    module = importlib.import_module(mod)
    entry = {{"runtime": [], "config": None}}
    if threadpoolctl is not None:
        libs = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
        entry["runtime"] = [i["internal_api"] for i in libs if i["filepath"] not in before]
        before.update(i["filepath"] for i in libs)
    top = importlib.import_module(mod.split(".")[0])
    try:
        deps = top.show_config(mode="dicts")["Build Dependencies"]
        entry["config"] = deps.get("blas", {{}}).get("name")
    except Exception:
        pass
    found[mod] = entry
print(json.dumps({{"found": found, "threadpoolctl": threadpoolctl is not None}}))
"""

VENDORS = ("openblas", "mkl", "accelerate", "blis", "flexiblas")


def vendor(name: str | None) -> str | None:
    if not name:
        return None
    lowered = name.lower()
    for known in VENDORS:
        if known in lowered:
            return known
    return lowered


def blas_of(module: str) -> tuple[str | None, dict[str, Any]]:
    """The BLAS vendor ``module`` loads (threadpoolctl at runtime, else its build config)."""
    data = python_json(PROBE.format(mods=["numpy", module] if module != "numpy" else ["numpy"]))
    entry = data["found"][module]
    runtime = sorted({vendor(api) for api in entry["runtime"] if api})
    if len(runtime) == 1:
        return runtime[0], data
    if not runtime and module != "numpy":
        # scipy reusing numpy's already-loaded BLAS adds no new library.
        numpy_runtime = sorted({vendor(api) for api in data["found"]["numpy"]["runtime"] if api})
        if len(numpy_runtime) == 1 and vendor(entry["config"]) in (numpy_runtime[0], None):
            return numpy_runtime[0], data
    if len(runtime) > 1:
        return "+".join(runtime), data
    return vendor(entry["config"]), data


def _identified(module: str) -> str:
    found, data = blas_of(module)
    hint = (
        ""
        if data["threadpoolctl"]
        else " (threadpoolctl is not installed: install it for a runtime check)"
    )
    assert found, (
        f"could not identify the BLAS {module} uses{hint}. "
        f"Fix: install threadpoolctl; check {module}.show_config()"
    )
    return found


def test_numpy_blas_identified() -> None:
    """numpy's BLAS is identified (threadpoolctl at runtime) and a BLAS matmul is correct.

    Fix: an unidentified BLAS means threadpoolctl is missing or numpy links an unusual
    BLAS; a wrong product means a broken BLAS library — reinstall numpy.
    """
    np = need("numpy")
    _identified("numpy")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((64, 48)), rng.standard_normal((48, 32))
    naive = (a[:, :, None] * b[None, :, :]).sum(axis=1)  # elementwise, no BLAS
    assert np.allclose(a @ b, naive, atol=1e-10), (
        "numpy BLAS matmul disagrees with the elementwise product"
    )


def test_scipy_blas_identified() -> None:
    """scipy's BLAS/LAPACK is identified and dgemm/dgesv give correct results.

    Fix: an error from scipy.linalg.blas/lapack means scipy's bundled OpenBLAS is broken or a
    conda libblas variant mismatches; reinstall scipy from one source.
    """
    np = need("numpy")
    blas = need("scipy.linalg.blas")
    lapack = need("scipy.linalg.lapack")
    _identified("scipy.linalg")
    a = np.array([[3.0, 1.0], [1.0, 2.0]])
    assert np.allclose(blas.dgemm(1.0, a, a), a @ a), "scipy dgemm gave a wrong product"
    _, _, x, info = lapack.dgesv(a, np.array([9.0, 8.0]))
    assert info == 0 and np.allclose(x, [2.0, 3.0]), f"scipy dgesv gave {x} (info {info})"


def test_blas_matches_expectation(expect: Expect) -> None:
    """numpy and scipy use the env's declared BLAS (OpenBLAS, never MKL, in conda envs).

    Fix: MKL in a conda env brings Intel OpenMP (libiomp5), which clashes with torch's
    OpenMP ("OMP: Error #15"); pin libblas=*=*openblas* (and libcblas/liblapack) in the env file.
    """
    wanted = str(expect.get("blas")).lower()
    numpy_blas = _identified("numpy")
    scipy_blas = _identified("scipy.linalg")
    if wanted == "any":
        return
    wrong = {m: v for m, v in (("numpy", numpy_blas), ("scipy", scipy_blas)) if v != wanted}
    assert not wrong, (
        f"expected BLAS {wanted!r} for env {expect.env!r}, found "
        + ", ".join(f"{m} uses {v!r}" for m, v in wrong.items())
        + ". Fix: install numpy/scipy built against the expected BLAS (conda: pin libblas=*=*"
        f"{wanted}*; pip wheels bundle OpenBLAS)."
    )


def test_torch_blas_reported() -> None:
    """torch's own BLAS/LAPACK (reported apart: pip wheels embed MKL) works and agrees with numpy.

    Fix: pip's torch says BLAS_INFO=mkl — that is expected and not subject to the OpenBLAS
    rule; a failure here means torch was built without BLAS/LAPACK (a source build).
    """
    torch = need("torch")
    np = need("numpy")
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=([^,\s]+)", config)
    lapack = "LAPACK is enabled" in config or re.search(r"LAPACK_INFO=\w+", config) is not None
    assert blas, "torch.__config__.show() reports no BLAS_INFO: torch was built without a BLAS"
    assert lapack, f"torch (BLAS_INFO={blas.group(1)}) reports no LAPACK: linalg on CPU will fail"
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((64, 48)), rng.standard_normal((48, 32))
    found = (torch.tensor(a) @ torch.tensor(b)).tolist()
    assert np.allclose(found, a @ b, atol=1e-10), (
        f"torch matmul (BLAS_INFO={blas.group(1)}) disagrees with numpy"
    )
