"""Seed note: NVML via nvidia-ml-py, not the deprecated pynvml package."""

from __future__ import annotations

import warnings
from importlib import metadata

import pytest
from compat_support import need

CATEGORY = "nvml"

FIX = "Fix: pip uninstall pynvml && pip install nvidia-ml-py (the maintained NVIDIA binding)."


def test_pynvml_comes_from_nvidia_ml_py() -> None:
    """`pynvml` comes from nvidia-ml-py only and imports without a deprecation warning.

    Fix: the `pynvml` distribution is a deprecated wrapper that warns on import; remove it
    and install nvidia-ml-py.
    """
    providers = sorted({d.lower() for d in metadata.packages_distributions().get("pynvml", [])})
    assert providers, "no distribution provides the pynvml module. Fix: pip install nvidia-ml-py"
    assert providers == ["nvidia-ml-py"], (
        f"pynvml is provided by {providers}, expected only nvidia-ml-py. {FIX}"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        need("pynvml")
    deprecations = [str(w.message) for w in caught if "deprecat" in str(w.message).lower()]
    assert not deprecations, f"importing pynvml warned: {deprecations[0]}. {FIX}"


def test_nvml_init_fails_cleanly_without_driver() -> None:
    """nvmlInit either works (driver present) or raises a clean NVMLError, never crashes.

    Fix: an AttributeError/ImportError instead of NVMLError means an incompatible pynvml
    shim is shadowing nvidia-ml-py.
    """
    pynvml = need("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        assert str(exc), "NVMLError without a message"
        return
    try:
        assert pynvml.nvmlDeviceGetCount() >= 0
    finally:
        pynvml.nvmlShutdown()


@pytest.mark.gpu
def test_nvml_agrees_with_torch() -> None:
    """NVML sees as many GPUs as torch and reports a driver version.

    Fix: a different count means CUDA_VISIBLE_DEVICES hides GPUs from torch (fine if
    intended) or a container exposes NVML but not the device nodes.
    """
    torch = need("torch")
    pynvml = need("pynvml")
    pynvml.nvmlInit()
    try:
        count = pynvml.nvmlDeviceGetCount()
        driver = pynvml.nvmlSystemGetDriverVersion()
    finally:
        pynvml.nvmlShutdown()
    assert driver, "NVML reports no driver version"
    assert count >= torch.cuda.device_count(), (
        f"NVML sees {count} GPUs, torch {torch.cuda.device_count()}"
    )
