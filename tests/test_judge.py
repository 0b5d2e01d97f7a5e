"""The regression judge: its rules on small cases, and the calibration bounds on a fixed seed."""

from __future__ import annotations

import importlib.util
import math
import random
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import factories as f
import pytest

from envlab.errors import UserError
from envlab.outcome import Outcome
from envlab.report import judge
from envlab.report.judge import JudgeOptions, Point, Verdict, judge_performance, judge_series
from envlab.results.history import BenchRow, CheckRow, CompatRow, ResultRow

ROOT = Path(__file__).resolve().parents[1]


def calibration() -> ModuleType:
    """tools/calibrate_judge.py, imported as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location(
        "calibrate_judge", ROOT / "tools" / "calibrate_judge.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def points(medians: list[float], n: int = 7, seed: int = 1) -> list[Point]:
    rng = random.Random(seed)
    return [
        Point(f"run-{i:02d}", m, tuple(m * rng.lognormvariate(0, 0.01) for _ in range(n)))
        for i, m in enumerate(medians)
    ]


def steady(count: int, seed: int = 2) -> list[float]:
    """Run medians of a machine drifting a few percent either way."""
    rng = random.Random(seed)
    return [10.0 * (1 + rng.uniform(-0.04, 0.04)) for _ in range(count)]


# --------------------------------------------------------------------------- performance


def test_too_little_history_says_so() -> None:
    history = points(steady(4))
    verdict = judge_performance(history, points([30.0]), higher_is_better=False)
    assert verdict.verdict is Verdict.INSUFFICIENT and not verdict.regressed
    assert (verdict.history, verdict.needed) == (4, 5)
    assert verdict.summary() == "4 of 5 earlier runs"
    enough = judge_performance(points(steady(5)), points([30.0]), higher_is_better=False)
    assert enough.regressed and enough.history == 5


def test_slowdown_beyond_the_spread_is_a_regression_and_drift_is_not() -> None:
    history = points(steady(30))
    calm = judge_performance(history, points([10.3]), higher_is_better=False)
    assert calm.verdict is Verdict.OK and calm.factor is not None and calm.factor < calm.bar  # type: ignore[operator]
    slow = judge_performance(history, points([13.5]), higher_is_better=False)
    assert slow.regressed and slow.factor == pytest.approx(1.35, rel=0.05)
    assert slow.window == ("run-00", "run-29") and slow.history == 30
    assert "1.3" in slow.summary() and "30 earlier runs" in slow.summary()
    # a window drifting ±15 % raises the bar above a slowdown of 25 %
    wide = points([10.0 * (1 + 0.15 * math.sin(i)) for i in range(30)])
    noisy = judge_performance(wide, points([12.5]), higher_is_better=False)
    assert noisy.verdict is Verdict.OK and noisy.bar is not None and noisy.bar > 1.25


def test_throughput_drop_is_the_regression_for_higher_is_better() -> None:
    history = points(steady(20))
    assert judge_performance(history, points([7.0]), higher_is_better=True).regressed
    assert not judge_performance(history, points([14.0]), higher_is_better=True).regressed
    assert not judge_performance(history, points([7.0]), higher_is_better=False).regressed


def test_one_and_two_sample_figures_judged_by_run_medians() -> None:
    build_times = points([60.0 * (1 + 0.03 * math.cos(i)) for i in range(8)], n=1)
    for n in (1, 2):
        assert judge_performance(
            build_times, points([180.0], n=n), higher_is_better=False
        ).regressed
        # below the few-sample minimum factor (1.25): one value is its own whole noise
        assert not judge_performance(
            build_times, points([72.0], n=n), higher_is_better=False
        ).regressed


def test_persist_needs_each_recent_run_worse() -> None:
    opts = JudgeOptions(persist=2)
    history = points(steady(20))
    once = judge_performance(history, points([10.0, 14.0]), higher_is_better=False, options=opts)
    twice = judge_performance(history, points([14.0, 14.0]), higher_is_better=False, options=opts)
    assert not once.regressed and twice.regressed and "each of the last 2 runs" in twice.summary()
    assert judge_performance(
        history, points([14.0]), higher_is_better=False, options=opts
    ).verdict is (Verdict.INSUFFICIENT)


def test_a_median_that_is_not_positive_is_not_judged() -> None:
    verdict = judge_performance(points(steady(10)), points([0.0]), higher_is_better=False)
    assert verdict.verdict is Verdict.INSUFFICIENT and "not positive" in verdict.summary()


def test_series_verdicts_equal_the_newest_run_verdicts() -> None:
    medians = steady(40) + [13.0, 13.2, 10.1]
    series = points(medians)
    for opts in (JudgeOptions(), JudgeOptions(window=10, persist=2)):
        marks = judge_series(series, higher_is_better=False, options=opts)
        for i in range(len(series)):
            start = max(0, i - opts.persist + 1)
            direct = judge_performance(
                series[:start], series[start : i + 1], higher_is_better=False, options=opts
            )
            assert marks[i] == direct, i
    assert [
        i for i, m in enumerate(judge_series(series, higher_is_better=False)) if m.regressed
    ] == [
        40,
        41,
    ]


def test_options_are_checked() -> None:
    for bad in (
        JudgeOptions(threshold=0.9),
        JudgeOptions(window=0),
        JudgeOptions(persist=0),
        JudgeOptions(min_history=50, window=40),
        JudgeOptions(sigmas=-1),
    ):
        with pytest.raises(UserError):
            bad.check()
    assert "40 earlier comparable run medians" in JudgeOptions().rule()


# --------------------------------------------------------------------------- hard breaks


def row(rid: int, outcome: Outcome, **kw: object) -> ResultRow:
    values: dict[str, object] = {
        "rid": rid,
        "run_id": f"run-{rid}",
        "host_id": "h",
        "env": "stable",
        "created": f"2026-11-{rid:02d}",
        "hostname": "h",
        "host_os": "Linux",
        "host_cpu": "cpu",
        "gpu": None,
        "driver": None,
        "outcome": outcome,
        "reason": None,
        "spec_hash": "s",
        "description": "",
        "python": None,
        "torch": None,
        "torch_cuda": None,
        "cudnn": None,
        "build_s": 1.0,
        "build_reused": False,
        "n_passed": 10,
        "n_failed": 0,
        "n_skipped": 0,
        "compat_error": None,
        "source": None,
    }
    return ResultRow(**(values | kw))  # type: ignore[arg-type]


def test_outcome_is_compared_with_the_last_attempted_one() -> None:
    built, out = row(1, Outcome.BUILT), row(2, Outcome.UNAVAILABLE, reason="index down")
    failed = row(3, Outcome.BUILD_FAILED, reason="conflict")
    finding = judge.outcome_break([built, out], failed)
    assert finding and (finding.before, finding.after, finding.baseline_run) == (
        Outcome.BUILT,
        Outcome.BUILD_FAILED,
        "run-1",
    )
    # the first unavailable night is flagged once; the nights after it are not
    assert judge.outcome_break([built], out) is not None
    assert judge.outcome_break([built, out], row(4, Outcome.UNAVAILABLE)) is None
    assert judge.outcome_break([built, out], row(4, Outcome.BUILT)) is None
    assert judge.outcome_break([], failed) is None


def test_checks_and_tests_against_the_last_run_where_they_ran() -> None:
    ok, bad = (
        CheckRow(1, "cuda", True, "12.8", "12.8", None, ""),
        CheckRow(3, "cuda", False, "12.8", "None", "stack", "timm"),
    )
    findings, compared = judge.check_breaks([bad], [("run-2", []), ("run-1", [ok])])
    assert compared == 1 and [(x.kind, x.subject, x.baseline_run) for x in findings] == [
        ("check", "cuda", "run-1")
    ]
    assert "[layer stack]" in findings[0].detail

    def test(rid: int, outcome: str) -> CompatRow:
        return CompatRow(rid, "t::gpu", "cuda", outcome, 0.1, "boom", None, True)

    # skipped in the newest earlier run: the one before, where it passed, is the baseline
    found, _ = judge.compat_breaks(
        [test(3, "failed")], [("run-2", [test(2, "skipped")]), ("run-1", [test(1, "passed")])]
    )
    assert [(x.subject, x.before, x.after, x.baseline_run) for x in found] == [
        ("t::gpu", "passed", "failed", "run-1")
    ]
    # already failing the last time it ran: not a new break
    assert judge.compat_breaks([test(3, "failed")], [("run-2", [test(2, "error")])])[0] == []


def test_crashed_suite_and_benchmark_errors() -> None:
    crashed = row(3, Outcome.BUILT, n_passed=0, compat_error=f.SEGFAULT)
    finding = judge.suite_crash(
        crashed, [row(2, Outcome.BUILT, n_passed=0, compat_error="x"), row(1, Outcome.BUILT)]
    )
    assert finding and (finding.kind, finding.before, finding.baseline_run) == (
        "compat-suite",
        "10 tests ran",
        "run-1",
    )
    assert judge.suite_crash(row(3, Outcome.BUILT), [row(1, Outcome.BUILT)]) is None

    def bench(rid: int, key: str, error: str | None = None) -> BenchRow:
        return BenchRow(rid, key, key, "ms", False, (1.0,), 1.0, 0.0, 0.0, False, None, None, error)

    before = ("run-1", [bench(1, "gemm"), bench(1, "conv")])
    errors = judge.benchmark_breaks([bench(2, "gemm", "CUDA error"), bench(2, "conv")], [before])
    assert [(x.subject, x.after) for x in errors] == [("gemm", "error")]
    stopped = judge.benchmark_breaks([bench(2, "benchmark_run", "exited with code -9")], [before])
    assert [x.subject for x in stopped] == ["benchmark_run"] and "2 benchmark(s)" in stopped[
        0
    ].detail
    # a benchmark that never ran errors, and every one that ran before is there: no break
    new = [bench(2, "new", "no GPU"), bench(2, "gemm"), bench(2, "conv")]
    assert judge.benchmark_breaks(new, [before]) == []


# --------------------------------------------------------------------------- calibration


@pytest.fixture(scope="module")
def cal() -> ModuleType:
    return calibration()


def option_sets(cal: ModuleType) -> list[JudgeOptions]:
    _flags, workflow = cal.workflow_options()
    return [JudgeOptions()] + ([workflow] if workflow != JudgeOptions() else [])


def test_false_alarms_on_identical_runs(cal: ModuleType) -> None:
    model = cal.NoiseModel(cv=0.03, drift=0.08)
    for options in option_sets(cal):
        fa = cal.false_alarms(model, options, histories=50, nights=options.window + 15, seed=11)
        assert fa.env_verdicts >= 2000
        assert fa.rate <= 0.005, (options, fa.env_alarms, fa.env_verdicts)
        assert fa.young_verdicts >= 200 and fa.young_alarms == 0
        young = [c[Verdict.INSUFFICIENT] for c in fa.per_figure]
        assert all(n >= fa.young_verdicts for n in young)  # speed is not judged that young


def test_power_on_the_same_noise_model(cal: ModuleType) -> None:
    model = cal.NoiseModel(cv=0.03, drift=0.08)
    gemm = [name for name, _n in model.figures].index("gemm")  # 7 samples, as quick mode
    for options in option_sets(cal):
        first, second = cal.power(model, options, gemm, 1.20, histories=1000, seed=5)
        assert first >= 0.90 and second >= 0.99, (first, second)
        first, _ = cal.power(model, options, gemm, 1.35, histories=300, seed=6)
        assert first >= 0.99
        for figure, (name, n) in enumerate(model.figures):
            if n < 3:  # a 3x slower 1-2-sample figure, as soon as the history allows
                early = options.min_history
                first, _ = cal.power(model, options, figure, 3.0, 50, seed=7, earlier=early)
                assert first == 1.0, name


def test_workflow_options_are_read_from_the_workflow(cal: ModuleType) -> None:
    flags, options = cal.workflow_options()
    assert flags != "(none)" and options == replace(JudgeOptions(), window=40, persist=1)
