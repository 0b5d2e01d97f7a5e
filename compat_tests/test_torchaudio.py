"""Seed category 4: torchaudio — MelSpectrogram on CPU and GPU, compiled extension, DSP ops."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import pytest
from compat_support import cuda_int_to_str, need

CATEGORY = "torchaudio"

RATE = 16000


def _sine(torch: ModuleType, freq: float, seconds: float = 1.0) -> Any:
    t = torch.arange(int(RATE * seconds), dtype=torch.float32) / RATE
    return torch.sin(2 * math.pi * freq * t)


def _mel(device: str) -> Any:
    torch = need("torch")
    transforms = need("torchaudio.transforms")
    mel = transforms.MelSpectrogram(sample_rate=RATE, n_fft=400, hop_length=200, n_mels=40).to(
        device
    )
    low = mel(_sine(torch, 440.0).to(device))
    high = mel(_sine(torch, 4000.0).to(device))
    assert tuple(low.shape) == (40, 81), (
        f"MelSpectrogram shape {tuple(low.shape)}, expected (40, 81)"
    )
    assert bool(torch.isfinite(low).all()) and bool((low >= 0).all()), (
        "non-finite or negative mel power"
    )
    low_bin = int(low.mean(dim=1).argmax())
    high_bin = int(high.mean(dim=1).argmax())
    assert low_bin < high_bin, (
        f"440 Hz peaks in mel bin {low_bin}, 4 kHz in {high_bin}: not ordered"
    )
    return low.cpu()


def test_melspectrogram_cpu() -> None:
    """MelSpectrogram of a sine on CPU: right shape, finite, peak in the right mel band.

    Fix: an import error mentioning libtorchaudio/undefined symbol means torchaudio does not
    match torch (same version and CUDA tag required).
    """
    _mel("cpu")


@pytest.mark.gpu
def test_melspectrogram_gpu() -> None:
    """MelSpectrogram on the GPU matches the CPU result.

    Fix: a failure only on GPU points to cuFFT (nvidia-cufft wheel) or a torchaudio built for
    another CUDA; reinstall torch/torchaudio from one index.
    """
    torch = need("torch")
    gpu = _mel("cuda")
    cpu = _mel("cpu")
    assert torch.allclose(gpu, cpu, rtol=1e-3, atol=1e-3), (
        f"GPU mel differs from CPU by up to {float((gpu - cpu).abs().max()):.3e}"
    )


def test_torchaudio_extension_matches_torch() -> None:
    """torchaudio's compiled extension loads and was built for torch's CUDA version.

    Fix: "PyTorch and TorchAudio were compiled with different CUDA versions" means a
    torchaudio from another index/release (e.g. latest torch with an older torchaudio); install
    the torchaudio released with this torch.
    """
    torch = need("torch")
    need("torchaudio")
    try:
        extension = need("torchaudio.lib._torchaudio")
    except pytest.fail.Exception as exc:
        pytest.fail(
            f"torchaudio's compiled extension does not load ({str(exc).split('. Fix')[0]}). Fix: "
            f"install the torchaudio built for torch {torch.__version__}.",
            pytrace=False,
        )
    built = (
        cuda_int_to_str(extension.cuda_version()) if hasattr(extension, "cuda_version") else None
    )
    wanted = ".".join(torch.version.cuda.split(".")[:2]) if torch.version.cuda else None
    assert built == wanted, (
        f"torchaudio was compiled for CUDA {built}, torch for CUDA {wanted}. Fix: install the "
        f"torchaudio from the same index as torch {torch.__version__}."
    )


def test_lfilter_matches_scipy() -> None:
    """torchaudio.functional.lfilter (a compiled op) agrees with scipy.signal.lfilter.

    Fix: wrong values or "operator does not exist" mean torchaudio's ops do not match this
    torch; reinstall the paired torchaudio.
    """
    torch = need("torch")
    functional = need("torchaudio.functional")
    signal = need("scipy.signal")
    x = torch.randn(2000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    b, a = [0.2, 0.3, 0.2], [1.0, -0.5, 0.25]
    found = functional.lfilter(
        x, torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), clamp=False
    )
    wanted = torch.from_numpy(signal.lfilter(b, a, x.numpy()))
    assert torch.allclose(found, wanted, atol=1e-9), (
        f"lfilter differs by {float((found - wanted).abs().max()):.2e}"
    )


def test_resample_keeps_pitch() -> None:
    """torchaudio.functional.resample 16 kHz -> 8 kHz halves the length and keeps a 440 Hz tone.

    Fix: a failure means a broken torchaudio install; reinstall it paired with torch.
    """
    torch = need("torch")
    functional = need("torchaudio.functional")
    out = functional.resample(_sine(torch, 440.0), RATE, RATE // 2)
    assert out.shape[-1] == RATE // 2, f"resampled length {out.shape[-1]}, expected {RATE // 2}"
    spectrum = torch.fft.rfft(out).abs()
    peak_hz = int(spectrum.argmax()) * (RATE // 2) / out.shape[-1]
    assert abs(peak_hz - 440.0) <= 2.0, f"resampled tone peaks at {peak_hz:.1f} Hz, expected 440 Hz"
