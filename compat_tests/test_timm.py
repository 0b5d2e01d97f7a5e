"""Seed category 5: timm model forward passes (random weights: nothing is downloaded)."""

from __future__ import annotations

from typing import Any

import pytest
from compat_support import need

CATEGORY = "timm"

MODELS = ["resnet18", "vgg19"]
BATCH, CLASSES, SIZE = 2, 10, 64


def _forward(name: str, device: str) -> tuple[Any, Any]:
    torch = need("torch")
    timm = need("timm")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=CLASSES).eval().to(device)
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        out = model(x)
    assert tuple(out.shape) == (BATCH, CLASSES), (
        f"{name} output shape {tuple(out.shape)}, expected {(BATCH, CLASSES)}"
    )
    assert bool(torch.isfinite(out).all()), f"{name} produced non-finite outputs on {device}"
    return model, out.cpu()


@pytest.mark.parametrize("name", MODELS)
def test_forward_cpu(name: str) -> None:
    """timm ResNet-18 / VGG-19 forward on CPU: output shape (2, 10) and finite.

    Fix: "not installed" or a timm error about torch APIs means timm and torch are out of
    step; a timm that pulled its own torch is the CPU-torch trap (torch is a layer).
    """
    _forward(name, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("name", MODELS)
def test_forward_gpu(name: str) -> None:
    """timm ResNet-18 / VGG-19 forward on the GPU matches the CPU forward.

    Fix: "no kernel image is available" means the GPU's arch is missing from the build; a
    numerical mismatch beyond TF32 noise points to a broken cuDNN/cuBLAS install.
    """
    torch = need("torch")
    model, cpu_out = _forward(name, "cpu")
    model = model.cuda()
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).cuda()
    with torch.no_grad():
        gpu_out = model(x).cpu()
    scale = float(cpu_out.abs().max()) or 1.0
    error = float((gpu_out - cpu_out).abs().max()) / scale
    assert error < 1e-2, f"{name} GPU output differs from CPU by {error:.2e} (relative)"
