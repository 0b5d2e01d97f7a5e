"""Seed category 3: torchvision + PIL — transforms, image codecs both ways, compiled ops."""

from __future__ import annotations

import io
from types import ModuleType
from typing import Any

import pytest
from compat_support import need

CATEGORY = "torchvision"

PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
# Mean absolute difference allowed per channel value (0-255); PNG and lossless WebP are exact.
LOSSY_TOLERANCE = {"jpeg": 6.0, "png": 0.0, "webp": 0.0}


def _gradient(size: tuple[int, int] = (48, 32)) -> Any:
    image_mod = need("PIL.Image")
    width, height = size
    image = image_mod.new("RGB", size)
    image.putdata(
        [(x * 255 // width, y * 255 // height, 128) for y in range(height) for x in range(width)]
    )
    return image


def _encode(image: Any, fmt: str) -> bytes:
    buffer = io.BytesIO()
    options = {"lossless": True} if fmt == "webp" else {"quality": 95} if fmt == "jpeg" else {}
    image.save(buffer, format=PIL_FORMATS[fmt], **options)
    return buffer.getvalue()


def _mean_abs_diff(torch: ModuleType, a: Any, b: Any) -> float:
    return float((a.to(torch.float64) - b.to(torch.float64)).abs().mean())


def _pil_to_chw(torch: ModuleType, image: Any) -> Any:
    data = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
    return data.reshape(image.height, image.width, 3).permute(2, 0, 1)


def test_to_tensor() -> None:
    """transforms.ToTensor turns a PIL image into a CHW float tensor scaled to [0, 1].

    Fix: a crash here on Windows (0xc0000138) is the conda-Pillow vs pip-torchvision DLL
    clash: remove conda's pillow and pip install Pillow.
    """
    torch = need("torch")
    transforms = need("torchvision.transforms")
    tensor = transforms.ToTensor()(_gradient())
    assert tensor.shape == (3, 32, 48) and tensor.dtype == torch.float32, (
        f"got {tuple(tensor.shape)} {tensor.dtype}"
    )
    assert 0.0 <= float(tensor.min()) and float(tensor.max()) <= 1.0
    assert abs(float(tensor[2, 0, 0]) - 128 / 255) < 1e-6


def test_transforms_v2() -> None:
    """transforms.v2 pipeline (ToImage, ToDtype, Resize, Normalize, flip of boxes) works.

    Fix: AttributeError/ImportError means a torchvision older than 0.16 or one not built for
    this torch; install the torchvision that matches the torch release.
    """
    torch = need("torch")
    v2 = need("torchvision.transforms.v2")
    tv_tensors = need("torchvision.tv_tensors")
    pipeline = v2.Compose(
        [
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Resize((16, 24), antialias=True),
            v2.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]),
        ]
    )
    out = pipeline(_gradient())
    assert tuple(out.shape) == (3, 16, 24), f"v2 pipeline gave shape {tuple(out.shape)}"
    assert -1.0 <= float(out.min()) and float(out.max()) <= 1.0
    boxes = tv_tensors.BoundingBoxes([[0, 0, 10, 10]], format="XYXY", canvas_size=(32, 48))
    _, flipped = v2.RandomHorizontalFlip(p=1.0)(torch.zeros(3, 32, 48), boxes)
    assert flipped.tolist() == [[38, 0, 48, 10]], f"flipped boxes {flipped.tolist()}"


@pytest.mark.parametrize("fmt", list(PIL_FORMATS))
def test_pil_roundtrip(fmt: str) -> None:
    """PIL encodes and decodes JPEG/PNG/WebP and gets the picture back.

    Fix: "encoder/decoder not available" means Pillow was built without that codec (often a
    conda Pillow); install Pillow from pip, which bundles libjpeg/libpng/libwebp.
    """
    torch = need("torch")
    image_mod = need("PIL.Image")
    original = _gradient()
    decoded = image_mod.open(io.BytesIO(_encode(original, fmt)))
    decoded.load()
    assert decoded.size == original.size
    diff = _mean_abs_diff(torch, _pil_to_chw(torch, decoded), _pil_to_chw(torch, original))
    assert diff <= LOSSY_TOLERANCE[fmt], f"{fmt} round trip differs by {diff:.2f} on average"


@pytest.mark.parametrize("fmt", list(PIL_FORMATS))
def test_torchvision_decode(fmt: str) -> None:
    """torchvision.io.decode_image decodes PIL-written JPEG/PNG/WebP like PIL does.

    Fix: "operator torchvision::decode_* does not exist" or a missing libjpeg/libpng means the
    torchvision binary does not match this torch or platform; reinstall the matching build.
    """
    torch = need("torch")
    tvio = need("torchvision.io")
    original = _gradient()
    data = torch.frombuffer(bytearray(_encode(original, fmt)), dtype=torch.uint8)
    decoded = tvio.decode_image(data)
    assert tuple(decoded.shape) == (3, 32, 48), f"decoded shape {tuple(decoded.shape)}"
    diff = _mean_abs_diff(torch, decoded, _pil_to_chw(torch, original))
    assert diff <= LOSSY_TOLERANCE[fmt], (
        f"torchvision decoded {fmt} differs by {diff:.2f} on average"
    )


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_torchvision_encode(fmt: str) -> None:
    """torchvision.io.encode_jpeg/encode_png output is readable by PIL.

    Fix: see the decode check: a torchvision built for another torch/platform cannot load
    its image library; reinstall the matching torchvision.
    """
    torch = need("torch")
    tvio = need("torchvision.io")
    image_mod = need("PIL.Image")
    original = _pil_to_chw(torch, _gradient())
    encoded = tvio.encode_jpeg(original, quality=95) if fmt == "jpeg" else tvio.encode_png(original)
    decoded = image_mod.open(io.BytesIO(bytes(encoded.numpy().tobytes())))
    diff = _mean_abs_diff(torch, _pil_to_chw(torch, decoded), original)
    assert diff <= LOSSY_TOLERANCE[fmt], (
        f"PIL read torchvision's {fmt} with mean difference {diff:.2f}"
    )


def _nms(device: str) -> None:
    torch = need("torch")
    ops = need("torchvision.ops")
    boxes = torch.tensor(
        [[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=torch.float32, device=device
    )
    scores = torch.tensor([0.9, 0.8, 0.7], device=device)
    try:
        keep = ops.nms(boxes, scores, iou_threshold=0.5)
    except RuntimeError as exc:
        pytest.fail(
            f"torchvision.ops.nms failed on {device}: {str(exc).splitlines()[0]}. "
            "Fix: torchvision's compiled ops do not match this torch; "
            "install the torchvision built for it.",
            pytrace=False,
        )
    assert keep.cpu().tolist() == [0, 2], (
        f"nms on {device} kept {keep.cpu().tolist()}, expected [0, 2]"
    )


def test_nms_cpu() -> None:
    """torchvision.ops.nms (a compiled C++ op) loads and is correct on CPU.

    Fix: "operator torchvision::nms does not exist" means torchvision was built for another
    torch version; install the torchvision paired with this torch release.
    """
    _nms("cpu")


@pytest.mark.gpu
def test_nms_gpu() -> None:
    """torchvision.ops.nms runs on the GPU with the same result as on CPU.

    Fix: a CUDA-side failure with CPU working means torchvision's CUDA build differs from
    torch's (e.g. +cu126 torchvision with +cu128 torch); reinstall both from one index.
    """
    _nms("cuda")
