"""Release validation: LAPACK-backed linear algebra on CPU and CUDA.

A source build without LAPACK fails all four CPU checks.
"""

from __future__ import annotations

from typing import Any

import pytest
from compat_support import need

CATEGORY = "linalg"

NO_LAPACK = "requires compiling pytorch with lapack"


def _guard(torch: Any, what: str, call: Any) -> Any:
    try:
        return call()
    except RuntimeError as exc:
        if NO_LAPACK in str(exc).lower():
            pytest.fail(
                f"{what}: torch {torch.__version__} was built without LAPACK. Fix: use a binary "
                "wheel, or rebuild from source with a LAPACK "
                "(e.g. OpenBLAS: USE_LAPACK=1, BLAS=OpenBLAS).",
                pytrace=False,
            )
        raise


def _matrix(torch: Any, device: str) -> Any:
    return torch.randn(32, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(
        device
    )


def _svd(device: str) -> None:
    torch = need("torch")
    a = _matrix(torch, device)
    u, s, vh = _guard(
        torch, f"torch.linalg.svd on {device}", lambda: torch.linalg.svd(a, full_matrices=False)
    )
    assert torch.allclose(u @ torch.diag(s) @ vh, a, atol=1e-10), (
        f"SVD on {device} does not reconstruct A"
    )
    assert bool((s[:-1] >= s[1:]).all()), "singular values not sorted"


def _eigh(device: str) -> None:
    torch = need("torch")
    a = _matrix(torch, device)
    sym = a.T @ a
    values, vectors = _guard(
        torch, f"torch.linalg.eigh on {device}", lambda: torch.linalg.eigh(sym)
    )
    assert torch.allclose(sym @ vectors, vectors * values, atol=1e-8), (
        f"eigh on {device}: A v != lambda v"
    )


def test_svd_cpu() -> None:
    """torch.linalg.svd on CPU reconstructs the matrix (needs LAPACK).

    Fix: "requires compiling PyTorch with LAPACK" means a source build without LAPACK:
    rebuild with USE_LAPACK=1 and OpenBLAS, or use a binary wheel.
    """
    _svd("cpu")


def test_eigh_cpu() -> None:
    """torch.linalg.eigh on CPU satisfies A v = lambda v (needs LAPACK).

    Fix: as for SVD: a torch without LAPACK; this is what breaks covariance
    whitening tests.
    """
    _eigh("cpu")


def test_solve_cholesky_cpu() -> None:
    """torch.linalg.solve and cholesky on CPU give the right answers.

    Fix: see the SVD check: LAPACK missing from the torch build.
    """
    torch = need("torch")
    a = _matrix(torch, "cpu")
    spd = a.T @ a + torch.eye(16, dtype=torch.float64)
    b = torch.arange(16.0, dtype=torch.float64)
    x = _guard(torch, "torch.linalg.solve", lambda: torch.linalg.solve(spd, b))
    assert torch.allclose(spd @ x, b, atol=1e-8)
    low = _guard(torch, "torch.linalg.cholesky", lambda: torch.linalg.cholesky(spd))
    assert torch.allclose(low @ low.T, spd, atol=1e-8)


@pytest.mark.gpu
def test_svd_cuda() -> None:
    """torch.linalg.svd on the GPU (cuSOLVER) reconstructs the matrix.

    Fix: a cuSOLVER error means the nvidia-cusolver wheel does not match torch's CUDA;
    reinstall torch so its pinned nvidia-* wheels are restored.
    """
    _svd("cuda")


@pytest.mark.gpu
def test_eigh_cuda() -> None:
    """torch.linalg.eigh on the GPU satisfies A v = lambda v.

    Fix: as for the GPU SVD: cuSOLVER/cuBLAS libraries mismatched with torch.
    """
    _eigh("cuda")
