"""Seed category 7: torch <-> NumPy round trips on CPU and CUDA, and the NumPy 2 ABI break."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from compat_support import ABI_SIGNATURES, Expect, first_line, need, release

CATEGORY = "numpy-interop"

DTYPES = ["float16", "float32", "float64", "int8", "int32", "int64", "uint8", "bool", "complex64"]
T = TypeVar("T")


def _abi_message(torch: Any, np: Any, detail: str) -> str:
    return (
        f"NumPy ABI break: torch {torch.__version__} cannot use numpy {np.__version__} ({detail}). "
        "torch < 2.4 was compiled against the NumPy 1.x C API and does not work with NumPy 2. "
        "Fix: install torch>=2.4 (NumPy 2 support), or pin numpy<2 for this torch."
    )


def interop(call: Callable[[], T]) -> T:
    """Run a torch<->numpy conversion; name the ABI break if that is why it fails."""
    try:
        return call()
    except (RuntimeError, ImportError, TypeError, ValueError) as exc:
        text = str(exc).lower()
        if any(signature in text for signature in ABI_SIGNATURES):
            pytest.fail(_abi_message(need("torch"), need("numpy"), first_line(exc)), pytrace=False)
        raise


def test_numpy_abi_compatible() -> None:
    """torch and NumPy are ABI compatible: NumPy 2 needs torch >= 2.4.

    Fix: "Numpy is not available" / "_ARRAY_API not found" / "compiled against API version"
    mean a torch < 2.4 next to NumPy 2: install torch>=2.4 or pin numpy<2.
    """
    torch = need("torch")
    np = need("numpy")
    torch_release, numpy_release = release(torch.__version__), release(np.__version__)
    if numpy_release[:1] >= (2,) and torch_release[:2] < (2, 4):
        pytest.fail(_abi_message(torch, np, "NumPy 2 with a torch older than 2.4"), pytrace=False)
    tensor = interop(lambda: torch.from_numpy(np.arange(3.0)))
    assert tensor.tolist() == [0.0, 1.0, 2.0]


def test_from_numpy_shares_memory() -> None:
    """torch.from_numpy on CPU shares memory with the array and keeps the dtype.

    Fix: an error here with NumPy 2 is the torch < 2.4 ABI break (install torch>=2.4 or
    numpy<2); a copy instead of a view means a very old or broken torch.
    """
    torch = need("torch")
    np = need("numpy")
    array = np.arange(6.0).reshape(2, 3)
    tensor = interop(lambda: torch.from_numpy(array))
    array[0, 0] = 42.0
    assert tensor.dtype == torch.float64 and float(tensor[0, 0]) == 42.0, (
        "from_numpy did not share memory"
    )


def test_tensor_numpy_shares_memory() -> None:
    """Tensor.numpy() on CPU returns a view of the tensor's memory.

    Fix: see the ABI check: with NumPy 2 and torch < 2.4, .numpy() raises "Numpy is not available".
    """
    torch = need("torch")
    tensor = torch.zeros(4, dtype=torch.int64)
    array = interop(tensor.numpy)
    tensor[1] = 7
    assert int(array[1]) == 7 and str(array.dtype) == "int64", "Tensor.numpy() did not share memory"


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_roundtrip(dtype: str) -> None:
    """numpy -> torch -> numpy keeps values and dtype for each common dtype.

    Fix: a dtype mismatch or conversion error means torch and NumPy disagree on the C API;
    install a torch built for this NumPy major (torch>=2.4 for NumPy 2).
    """
    torch = need("torch")
    np = need("numpy")
    array = (np.arange(10) % 2).astype(dtype) if dtype == "bool" else np.arange(10).astype(dtype)
    back = interop(lambda: torch.from_numpy(array).clone().numpy())
    assert back.dtype == array.dtype, f"{dtype} came back as {back.dtype}"
    assert np.array_equal(back, array), f"{dtype} values changed in the round trip"


@pytest.mark.gpu
def test_cuda_numpy_roundtrip() -> None:
    """numpy -> CUDA tensor -> compute -> numpy gives the right values.

    Fix: errors here with CPU round trips passing point to the CUDA side (device, driver);
    "can't convert cuda tensor to numpy" means code forgot .cpu().
    """
    torch = need("torch")
    np = need("numpy")
    array = np.linspace(0.0, 1.0, 1000, dtype=np.float32)
    back = interop(lambda: (torch.from_numpy(array).cuda() * 2).cpu().numpy())
    assert np.allclose(back, array * 2), "CUDA round trip changed values"


def test_numpy_major_matches_expectation(expect: Expect) -> None:
    """The installed NumPy major version is the env's declared one (numpy_major).

    Fix: a stack package pinned numpy<2 (or >=2) against the env's intent; find it with
    `pip show`/`uv pip tree --invert numpy` and bump or override it.
    """
    np = need("numpy")
    wanted = int(expect.get("numpy_major"))
    found = release(np.__version__)[0]
    assert found == wanted, (
        f"expected NumPy {wanted}.x for env {expect.env!r}, found numpy {np.__version__}"
    )
