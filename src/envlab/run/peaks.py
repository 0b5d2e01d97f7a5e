"""Peak figures per device (``data/peaks.toml``) and the lookup that gives a benchmark its peak.

GPU figures come from datasheets by device name; the CPU peak is an estimate from /proc/cpuinfo
(cores x FMA units x vector lanes x 2 x frequency; see the ``[cpu]`` table in peaks.toml).
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

# Benchmark name prefix -> which peak applies. gemm/conv2d take the peak of params["dtype"].
_FLOP_PREFIXES = ("gemm_", "conv2d_")
_DTYPES = ("fp32", "fp64", "tf32", "fp16", "bf16")
_BANDWIDTH_PREFIXES = {
    "copy_d2d": "memory_gbs",
    "copy_h2d": "host_link_gbs",
    "copy_d2h": "host_link_gbs",
}


@dataclass(frozen=True)
class GpuPeak:
    name: str
    patterns: tuple[re.Pattern[str], ...]
    figures: Mapping[str, float]  # key from peaks.toml (fp32_tflops, memory_gbs, ...)
    source: str


@dataclass(frozen=True)
class CpuModel:
    fma_units_per_core: int
    boost_headroom: float
    bf16_factor: tuple[tuple[str, float], ...]
    fp64_factor: float
    source: str


@dataclass(frozen=True)
class PeakTable:
    gpus: tuple[GpuPeak, ...]
    cpu: CpuModel


@dataclass(frozen=True)
class CpuInfo:
    """What the CPU peak estimate needs from the host."""

    model: str
    flags: frozenset[str]
    logical_cpus: int
    physical_cores: int
    mhz: float | None
    mhz_source: Literal["max", "nominal"] | None

    def vector_bits(self) -> int:
        if "avx512f" in self.flags:
            return 512
        if "avx2" in self.flags or "fma" in self.flags:
            return 256
        return 128


def parse_table(text: str) -> PeakTable:
    data = tomllib.loads(text)
    gpus = tuple(
        GpuPeak(
            name=entry["name"],
            patterns=tuple(re.compile(p, re.IGNORECASE) for p in entry["match"]),
            figures={k: float(v) for k, v in entry.items() if k.endswith(("_tflops", "_gbs"))},
            source=entry["source"],
        )
        for entry in data.get("gpu", [])
    )
    cpu = data["cpu"]
    model = CpuModel(
        fma_units_per_core=int(cpu["fma_units_per_core"]),
        boost_headroom=float(cpu["boost_headroom"]),
        bf16_factor=tuple((str(flag), float(f)) for flag, f in cpu["bf16_factor"]),
        fp64_factor=float(cpu["fp64_factor"]),
        source=cpu["source"],
    )
    return PeakTable(gpus, model)


@functools.cache
def table() -> PeakTable:
    """The peak table shipped with envlab."""
    text = resources.files("envlab.run").joinpath("peaks.toml").read_text(encoding="utf-8")
    return parse_table(text)


def gpu_peak(device_name: str, peaks: PeakTable | None = None) -> GpuPeak | None:
    for gpu in (peaks or table()).gpus:
        if any(p.search(device_name) for p in gpu.patterns):
            return gpu
    return None


# --------------------------------------------------------------------------- CPU facts


def read_cpu_info(
    cpuinfo: Path = Path("/proc/cpuinfo"), sysfs: Path = Path("/sys/devices/system/cpu")
) -> CpuInfo | None:
    """CPU facts from /proc/cpuinfo and cpufreq; None where /proc/cpuinfo is absent (not Linux)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    procs = _cpuinfo_processors(text)
    if not procs:
        return None
    first = procs[0]
    flags = frozenset(first.get("flags", "").split())
    cores = {(p.get("physical id", "0"), p.get("core id", p["processor"])) for p in procs}
    mhz, source = _cpu_mhz(sysfs, procs)
    return CpuInfo(
        model=first.get("model name", "unknown"),
        flags=flags,
        logical_cpus=len(procs),
        physical_cores=len(cores),
        mhz=mhz,
        mhz_source=source,
    )


def _cpuinfo_processors(text: str) -> list[dict[str, str]]:
    """The ``key: value`` fields of each processor block in /proc/cpuinfo text."""
    procs: list[dict[str, str]] = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if "processor" in fields:
            procs.append(fields)
    return procs


def _cpu_mhz(
    sysfs: Path, procs: list[dict[str, str]]
) -> tuple[float | None, Literal["max", "nominal"] | None]:
    """The highest cpufreq max clock; failing that, the highest clock /proc/cpuinfo reports."""
    max_khz = []
    for path in sysfs.glob("cpu[0-9]*/cpufreq/cpuinfo_max_freq"):
        try:
            max_khz.append(int(path.read_text().strip()))
        except (OSError, ValueError):
            continue
    if max_khz:
        return max(max_khz) / 1000.0, "max"
    nominal = [float(p["cpu MHz"]) for p in procs if _is_float(p.get("cpu MHz", ""))]
    if nominal:
        return max(nominal), "nominal"
    return None, None


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def cpu_peak_gflops(
    cpu: CpuInfo, dtype: str, threads: int | None = None, peaks: PeakTable | None = None
) -> tuple[float, str] | None:
    """Estimated peak GFLOP/s of ``threads`` cores for ``dtype`` (fp32, fp64, bf16)."""
    model = (peaks or table()).cpu
    if cpu.mhz is None or dtype not in ("fp32", "fp64", "bf16"):
        return None
    cores = min(threads or cpu.physical_cores, cpu.physical_cores)
    bits = cpu.vector_bits()
    lanes = bits // 32
    ghz = cpu.mhz / 1000.0
    if cpu.mhz_source == "nominal":
        ghz *= model.boost_headroom
        clock = (
            f"{cpu.mhz:.0f} MHz nominal (/proc/cpuinfo) x {model.boost_headroom:g} boost headroom"
        )
    else:
        clock = f"{cpu.mhz:.0f} MHz max (cpufreq cpuinfo_max_freq)"
    fp32 = cores * model.fma_units_per_core * lanes * 2 * ghz
    factor, why = 1.0, ""
    if dtype == "fp64":
        factor, why = model.fp64_factor, f" x {model.fp64_factor:g} (fp64)"
    elif dtype == "bf16":
        for flag, f in model.bf16_factor:
            if flag in cpu.flags:
                factor, why = f, f" x {f:g} ({flag})"
                break
    value = fp32 * factor
    source = (
        f"CPU estimate: {cores} cores x {model.fma_units_per_core} FMA x {lanes} fp32 lanes "
        f"({bits}-bit) x 2 FLOP x {ghz:.2f} GHz [{clock}]{why}; {model.source}"
    )
    return value, source


# --------------------------------------------------------------------------- lookup


def peak_kind(record_name: str, params: Mapping[str, Any]) -> str | None:
    """Which peak figure a benchmark is measured against: a dtype, memory_gbs or host_link_gbs."""
    if record_name.startswith(_FLOP_PREFIXES):
        dtype = params.get("dtype")
        return dtype if dtype in _DTYPES else None
    for prefix, key in _BANDWIDTH_PREFIXES.items():
        if record_name.startswith(prefix):
            return key
    return None


def peak_for(
    record_name: str,
    params: Mapping[str, Any],
    device_name: str | None = None,
    cpu: CpuInfo | None = None,
    peaks: PeakTable | None = None,
) -> tuple[float, str] | None:
    """``(peak, source)`` in the record's unit (GFLOP/s or GB/s), or None if no peak is known.

    ``params["device"]`` says where it ran: "cpu" uses the CPU estimate from ``cpu`` (with
    ``params["threads"]`` cores), "cuda:N" looks ``device_name`` up in the GPU table.
    """
    kind = peak_kind(record_name, params)
    if kind is None:
        return None
    device = str(params.get("device", "cpu"))
    if device == "cpu":
        if cpu is None or kind not in _DTYPES:
            return None
        threads = params.get("threads")
        return cpu_peak_gflops(cpu, kind, int(threads) if threads else None, peaks)
    if not device_name:
        return None
    gpu = gpu_peak(device_name, peaks)
    if gpu is None:
        return None
    if kind in _DTYPES:
        tflops = gpu.figures.get(f"{kind}_tflops")
        if tflops is None:
            return None
        return tflops * 1000.0, f"{gpu.name} {kind} {tflops:g} TFLOP/s: {gpu.source}"
    gbs = gpu.figures.get(kind)
    if gbs is None:
        return None
    what = "memory bandwidth" if kind == "memory_gbs" else "host link"
    return gbs, f"{gpu.name} {what} {gbs:g} GB/s: {gpu.source}"
