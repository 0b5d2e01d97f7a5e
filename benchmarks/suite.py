"""The benchmarks. Each one declares its records (name, unit, direction) and a function that
returns their raw samples; run.py turns failures into error records.

Bump a benchmark's ``version`` whenever a change to it makes its numbers incomparable with older
ones (workload, timing method, defaults).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from measure import CpuTimer, CudaTimer, Mode, Timer, paired_ratio, rates


@dataclass
class Ctx:
    torch: Any
    mode: Mode
    threads: int
    cuda: bool


@dataclass(frozen=True)
class Out:
    """One record a benchmark produces."""

    name: str
    unit: str
    higher_is_better: bool = True


@dataclass(frozen=True)
class Bench:
    key: str  # what --only selects
    version: int
    device: str  # "cpu" or "cuda:0"
    outputs: tuple[Out, ...]
    params: dict[str, Any]
    fn: Callable[[Ctx, dict[str, Any]], dict[str, list[float]]]
    quick: bool = True
    needs: tuple[str, ...] = field(default_factory=tuple)  # modules that must import


def _timer(ctx: Ctx, device: str) -> Timer:
    return CudaTimer(ctx.torch) if device.startswith("cuda") else CpuTimer()


_DTYPES = {
    "fp32": "float32",
    "fp64": "float64",
    "bf16": "bfloat16",
    "fp16": "float16",
    "tf32": "float32",
}


def _set_tf32(torch: Any, enabled: bool) -> None:
    """TF32 on or off for matmul and cuDNN convolutions (fp32 numbers must not use tensor cores)."""
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled


# --------------------------------------------------------------------------- GEMM / conv


def gemm(ctx: Ctx, p: dict[str, Any]) -> dict[str, list[float]]:
    torch, n, device = ctx.torch, p["n"], p["device"]
    dtype = getattr(torch, _DTYPES[p["dtype"]])
    if device.startswith("cuda"):
        _set_tf32(torch, p["dtype"] == "tf32")
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, dtype=dtype, device=device, generator=gen)
    b = torch.randn(n, n, dtype=dtype, device=device, generator=gen)
    c = torch.empty(n, n, dtype=dtype, device=device)
    samples = rates(
        lambda: torch.matmul(a, b, out=c), 2 * n**3 / 1e9, ctx.mode, _timer(ctx, device)
    )
    return {p["name"]: samples}


def conv2d(ctx: Ctx, p: dict[str, Any]) -> dict[str, list[float]]:
    torch, device = ctx.torch, p["device"]
    dtype = getattr(torch, _DTYPES[p["dtype"]])
    if device.startswith("cuda"):
        _set_tf32(torch, False)
        torch.backends.cudnn.benchmark = True
    fmt = torch.channels_last if p["channels_last"] else torch.contiguous_format
    batch, cin, cout, hw, k = p["batch"], p["cin"], p["cout"], p["hw"], p["k"]
    conv = torch.nn.Conv2d(cin, cout, k, padding=k // 2, bias=False).to(device=device, dtype=dtype)
    conv = conv.to(memory_format=fmt).eval()
    x = torch.randn(batch, cin, hw, hw, device=device, dtype=dtype).to(memory_format=fmt)
    flop = 2 * batch * cout * hw * hw * cin * k * k / 1e9

    def step() -> None:
        with torch.inference_mode():
            conv(x)

    return {p["name"]: rates(step, flop, ctx.mode, _timer(ctx, device))}


# --------------------------------------------------------------------------- models


def model_inference(ctx: Ctx, p: dict[str, Any]) -> dict[str, list[float]]:
    import timm

    torch, device = ctx.torch, p["device"]
    torch.manual_seed(0)
    model = timm.create_model(p["model"], pretrained=False).eval().to(device)
    x = torch.randn(p["batch"], 3, p["image_size"], p["image_size"], device=device)
    autocast_dtype = getattr(torch, _DTYPES[p["dtype"]]) if p["dtype"] != "fp32" else None
    if device.startswith("cuda"):
        _set_tf32(torch, False)
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)

    def step() -> None:
        with torch.inference_mode():
            if autocast_dtype is not None:
                with torch.autocast(device.split(":")[0], dtype=autocast_dtype):
                    model(x)
            else:
                model(x)

    return {p["name"]: rates(step, p["batch"], ctx.mode, _timer(ctx, device))}


def melspec(ctx: Ctx, p: dict[str, Any]) -> dict[str, list[float]]:
    import torchaudio

    torch, device = ctx.torch, p["device"]
    transform = torchaudio.transforms.MelSpectrogram(
        sample_rate=p["sample_rate"], n_fft=p["n_fft"], hop_length=p["hop"], n_mels=p["n_mels"]
    ).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    wave = 0.1 * torch.randn(p["batch"], p["samples"], device=device, generator=gen)

    def step() -> None:
        with torch.inference_mode():
            transform(wave)

    work = p["batch"] * p["samples"]
    return {p["name"]: rates(step, work, ctx.mode, _timer(ctx, device))}


# --------------------------------------------------------------------------- copies (GPU)


def copy(ctx: Ctx, p: dict[str, Any]) -> dict[str, list[float]]:
    torch, device = ctx.torch, p["device"]
    nbytes = p["mib"] * 2**20
    direction, pinned = p["direction"], p["memory"] == "pinned"

    def host() -> Any:
        t = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)
        t.random_(0, 256)
        return t

    def dev() -> Any:
        return torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device=device)

    if direction == "h2d":
        src, dst = host(), torch.empty(nbytes, dtype=torch.uint8, device=device)
    elif direction == "d2h":
        src, dst = dev(), host()
    else:
        src, dst = dev(), torch.empty(nbytes, dtype=torch.uint8, device=device)
    moved = (2 if direction == "d2d" else 1) * nbytes / 1e9  # d2d reads and writes device memory

    samples = rates(
        lambda: dst.copy_(src, non_blocking=pinned), moved, ctx.mode, _timer(ctx, device)
    )
    return {p["name"]: samples}


# --------------------------------------------------------------------------- torch.compile


def compile_unavailable(torch: Any, device: str) -> str | None:
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    try:
        import torch._dynamo

        if not torch._dynamo.is_dynamo_supported():
            return f"torch.compile is not supported on Python {sys.version.split()[0]}"
    except Exception as exc:  # noqa: BLE001
        return f"torch._dynamo unavailable: {type(exc).__name__}: {exc}"
    if device == "cpu":
        found = _which(os.environ.get("CXX"), "c++", "g++", "clang++")
        if not found:
            return "no C++ compiler on PATH (inductor's CPU backend needs one)"
    elif not _which(os.environ.get("CC"), "cc", "gcc", "clang"):
        return "no C compiler on PATH (Triton builds its launcher with one)"
    return None


def _which(*names: str | None) -> str | None:
    return next((p for p in (shutil.which(n) for n in names if n) if p), None)


def compile_speedup(ctx: Ctx, p: dict[str, Any]) -> dict[str, list[float]]:
    torch, device = ctx.torch, p["device"]
    torch.manual_seed(0)
    width = p["width"]
    model = (
        torch.nn.Sequential(
            torch.nn.Linear(width, 2 * width),
            torch.nn.GELU(),
            torch.nn.LayerNorm(2 * width),
            torch.nn.Linear(2 * width, width),
            torch.nn.GELU(),
            torch.nn.LayerNorm(width),
        )
        .to(device)
        .eval()
    )
    x = torch.randn(p["batch"], width, device=device)
    timer = _timer(ctx, device)
    torch._dynamo.reset()
    compiled = torch.compile(model)

    def eager() -> None:
        with torch.inference_mode():
            model(x)

    def comp() -> None:
        with torch.inference_mode():
            compiled(x)

    # First call: trace + inductor codegen + C++/Triton build, with a fresh cache dir (run.py).
    compile_s = timer.time(comp)
    speedup = paired_ratio(eager, comp, ctx.mode, timer)
    return {p["name"]: speedup, p["name"].replace("speedup", "time"): [compile_s]}


# --------------------------------------------------------------------------- import time


def import_time(ctx: Ctx, p: dict[str, Any]) -> dict[str, list[float]]:
    """Wall time of a fresh ``python -c "import torch"`` (the parent's import warmed the caches)."""
    samples = []
    for _ in range(ctx.mode.subprocess_repeats):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import torch"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        samples.append(time.perf_counter() - start)
    return {p["name"]: samples}


# --------------------------------------------------------------------------- the set


def benchmarks(threads: int) -> list[Bench]:
    cpu: dict[str, Any] = {"device": "cpu", "threads": threads}
    gpu: dict[str, Any] = {"device": "cuda:0"}
    out: list[Bench] = []

    for dt in ("fp32", "fp64", "bf16"):
        name = f"gemm_{dt}_cpu"
        out.append(
            Bench(
                name,
                1,
                "cpu",
                (Out(name, "GFLOP/s"),),
                {**cpu, "name": name, "dtype": dt, "n": 1024},
                gemm,
            )
        )
    for dt in ("fp32", "tf32", "fp16", "bf16"):
        name = f"gemm_{dt}_cuda"
        out.append(
            Bench(
                name,
                1,
                "cuda:0",
                (Out(name, "GFLOP/s"),),
                {**gpu, "name": name, "dtype": dt, "n": 8192},
                gemm,
            )
        )

    conv = {"batch": 8, "cin": 64, "cout": 64, "hw": 56, "k": 3}
    out.append(
        Bench(
            "conv2d_fp32_cpu",
            1,
            "cpu",
            (Out("conv2d_fp32_cpu", "GFLOP/s"),),
            {**cpu, **conv, "name": "conv2d_fp32_cpu", "dtype": "fp32", "channels_last": False},
            conv2d,
        )
    )
    gconv = {"batch": 64, "cin": 128, "cout": 128, "hw": 56, "k": 3, "channels_last": True}
    for dt in ("fp32", "bf16"):
        name = f"conv2d_{dt}_cuda"
        out.append(
            Bench(
                name,
                1,
                "cuda:0",
                (Out(name, "GFLOP/s"),),
                {**gpu, **gconv, "name": name, "dtype": dt},
                conv2d,
            )
        )

    for model, batch, quick in (("resnet18", 8, True), ("vgg19", 2, False)):
        name = f"{model}_infer_cpu"
        out.append(
            Bench(
                name,
                1,
                "cpu",
                (Out(name, "images/s"),),
                {
                    **cpu,
                    "name": name,
                    "model": model,
                    "batch": batch,
                    "image_size": 224,
                    "dtype": "fp32",
                    "source": "timm, random weights",
                },
                model_inference,
                quick=quick,
                needs=("timm",),
            )
        )
    for model, batch in (("resnet18", 128), ("vgg19", 64)):
        name = f"{model}_infer_cuda"
        out.append(
            Bench(
                name,
                1,
                "cuda:0",
                (Out(name, "images/s"),),
                {
                    **gpu,
                    "name": name,
                    "model": model,
                    "batch": batch,
                    "image_size": 224,
                    "dtype": "bf16",
                    "source": "timm, random weights, autocast",
                },
                model_inference,
                needs=("timm",),
            )
        )

    mel = {
        "batch": 8,
        "samples": 160_000,
        "sample_rate": 16_000,
        "n_fft": 400,
        "hop": 160,
        "n_mels": 80,
    }
    out.append(
        Bench(
            "melspec_cpu",
            1,
            "cpu",
            (Out("melspec_cpu", "samples/s"),),
            {**cpu, **mel, "name": "melspec_cpu"},
            melspec,
            needs=("torchaudio",),
        )
    )

    for direction in ("h2d", "d2h"):
        for memory in ("pinned", "pageable"):
            name = f"copy_{direction}_{memory}_cuda"
            out.append(
                Bench(
                    name,
                    1,
                    "cuda:0",
                    (Out(name, "GB/s"),),
                    {**gpu, "name": name, "direction": direction, "memory": memory, "mib": 256},
                    copy,
                )
            )
    out.append(
        Bench(
            "copy_d2d_cuda",
            1,
            "cuda:0",
            (Out("copy_d2d_cuda", "GB/s"),),
            {**gpu, "name": "copy_d2d_cuda", "direction": "d2d", "memory": "device", "mib": 1024},
            copy,
        )
    )

    for device, suffix, batch in (("cpu", "cpu", 64), ("cuda:0", "cuda", 1024)):
        base = cpu if device == "cpu" else gpu
        name = f"compile_speedup_{suffix}"
        out.append(
            Bench(
                name,
                1,
                device,
                (Out(name, "x"), Out(f"compile_time_{suffix}", "s", higher_is_better=False)),
                {
                    **base,
                    "name": name,
                    "model": "mlp(linear,gelu,layernorm)x2",
                    "width": 512,
                    "batch": batch,
                    "backend": "inductor",
                },
                compile_speedup,
                quick=False,
            )
        )

    out.append(
        Bench(
            "import_torch",
            1,
            "cpu",
            (Out("import_torch", "s", higher_is_better=False),),
            {"device": "cpu", "name": "import_torch", "command": "python -c 'import torch'"},
            import_time,
        )
    )
    return out
