"""Environment facts, gathered INSIDE an env. Stdlib only: run as ``<env-python> probe.py``.

Prints one JSON object on stdout. Every import is guarded: a failure is a fact ("error"), never a
crash, so a broken env still yields a document that verification can explain.
"""

from __future__ import annotations

import importlib
import json
import locale
import os
import platform
import re
import sys
import traceback
from typing import Any


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
    return facts


def module_facts(name: str) -> dict[str, Any]:
    try:
        module = importlib.import_module(name)
    except BaseException as exc:  # noqa: BLE001
        return {"error": _error(exc)}
    facts: dict[str, Any] = {"version": getattr(module, "__version__", None)}
    return facts


def blas_facts() -> dict[str, Any]:
    """numpy's BLAS and the OpenMP runtimes loaded next to torch (threadpoolctl, if installed)."""
    facts: dict[str, Any] = {"libraries": [], "openmp": []}
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
        "torchvision": module_facts("torchvision"),
        "torchaudio": module_facts("torchaudio"),
        "numpy": module_facts("numpy"),
        "blas": blas_facts(),
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
