"""What this machine is, without torch: NVIDIA GPUs and driver, CPU model and ISA flags, OS, libc.

Sources, in order: nvidia-ml-py (the ``pynvml`` module, optional), ``nvidia-smi --query-gpu``,
``/proc/driver/nvidia`` (driver, and device names without compute capability). No GPU is a normal
answer. Broken or partial output becomes a ``problems`` line in the result, never a traceback:
a driver version that is no version (``550.54.15-beta``, ``-``) is unknown, with the text said.
Every nvidia-smi call is bounded (its whole process group killed on timeout), and all of them
together within ``SMI_BUDGET_S``, so ``doctor`` answers whatever a wrapper script does.
The parsers are pure functions over text so they can be tested on recorded outputs.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from envlab import proc
from envlab.errors import CommandError
from envlab.hardware import knowledge
from envlab.results.schema import GPU, Host, default_host_id
from envlab.spec import platforms

SMI_COLUMNS = ("index", "name", "compute_cap", "driver_version", "memory.total")
SMI_TIMEOUT_S = 15.0  # one nvidia-smi query (it answers in well under a second when healthy)
SMI_BUDGET_S = 30.0  # every nvidia-smi query of one detection together
_DRIVER_VERSION = re.compile(r"^\d+(?:\.\d+)*$")
SMI_COLUMNS_OLD = ("index", "name", "driver_version", "memory.total")  # drivers before compute_cap
# CPU flags worth reporting (the rest of /proc/cpuinfo's flags say nothing about torch's kernels).
X86_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512dq",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
ARM_FLAGS = ("asimd", "asimddp", "fphp", "bf16", "i8mm", "sve", "sve2")
_SMI_FAILURES = (
    "NVIDIA-SMI has failed",
    "Failed to initialize NVML",
    "No devices were found",
    "Unable to determine the device handle",
    "is not a valid field to query",
    "couldn't communicate with the NVIDIA driver",
)


@dataclass(frozen=True)
class GpuFacts:
    index: int
    name: str
    compute_capability: str | None = None
    driver: str | None = None
    memory_mib: int | None = None
    cc_source: str | None = None  # "driver" or the knowledge table's source when inferred


@dataclass(frozen=True)
class CpuFacts:
    model: str
    machine: str
    count: int
    flags: tuple[str, ...] = ()
    flags_known: bool = True


@dataclass(frozen=True)
class GpuScan:
    """The outcome of one GPU source: devices, driver, and what went wrong."""

    gpus: tuple[GpuFacts, ...] = ()
    driver: str | None = None
    cuda_driver: str | None = None  # the CUDA version the driver reports (NVML only)
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostFacts:
    hostname: str
    os: str
    os_family: str  # "linux", "windows", "darwin", ...
    platform: str
    libc: str | None
    cpu: CpuFacts
    gpus: tuple[GpuFacts, ...] = ()
    driver: str | None = None
    max_cuda: str | None = None
    max_cuda_source: str | None = None
    gpu_source: str = "none"  # nvml | nvidia-smi | proc | none
    problems: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cpu"]["flags"] = list(self.cpu.flags)
        data["gpus"] = [asdict(g) for g in self.gpus]
        data["problems"] = list(self.problems)
        return data


# --------------------------------------------------------------------------- pure parsers


def _na(value: str) -> str | None:
    value = value.strip()
    return None if (not value or value.startswith("[") or value.upper() in ("N/A", "NA")) else value


def _mib(value: str | None) -> int | None:
    match = re.match(r"^(\d+)\s*(MiB)?$", value or "")
    return int(match.group(1)) if match else None


def parse_smi_csv(text: str, columns: tuple[str, ...] = SMI_COLUMNS) -> GpuScan:
    """Parse ``nvidia-smi --query-gpu=<columns> --format=csv,noheader`` output."""
    gpus: list[GpuFacts] = []
    problems: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        failure = next((f for f in _SMI_FAILURES if f.lower() in line.lower()), None)
        if failure:
            problems.append(f"nvidia-smi: {line}")
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(columns):
            problems.append(
                f"nvidia-smi: expected {len(columns)} columns ({','.join(columns)}), "
                f"found {len(cells)}: {line!r}"
            )
            continue
        row = dict(zip(columns, cells, strict=True))
        index = row["index"]
        name = _na(row["name"]) or "unknown NVIDIA GPU"
        if not index.isdigit():
            problems.append(f"nvidia-smi: expected a device index, found {index!r}: {line!r}")
            continue
        cc = _na(row.get("compute_cap", ""))
        if cc is not None and not re.fullmatch(r"\d+\.\d+", cc):
            problems.append(f"nvidia-smi: GPU {index}: unreadable compute capability {cc!r}")
            cc = None
        gpus.append(
            GpuFacts(
                index=int(index),
                name=name,
                compute_capability=cc,
                driver=_na(row["driver_version"]),
                memory_mib=_mib(_na(row["memory.total"])),
                cc_source="driver" if cc else None,
            )
        )
    driver = next((g.driver for g in gpus if g.driver), None)
    return GpuScan(gpus=tuple(gpus), driver=driver, problems=tuple(problems))


def smi_lacks_compute_cap(text: str) -> bool:
    """True when the driver's nvidia-smi predates the ``compute_cap`` query field."""
    return "compute_cap" in text and "not a valid field" in text


def parse_proc_driver_version(text: str) -> str | None:
    """The driver version from ``/proc/driver/nvidia/version`` (proprietary or open module)."""
    match = re.search(r"NVRM version:.*?Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    return match.group(1) if match else None


def parse_proc_gpu_information(text: str) -> tuple[str | None, int | None]:
    """(model name, device minor) from ``/proc/driver/nvidia/gpus/<bus>/information``."""
    model = re.search(r"^Model:\s*(.+?)\s*$", text, re.MULTILINE)
    minor = re.search(r"^Device Minor:\s*(\d+)", text, re.MULTILINE)
    return (model.group(1) if model else None, int(minor.group(1)) if minor else None)


def parse_nvml_records(records: list[dict[str, Any]]) -> GpuScan:
    """Turn pynvml-style device records into facts.

    A record: ``{"index", "name", "compute_capability": (major, minor) | "8.0" | None,
    "driver", "memory_total": bytes | None}``; an ``"error"`` key marks an unreadable device.
    """
    gpus: list[GpuFacts] = []
    problems: list[str] = []
    for record in records:
        if record.get("error"):
            problems.append(f"nvidia-ml-py: GPU {record.get('index', '?')}: {record['error']}")
            continue
        cc = record.get("compute_capability")
        if isinstance(cc, (tuple, list)) and len(cc) == 2:
            cc = f"{int(cc[0])}.{int(cc[1])}"
        total = record.get("memory_total")
        gpus.append(
            GpuFacts(
                index=int(record["index"]),
                name=_text(record.get("name")) or "unknown NVIDIA GPU",
                compute_capability=cc if isinstance(cc, str) else None,
                driver=_text(record.get("driver")),
                memory_mib=int(total) // (1024 * 1024) if isinstance(total, int) else None,
                cc_source="driver" if isinstance(cc, str) else None,
            )
        )
    driver = next((g.driver for g in gpus if g.driver), None)
    return GpuScan(gpus=tuple(gpus), driver=driver, problems=tuple(problems))


def cuda_from_int(value: int) -> str:
    """NVML/cudaDriverGetVersion integer (12080) -> '12.8'."""
    return f"{value // 1000}.{(value % 1000) // 10}"


def parse_cpuinfo(text: str, machine: str) -> CpuFacts:
    """Model and the ISA flags that matter, from ``/proc/cpuinfo`` (x86_64 or aarch64)."""

    def first(key: str) -> str | None:
        match = re.search(rf"^{key}\s*:\s*(.*?)\s*$", text, re.MULTILINE | re.IGNORECASE)
        return match.group(1) if match else None

    processors = len(re.findall(r"^processor\s*:", text, re.MULTILINE))
    arm = machine.lower() in ("aarch64", "arm64")
    raw = (first("Features") if arm else first("flags")) or ""
    wanted = ARM_FLAGS if arm else X86_FLAGS
    present = set(raw.split())
    flags = tuple(f for f in wanted if f in present)
    model = first("model name") or first("Model") or first("Hardware")
    if not model and arm:
        implementer, part = first("CPU implementer"), first("CPU part")
        model = f"ARM CPU (implementer {implementer}, part {part})" if implementer else None
    return CpuFacts(
        model=model or platform.processor() or machine,
        machine=_machine(machine),
        count=processors or (os.cpu_count() or 1),
        flags=flags,
        flags_known=bool(raw),
    )


def parse_os_release(text: str) -> str | None:
    match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.MULTILINE)
    return match.group(1) if match else None


def _machine(machine: str) -> str:
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(
        machine.lower(), machine.lower()
    )


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if not isinstance(value, str):
        return None
    return value.strip() or None


# --------------------------------------------------------------------------- live sources

SmiRunner = Callable[[list[str]], tuple[int, str]]


def _run_smi(argv: list[str], timeout: float = SMI_TIMEOUT_S) -> tuple[int, str]:
    try:
        done = proc.run(argv, check=False, quiet=True, timeout=timeout)
    except CommandError as exc:  # executable not found
        return exc.returncode, exc.output
    return done.returncode, done.output


def _budgeted(run: SmiRunner, budget_s: float = SMI_BUDGET_S) -> SmiRunner:
    """``run`` with every call's timeout cut to what is left of ``budget_s``."""
    deadline = time.monotonic() + budget_s

    def bounded(argv: list[str]) -> tuple[int, str]:
        left = deadline - time.monotonic()
        if left <= 0:
            return 124, f"[envlab] not run: nvidia-smi used up its {budget_s:g}s"
        return _run_smi(argv, timeout=min(SMI_TIMEOUT_S, left))

    return bounded if run is _run_smi else run


def check_driver(driver: str | None, source: str) -> tuple[str | None, str | None]:
    """(the driver version, or None when it is no version; the problem line saying so)."""
    if driver is None or _DRIVER_VERSION.match(driver.strip()):
        return (driver.strip() if driver else None), None
    return None, f"{source}: driver version unknown: reported {driver!r}, which is no version"


def scan_nvml(nvml: ModuleType) -> GpuScan:
    """Read devices through an imported ``pynvml`` module (nvidia-ml-py)."""
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError subclasses vary by version
        return GpuScan(problems=(f"nvidia-ml-py: nvmlInit failed: {exc}",))
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        try:
            cuda = cuda_from_int(int(nvml.nvmlSystemGetCudaDriverVersion_v2()))
        except Exception:  # noqa: BLE001 - older bindings lack _v2
            cuda = None
        records: list[dict[str, Any]] = []
        for index in range(int(nvml.nvmlDeviceGetCount())):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                records.append(
                    {
                        "index": index,
                        "name": nvml.nvmlDeviceGetName(handle),
                        "compute_capability": tuple(
                            nvml.nvmlDeviceGetCudaComputeCapability(handle)
                        ),
                        "driver": driver,
                        "memory_total": int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                    }
                )
            except Exception as exc:  # noqa: BLE001 - one unreadable device must not hide the others
                records.append({"index": index, "error": str(exc) or type(exc).__name__})
    except Exception as exc:  # noqa: BLE001
        return GpuScan(problems=(f"nvidia-ml-py: {exc}",))
    finally:
        with contextlib.suppress(Exception):  # a failed shutdown changes nothing we report
            nvml.nvmlShutdown()
    scan = parse_nvml_records(records)
    return replace(scan, driver=scan.driver or driver, cuda_driver=cuda)


def scan_smi(run: SmiRunner = _run_smi) -> GpuScan:
    """Query ``nvidia-smi``; on drivers without ``compute_cap``, query again without it."""
    base = ["nvidia-smi", "--format=csv,noheader"]
    code, out = run([*base, f"--query-gpu={','.join(SMI_COLUMNS)}"])
    if code == 127:
        return GpuScan(problems=("nvidia-smi not found",))
    if "killed after" in out and "timeout" in out:
        return GpuScan(problems=(f"nvidia-smi did not answer in time: {_last_line(out)}",))
    if smi_lacks_compute_cap(out):
        code, out = run([*base, f"--query-gpu={','.join(SMI_COLUMNS_OLD)}"])
        scan = parse_smi_csv(out, SMI_COLUMNS_OLD)
        note = "nvidia-smi: this driver does not report compute_cap; inferred from the GPU name"
        return replace(scan, problems=(note, *scan.problems))
    scan = parse_smi_csv(out)
    if code != 0 and not scan.gpus:
        known = tuple(
            p for p in scan.problems if any(f.lower() in p.lower() for f in _SMI_FAILURES)
        )
        last = _last_line(out)
        scan = replace(scan, problems=known or (f"nvidia-smi exited with {code}: {last}",))
    return scan


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1].removeprefix("[envlab] ") if lines else "no output"


def scan_proc(root: Path = Path("/proc/driver/nvidia")) -> GpuScan:
    """Driver version and device names from ``/proc/driver/nvidia`` (no compute capability)."""
    version = root / "version"
    if not version.is_file():
        return GpuScan()
    driver = parse_proc_driver_version(_read(version))
    problems = () if driver else (f"{version}: no driver version found in it",)
    gpus = []
    for info in sorted((root / "gpus").glob("*/information")):
        name, minor = parse_proc_gpu_information(_read(info))
        if name:
            gpus.append(
                GpuFacts(index=minor if minor is not None else len(gpus), name=name, driver=driver)
            )
    return GpuScan(gpus=tuple(gpus), driver=driver, problems=problems)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def import_nvml() -> ModuleType | None:
    try:
        import pynvml  # type: ignore[import-not-found,import-untyped]
    except Exception:  # noqa: BLE001 - not installed, or a broken install: fall back to nvidia-smi
        return None
    return pynvml


def scan_gpus(
    nvml: ModuleType | None,
    run: SmiRunner = _run_smi,
    proc_root: Path = Path("/proc/driver/nvidia"),
) -> tuple[GpuScan, str]:
    """The first source that lists devices wins; problems of the sources tried are kept."""
    problems: list[str] = []
    smi = _budgeted(run)
    for name, scan_once in (
        ("nvml", (lambda: scan_nvml(nvml)) if nvml is not None else None),
        ("nvidia-smi", lambda: scan_smi(smi)),
        ("proc", lambda: scan_proc(proc_root)),
    ):
        if scan_once is None:
            continue
        scan = scan_once()
        problems += scan.problems
        if scan.gpus:
            return replace(scan, problems=tuple(problems)), name
        if scan.driver:
            return replace(scan, problems=tuple(problems)), name
    return GpuScan(problems=tuple(problems)), "none"


def fill_compute_capability(
    gpus: tuple[GpuFacts, ...], facts: knowledge.Knowledge
) -> tuple[GpuFacts, ...]:
    """Infer a missing compute capability from the GPU name (knowledge table), saying so."""
    filled = []
    for gpu in gpus:
        if gpu.compute_capability is None and (entry := facts.gpu_cc(gpu.name)):
            gpu = replace(
                gpu,
                compute_capability=entry.cc,
                cc_source=f"inferred from the name: {entry.source}",
            )
        filled.append(gpu)
    return tuple(filled)


# --------------------------------------------------------------------------- composition


def os_family() -> str:
    return {"win32": "windows", "darwin": "darwin"}.get(
        sys.platform, "linux" if sys.platform.startswith("linux") else sys.platform
    )


def describe_os() -> str:
    if sys.platform.startswith("linux"):
        pretty = parse_os_release(_read(Path("/etc/os-release")))
        return f"Linux {platform.release()}" + (f" ({pretty})" if pretty else "")
    if sys.platform == "darwin":
        return f"macOS {platform.mac_ver()[0]}"
    return f"{platform.system()} {platform.release()}".strip()


def detect_cpu() -> CpuFacts:
    machine = platform.machine()
    if sys.platform.startswith("linux"):
        text = _read(Path("/proc/cpuinfo"))
        if text:
            return parse_cpuinfo(text, machine)
    model = platform.processor() or machine
    if sys.platform == "darwin":
        argv = ["sysctl", "-n", "machdep.cpu.brand_string"]
        done = proc.run(argv, check=False, quiet=True, timeout=SMI_TIMEOUT_S)
        if done.returncode == 0 and done.output.strip():
            model = done.output.strip()
    # Other OSes: ISA flags are not read (no /proc/cpuinfo); the verdicts do not depend on them.
    return CpuFacts(
        model=model, machine=_machine(machine), count=os.cpu_count() or 1, flags_known=False
    )


def detect_host(
    *,
    nvml: ModuleType | None | bool = True,
    run: SmiRunner = _run_smi,
    proc_root: Path = Path("/proc/driver/nvidia"),
    cpu: CpuFacts | None = None,
) -> HostFacts:
    """Everything doctor needs about this machine (``nvml=True``: import pynvml if present)."""
    module = import_nvml() if nvml is True else (nvml or None)
    scan, source = scan_gpus(module, run, proc_root)
    facts = knowledge.load()
    family = os_family()
    libc = "-".join(p for p in platform.libc_ver() if p) if family == "linux" else ""
    host = HostFacts(
        hostname=socket.gethostname(),
        os=describe_os(),
        os_family=family,
        platform=platforms.current(),
        libc=libc or None,
        cpu=cpu or detect_cpu(),
    )
    return with_gpus(host, scan, source, facts)


def with_gpus(host: HostFacts, scan: GpuScan, source: str, facts: knowledge.Knowledge) -> HostFacts:
    """Attach a GPU scan to host facts: infer missing compute capabilities, derive the max CUDA."""
    driver, unreadable = check_driver(scan.driver, source)
    problems = list(scan.problems) + ([unreadable] if unreadable else [])
    gpus = fill_compute_capability(
        tuple(replace(g, driver=check_driver(g.driver, "")[0]) for g in scan.gpus), facts
    )
    problems += [
        f"GPU {g.index} ({g.name}): compute capability unknown "
        "(not reported, name not in the table)"
        for g in gpus
        if g.compute_capability is None
    ]
    max_cuda, max_source = (
        scan.cuda_driver,
        "reported by the driver (NVML)" if scan.cuda_driver else None,
    )
    if max_cuda is None and driver and host.os_family in ("linux", "windows"):
        row = facts.max_cuda(driver, "windows" if host.os_family == "windows" else "linux")
        if row:
            max_cuda, max_source = row.cuda, row.source
    return replace(
        host,
        gpus=gpus,
        driver=driver,
        max_cuda=max_cuda,
        max_cuda_source=max_source,
        gpu_source=source,
        problems=tuple(problems),
    )


def result_host(facts: HostFacts, doctor: dict[str, Any] | None = None) -> Host:
    """The result document's host identity, with the doctor JSON attached."""
    return Host(
        id=default_host_id(),
        hostname=facts.hostname,
        os=facts.os,
        platform=facts.platform,
        machine=facts.cpu.machine,
        cpu=facts.cpu.model,
        cpu_count=facts.cpu.count,
        gpus=[
            GPU(
                index=g.index,
                name=g.name,
                compute_capability=g.compute_capability,
                driver=g.driver,
                memory_mib=g.memory_mib,
            )
            for g in facts.gpus
        ],
        driver=facts.driver,
        max_cuda=facts.max_cuda,
        doctor=doctor,
    )
