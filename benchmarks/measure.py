"""Timing for the benchmark programs: warm-up, calibrated inner loops, raw per-repeat samples.

Runs inside the env under test; needs only the standard library and (for CUDA timing) torch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Mode:
    """How much time a mode spends per benchmark."""

    name: str
    repeats: int  # most samples per benchmark
    min_repeats: int  # fewest samples, even when one call is slow
    min_sample_s: float  # each sample runs the workload enough times to take at least this
    warmup_s: float  # warm-up time before the first sample (at least two calls)
    max_bench_s: float  # repeats shrink (not below min_repeats) to stay near this per benchmark
    subprocess_repeats: int  # samples for benchmarks that start a process per sample


MODES: dict[str, Mode] = {
    "quick": Mode(
        "quick",
        repeats=7,
        min_repeats=3,
        min_sample_s=0.05,
        warmup_s=0.05,
        max_bench_s=0.8,
        subprocess_repeats=2,
    ),
    "default": Mode(
        "default",
        repeats=10,
        min_repeats=5,
        min_sample_s=0.2,
        warmup_s=0.3,
        max_bench_s=5.0,
        subprocess_repeats=5,
    ),
    "full": Mode(
        "full",
        repeats=30,
        min_repeats=10,
        min_sample_s=0.5,
        warmup_s=1.0,
        max_bench_s=30.0,
        subprocess_repeats=10,
    ),
}


class CudaTimer:
    """Times a block on the GPU with CUDA events (the GPU's own clock), synchronising at the end."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch

    def sync(self) -> None:
        self.torch.cuda.synchronize()

    def time(self, block: Callable[[], None]) -> float:
        start = self.torch.cuda.Event(enable_timing=True)
        end = self.torch.cuda.Event(enable_timing=True)
        start.record()
        block()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0


class CpuTimer:
    def sync(self) -> None:
        return None

    def time(self, block: Callable[[], None]) -> float:
        start = time.perf_counter()
        block()
        return time.perf_counter() - start


Timer = CpuTimer | CudaTimer


def rates(fn: Callable[[], object], work: float, mode: Mode, timer: Timer) -> list[float]:
    """Samples of ``work`` units per second: each sample times ``inner`` back-to-back calls.

    Warm-up first (at least two calls, then until ``mode.warmup_s`` has passed); the inner loop is
    calibrated so each sample lasts at least ``mode.min_sample_s``.
    """
    per_call = _warm_up(fn, mode, timer)
    inner = max(1, math.ceil(mode.min_sample_s / max(per_call, 1e-9)))
    repeats = _repeats(mode, per_call * inner)

    def block() -> None:
        for _ in range(inner):
            fn()

    samples = []
    for _ in range(repeats):
        elapsed = timer.time(block)
        samples.append(work * inner / elapsed)
    return samples


def paired_ratio(
    baseline: Callable[[], object], candidate: Callable[[], object], mode: Mode, timer: Timer
) -> list[float]:
    """Samples of time(baseline) / time(candidate), the two timed back to back in each repeat."""
    per_call = max(_warm_up(baseline, mode, timer), _warm_up(candidate, mode, timer))
    inner = max(1, math.ceil(mode.min_sample_s / max(per_call, 1e-9)))
    repeats = _repeats(mode, 2 * per_call * inner)

    def loop(fn: Callable[[], object]) -> Callable[[], None]:
        def block() -> None:
            for _ in range(inner):
                fn()

        return block

    samples = []
    for _ in range(repeats):
        t_base = timer.time(loop(baseline))
        t_cand = timer.time(loop(candidate))
        samples.append(t_base / t_cand)
    return samples


def _warm_up(fn: Callable[[], object], mode: Mode, timer: Timer) -> float:
    """Run ``fn`` until warm (two calls at least: the first one creates kernels, plans, caches);
    return the time of the last call."""
    deadline = time.perf_counter() + mode.warmup_s
    timer.time(lambda: fn())
    last = timer.time(lambda: fn())
    while time.perf_counter() < deadline:
        last = timer.time(lambda: fn())
    return last


def _repeats(mode: Mode, sample_s: float) -> int:
    fit = int(mode.max_bench_s / max(sample_s, 1e-9))
    return max(mode.min_repeats, min(mode.repeats, fit))
