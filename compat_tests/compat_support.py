"""Helpers shared by the compat checks: stdlib + pytest only, importable in any env.

Stack packages are imported lazily through :func:`need`, so a missing package fails the
checks that use it (with the reason) instead of breaking collection of the whole suite.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # at run time the module is loaded by path, see _load_archrule
    from _archrule import Arch, Capability

# Import name -> distribution to install, for "not installed" hints.
DISTRIBUTION = {
    "PIL": "Pillow",
    "sklearn": "scikit-learn",
    "yaml": "PyYAML",
    "cv2": "opencv-python",
    "pynvml": "nvidia-ml-py",
    "huggingface_hub": "huggingface-hub",
}

ABI_SIGNATURES = (
    "numpy is not available",
    "_array_api not found",
    "compiled against api version",
    "compiled against abi version",
    "compiled using numpy 1.x",
    "numpy.core.multiarray failed to import",
    "numpy.core._multiarray_umath failed to import",
)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def need(module: str) -> ModuleType:
    """Import ``module`` or fail the calling check, saying whether it is missing or broken."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name in (module, top):
            dist = DISTRIBUTION.get(top, top)
            pytest.fail(
                f"{exc.name} is not installed in {sys.executable}. "
                f"Fix: install {dist} into this env (it is part of the stack), "
                "or drop the package from the env's stack if it is not wanted.",
                pytrace=False,
            )
        pytest.fail(
            f"import {module} failed: a dependency is missing: {first_line(exc)}. "
            f"Fix: reinstall {DISTRIBUTION.get(top, top)} with its dependencies.",
            pytrace=False,
        )
    except Exception as exc:  # noqa: BLE001 - any import-time failure is the finding
        pytest.fail(
            f"import {module} failed: {type(exc).__name__}: {first_line(exc)}", pytrace=False
        )


# --- expectations -------------------------------------------------------------------------


class Expect:
    """The env's declared expectations (``--compat-expect``); absent keys skip their checks."""

    def __init__(self, data: dict[str, Any] | None) -> None:
        self.data = data

    @property
    def declared(self) -> bool:
        return self.data is not None

    @property
    def env(self) -> str:
        return str((self.data or {}).get("env") or "?")

    def raw(self, key: str) -> Any:
        return (self.data or {}).get(key)

    def get(self, key: str) -> Any:
        """The declared value, or skip the calling check with the reason."""
        if self.data is None:
            pytest.skip("no expectation declared (run with --compat-expect to check this)")
        value = self.data.get(key)
        if value is None:
            pytest.skip(f"expectation {key!r} not declared for env {self.env!r}")
        return value

    @property
    def cpu_only(self) -> bool:
        return bool(self.raw("cpu_only"))


def load_expect(path: str | None) -> Expect:
    if not path:
        return Expect(None)
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise TypeError(
            f"--compat-expect {path}: expected a JSON object, found {type(data).__name__}"
        )
    return Expect(data)


# --- versions -------------------------------------------------------------------------------


def public_version(version: str) -> str:
    return version.split("+", 1)[0]


def local_tag(version: str) -> str | None:
    return version.split("+", 1)[1] if "+" in version else None


def release(version: str) -> tuple[int, ...]:
    """``2.10.0+cu128`` -> (2, 10, 0); ``2.12.0.dev20260301`` -> (2, 12, 0)."""
    parts = []
    for piece in public_version(version).split("."):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
        if match.group() != piece:
            break
    return tuple(parts)


def dev_date(version: str) -> str | None:
    match = re.search(r"\.dev(\d{8})", version)
    return match.group(1) if match else None


def version_matches(found: str, wanted: str) -> bool:
    """Exact public version, or a glob such as ``2.12.*``."""
    found_public = public_version(found)
    if any(ch in wanted for ch in "*?["):
        return fnmatch.fnmatchcase(found_public, wanted) or fnmatch.fnmatchcase(found, wanted)
    return found_public == public_version(wanted)


def cuda_int_to_str(value: int | str | None) -> str | None:
    """12080 -> '12.8' (the encoding torchvision/torchaudio report their CUDA version in)."""
    if value is None:
        return None
    text = str(value)
    if "." in text:
        return ".".join(text.split(".")[:2])
    number = int(text)
    return f"{number // 1000}.{(number % 1000) // 10}"


# --- installed distributions --------------------------------------------------------------


def distributions() -> dict[str, str]:
    """Normalized distribution name -> version of everything installed."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[re.sub(r"[-_.]+", "-", name).lower()] = dist.version
    return found


def nvidia_cuda_distributions() -> dict[str, str]:
    """The ``nvidia-*`` CUDA library wheels (not nvidia-ml-py, the pure-Python NVML binding)."""
    return {
        name: version
        for name, version in distributions().items()
        if name.startswith("nvidia-") and name != "nvidia-ml-py"
    }


# --- torch facts ---------------------------------------------------------------------------


def torch_label(torch: ModuleType) -> str:
    cuda = getattr(getattr(torch, "version", None), "cuda", None)
    built = f"built for CUDA {cuda}" if cuda else "a CPU-only build"
    return f"torch {getattr(torch, '__version__', '?')}, {built}"


def no_cuda_reason(torch: ModuleType) -> str | None:
    """None if a CUDA device is usable, else a precise reason."""
    cuda_mod = getattr(torch, "cuda", None)
    if cuda_mod is None or not hasattr(cuda_mod, "is_available"):
        return f"no CUDA device: this torch has no torch.cuda module ({torch_label(torch)})"
    if cuda_mod.is_available():
        return None
    detail = ""
    if getattr(torch.version, "cuda", None):
        try:
            cuda_mod.init()
        except Exception as exc:  # noqa: BLE001 - the init error is the most precise reason
            detail = f": {first_line(exc).split('. ')[0]}"
    return f"no CUDA device: torch.cuda.is_available() is False ({torch_label(torch)}){detail}"


# The lowest driver that runs any build of a CUDA major (NVIDIA's minor-version compatibility;
# Linux values, the same as envlab's hardware knowledge table, which a test keeps in step).
DRIVER_FLOOR = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
_SMI_QUERY = "--query-gpu=index,name,compute_cap,driver_version"


def _driver_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


@functools.cache
def detect_nvidia_gpus() -> tuple[dict[str, Any], ...]:
    """The host's NVIDIA GPUs as ``nvidia-smi`` lists them, independent of torch ([]: none)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        done = subprocess.run(
            [smi, _SMI_QUERY, "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ()
    gpus = []
    for line in done.stdout.splitlines() if done.returncode == 0 else []:
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) >= 4 and cells[0].isdigit():
            cc = cells[2] if re.fullmatch(r"\d+\.\d+", cells[2]) else None
            gpus.append(
                {
                    "index": int(cells[0]),
                    "name": cells[1],
                    "compute_capability": cc,
                    "driver": cells[3],
                }
            )
    return tuple(gpus)


def host_gpus(expect: Expect) -> list[dict[str, Any]]:
    """The host's NVIDIA GPUs: as envlab's doctor detected them, else asked of nvidia-smi."""
    declared = expect.raw("host_gpus")
    if expect.declared and isinstance(declared, list):
        return declared
    return list(detect_nvidia_gpus())


def _gpu_name(gpu: dict[str, Any]) -> str:
    cc = gpu.get("compute_capability")
    return f"GPU {gpu.get('index', 0)} {gpu.get('name', '?')}" + (
        f" (sm_{str(cc).replace('.', '')})" if cc else ""
    )


def _driver_reason(torch: ModuleType, driver: str | None) -> str | None:
    cuda = getattr(torch.version, "cuda", None)
    if not cuda or not driver:
        return None
    floor = DRIVER_FLOOR.get(int(cuda.split(".")[0]))
    if floor and _driver_key(driver) < _driver_key(floor):
        return (
            f"driver {driver} is older than {floor}, the oldest that runs CUDA "
            f"{cuda.split('.')[0]}.x (torch is built for CUDA {cuda})"
        )
    return None


def gpu_unusable(torch: ModuleType, gpus: list[dict[str, Any]], driver: str | None) -> str:
    """Why a host with NVIDIA GPUs gets no CUDA from this torch, with what to do about it."""
    driver = driver or next((g.get("driver") for g in gpus if g.get("driver")), None)
    reasons = [no_cuda_reason(torch) or "torch.cuda.is_available() is False"]
    if getattr(torch.version, "cuda", None) is None:
        reasons.append("this torch is a CPU-only build")
    driver_reason = _driver_reason(torch, driver)
    if driver_reason:
        reasons.append(driver_reason)
    flags = arch_flags(torch) if getattr(torch.version, "cuda", None) else []
    for gpu in gpus:
        cc = gpu.get("compute_capability")
        if cc and flags:
            verdict, why = coverage(flags, parse_capability(str(cc)))
            if not verdict:
                reasons.append(f"{_gpu_name(gpu)}: {why}")
    listed = ", ".join(_gpu_name(g) for g in gpus)
    return (
        f"this host has an NVIDIA GPU ({listed}"
        + (f", driver {driver}" if driver else "")
        + ") but CUDA is unusable: "
        + "; ".join(reasons)
        + ". Fix: use the env whose build covers this GPU and driver (`nox -s doctor` names it), "
        "or update the NVIDIA driver."
    )


def cuda_absence_problems(torch: ModuleType) -> list[str]:
    problems = []
    cuda = getattr(torch.version, "cuda", None)
    if cuda is not None:
        problems.append(f"torch.version.cuda is {cuda!r} (torch {torch.__version__})")
    elif torch.cuda.is_available():
        problems.append("torch.cuda.is_available() is True")
    nvidia = sorted(nvidia_cuda_distributions())
    if nvidia:
        shown = ", ".join(nvidia[:5]) + (", ..." if len(nvidia) > 5 else "")
        problems.append(f"{len(nvidia)} nvidia-* CUDA wheels installed ({shown})")
    return problems


def assert_cuda_absent(torch: ModuleType) -> None:
    """For a CPU-only env: no CUDA build, no CUDA device, no nvidia-* wheels."""
    problems = cuda_absence_problems(torch)
    assert not problems, (
        "expected a CPU-only env (cpu_only: true) but found CUDA: "
        + "; ".join(problems)
        + ". Fix: install torch from the CPU index (https://download.pytorch.org/whl/cpu) as the "
        "torch layer and make sure no stack package pulls a CUDA torch or nvidia-* wheels."
    )


def arch_flags(torch: ModuleType) -> list[str]:
    """The compiled arch list, readable without a GPU (``get_arch_list()`` is [] then)."""
    getter = getattr(torch._C, "_cuda_getArchFlags", None)
    flags = getter() if getter is not None else None
    if flags:
        return str(flags).split()
    return list(torch.cuda.get_arch_list()) if torch.cuda.is_available() else []


# --- arch coverage: the SASS/PTX rule, from envlab's single source -------------------------


def _load_archrule() -> ModuleType:
    """``_archrule.py`` beside this file: the generated copy of envlab's arch rule.

    Loaded by path, not ``import _archrule``: pytest puts this directory on sys.path when it
    runs the suite, but envlab's own tests load this file by path, where it is not.
    """
    path = Path(__file__).resolve().with_name("_archrule.py")
    loaded = sys.modules.get("_archrule")
    if loaded is not None and Path(getattr(loaded, "__file__", "")).resolve() == path:
        return loaded
    spec = importlib.util.spec_from_file_location("_archrule", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the arch rule from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["_archrule"] = module  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(module)
    return module


archrule = _load_archrule()
ArchFlag = archrule.Arch  # the name the checks used before the rule had a single source


def parse_flag(token: str) -> Arch | None:
    """The parsed arch flag (an ``_archrule.Arch``), or None for a token that is not one."""
    try:
        return archrule.Arch.parse(token)
    except ValueError:
        return None


def parse_capability(text: str) -> tuple[int, int]:
    """'12.0', 'sm_120', 'compute_90a', '86' -> (major, minor)."""
    cap = archrule.Capability.parse(text)
    return cap.major, cap.minor


def _capability(cap: tuple[int, int] | Capability) -> Capability:
    return archrule.Capability(*cap) if isinstance(cap, tuple) else cap


def runs_on(flag: Arch, cap: tuple[int, int] | Capability) -> str:
    """'sass', 'ptx' or '' for how code built for ``flag`` runs on a device of ``cap``."""
    verdict = archrule.runs_on(flag, _capability(cap))
    return "" if verdict == "none" else verdict


def coverage(flags: list[str], cap: tuple[int, int] | Capability) -> tuple[str, str]:
    """('sass'|'ptx'|'', explanation) for a device of capability ``cap``."""
    verdict, why = archrule.coverage(flags, _capability(cap))
    return ("" if verdict == "none" else verdict), why


# --- subprocess helper ---------------------------------------------------------------------


def python_json(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> Any:
    """Run ``code`` in a fresh interpreter of this env; it must print one JSON document last."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=env, timeout=timeout, check=False
    )
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        pytest.fail(f"subprocess failed (exit {done.returncode}): {tail[0]}", pytrace=False)
    return json.loads(done.stdout.decode("utf-8").strip().splitlines()[-1])
