"""Seed category 11: torch.compile smoke — compiled equals eager, in fp32, fp16 and bf16 on CPU,
with a vector ISA detected, and max-autotune on the GPU."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from compat_support import need

CATEGORY = "compile"


def _fn(torch: Any) -> Any:
    def f(x: Any) -> Any:
        return torch.sin(x) * 2.0 + torch.relu(x - 0.5).pow(2)

    return f


# Agreement of compiled and eager results per dtype: inductor fuses and rounds once where eager
# rounds after every op, so low-precision results differ by a few units in the last place.
TOLERANCE = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 5e-2}


def _compile_failed(what: str, exc: BaseException) -> None:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    pytest.fail(
        f"torch.compile({what}) failed: {type(exc).__name__}: {lines[0] if lines else ''}",
        pytrace=False,
    )


def _compare(backend: str, device: str, dtype: str = "float32") -> None:
    torch = need("torch")
    need("torch._dynamo").reset()
    f = _fn(torch)
    x = torch.randn(257, generator=torch.Generator().manual_seed(0))
    x = x.to(device=device, dtype=getattr(torch, dtype))
    eager = f(x)
    try:
        compiled = torch.compile(f, backend=backend, fullgraph=True)(x)
    except Exception as exc:  # noqa: BLE001 - the compile error is the finding
        _compile_failed(f"backend={backend!r}) on {device} in {dtype}", exc)
    tolerance = TOLERANCE[dtype]
    assert compiled.dtype == eager.dtype and torch.allclose(
        compiled, eager, rtol=tolerance, atol=tolerance
    ), (
        f"compiled ({backend}, {device}, {dtype}) differs from eager "
        f"by {float((compiled.float() - eager.float()).abs().max()):.2e}"
    )


def _inductor_cpu_ready() -> None:
    """Skip without a C++ compiler; fail naming what else inductor's CPU backend lacks."""
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
    # the kernels include Python.h from here; a Python without its headers fails the compile
    # (on macOS torch falls back to a framework's Headers folder, so only Linux is checked)
    headers = Path(sysconfig.get_path("include")) / "Python.h"
    if sys.platform == "linux" and not headers.is_file():
        pytest.fail(
            f"{headers} does not exist: this interpreter has no C headers, so inductor cannot "
            "build CPU kernels. Fix: install the interpreter's headers (python3.X-dev) or "
            "use a Python that ships them (conda's, uv's, pyenv's).",
            pytrace=False,
        )


def test_dynamo_capture_aot_eager() -> None:
    """Dynamo captures a function as one graph (aot_eager: no compiler needed) and matches eager.

    Fix: a failure here is torch itself (no toolchain involved): a broken or mismatched
    torch install, or a Python version newer than this torch supports for Dynamo.
    """
    _compare("aot_eager", "cpu")


def test_inductor_cpu() -> None:
    """torch.compile with the default inductor backend on CPU (generated C++) matches eager.

    Fix: inductor's CPU path needs a C++ compiler (skipped without one), the interpreter's C
    headers (Python.h: install python3.X-dev, or use a Python that ships them) and setuptools
    (torch.utils.cpp_extension imports it; torch only declares it for Python >= 3.12): add
    setuptools to the env's stack.
    """
    _inductor_cpu_ready()
    _compare("inductor", "cpu")


# Beside inductor's cache: the ISA this env's earlier run verified by building its test kernels.
ISA_VERDICT = "envlab-vec-isa.json"


def compiler_identity() -> str | None:
    """The C++ compiler inductor builds with, as a path and its size and mtime (None: none)."""
    found = shutil.which(os.environ.get("CXX") or "g++") or shutil.which("c++")
    if found is None:
        return None
    real = Path(found).resolve()
    stat = real.stat()
    return f"{real}:{stat.st_size}:{stat.st_mtime_ns}"


def _isa_verdict() -> Path | None:
    """Where a vector ISA verdict is kept: beside inductor's cache (an env's own, under envlab)."""
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    return Path(cache) / ISA_VERDICT if cache else None


# What inductor's ISA build checks answered in this process ("class|flags|code" -> built and
# loaded), saved in the verdict for the next run in the same env to replay.
BUILDS: dict[str, bool] = {}


def _build_key(isa: Any, code: str) -> str:
    digest = hashlib.sha256(code.encode()).hexdigest()[:16]
    return f"{type(isa).__name__}|{getattr(isa, '_arch_flags', '')}|{digest}"


def _recorded_builds() -> dict[str, bool] | None:
    """The build checks of an earlier run of this unchanged env (envlab says so by setting
    TORCHINDUCTOR_VEC_ISA_OK=1 only where the compiler is the one it ran with), else None."""
    verdict = _isa_verdict()
    if os.environ.get("TORCHINDUCTOR_VEC_ISA_OK") != "1" or verdict is None:
        return None
    try:
        builds = json.loads(verdict.read_text(encoding="utf-8")).get("builds")
    except (OSError, ValueError, AttributeError):
        return None
    return builds if isinstance(builds, dict) else None


@pytest.fixture(autouse=True, scope="module")
def _isa_build_checks() -> Any:
    """Record inductor's ISA build checks, or replay an earlier run's in an unchanged env.

    TORCHINDUCTOR_VEC_ISA_OK only covers the base check of each ISA: the AVX-512 bf16, VNNI and
    AMX checks each still build a kernel and load it in a new interpreter that imports torch
    (seconds apiece). A check the earlier run did not make is made for real.
    """
    if importlib.util.find_spec("torch") is None:
        yield
        return
    try:
        from torch._inductor import cpu_vec_isa
    except ImportError:  # torch < 2.4: no separate module; its checks run as they are
        yield
        return
    vec_isa = getattr(cpu_vec_isa, "VecISA", None)
    original = getattr(vec_isa, "check_build", None)
    if vec_isa is None or original is None:
        yield
        return
    recorded = _recorded_builds() or {}

    def check_build(self: Any, code: str) -> bool:
        key = _build_key(self, code)
        if key not in recorded:
            recorded[key] = bool(original(self, code))
        BUILDS[key] = recorded[key]
        return recorded[key]

    vec_isa.check_build = check_build
    try:
        yield
    finally:
        vec_isa.check_build = original


def test_cpu_vector_isa_detected() -> None:
    """inductor detects a vector ISA for this CPU (AVX2/AVX-512, NEON/SVE) and can build for it.

    Fix: no ISA makes inductor's CPU kernels scalar (slow): the C++ compiler cannot build or load
    a test kernel for the CPU's ISA (a compiler too old for the flags, or a CPU without AVX2).
    """
    torch = need("torch")
    _inductor_cpu_ready()
    try:
        from torch._inductor.cpu_vec_isa import pick_vec_isa, valid_vec_isa_list
    except ImportError:  # torch < 2.4 kept it in codecache
        from torch._inductor.codecache import pick_vec_isa, valid_vec_isa_list  # type: ignore
    verdict = _isa_verdict()
    # envlab sets TORCHINDUCTOR_VEC_ISA_OK=1 when an earlier run in this unchanged env, with this
    # same compiler, built and loaded the ISA's test kernel (recorded below): torch then trusts
    # the CPU's flags instead of building six test kernels, each in a new interpreter, again
    trusted = os.environ.get("TORCHINDUCTOR_VEC_ISA_OK") == "1"
    isa = pick_vec_isa()
    assert isa, (
        f"inductor found no usable vector ISA on this {os.uname().machine} CPU "
        f"(torch {torch.__version__}; candidates that built: {valid_vec_isa_list() or 'none'})"
    )
    recorded = {}
    if trusted and verdict is not None and verdict.is_file():
        recorded = json.loads(verdict.read_text(encoding="utf-8"))
        assert recorded.get("isa") == str(isa), (
            f"inductor picks {isa} but the build check of an earlier run found {recorded}"
        )
    record = {
        "isa": str(isa),
        "compiler": compiler_identity(),
        "torch": torch.__version__,
        "builds": recorded.get("builds", {}) | BUILDS,
    }
    if verdict is not None and record != recorded:
        verdict.parent.mkdir(parents=True, exist_ok=True)
        partial = verdict.with_name(f"{verdict.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(record), encoding="utf-8")
        os.replace(partial, verdict)  # a run stopped mid-write leaves the old verdict whole


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_inductor_cpu_low_precision(dtype: str) -> None:
    """torch.compile (inductor, CPU) in fp16 and bf16 matches eager within the dtype's precision.

    Fix: a C++ compile error here and none in fp32 means the compiler lacks the CPU's fp16/bf16
    intrinsics (an old GCC): use GCC >= 11 or clang; wrong values point at the vectorized kernel
    inductor generated for this CPU's ISA (see the vector ISA check): report it upstream.
    """
    _inductor_cpu_ready()
    _compare("inductor", "cpu", dtype)


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


@pytest.mark.gpu
def test_inductor_gpu_max_autotune() -> None:
    """torch.compile(mode="max-autotune") of a small conv net on the GPU matches eager.

    Fix: autotuning benchmarks Triton and cuBLAS kernels; a failure means Triton cannot compile
    for this GPU (a Triton not matching torch's pin, or a GPU the Triton release does not support).
    """
    if importlib.util.find_spec("triton") is None:
        pytest.skip("Triton is not installed: inductor cannot generate GPU kernels here")
    torch = need("torch")
    need("torch._dynamo").reset()
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 4))
    model = model.cuda().eval()
    x = torch.rand(16, 1, 28, 28, device="cuda")
    with torch.no_grad():
        eager = model(x)
        try:
            compiled = torch.compile(model, mode="max-autotune")(x)
        except Exception as exc:  # noqa: BLE001 - the compile error is the finding
            _compile_failed('mode="max-autotune") on cuda', exc)
    error = float((compiled - eager).abs().max())
    assert error <= 1e-2, f"max-autotune output differs from eager by {error:.2e}"
