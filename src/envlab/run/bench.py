"""Run the benchmark program inside an env and turn its raw records into result benchmarks.

The program (``benchmarks/run.py``) runs with the env's interpreter and writes raw samples; this
side adds the statistics (median, IQR, CV, noisy flag), the device peak and the fraction of it,
and the records derived from the build record (env size, build time).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from envlab import proc
from envlab.errors import CommandError, UserError
from envlab.fsutil import dir_size
from envlab.log import log
from envlab.results.schema import Benchmark, BuildRecord
from envlab.run import stats
from envlab.run.peaks import CpuInfo, peak_for, read_cpu_info


class BenchMode(StrEnum):
    """How long the benchmark program runs (``benchmarks/measure.py`` holds the in-env settings)."""

    QUICK = "quick"  # about 30 s an env
    DEFAULT = "default"  # about 2 min an env
    FULL = "full"  # scheduled runs

    @property
    def timeout_s(self) -> float:
        """A generous bound on the whole program, far above its expected time."""
        return {"quick": 300.0, "default": 1200.0, "full": 7200.0}[self.value]


OUTPUT_NAME = "benchmarks.raw.json"
ENV_SIZE_VERSION = 1
BUILD_TIME_VERSION = 1

_REQUIRED = {"name": str, "version": int, "unit": str, "higher_is_better": bool, "samples": list}


class BenchmarkError(UserError):
    """The benchmark program's output is missing or not what envlab expects."""


@dataclass
class BenchmarkRun:
    """What one run of the benchmark program produced."""

    benchmarks: list[Benchmark]
    context: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    output: Path | None = None


def summarize(
    raw: Mapping[str, Any],
    device_name: str | None = None,
    cpu: CpuInfo | None = None,
) -> Benchmark:
    """One raw record -> :class:`Benchmark` with statistics, peak and fraction of peak.

    A median above the peak is reported as an error of the benchmark (wrong timing or wrong peak
    figure), never clamped.
    """
    for key, kind in _REQUIRED.items():
        if not isinstance(raw.get(key), kind):
            raise BenchmarkError(
                f"benchmark record {raw.get('name')!r}: expected {key} of type "
                f"{kind.__name__}, found {raw.get(key)!r:.80}"
            )
    params = dict(raw.get("params") or {})
    params.setdefault("device", raw.get("device", "cpu"))
    samples = [float(x) for x in raw["samples"] if isinstance(x, int | float)]
    error: str | None = raw.get("error")
    if not samples and error is None:
        error = "no samples"
    finite = [x for x in samples if math.isfinite(x)]
    if len(finite) != len(samples):
        error = error or f"{len(samples) - len(finite)} non-finite samples"
    bench = Benchmark(
        name=raw["name"],
        version=raw["version"],
        params=params,
        unit=raw["unit"],
        higher_is_better=raw["higher_is_better"],
        samples=samples,
        median=stats.median(finite) if finite else 0.0,
        iqr=stats.iqr(finite) if finite else 0.0,
        cv=stats.cv(finite) if finite else 0.0,
        noisy=stats.is_noisy(finite) if finite else False,
        error=error,
    )
    found = peak_for(bench.name, params, device_name, cpu)
    if found is not None and finite:
        peak, source = found
        fraction = bench.median / peak
        bench.peak, bench.peak_source, bench.fraction_of_peak = peak, source, fraction
        if fraction > 1.0 and bench.error is None:
            bench.error = (
                f"median {bench.median:.4g} {bench.unit} is {fraction:.0%} of the peak "
                f"{peak:.4g} {bench.unit} ({source}); above 100% means the measurement or the "
                "peak figure is wrong"
            )
    return bench


def _one_value(
    name: str, version: int, unit: str, value: float, params: dict[str, Any]
) -> Benchmark:
    return Benchmark(
        name=name,
        version=version,
        params=params,
        unit=unit,
        higher_is_better=False,
        samples=[value],
        median=value,
        iqr=0.0,
        cv=0.0,
        noisy=False,
    )


def build_benchmarks(build: BuildRecord) -> list[Benchmark]:
    """Env size on disk (GB) and build time (s) from the build record, where it has them.

    No build time for a reused env: nothing was built, the duration is not a build time.
    """
    out: list[Benchmark] = []
    size = build.size_bytes
    if size is None and build.env_dir and Path(build.env_dir).is_dir():
        size = dir_size(Path(build.env_dir))
    if size is not None:
        out.append(_one_value("env_size", ENV_SIZE_VERSION, "GB", size / 1e9, {}))
    if not build.reused and build.duration_s > 0:
        out.append(_one_value("env_build_time", BUILD_TIME_VERSION, "s", build.duration_s, {}))
    return out


def parse_output(path: Path, cpu: CpuInfo | None = None) -> BenchmarkRun:
    """Read the program's output file into benchmarks (statistics and peaks added)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchmarkError(
            f"{path}: expected the benchmark program's JSON output ({exc})"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise BenchmarkError(f"{path}: expected {{'benchmarks': [...], 'context': {{...}}}}")
    context = doc.get("context") if isinstance(doc.get("context"), dict) else {}
    devices = context.get("devices") if isinstance(context.get("devices"), dict) else {}
    benchmarks = []
    for raw in doc["benchmarks"]:
        if not isinstance(raw, dict):
            raise BenchmarkError(f"{path}: expected a record object, found {raw!r:.80}")
        device = str(raw.get("device", "cpu"))
        benchmarks.append(summarize(raw, devices.get(device), cpu))
    skipped = context.get("skipped") if isinstance(context.get("skipped"), dict) else {}
    return BenchmarkRun(benchmarks, context, dict(skipped), path)


def _failure(name: str, message: str) -> Benchmark:
    return Benchmark(
        name=name,
        version=1,
        unit="",
        samples=[],
        median=0.0,
        iqr=0.0,
        cv=0.0,
        noisy=False,
        error=message,
    )


def _read_run(out: Path, cpu: CpuInfo | None, failure: str | None) -> BenchmarkRun:
    """The program's records from ``out``, plus a ``benchmark_run`` record when it failed,
    stopped early, or reported an error."""
    if out.exists():
        result = parse_output(out, cpu)
    elif failure:
        result = BenchmarkRun([], {}, {}, None)
    else:
        raise BenchmarkError(f"the benchmark program exited 0 but wrote no {out}")
    if failure or not result.context.get("complete", False):
        running = result.context.get("running")
        message = failure or "benchmark program stopped before the end"
        if running:
            message += f" (while running {running})"
        result.benchmarks.append(_failure("benchmark_run", message))
    if result.context.get("error"):
        result.benchmarks.append(_failure("benchmark_run", str(result.context["error"])))
    return result


def run_benchmark_program(
    python: Path,
    repo_root: Path,
    mode: BenchMode | str,
    out_dir: Path,
    cpu: CpuInfo | None = None,
    build_record: BuildRecord | None = None,
    *,
    threads: int | None = None,
    only: Sequence[str] = (),
    timeout: float | None = None,
) -> BenchmarkRun:
    """Run ``benchmarks/run.py`` with the env's ``python``; keep its raw output in ``out_dir``.

    ``cpu`` describes this host's CPU for the peak estimate (read from /proc/cpuinfo if None).
    A crash of the program keeps the records written before it and adds a ``benchmark_run``
    record whose error says what happened.
    """
    if mode not in set(BenchMode):
        modes = ", ".join(BenchMode)
        raise UserError(f"benchmark mode must be one of {modes}, found {mode!r}")
    mode = BenchMode(mode)
    cpu = cpu if cpu is not None else read_cpu_info()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / OUTPUT_NAME
    out.unlink(missing_ok=True)
    argv: list[str | Path] = [
        python,
        repo_root / "benchmarks" / "run.py",
        "--mode",
        mode.value,
        "--out",
        out,
    ]
    if threads:
        argv += ["--threads", str(threads)]
    if only:
        argv += ["--only", *only]
    log(f"benchmarks ({mode}) in {python}")
    failure: str | None = None
    try:
        proc.run(
            argv, cwd=repo_root, env={"PYTHONUNBUFFERED": "1"}, timeout=timeout or mode.timeout_s
        )
    except CommandError as exc:
        tail = exc.output.strip().splitlines()[-1] if exc.output.strip() else "no output"
        failure = f"benchmark program exited with code {exc.returncode}: {tail}"
    result = _read_run(out, cpu, failure)
    if build_record is not None:
        result.benchmarks.extend(build_benchmarks(build_record))
    return result


def run_benchmarks(
    python: Path, repo_root: Path, mode: BenchMode, out_dir: Path, build_record: BuildRecord | None
) -> list[Benchmark]:
    """The benchmark records of one env for its result document (CPU peaks read from this host)."""
    return run_benchmark_program(
        python, repo_root, mode, out_dir, build_record=build_record
    ).benchmarks
