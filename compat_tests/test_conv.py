"""Release validation: conv2d in fp16/fp32/fp64 and under autocast, CPU and GPU."""

from __future__ import annotations

from typing import Any

import pytest
from compat_support import need

CATEGORY = "conv"

TOLERANCE = {"float16": 1e-2, "bfloat16": 5e-2, "float32": 1e-4, "float64": 1e-10}


def _inputs(torch: Any) -> tuple[Any, Any, Any]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 16, 16, generator=generator, dtype=torch.float64)
    w = torch.randn(12, 8, 3, 3, generator=generator, dtype=torch.float64) / 8
    b = torch.randn(12, generator=generator, dtype=torch.float64)
    return x, w, b


def _reference(torch: Any, x: Any, w: Any, b: Any) -> Any:
    """conv2d as unfold + matmul in float64: independent of the conv kernels under test."""
    functional = torch.nn.functional
    cols = functional.unfold(x, kernel_size=3, padding=1)  # (N, C*9, L)
    out = (w.reshape(12, -1) @ cols) + b[:, None]
    return out.reshape(2, 12, 16, 16)


def _check(dtype: str, device: str, autocast: str | None = None) -> None:
    torch = need("torch")
    x, w, b = _inputs(torch)
    wanted = _reference(torch, x, w, b)
    kind = getattr(torch, dtype)
    xs, ws, bs = (t.to(device=device, dtype=kind) for t in (x, w, b))
    if autocast:
        with torch.autocast(device_type=device, dtype=getattr(torch, autocast)):
            out = torch.nn.functional.conv2d(xs, ws, bs, padding=1)
        assert out.dtype == getattr(torch, autocast), (
            f"autocast({autocast}) conv2d returned {out.dtype}"
        )
        tolerance = TOLERANCE[autocast]
    else:
        out = torch.nn.functional.conv2d(xs, ws, bs, padding=1)
        assert out.dtype == kind
        tolerance = TOLERANCE[dtype]
    error = float((out.double().cpu() - wanted).abs().max() / wanted.abs().max())
    assert error <= tolerance, (
        f"conv2d {autocast or dtype} on {device}: relative error {error:.2e} > {tolerance:.0e}"
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv2d_cpu(dtype: str) -> None:
    """conv2d on CPU (oneDNN/native) in fp32 and fp64 matches an unfold+matmul reference.

    Fix: wrong results on CPU point at a CPU ISA problem in oneDNN (try ONEDNN_MAX_CPU_ISA)
    or a torch built for a newer CPU than this one.
    """
    _check(dtype, "cpu")


def test_autocast_cpu_bf16() -> None:
    """conv2d under torch.autocast('cpu', bfloat16) runs in bf16 and stays close to the reference.

    Fix: a dtype other than bf16 means autocast is not applied for CPU in this torch version.
    """
    _check("float32", "cpu", autocast="bfloat16")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_conv2d_gpu(dtype: str) -> None:
    """conv2d on the GPU (cuDNN) in fp16/fp32/fp64 matches the float64 reference.

    Fix: CUDNN_STATUS_* errors mean the cuDNN runtime does not fit torch (see the cuDNN
    checks); fp32 errors around 1e-3 mean TF32 is enabled (torch.backends.cudnn.allow_tf32).
    """
    torch = need("torch")
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        _check(dtype, "cuda")
    finally:
        torch.backends.cudnn.allow_tf32 = previous


@pytest.mark.gpu
def test_autocast_cuda_fp16() -> None:
    """conv2d under torch.autocast('cuda', float16) returns fp16 close to the reference.

    Fix: see the GPU conv check; a non-fp16 output means autocast did not engage.
    """
    _check("float32", "cuda", autocast="float16")
