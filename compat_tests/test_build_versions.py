"""Release validation: the installed builds are the declared ones and fit together."""

from __future__ import annotations

import datetime as dt
import re
import sys

import pytest
from compat_support import (
    Expect,
    cuda_int_to_str,
    dev_date,
    distributions,
    local_tag,
    need,
    release,
    version_matches,
)

CATEGORY = "build-versions"

DEFAULT_NIGHTLY_AGE = 3


def test_torch_version_matches_expectation(expect: Expect) -> None:
    """torch's version is the declared one (exact, or a pattern such as 2.12.*).

    Fix: another torch replaced the locked one — typically a stack package resolved torch
    from PyPI (a later poetry/pip install clobbering it); rebuild with torch as a constraint.
    """
    wanted = str(expect.get("torch_version"))
    torch = need("torch")
    assert version_matches(torch.__version__, wanted), (
        f"expected torch {wanted} for env {expect.env!r}, found {torch.__version__}. "
        "Fix: reinstall the locked torch from the env's torch index "
        "and find which package replaced it."
    )


def test_torch_local_tag_matches_expectation(expect: Expect) -> None:
    """torch's local tag (+cu128, +cpu) is the declared build; untagged PyPI: inferred from CUDA.

    Fix: a +cpu torch where a CUDA one was expected is the Windows/PyPI trap (PyPI serves CPU
    wheels there): install torch from the CUDA index, never via --extra-index-url.
    """
    wanted = str(expect.get("torch_local"))
    torch = need("torch")
    found = local_tag(torch.__version__)
    if found is None:
        # PyPI's Linux wheels carry no tag; infer it from the build.
        cuda = torch.version.cuda
        found = "cpu" if cuda is None else "cu" + "".join(cuda.split(".")[:2])
    assert found == wanted, (
        f"expected a +{wanted} torch build for env {expect.env!r}, found {torch.__version__} "
        f"(build {found}). Fix: install torch from the {wanted} index."
    )


def test_cudnn_runtime_matches_compile() -> None:
    """The cuDNN loaded at runtime has the major version torch was compiled with, and is not older.

    Fix: an older or other-major cuDNN on the library path (conda cudnn, system libcudnn)
    shadows the nvidia-cudnn wheel; remove it or fix LD_LIBRARY_PATH.
    """
    torch = need("torch")
    if torch.version.cuda is None:
        assert not torch.backends.cudnn.is_available(), "a CPU build reports cuDNN available"
        return
    assert torch.backends.cudnn.is_available(), (
        f"torch {torch.__version__} was built with CUDA {torch.version.cuda} "
        "but cuDNN does not load. "
        "Fix: install the nvidia-cudnn wheel torch pins (reinstall torch)."
    )
    cudnn = torch._C._cudnn
    compiled, runtime = tuple(cudnn.getCompileVersion()), tuple(cudnn.getRuntimeVersion())
    assert runtime[0] == compiled[0] and runtime >= compiled, (
        f"cuDNN runtime {'.'.join(map(str, runtime))} vs compiled {'.'.join(map(str, compiled))}: "
        "the runtime must be the same major and not older. Fix: install the cuDNN torch pins."
    )


def _pip_dist(prefix: str) -> tuple[str, str] | None:
    for name, version in sorted(distributions().items()):
        if re.fullmatch(rf"{prefix}(-cu\d+)?", name):
            return name, version
    return None


def test_pip_cudnn_matches_torch() -> None:
    """The pip nvidia-cudnn wheel matches the cuDNN torch reports (torch.backends.cudnn.version()).

    Fix: a different nvidia-cudnn was installed over torch's pin (another package's
    requirement); reinstall torch's pinned nvidia-cudnn version.
    """
    torch = need("torch")
    dist = _pip_dist("nvidia-cudnn")
    if torch.version.cuda is None:
        assert dist is None, f"torch is a CPU build but {dist} is installed. Fix: uninstall it"
        return
    if dist is None:
        pytest.skip(
            "no pip nvidia-cudnn wheel: cuDNN comes from conda or the system, "
            "checked by the runtime check"
        )
    number = torch.backends.cudnn.version()
    assert number is not None, f"{dist[0]} {dist[1]} is installed but torch loads no cuDNN"
    reported = (
        f"{number // 10000}.{number // 100 % 100}.{number % 100}"
        if number >= 90000
        else f"{number // 1000}.{number // 100 % 10}.{number % 100}"
    )
    assert dist[1].startswith(reported + ".") or dist[1] == reported, (
        f"pip {dist[0]} is {dist[1]} but torch uses cuDNN {reported}. "
        f"Fix: reinstall {dist[0]} at the version torch pins."
    )


def test_pip_nccl_matches_torch() -> None:
    """The pip nvidia-nccl wheel's version is the NCCL torch reports (torch.cuda.nccl.version()).

    Fix: a mismatched NCCL breaks multi-GPU (DDP) with symbol or protocol errors; reinstall
    the nvidia-nccl version torch pins.
    """
    torch = need("torch")
    dist = _pip_dist("nvidia-nccl")
    if torch.version.cuda is None:
        assert dist is None, f"torch is a CPU build but {dist} is installed. Fix: uninstall it"
        return
    if sys.platform != "linux":
        pytest.skip(f"torch has no NCCL on {sys.platform}")
    if dist is None:
        pytest.skip("no pip nvidia-nccl wheel: NCCL is statically linked or from the system")
    reported = ".".join(map(str, torch.cuda.nccl.version()))
    assert release(dist[1])[:3] == release(reported)[:3], (
        f"pip {dist[0]} is {dist[1]} but torch reports NCCL {reported}. "
        f"Fix: reinstall {dist[0]}=={reported}."
    )


def test_nightly_freshness(expect: Expect) -> None:
    """A nightly env runs a .devYYYYMMDD build at most N days old; a release env runs no dev build.

    Fix: an old nightly means the index serves stale wheels (upstream stopped publishing that
    CUDA variant?); move the nightly lane to a CUDA upstream still builds. Reinstall with
    --pre --force-reinstall --index-url <nightly>.
    """
    torch = need("torch")
    if not expect.declared:
        pytest.skip("no expectation declared (run with --compat-expect to check this)")
    max_age = expect.raw("nightly_max_age_days")
    date = dev_date(torch.__version__)
    if max_age is None:
        assert date is None, (
            f"env {expect.env!r} is a release env but torch {torch.__version__} is a nightly. "
            "Fix: install the release torch; keep --pre for the nightly lane only."
        )
        return
    assert date is not None, (
        f"env {expect.env!r} expects a nightly (.devYYYYMMDD) "
        f"but found torch {torch.__version__}. "
        "Fix: pip install --pre --force-reinstall torch --index-url <nightly index> "
        "as the last step."
    )
    built = dt.datetime.strptime(date, "%Y%m%d").date()
    age = (dt.date.today() - built).days
    assert age <= int(max_age), (
        f"torch nightly {torch.__version__} is {age} days old (max {max_age}): "
        "the index serves stale wheels. "
        "Fix: check the nightly index still publishes this CUDA variant."
    )


def _family(expect: Expect) -> None:
    if expect.declared and expect.raw("torch_family_match") is False:
        pytest.skip(f"env {expect.env!r} declares torch_family_match: false")


def test_torchvision_matches_torch(expect: Expect) -> None:
    """torchvision is the release paired with torch (0.(minor+15)), same CUDA, and its ops load.

    Fix: "operator torchvision::nms does not exist" or a CUDA mismatch means torchvision came
    from another index/release; install torchvision from torch's index, in the same command.
    """
    _family(expect)
    torch = need("torch")
    torchvision = need("torchvision")
    t, v = release(torch.__version__), release(torchvision.__version__)
    assert t[0] == 2 and v[:2] == (0, t[1] + 15), (
        f"torchvision {torchvision.__version__} is not the release for torch {torch.__version__} "
        f"(expected 0.{t[1] + 15}.x). Fix: install torchvision==0.{t[1] + 15}.* with torch."
    )
    built = cuda_int_to_str(getattr(torchvision.version, "cuda", None))
    wanted = ".".join(torch.version.cuda.split(".")[:2]) if torch.version.cuda else None
    assert built == wanted, f"torchvision built for CUDA {built}, torch for CUDA {wanted}"


def test_torchaudio_matches_torch(expect: Expect) -> None:
    """torchaudio has torch's release version and imports (its CUDA check runs at import).

    Fix: "PyTorch and TorchAudio were compiled with different CUDA versions" — the latest
    lane's classic break (torchaudio lagging torch); pin torchaudio to torch's release.
    """
    _family(expect)
    torch = need("torch")
    torchaudio = need("torchaudio")
    t, a = release(torch.__version__), release(torchaudio.__version__)
    assert t[:2] == a[:2], (
        f"torchaudio {torchaudio.__version__} does not match torch {torch.__version__}. "
        f"Fix: install torchaudio=={t[0]}.{t[1]}.* with torch (or drop torchaudio from this env)."
    )
    tags = local_tag(torch.__version__), local_tag(torchaudio.__version__)
    assert tags[0] == tags[1] or None in tags, f"torch is +{tags[0]} but torchaudio is +{tags[1]}"
