"""Media I/O: the first calls an audio, video or vision user makes — load and save a WAV,
decode a video, decode interlaced PNG and JPEG — with what is missing named when they fail."""

from __future__ import annotations

import ctypes
import importlib.util
import io
import math
import struct
import sys
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from compat_support import first_line, need

CATEGORY = "media-io"

RATE = 16000
# FFmpeg majors TorchCodec loads (4 to 8), by their libavutil soname major.
AVUTIL_MAJORS = (56, 57, 58, 59, 60)
FFMPEG_FIX = (
    "FFmpeg's shared libraries are a system dependency, not a wheel: apt-get install ffmpeg "
    "(Debian/Ubuntu), dnf install ffmpeg-free (Fedora), brew install ffmpeg (macOS), or conda "
    "install -c conda-forge 'ffmpeg<8' (a conda env); PyAV's wheels bundle an FFmpeg of their "
    "own, which TorchCodec does not use"
)
# Adam7 interlacing: (x start, y start, x step, y step) of the seven passes.
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
ADAM7 += ((0, 1, 1, 2),)


def ffmpeg_libraries() -> list[str]:
    """The libavutil sonames the dynamic loader finds (TorchCodec dlopens one of them)."""
    if sys.platform == "win32":
        names = [f"avutil-{major}.dll" for major in AVUTIL_MAJORS]
    elif sys.platform == "darwin":
        names = [f"libavutil.{major}.dylib" for major in AVUTIL_MAJORS]
    else:
        names = [f"libavutil.so.{major}" for major in AVUTIL_MAJORS]
    found = []
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        found.append(name)
    return found


def _audio_failure(torchaudio: ModuleType, torch: ModuleType, exc: BaseException) -> str:
    """What broke torchaudio's load/save: TorchCodec missing, FFmpeg missing, or a mismatch."""
    what = f"torchaudio {torchaudio.__version__} cannot save/load a WAV ({first_line(exc)[:300]})"
    if importlib.util.find_spec("torchcodec") is None:
        return (
            f"{what}: since 2.9 torchaudio reads and writes audio only through TorchCodec, "
            "which is not installed. Fix: add torchcodec (the release paired with torch "
            f"{torch.__version__}) to the env, and FFmpeg: {FFMPEG_FIX}."
        )
    libraries = ffmpeg_libraries()
    if not libraries:
        looked = f"libavutil major {AVUTIL_MAJORS[0]}-{AVUTIL_MAJORS[-1]}"
        return (
            f"{what}: TorchCodec is installed but finds no FFmpeg shared library ({looked}, "
            f"on the loader's path). Fix: {FFMPEG_FIX}."
        )
    return (
        f"{what}: FFmpeg is present ({', '.join(libraries)}), so TorchCodec itself does not load. "
        f"Fix: install the torchcodec release paired with torch {torch.__version__} "
        "(one built for another torch fails like this)."
    )


def _sine(torch: ModuleType, freq: float, rate: int = RATE) -> Any:
    t = torch.arange(rate, dtype=torch.float32) / rate
    return (0.5 * torch.sin(2 * math.pi * freq * t)).unsqueeze(0)


def _peak_hz(torch: ModuleType, wave: Any, rate: int) -> float:
    spectrum = torch.fft.rfft(wave[0]).abs()
    return int(spectrum.argmax()) * rate / wave.shape[-1]


def test_audio_wav_roundtrip_and_resample(tmp_path: Path) -> None:
    """torchaudio saves a WAV and loads it back unchanged, and resampling it keeps the pitch.

    Fix: torchaudio >= 2.9 loads and saves through TorchCodec, which needs FFmpeg's shared
    libraries (4 to 8) on the library path: add torchcodec (the release paired with torch) to
    the env and install FFmpeg (apt-get install ffmpeg, brew install ffmpeg, or conda's ffmpeg).
    """
    torch = need("torch")
    torchaudio = need("torchaudio")
    functional = need("torchaudio.functional")
    wave = _sine(torch, 440.0)
    path = tmp_path / "tone.wav"
    try:
        torchaudio.save(str(path), wave, RATE)
        loaded, rate = torchaudio.load(str(path))
    except Exception as exc:  # noqa: BLE001 - why audio I/O fails is the finding
        pytest.fail(_audio_failure(torchaudio, torch, exc), pytrace=False)
    assert rate == RATE and tuple(loaded.shape) == (1, RATE), (
        f"loaded {tuple(loaded.shape)} at {rate} Hz, saved (1, {RATE}) at {RATE} Hz"
    )
    error = float((loaded.float() - wave).abs().max())
    assert error <= 1e-3, f"the WAV round trip changed samples by up to {error:.2e}"
    resampled = functional.resample(loaded.float(), RATE, RATE // 2)
    peak = _peak_hz(torch, resampled, RATE // 2)
    assert resampled.shape[-1] == RATE // 2 and abs(peak - 440.0) <= 2.0, (
        f"resampled to {resampled.shape[-1]} samples peaking at {peak:.1f} Hz, "
        f"expected {RATE // 2} samples at 440 Hz"
    )


FRAMES, WIDTH, HEIGHT = 12, 64, 48


def _colour(i: int) -> tuple[int, int, int]:
    return (20 * i, 255 - 20 * i, 128)


def _write_clip(av: ModuleType, path: Path) -> None:
    """A short MPEG-4 clip of flat frames, each its own colour (encoders in every FFmpeg)."""
    numpy = need("numpy")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"qscale": "2"}  # near-lossless: flat colours survive within a few levels
        for i in range(FRAMES):
            frame = numpy.empty((HEIGHT, WIDTH, 3), numpy.uint8)
            frame[...] = _colour(i)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_decode_generated_clip(tmp_path: Path) -> None:
    """A generated clip decodes with torchvision.io.read_video: frame count, size, colours right.

    Fix: "PyAV is not installed" means the av package is missing: add av to the stack (its
    wheels bundle FFmpeg, so no system library is needed); wrong frames mean a broken av build.
    """
    torch = need("torch")
    io_mod = need("torchvision.io")
    av = need("av")
    path = tmp_path / "clip.mp4"
    _write_clip(av, path)
    try:
        frames, _, info = io_mod.read_video(str(path), pts_unit="sec", output_format="THWC")
    except Exception as exc:  # noqa: BLE001 - the decoder's error is the finding
        pytest.fail(
            f"torchvision.io.read_video failed: {first_line(exc)}. Fix: install av (PyAV) in "
            "this env; torchvision decodes video through it.",
            pytrace=False,
        )
    assert tuple(frames.shape) == (FRAMES, HEIGHT, WIDTH, 3), (
        f"decoded {tuple(frames.shape)}, expected {(FRAMES, HEIGHT, WIDTH, 3)} ({info})"
    )
    means = frames.to(torch.float32).mean(dim=(1, 2))
    wanted = torch.tensor([_colour(i) for i in range(FRAMES)], dtype=torch.float32)
    error = float((means - wanted).abs().max())
    assert error <= 12.0, f"decoded frame colours differ by up to {error:.1f} levels"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def interlaced_png(pixels: list[list[tuple[int, int, int]]]) -> bytes:
    """An 8-bit RGB PNG with Adam7 interlacing (Pillow only writes non-interlaced PNGs)."""
    height, width = len(pixels), len(pixels[0])
    raw = bytearray()
    for x0, y0, dx, dy in ADAM7:
        columns = range(x0, width, dx)
        if not columns:
            continue
        for y in range(y0, height, dy):
            raw.append(0)  # filter type None
            for x in columns:
                raw.extend(pixels[y][x])
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(bytes(raw)))
        + _png_chunk(b"IEND", b"")
    )


def test_png_interlaced_decode() -> None:
    """An Adam7-interlaced PNG decodes pixel-exact with torchvision.io.decode_png and Pillow.

    Fix: a failure means a libpng without interlace support or a broken torchvision image
    extension ("operator image::decode_png does not exist"): reinstall torchvision from torch's
    index.
    """
    torch = need("torch")
    io_mod = need("torchvision.io")
    image_mod = need("PIL.Image")
    width, height = 19, 13  # not multiples of 8: every Adam7 pass has a partial block
    pixels = [
        [((x * 13 + y) % 256, (y * 17) % 256, (x * y) % 256) for x in range(width)]
        for y in range(height)
    ]
    data = interlaced_png(pixels)
    wanted = torch.tensor(pixels, dtype=torch.uint8).permute(2, 0, 1)
    decoded = io_mod.decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    assert tuple(decoded.shape) == (3, height, width) and torch.equal(decoded, wanted), (
        "torchvision decoded the interlaced PNG wrongly"
    )
    with image_mod.open(io.BytesIO(data)) as image:
        assert image.info.get("interlace") == 1 and image.convert("RGB").tobytes() == bytes(
            channel for row in pixels for pixel in row for channel in pixel
        ), "Pillow decoded the interlaced PNG wrongly"


def test_jpeg_decode_libjpeg_turbo() -> None:
    """torchvision's JPEG codec is libjpeg-turbo, and a Pillow JPEG decodes to Pillow's pixels.

    Fix: "not compiled against libjpeg-turbo" means a torchvision from another channel (a
    conda or source build): install torchvision from torch's index, whose wheels bundle turbo.
    """
    torch = need("torch")
    io_mod = need("torchvision.io")
    image_mod = need("PIL.Image")
    image_ops = torch.ops.image
    if hasattr(image_ops, "_is_compiled_against_turbo"):
        assert image_ops._is_compiled_against_turbo(), (
            f"torchvision's JPEG library is not libjpeg-turbo (libjpeg API "
            f"{image_ops._jpeg_version()})"
        )
    image = image_mod.new("RGB", (40, 24))
    image.putdata([(x * 6, y * 10, (x + y) * 4) for y in range(24) for x in range(40)])
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    data = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
    decoded = io_mod.decode_jpeg(data)
    with image_mod.open(io.BytesIO(buffer.getvalue())) as back:
        reference = torch.frombuffer(bytearray(back.convert("RGB").tobytes()), dtype=torch.uint8)
    reference = reference.reshape(24, 40, 3).permute(2, 0, 1)
    difference = float((decoded.float() - reference.float()).abs().mean())
    assert tuple(decoded.shape) == (3, 24, 40) and difference <= 2.0, (
        f"decode_jpeg gave {tuple(decoded.shape)}, {difference:.2f} levels from Pillow's decode"
    )
    again = io_mod.decode_jpeg(io_mod.encode_jpeg(decoded, quality=95))
    assert float((again.float() - decoded.float()).abs().mean()) <= 3.0, (
        "encode_jpeg -> decode_jpeg does not round-trip"
    )


@pytest.mark.gpu
def test_jpeg_decode_on_gpu() -> None:
    """torchvision.io.decode_jpeg on the GPU (nvJPEG) gives the CPU decoder's image.

    Fix: an error naming nvjpeg means the nvidia-nvjpeg library torchvision needs is missing or
    of another CUDA: install torchvision from torch's index, with torch's pinned CUDA wheels.
    """
    torch = need("torch")
    io_mod = need("torchvision.io")
    image = torch.randint(0, 256, (3, 32, 48), dtype=torch.uint8)
    data = io_mod.encode_jpeg(image, quality=95)
    cpu = io_mod.decode_jpeg(data)
    gpu = io_mod.decode_jpeg(data, device="cuda").cpu()
    difference = float((gpu.float() - cpu.float()).abs().mean())
    assert tuple(gpu.shape) == tuple(cpu.shape) and difference <= 2.0, (
        f"nvJPEG decoded {tuple(gpu.shape)}, {difference:.2f} levels from the CPU decoder"
    )
