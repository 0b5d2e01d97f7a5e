"""Environment facts, gathered INSIDE an env. Stdlib only: run as ``<env-python> probe.py``.

Prints one JSON object on stdout. Every import is guarded: a failure is a fact ("error"), never a
crash, so a broken env still yields a document that verification can explain.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import json
import locale
import os
import platform
import re
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

# FFmpeg majors torchcodec loads (4-8) by their libavutil soname major.
_AVUTIL_MAJORS = (56, 57, 58, 59, 60)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()[:500]


def distributions() -> dict[str, dict[str, str | None]]:
    """Installed distributions with version and installer (pip/uv/conda)."""
    from importlib import metadata

    found: dict[str, dict[str, str | None]] = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if not name:
            continue
        key = re.sub(r"[-_.]+", "-", name).lower()
        try:
            installer = (dist.read_text("INSTALLER") or "").strip() or None
        except Exception:  # noqa: BLE001 - a broken dist-info must not stop the probe
            installer = None
        found[key] = {"version": dist.version, "installer": installer}
    return dict(sorted(found.items()))


def torch_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {}
    try:
        import torch
    except BaseException as exc:  # noqa: BLE001 - ImportError, OSError from a DLL, ...
        return {"error": _error(exc)}
    facts["version"] = getattr(torch, "__version__", None)
    version = getattr(torch, "version", None)
    facts["git_version"] = getattr(version, "git_version", None)
    facts["cuda"] = getattr(version, "cuda", None)
    facts["hip"] = getattr(version, "hip", None)
    try:
        facts["cudnn"] = (
            torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        )
    except BaseException as exc:  # noqa: BLE001
        facts["cudnn"] = None
        facts["cudnn_error"] = _error(exc)
    # The compiled arch list, readable without a GPU (torch.cuda.get_arch_list() is [] then).
    flags = ""
    try:
        if facts["cuda"] is not None and hasattr(torch._C, "_cuda_getArchFlags"):
            flags = torch._C._cuda_getArchFlags() or ""
    except BaseException as exc:  # noqa: BLE001
        facts["arch_flags_error"] = _error(exc)
    facts["arch_flags"] = flags.split()
    facts.update(_cuda_devices(torch))
    try:
        config = torch.__config__.show()
        match = re.search(r"BLAS_INFO=(\w+)", config)
        facts["blas"] = match.group(1) if match else None
        lapack = re.search(r"LAPACK_INFO=(\w+)", config)
        facts["lapack"] = lapack.group(1) if lapack else None
        facts["parallel"] = torch.__config__.parallel_info().splitlines()[:6]
    except BaseException as exc:  # noqa: BLE001
        facts["config_error"] = _error(exc)
    try:
        facts["num_threads"] = torch.get_num_threads()
    except BaseException as exc:  # noqa: BLE001
        facts["num_threads_error"] = _error(exc)
    facts.update(_torch_features(torch))
    if facts["cuda"] is not None:
        facts.update(_cuda_libraries(torch))
    facts["requires"] = _requires("torch")
    return facts


def _cuda_devices(torch: Any) -> dict[str, Any]:
    """Whether CUDA is usable, the devices torch sees, and why not on a CUDA build."""
    facts: dict[str, Any] = {}
    try:
        facts["cuda_available"] = bool(torch.cuda.is_available())
        facts["device_count"] = torch.cuda.device_count() if facts["cuda_available"] else 0
        facts["arch_list"] = torch.cuda.get_arch_list() if facts["cuda_available"] else []
        devices = []
        for i in range(facts["device_count"]):
            major, minor = torch.cuda.get_device_capability(i)
            devices.append(
                {
                    "index": i,
                    "name": torch.cuda.get_device_name(i),
                    "compute_capability": f"{major}.{minor}",
                }
            )
        facts["devices"] = devices
    except BaseException as exc:  # noqa: BLE001
        facts["cuda_error"] = _error(exc)
    if facts.get("cuda_available") is False and getattr(torch.version, "cuda", None):
        try:
            torch.cuda.init()
        except BaseException as exc:  # noqa: BLE001 - why CUDA is unusable is the fact
            facts["cuda_init_error"] = _error(exc).splitlines()[0]
    return facts


def _torch_features(torch: Any) -> dict[str, Any]:
    """Build features: debug, MKL, oneDNN, OpenMP, XNNPACK, MAGMA (no GPU needed)."""
    try:
        importlib.import_module("torch.backends.xnnpack")  # a submodule `import torch` skips
    except ImportError:
        pass  # no such submodule: XNNPACK is reported unknown
    try:
        xnnpack = getattr(torch.backends, "xnnpack", None)
        return {
            "debug": bool(torch.version.debug),
            "mkl": bool(torch.backends.mkl.is_available()),
            "mkldnn": bool(torch.backends.mkldnn.is_available()),
            "openmp": bool(torch.backends.openmp.is_available()),
            "xnnpack": bool(xnnpack.enabled) if xnnpack is not None else None,
            "magma": bool(torch.cuda.has_magma) if torch.version.cuda else None,
        }
    except BaseException as exc:  # noqa: BLE001
        return {"features_error": _error(exc)}


def _dotted(version: Any) -> str:
    return ".".join(str(part) for part in version)


def _cuda_libraries(torch: Any) -> dict[str, Any]:
    """cuDNN compiled and loaded (read apart: a mismatch makes cudnn.version() raise), NCCL."""
    found: dict[str, Any] = {}
    cudnn = getattr(torch._C, "_cudnn", None)
    if cudnn is not None:
        for key, getter in (
            ("cudnn_compiled", "getCompileVersion"),
            ("cudnn_runtime", "getRuntimeVersion"),
        ):
            try:
                found[key] = _dotted(getattr(cudnn, getter)())
            except BaseException as exc:  # noqa: BLE001
                found.setdefault("cudnn_error", _error(exc))
    if sys.platform.startswith("linux"):
        try:
            found["nccl"] = _dotted(torch.cuda.nccl.version())
        except BaseException as exc:  # noqa: BLE001
            found["nccl_error"] = _error(exc)
    return found


def _requires(name: str) -> list[str]:
    from importlib import metadata

    try:
        return list(metadata.requires(name) or [])
    except BaseException:  # noqa: BLE001 - no metadata: nothing to compare against
        return []


def marker_environment() -> dict[str, str]:
    """PEP 508's marker variables for this interpreter (what ``packaging`` would compute)."""
    info = sys.implementation
    version = f"{info.version.major}.{info.version.minor}.{info.version.micro}"
    if info.version.releaselevel != "final":
        version += info.version.releaselevel[0] + str(info.version.serial)
    return {
        "implementation_name": info.name,
        "implementation_version": version,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    }


def _output_lines(argv: list[str]) -> list[str]:
    """The non-empty output lines of a tool that exited 0 (none when it failed or hung)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    lines = [ln.strip() for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    return lines if done.returncode == 0 else []


def _cuda_home() -> tuple[str | None, str | None]:
    """Where torch.utils.cpp_extension looks for CUDA, in its order: (path, how it was found)."""
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(variable):
            return os.environ[variable], variable
    nvcc = shutil.which("nvcc")
    if nvcc:
        return str(Path(nvcc).parent.parent), "nvcc on PATH"
    default = (
        Path("C:/Program Files/NVIDIA GPU Computing Toolkit/CUDA")
        if os.name == "nt"
        else Path("/usr/local/cuda")
    )
    if os.name == "nt":
        versions = sorted(default.glob("v*")) if default.is_dir() else []
        return (
            (str(versions[-1]), "the newest CUDA toolkit installed") if versions else (None, None)
        )
    return (str(default), str(default)) if default.exists() else (None, None)


def toolchain_facts() -> dict[str, Any]:
    """The nvcc and C++ compiler an extension build would use, with their versions."""
    facts: dict[str, Any] = {}
    home, source = _cuda_home()
    if home:
        facts["cuda_home"], facts["cuda_home_source"] = home, source
        nvcc = Path(home) / "bin" / ("nvcc.exe" if os.name == "nt" else "nvcc")
        if nvcc.exists():
            facts["nvcc"] = str(nvcc)
            lines = _output_lines([str(nvcc), "--version"])
            release = next((m for ln in lines if (m := re.search(r"release (\d+\.\d+)", ln))), None)
            facts["nvcc_version"] = release.group(1) if release else None
            if release is None:
                facts["error"] = f"{nvcc} --version printed no release number"
    cxx = os.environ.get("CXX") or next(
        (c for c in ("c++", "g++", "clang++", "cl") if shutil.which(c)), None
    )
    if cxx and shutil.which(cxx):
        facts["cxx"] = shutil.which(cxx)
        lines = _output_lines([cxx, "--version"]) if cxx != "cl" else []
        facts["cxx_version"] = lines[0] if lines else None
    return facts


def runtime_env_facts() -> dict[str, Any]:
    names = {
        "cuda_module_loading": "CUDA_MODULE_LOADING",
        "cuda_alloc_conf": "PYTORCH_CUDA_ALLOC_CONF",
        "alloc_conf": "PYTORCH_ALLOC_CONF",
        "cuda_visible_devices": "CUDA_VISIBLE_DEVICES",
        "omp_num_threads": "OMP_NUM_THREADS",
        "gomp_cpu_affinity": "GOMP_CPU_AFFINITY",
        "ld_library_path": "LD_LIBRARY_PATH",
    }
    return {key: os.environ[var] for key, var in names.items() if var in os.environ}


def media_facts() -> dict[str, Any]:
    """Which FFmpeg (libavutil) the dynamic loader finds, as torchcodec will look for it."""
    if sys.platform == "win32":
        names = [f"avutil-{major}.dll" for major in _AVUTIL_MAJORS]
    elif sys.platform == "darwin":
        names = [f"libavutil.{major}.dylib" for major in _AVUTIL_MAJORS]
    else:
        names = [f"libavutil.so.{major}" for major in _AVUTIL_MAJORS]
    found = []
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        found.append(name)
    return {"ffmpeg_libraries": found}


def module_facts(name: str) -> dict[str, Any]:
    """The module's version, or why it does not import; nothing when it is not installed."""
    if importlib.util.find_spec(name) is None:
        return {}
    try:
        module = importlib.import_module(name)
    except BaseException as exc:  # noqa: BLE001
        return {"error": _error(exc)}
    facts: dict[str, Any] = {"version": getattr(module, "__version__", None)}
    return facts


def torchvision_facts() -> dict[str, Any]:
    """torchvision, and the JPEG library its image ops link (libjpeg-turbo in PyTorch's wheels)."""
    facts = module_facts("torchvision")
    if facts.get("version") is None:
        return facts
    try:
        import torch

        image = torch.ops.image
        facts["jpeg_version"] = int(image._jpeg_version())
        facts["jpeg_turbo"] = bool(image._is_compiled_against_turbo())
    except BaseException as exc:  # noqa: BLE001 - a torchvision without these ops says so
        facts["jpeg_error"] = _error(exc)
    return facts


def blas_facts() -> dict[str, Any]:
    """numpy's BLAS and the OpenMP runtimes loaded next to torch (threadpoolctl, if installed)."""
    facts: dict[str, Any] = {"libraries": [], "openmp": []}
    if not all(importlib.util.find_spec(name) for name in ("numpy", "threadpoolctl")):
        return facts  # not installed: nothing to identify (the BLAS check says "unknown")
    try:
        import numpy  # noqa: F401

        try:
            import torch  # noqa: F401  # load torch's OpenMP too, to see duplicates
        except BaseException as exc:  # noqa: BLE001 - torch's own failure is reported under "torch"
            facts["torch_import_error"] = _error(exc)
        from threadpoolctl import threadpool_info
    except BaseException as exc:  # noqa: BLE001
        facts["error"] = _error(exc)
        return facts
    for info in threadpool_info():
        entry = {
            "user_api": info.get("user_api"),
            "internal_api": info.get("internal_api"),
            "prefix": info.get("prefix"),
            "filepath": info.get("filepath"),
            "version": info.get("version"),
            "num_threads": info.get("num_threads"),
        }
        (facts["openmp"] if info.get("user_api") == "openmp" else facts["libraries"]).append(entry)
    return facts


def collect() -> dict[str, Any]:
    return {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
            "prefix": sys.prefix,
            "markers": marker_environment(),
        },
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "libc": "-".join(platform.libc_ver()) if sys.platform.startswith("linux") else None,
            "preferred_encoding": locale.getpreferredencoding(False),
            "conda_prefix": os.environ.get("CONDA_PREFIX"),
        },
        "torch": torch_facts(),
        "torchvision": torchvision_facts(),
        "torchaudio": module_facts("torchaudio"),
        "numpy": module_facts("numpy"),
        "blas": blas_facts(),
        "toolchain": toolchain_facts(),
        "runtime_env": runtime_env_facts(),
        "media": media_facts(),
        "distributions": distributions(),
    }


def main() -> int:
    try:
        facts = collect()
    except BaseException:  # noqa: BLE001 - report, do not crash the caller's parse
        facts = {"probe_error": traceback.format_exc()}
    json.dump(facts, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
