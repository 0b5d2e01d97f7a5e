"""The one item a bisect watches in each candidate env: an expectation check, a compat test or a
benchmark; named by the user, or the first regression the judge finds between the two ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from envlab.errors import UserError
from envlab.project import Project
from envlab.report import judge
from envlab.report.judge import Finding, Point
from envlab.report.regress import BISECTABLE, bisect_item
from envlab.results.facts import Facts
from envlab.results.history import BenchRow, CheckRow, CompatRow, benchmark_key
from envlab.results.schema import Benchmark, Check, CompatRun, CompatTest, Result
from envlab.run import bench, compat
from envlab.run.bench import BenchMode
from envlab.spec.envspec import EnvSpec
from envlab.verify import expectations

_BROKEN_TEST = frozenset({"failed", "error", "xpassed"})
_NOT_FOUND = frozenset({4, 5})  # pytest: usage error (a node id not found), no tests collected


class Kind(StrEnum):
    """What a target is (the ``envlab bisect`` option that names it)."""

    CHECK = "check"
    TEST = "test"
    BENCH = "bench"


@dataclass(frozen=True)
class Target:
    kind: Kind
    name: str

    def __str__(self) -> str:
        return {
            Kind.CHECK: f"check {self.name}",
            Kind.TEST: self.name,
            Kind.BENCH: f"benchmark {self.name}",
        }[self.kind]


@dataclass
class Observation:
    """What one candidate showed: whether the target broke, why, and the records behind it."""

    broke: bool
    detail: str
    checks: list[Check] = field(default_factory=list)
    compat: CompatRun | None = None
    benchmarks: list[Benchmark] = field(default_factory=list)


@dataclass(frozen=True)
class Env:
    """A built candidate, as the target sees it."""

    project: Project
    spec: EnvSpec
    python: Path
    facts: Facts
    layer_packages: dict[str, dict[str, str]]
    work: Path  # scratch space for the benchmark program's output


# --------------------------------------------------------------------------- the default


def _findings(good: Result, bad: Result) -> list[Finding]:
    """What the judge finds in ``bad`` against ``good``, in the order regress lists it."""
    base = good.run_id
    found, _ = judge.check_breaks(
        [_check_row(c) for c in bad.checks], [(base, [_check_row(c) for c in good.checks])]
    )
    tests, _ = judge.compat_breaks(
        [_compat_row(t) for t in (bad.compat.tests if bad.compat else [])],
        [(base, [_compat_row(t) for t in (good.compat.tests if good.compat else [])])],
    )
    errors = judge.benchmark_breaks(
        [_bench_row(b) for b in bad.benchmarks], [(base, [_bench_row(b) for b in good.benchmarks])]
    )
    before = {_bench_row(b).key: b for b in good.benchmarks if b.error is None}
    slower = []
    for b in (b for b in bad.benchmarks if b.error is None):
        row = _bench_row(b)
        ref = before.get(row.key)
        if ref is None:
            continue
        verdict = judge.judge_against(
            Point(base, ref.median, tuple(ref.samples)),
            Point(bad.run_id, b.median, tuple(b.samples)),
            higher_is_better=b.higher_is_better,
        )
        if verdict.regressed:
            slower.append(judge.performance_finding(row.key, b.unit, b.median, verdict))
    return found + tests + errors + slower


def first_regression(good: Result, bad: Result) -> Target:
    """The first check, compat test or benchmark the judge finds broken from ``good`` to ``bad``."""
    for finding in _findings(good, bad):
        item = bisect_item(finding)
        if item is not None:
            return Target(Kind(item[0]), item[1])
    options = ", ".join(f"--{o}" for o in dict.fromkeys(BISECTABLE.values()))
    raise UserError(
        f"bisect: expected a check, compat test or benchmark that broke between "
        f"{good.run_id} and {bad.run_id}, found none: name the item to watch with {options}"
    )


def _check_row(c: Check) -> CheckRow:
    return CheckRow(0, c.name, c.ok, c.expected, c.found, c.layer, c.message)


def _compat_row(t: CompatTest) -> CompatRow:
    return CompatRow(0, t.id, t.category, t.outcome, t.duration_s, t.message, t.skip_reason, t.gpu)


def _bench_row(b: Benchmark) -> BenchRow:
    return BenchRow(
        0,
        benchmark_key(b.name, b.version, b.params, b.unit),
        b.name,
        b.unit,
        b.higher_is_better,
        tuple(b.samples),
        b.median,
        b.iqr,
        b.cv,
        b.noisy,
        b.fraction_of_peak,
        b.peak_source,
        b.error,
    )


# --------------------------------------------------------------------------- observing


def reference_benchmark(result: Result, name: str) -> Benchmark:
    """The benchmark ``name`` in ``result`` that a candidate is judged against."""
    found = [b for b in result.benchmarks if b.name == name and b.error is None]
    if len(found) != 1:
        names = ", ".join(sorted({b.name for b in result.benchmarks if b.error is None}))
        raise UserError(
            f"bisect: expected one benchmark {name!r} that ran in {result.run_id}, found "
            f"{len(found)} (it has: {names or 'none'})"
        )
    return found[0]


def observe(
    target: Target,
    env: Env,
    reference: Benchmark | None = None,
    reference_run: str = "good",
    mode: BenchMode = BenchMode.QUICK,
) -> Observation:
    """Run ``target`` in ``env``; a benchmark is judged against ``reference`` (without one, this
    candidate measures the reference: it did not break)."""
    checks = expectations.check(env.spec, env.facts, env.layer_packages)
    if target.kind is Kind.CHECK:
        return _check(target, checks)
    if target.kind is Kind.TEST:
        observation = _test(target, env)
    else:
        observation = _bench(target, env, reference, reference_run, mode)
    observation.checks = checks
    return observation


def _check(target: Target, checks: list[Check]) -> Observation:
    found = next((c for c in checks if c.name == target.name), None)
    if found is None:
        names = ", ".join(c.name for c in checks)
        raise UserError(f"bisect: expected a check named {target.name!r}, found only: {names}")
    detail = f"expected {found.expected}, found {found.found}"
    return Observation(not found.ok, detail, checks)


def _test(target: Target, env: Env) -> Observation:
    expect = compat.expectations_json(env.spec.name, env.spec.expect)
    run = compat.run_suite(env.python, env.project.compat_tests, expect, select=[target.name])
    test = next((t for t in run.tests if t.id == target.name), None)
    if test is None:
        # the suite crashed, or the test's module did not import: the item broke
        if run.tests or (run.error and run.returncode not in _NOT_FOUND):
            reason = run.error or "; ".join(f"{t.id}: {t.message}" for t in run.tests)
            return Observation(True, f"did not run: {reason}", compat=run)
        raise UserError(
            f"bisect: expected compat test {target.name!r} in {env.project.compat_tests}, "
            f"found no such test (pytest exit {run.returncode}; node ids look like "
            "test_torchaudio.py::test_melspectrogram_cpu)"
        )
    broke = test.outcome in _BROKEN_TEST
    detail = test.outcome + (f": {test.message}" if test.message else "")
    if test.skip_reason:
        detail += f": {test.skip_reason}"
    return Observation(broke, detail, compat=run)


def _bench(
    target: Target, env: Env, reference: Benchmark | None, reference_run: str, mode: BenchMode
) -> Observation:
    threads = reference.params.get("threads") if reference else None
    run = bench.run_benchmark_program(
        env.python,
        env.project.root,
        mode,
        env.work,
        only=[target.name],
        threads=threads if isinstance(threads, int) else None,
    )
    found = next((b for b in run.benchmarks if b.name == target.name), None)
    if found is None or found.error:
        why = found.error if found else run.skipped.get(target.name, "it wrote no record")
        return Observation(True, f"did not run: {why}", benchmarks=run.benchmarks)
    if reference is None:
        return Observation(False, f"reference: {found.median:.4g} {found.unit}", benchmarks=[found])
    verdict = judge.judge_against(
        Point(reference_run, reference.median, tuple(reference.samples)),
        Point("candidate", found.median, tuple(found.samples)),
        higher_is_better=found.higher_is_better,
    )
    assert verdict.factor is not None and verdict.bar is not None
    factor = verdict.factor
    how = (
        f"{factor:.2f}x worse (bar {verdict.bar:.2f}x)"
        if factor >= 1
        else f"{1 / factor:.2f}x better"
    )
    detail = f"{found.median:.4g} {found.unit} vs {reference.median:.4g} in {reference_run}: {how}"
    return Observation(verdict.regressed, detail, benchmarks=run.benchmarks)
