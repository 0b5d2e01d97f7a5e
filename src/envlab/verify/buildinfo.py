"""Build and host checks: the torch build's features, the toolchain an extension build would
use, the variables that change how torch runs, torchvision's JPEG library, and CUDA on a host
that has an NVIDIA GPU.

These mirror what PyTorch's release validation (``check_binary.sh``) asserts about a binary and
what ``torch.utils.collect_env`` records, as checks with expected vs found and a fix.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from envlab.results.facts import Facts
from envlab.results.schema import GPU, Check
from envlab.verify import archcompat
from envlab.verify.advisory import warn

if TYPE_CHECKING:
    from envlab.verify.expectations import Context

_X86 = ("x86_64", "AMD64")
_ARM = ("aarch64", "arm64")


def _yes(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "?"}[value]


def _wanted_features(facts: Facts) -> dict[str, bool]:
    """What a PyTorch release binary has on this platform (check_binary.sh's assertions)."""
    torch, markers = facts.torch, facts.python.markers
    system, machine = markers.get("platform_system", ""), markers.get("platform_machine", "")
    wanted = {
        "a release build (not debug)": torch.debug is False,
        "a known git version": torch.git_version not in (None, "", "Unknown"),
    }
    if system != "Darwin":
        wanted["OpenMP"] = bool(torch.openmp)
    if machine in _X86 and system in ("Linux", "Windows"):
        wanted["MKL"] = bool(torch.mkl)
    if machine in _ARM and system == "Linux":
        wanted["oneDNN (mkldnn)"] = bool(torch.mkldnn)
    if torch.cuda is not None:
        wanted["cuDNN"] = torch.cudnn_runtime is not None or torch.cudnn is not None
        if system == "Linux":
            wanted["MAGMA"] = bool(torch.magma)
    return wanted


def torch_build_features(ctx: Context) -> list[Check]:
    """A PyTorch binary's features present: release build, OpenMP, MKL/oneDNN, cuDNN, MAGMA."""
    torch = ctx.facts.torch
    dist = ctx.facts.distributions.get("torch")
    pip_built = dist is not None and dist.installer in ("pip", "uv")  # one of PyTorch's wheels
    if torch.features_error:
        wanted: dict[str, bool] = {}
        found = f"not readable: {torch.features_error}"
    elif torch.debug is None or not pip_built:
        return []  # an older probe, or not one of PyTorch's wheels: nothing to hold it to
    else:
        wanted = _wanted_features(ctx.facts)
        git = (torch.git_version or "?")[:7]
        found = (
            f"debug {_yes(torch.debug)}, git {git}, OpenMP {_yes(torch.openmp)}, "
            f"MKL {_yes(torch.mkl)}, oneDNN {_yes(torch.mkldnn)}, XNNPACK {_yes(torch.xnnpack)}"
            + (f", MAGMA {_yes(torch.magma)}, cuDNN {torch.cudnn_runtime}" if torch.cuda else "")
        )
    missing = [name for name, ok in wanted.items() if not ok]
    ok = not missing and not torch.features_error
    return [
        Check(
            name="torch-build-features",
            ok=ok,
            expected="the features of a PyTorch release wheel: " + ", ".join(wanted),
            found=found,
            layer=None if ok else "torch",
            message=""
            if ok
            else f"missing: {', '.join(missing) or 'unknown'}; this is not the release binary "
            "(a debug or source build?). Fix: install torch from the env's torch index",
        )
    ]


def cuda_toolkit(ctx: Context) -> list[Check]:
    """The nvcc an extension build would use, against torch's CUDA (a major mismatch warns)."""
    tools, cuda = ctx.facts.toolchain, ctx.facts.torch.cuda
    cxx = f"; C++ compiler {tools.cxx_version or tools.cxx}" if tools.cxx else "; no C++ compiler"
    expected = f"nvcc of CUDA {cuda.split('.')[0]}.x, if any" if cuda else "(recorded)"
    if not tools.nvcc:
        where = f"CUDA_HOME {tools.cuda_home} has no bin/nvcc" if tools.cuda_home else "none found"
        return [Check(name="cuda-toolkit", ok=True, expected=expected, found=f"nvcc: {where}{cxx}")]
    source = f"CUDA_HOME from {tools.cuda_home_source}"
    found = f"nvcc {tools.nvcc_version or '?'} at {tools.nvcc} ({source}){cxx}"
    message = ""
    if tools.error:
        message = warn(tools.error)
    elif cuda and tools.nvcc_version and tools.nvcc_version.split(".")[0] != cuda.split(".")[0]:
        message = warn(
            f"nvcc is CUDA {tools.nvcc_version} but torch is built for CUDA {cuda}: building a "
            "CUDA extension in this env fails (torch.utils.cpp_extension refuses another major). "
            f"Fix: set CUDA_HOME to a CUDA {cuda.split('.')[0]}.x toolkit "
            f"(e.g. /usr/local/cuda-{cuda})"
        )
    return [Check(name="cuda-toolkit", ok=True, expected=expected, found=found, message=message)]


def _runtime_warnings(env: Any) -> list[str]:
    notes = []
    if (env.cuda_module_loading or "").upper() == "EAGER":
        notes.append(
            "CUDA_MODULE_LOADING=EAGER loads every kernel at the first CUDA call "
            "(slow start, more memory); unset it for torch's LAZY default"
        )
    if env.gomp_cpu_affinity is not None and env.omp_num_threads is None:
        notes.append(
            "GOMP_CPU_AFFINITY is set: with two libgomp copies in one process (pip's torch and "
            "scikit-learn each bring one) the second to start runs 1 thread. Fix: pin CPUs with "
            "taskset/numactl instead, or set OMP_NUM_THREADS"
        )
    path = env.ld_library_path or ""
    if re.search(r"cud(a|nn)", path, re.IGNORECASE):
        notes.append(
            f"LD_LIBRARY_PATH ({path}) names CUDA libraries: they shadow the nvidia-* wheels "
            "torch pins. Fix: unset it for this env"
        )
    return notes


def runtime_config(ctx: Context) -> list[Check]:
    """The variables that change how torch runs (CUDA module loading, allocator, threads)."""
    env = ctx.facts.runtime_env
    shown = [
        f"CUDA_MODULE_LOADING={env.cuda_module_loading or 'unset (torch sets LAZY)'}",
        f"PYTORCH_CUDA_ALLOC_CONF={env.cuda_alloc_conf or 'unset'}",
    ]
    shown += [f"PYTORCH_ALLOC_CONF={env.alloc_conf}"] if env.alloc_conf else []
    for name, value in (
        ("CUDA_VISIBLE_DEVICES", env.cuda_visible_devices),
        ("OMP_NUM_THREADS", env.omp_num_threads),
        ("GOMP_CPU_AFFINITY", env.gomp_cpu_affinity),
    ):
        if value is not None:
            shown.append(f"{name}={value}")
    notes = _runtime_warnings(env)
    return [
        Check(
            name="runtime-config",
            ok=True,
            expected="(recorded)",
            found=", ".join(shown),
            message=warn("; ".join(notes)) if notes else "",
        )
    ]


def torchvision_jpeg(ctx: Context) -> list[Check]:
    """torchvision's image ops built against libjpeg-turbo, as PyTorch's wheels are."""
    vision = ctx.facts.torchvision
    if vision.jpeg_error is None and vision.jpeg_turbo is None:
        return []
    ok = vision.jpeg_error is None and bool(vision.jpeg_turbo)
    api = f"libjpeg API {vision.jpeg_version / 10:g}" if vision.jpeg_version else "API unknown"
    found = vision.jpeg_error or (
        f"{'libjpeg-turbo' if vision.jpeg_turbo else 'plain libjpeg (not turbo)'} ({api})"
    )
    return [
        Check(
            name="torchvision-jpeg",
            ok=ok,
            expected="torchvision's JPEG decoder built against libjpeg-turbo",
            found=found,
            layer=None if ok else "torch",
            message=""
            if ok
            else "JPEG decoding is slow or broken. Fix: install torchvision from torch's index "
            "(PyTorch's wheels bundle libjpeg-turbo)",
        )
    ]


def _gpu_label(gpu: GPU) -> str:
    cc = gpu.compute_capability
    return f"GPU {gpu.index} {gpu.name}" + (f" (sm_{cc.replace('.', '')})" if cc else "")


def _why_no_cuda(ctx: Context, gpus: list[GPU]) -> list[str]:
    """Reasons CUDA is unusable on this host: torch's own error, the doctor's verdict, arches."""
    torch = ctx.facts.torch
    reasons = [f"torch says: {torch.cuda_init_error}"] if torch.cuda_init_error else []
    doctor = (ctx.host.doctor if ctx.host else None) or {}
    verdict = next((e for e in doctor.get("envs", []) if e.get("env") == ctx.env), None)
    if verdict and verdict.get("verdict") == "will-not-run":
        reasons.append(f"doctor: {verdict.get('reason')}")
    for gpu in gpus:
        if gpu.compute_capability and torch.arch_flags:
            covered, why = archcompat.coverage(torch.arch_flags, gpu.compute_capability)
            if covered == "none":
                reasons.append(f"{_gpu_label(gpu)}: {why}")
    return reasons or ["no reason found (torch.cuda.init() raised nothing the probe recorded)"]


def cuda_usable(ctx: Context) -> list[Check]:
    """On a host with an NVIDIA GPU, an env expecting CUDA can use it (else: why not)."""
    host = ctx.host
    torch = ctx.facts.torch
    if host is None or not host.gpus or ctx.expect.cpu_only:
        return []
    if not (ctx.expect.cuda or torch.cuda):
        return []
    gpus = list(host.gpus)
    driver = f", driver {host.driver}" if host.driver else ""
    expected = f"CUDA usable on this host's {', '.join(_gpu_label(g) for g in gpus)}{driver}" + (
        f" by a build for CUDA {torch.cuda}" if torch.cuda else ""
    )
    if torch.cuda_available:
        return [
            Check(
                name="cuda-usable",
                ok=True,
                expected=expected,
                found=f"{torch.device_count} device(s) usable",
            )
        ]
    found = "a CPU-only torch" if torch.cuda is None else "torch.cuda.is_available() is False"
    suggestion = ""
    doctor = (host.doctor or {}).get("envs", [])
    entry = next((e for e in doctor if e.get("env") == ctx.env), None)
    if entry and entry.get("suggestion"):
        suggestion = f" ({entry['suggestion']})"
    return [
        Check(
            name="cuda-usable",
            ok=False,
            expected=expected,
            found=f"{found}: " + "; ".join(_why_no_cuda(ctx, gpus)),
            layer="torch",
            message="the GPU is present but this env cannot use it. Fix: use the env whose build "
            f"covers this GPU and driver (`nox -s doctor` names it){suggestion}, or update the "
            "NVIDIA driver",
        )
    ]


CHECKS = (torch_build_features, torchvision_jpeg, cuda_usable, cuda_toolkit, runtime_config)
