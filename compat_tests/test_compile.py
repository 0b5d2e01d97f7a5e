"""Seed category 11: torch.compile smoke — compiled equals eager."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from typing import Any

import pytest
from compat_support import need

CATEGORY = "compile"


def _fn(torch: Any) -> Any:
    def f(x: Any) -> Any:
        return torch.sin(x) * 2.0 + torch.relu(x - 0.5).pow(2)

    return f


def _compare(backend: str, device: str) -> None:
    torch = need("torch")
    need("torch._dynamo").reset()
    f = _fn(torch)
    x = torch.randn(257, generator=torch.Generator().manual_seed(0)).to(device)
    eager = f(x)
    try:
        compiled = torch.compile(f, backend=backend, fullgraph=True)(x)
    except Exception as exc:  # noqa: BLE001 - the compile error is the finding
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        pytest.fail(
            f"torch.compile(backend={backend!r}) on {device} failed: {type(exc).__name__}: "
            f"{lines[0] if lines else ''}",
            pytrace=False,
        )
    assert torch.allclose(compiled, eager, rtol=1e-5, atol=1e-5), (
        f"compiled ({backend}, {device}) differs from eager "
        f"by {float((compiled - eager).abs().max()):.2e}"
    )


def test_dynamo_capture_aot_eager() -> None:
    """Dynamo captures a function as one graph (aot_eager: no compiler needed) and matches eager.

    Fix: a failure here is torch itself (no toolchain involved): a broken or mismatched
    torch install, or a Python version newer than this torch supports for Dynamo.
    """
    _compare("aot_eager", "cpu")


def test_inductor_cpu() -> None:
    """torch.compile with the default inductor backend on CPU (generated C++) matches eager.

    Fix: inductor's CPU path needs a C++ compiler (skipped without one) and setuptools
    (torch.utils.cpp_extension imports it; torch only declares it for Python >= 3.12): add
    setuptools to the env's stack.
    """
    if sys.platform == "win32":
        pytest.skip("inductor's CPU backend needs MSVC on Windows; not checked here")
    compilers = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
    if not any(c and shutil.which(c) for c in compilers):
        pytest.skip(
            "no C++ compiler on PATH (g++/c++/clang++): inductor's CPU backend compiles C++ kernels"
        )
    if importlib.util.find_spec("setuptools") is None:
        pytest.fail(
            "setuptools is not installed, so inductor cannot build CPU kernels "
            "(torch.utils.cpp_extension imports setuptools; "
            "torch declares it only for Python >= 3.12; "
            "uv venvs do not seed it). Fix: add setuptools to the env's stack.",
            pytrace=False,
        )
    _compare("inductor", "cpu")


@pytest.mark.gpu
def test_inductor_gpu() -> None:
    """torch.compile with inductor on the GPU (Triton kernels) matches eager.

    Fix: an expected skip: Triton ships only with Linux CUDA wheels (Windows needs
    triton-windows); a Triton version not matching torch fails here — reinstall torch's pin.
    """
    if importlib.util.find_spec("triton") is None:
        pytest.skip(
            "Triton is not installed: inductor cannot generate GPU kernels on this platform"
        )
    _compare("inductor", "cuda")
