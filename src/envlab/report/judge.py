"""The regression judge: the one set of rules behind ``envlab regress`` and the report's marks.

Hard breaks are judged against the newest earlier *comparable* result of the same (env, host):
one where the env existed (built, verify-failed or external) and the item ran, so an unavailable
or failed night in between never hides the next night's break. They are: an outcome worse than
the last attempted one, an expectation check or compat test that passed and now fails, a compat
suite that crashed (no test outcomes, an error instead), a benchmark that ran and now errors.

Speed is judged per figure on *run medians*. Samples of one run share the machine's state of the
moment, so only the spread between earlier runs shows how far the next run may drift. The newest
run's median is compared, in log space (so a factor reads the same either way), with the earlier
runs' medians in a window of ``window`` comparable runs:

* centre: the mean of the window with the most extreme tenth at each end left out (a few odd runs
  do not move it); spread: their standard deviation with those runs pulled in to the edge kept;
* bar: ``hypot(max(log threshold, sigmas * spread) * sqrt(1 + YOUTH / k), sigmas * noise)``,
  where ``k`` is the number of runs in the window (a young window's centre is less certain) and
  ``noise`` the within-run standard error of a median (pooled over the window and the newest run);
* a figure of fewer than ``FEW_SAMPLES`` samples (build time, ``import torch`` in quick mode) has
  no within-run spread to measure and its one value is its whole noise: its minimum factor is
  ``few_threshold`` instead of ``threshold``;
* a regression when the newest run (and, with ``persist`` > 1, each of the last ``persist``
  comparable runs) is worse than the centre by more than the bar; with fewer than ``min_history``
  runs in the window the verdict is "insufficient history", never "no regression".

The defaults are calibrated by ``tools/calibrate_judge.py`` (per-sample CV 3 %, run-level drift
uniform in ±8 %): well under 0.5 % of per-env verdicts alarm on identical runs, and a 20 %
slowdown is flagged on its first night in more than 90 % of histories.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from envlab.errors import UserError
from envlab.outcome import Outcome
from envlab.results.history import BenchRow, CheckRow, CompatRow, ResultRow

DEFAULT_WINDOW = 40  # earlier comparable run medians a figure is judged against
DEFAULT_MIN_HISTORY = 5  # fewer than this in the window: "insufficient history"
DEFAULT_THRESHOLD = 1.10  # the smallest slowdown factor that can count
DEFAULT_SIGMAS = 2.0  # how many spreads (between runs, and within a run) a slowdown must exceed
DEFAULT_PERSIST = 1  # comparable runs in a row that must all be worse
DEFAULT_FEW_THRESHOLD = 1.25  # the smallest factor for a figure of 1-2 samples
FEW_SAMPLES = 3  # below this many samples a run has no within-run spread to measure
YOUTH = 8.0  # widening of the bar for a window of k runs: sqrt(1 + YOUTH / k), calibrated
TRIM = 0.1  # share of the window left out at each end for the centre (pulled in for the spread)

_FAILED_TEST = frozenset({"failed", "error", "xpassed"})
_NOT_RUN_TEST = frozenset({"skipped", "xfailed"})

FindingKind = Literal[
    "outcome", "check", "compat", "compat-suite", "benchmark-error", "performance"
]


class Verdict(StrEnum):
    """The judge's word on one figure of one run."""

    REGRESSION = "regression"
    OK = "ok"
    INSUFFICIENT = "insufficient history"

    @property
    def icon(self) -> str:
        return {"regression": "❌", "ok": "✅", "insufficient history": "⏳"}[self.value]

    @property
    def tone(self) -> str:
        """How a report colours it: ``fail``, ``ok`` or ``muted``."""
        return {"regression": "fail", "ok": "ok", "insufficient history": "muted"}[self.value]


@dataclass(frozen=True)
class JudgeOptions:
    """The judge's knobs (``envlab regress`` options); the defaults are the calibrated ones."""

    window: int = DEFAULT_WINDOW
    min_history: int = DEFAULT_MIN_HISTORY
    threshold: float = DEFAULT_THRESHOLD
    sigmas: float = DEFAULT_SIGMAS
    persist: int = DEFAULT_PERSIST
    few_threshold: float = DEFAULT_FEW_THRESHOLD

    def check(self) -> JudgeOptions:
        """Self, or a UserError that names the option out of range."""
        if self.threshold < 1.0 or self.few_threshold < 1.0:
            raise UserError(
                f"regress: expected a slowdown threshold >= 1.0 (e.g. 1.10), found "
                f"{min(self.threshold, self.few_threshold)}"
            )
        if self.sigmas < 0:
            raise UserError(f"regress: expected --sigmas >= 0, found {self.sigmas}")
        if min(self.window, self.min_history, self.persist) < 1:
            raise UserError("regress: --window, --min-history and --persist must be at least 1")
        if self.min_history > self.window:
            raise UserError(
                f"regress: --min-history {self.min_history} is larger than --window {self.window}"
            )
        return self

    def rule(self) -> str:
        """The performance rule in one sentence, for reports."""
        persisted = f", in each of the last {self.persist} runs" if self.persist > 1 else ""
        return (
            f"a run median worse than the centre of up to {self.window} earlier comparable run "
            f"medians by more than {self.threshold:.2f}x ({self.few_threshold:.2f}x for figures "
            f"of 1-2 samples) or {self.sigmas:g} spreads between runs, whichever is larger, "
            f"widened for short histories and by the within-run noise{persisted}; at least "
            f"{self.min_history} earlier runs are needed to judge"
        )


# --------------------------------------------------------------------------- performance


@dataclass(frozen=True)
class Point:
    """One comparable run's result of one figure (a benchmark of one env on one host)."""

    run_id: str
    median: float
    samples: tuple[float, ...] = ()


@dataclass(frozen=True)
class PerfJudgement:
    """The judge's word on the newest run of one figure."""

    verdict: Verdict
    history: int  # earlier comparable runs in the window
    needed: int  # runs the window needs before speed is judged
    factor: float | None = None  # newest median / centre, > 1 = worse
    bar: float | None = None  # the factor beyond which it counts
    centre: float | None = None  # the centre, in the figure's unit
    window: tuple[str, str] | None = None  # first and last run of the window
    persist: int = 1
    reason: str = ""

    @property
    def regressed(self) -> bool:
        return self.verdict is Verdict.REGRESSION

    def summary(self) -> str:
        """One line: the factor against the bar, or why speed was not judged."""
        if self.verdict is Verdict.INSUFFICIENT:
            return self.reason or f"{self.history} of {self.needed} earlier runs"
        assert self.factor is not None and self.bar is not None
        worse = f"{self.factor:.2f}x" if self.factor >= 1 else f"{1 / self.factor:.2f}x better"
        persisted = f", in each of the last {self.persist} runs" if self.persist > 1 else ""
        bar = f"bar {self.bar:.2f}x"
        return f"{worse} vs the centre of {self.history} earlier runs ({bar}){persisted}"


@dataclass(frozen=True)
class _Prepared:
    """A point in log space, oriented so that larger is worse, with its median's noise."""

    run_id: str
    badness: float | None  # None: a median that is not positive cannot be judged
    noise: float  # standard error of the median in log units (0 with fewer than FEW_SAMPLES)
    n: int


def median_noise(samples: Sequence[float]) -> float:
    """Standard error of a run's median in log units (0 with fewer than ``FEW_SAMPLES``)."""
    logs = [math.log(x) for x in samples if x > 0 and math.isfinite(x)]
    if len(logs) < FEW_SAMPLES:
        return 0.0
    # the median's standard error is sqrt(pi / 2) times the mean's for normal samples
    return _stdev(logs) * math.sqrt(math.pi / (2 * len(logs)))


def _stdev(values: Sequence[float]) -> float:
    """Sample standard deviation (0 for one value); the judge calls it per point of a history,
    so it skips the input checks of :func:`envlab.run.stats.stdev` (values here are finite)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = math.fsum(values) / n
    return math.sqrt(math.fsum((x - mean) ** 2 for x in values) / (n - 1))


def _prepare(point: Point, higher_is_better: bool) -> _Prepared:
    badness = None
    if point.median > 0 and math.isfinite(point.median):
        badness = -math.log(point.median) if higher_is_better else math.log(point.median)
    return _Prepared(point.run_id, badness, median_noise(point.samples), len(point.samples))


def _centre_and_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean without the extreme tenth at each end, and the spread with them pulled in."""
    ordered = sorted(values)
    k = len(ordered)
    cut = int(TRIM * k)
    kept = ordered[cut : k - cut]
    low, high = kept[0], kept[-1]
    pulled = [min(max(x, low), high) for x in ordered]
    return math.fsum(kept) / len(kept), _stdev(pulled)


def insufficient(history: int, options: JudgeOptions, reason: str = "") -> PerfJudgement:
    """Speed not judged: ``history`` earlier runs, or ``reason``."""
    return PerfJudgement(
        Verdict.INSUFFICIENT,
        history,
        options.min_history,
        persist=options.persist,
        reason=reason or f"{history} of {options.min_history} earlier runs",
    )


def _judge(
    window: Sequence[_Prepared],
    recent: Sequence[_Prepared],
    options: JudgeOptions,
    higher_is_better: bool,
) -> PerfJudgement:
    """The rule itself: ``window`` holds the usable earlier runs (at most ``options.window``),
    ``recent`` the last ``options.persist`` runs, ending with the newest."""
    if any(p.badness is None for p in recent):
        return insufficient(0, options, "a median that is not positive cannot be judged")
    k = len(window)
    if k < options.min_history:
        return insufficient(k, options)
    centre, spread = _centre_and_spread([p.badness for p in window])  # type: ignore[misc]
    newest = recent[-1]
    pooled = math.sqrt(math.fsum(p.noise**2 for p in window) / k)
    noise = max(pooled, newest.noise)
    few = newest.n < FEW_SAMPLES
    floor = math.log(options.few_threshold if few else options.threshold)
    drift = max(floor, options.sigmas * spread) * math.sqrt(1 + YOUTH / k)
    bar = math.hypot(drift, options.sigmas * noise)
    excess = [p.badness - centre for p in recent]  # type: ignore[operator]
    regressed = all(e > bar for e in excess)
    unit_centre = math.exp(-centre if higher_is_better else centre)
    return PerfJudgement(
        Verdict.REGRESSION if regressed else Verdict.OK,
        k,
        options.min_history,
        factor=math.exp(excess[-1]),
        bar=math.exp(bar),
        centre=unit_centre,
        window=(window[0].run_id, window[-1].run_id),
        persist=options.persist,
    )


def judge_performance(
    earlier: Sequence[Point],
    recent: Sequence[Point],
    *,
    higher_is_better: bool,
    options: JudgeOptions = JudgeOptions(),
) -> PerfJudgement:
    """The verdict on ``recent[-1]`` (the newest run), given the comparable runs before ``recent``.

    ``recent`` holds the last ``options.persist`` comparable runs, oldest first; with fewer, the
    verdict is "insufficient history".
    """
    if len(recent) < options.persist:
        return insufficient(len(earlier), options, f"fewer than {options.persist} recent runs")
    usable = [q for q in (_prepare(p, higher_is_better) for p in earlier) if q.badness is not None]
    return _judge(
        usable[-options.window :],
        [_prepare(p, higher_is_better) for p in recent[-options.persist :]],
        options,
        higher_is_better,
    )


def judge_against(
    reference: Point,
    new: Point,
    *,
    higher_is_better: bool,
    options: JudgeOptions = JudgeOptions(),
) -> PerfJudgement:
    """``new`` against one ``reference`` run (a bisect step against the good run's samples).

    With one earlier run there is no spread between runs to learn from: it is a regression when
    worse than the reference median by more than the threshold (the few-samples one for figures
    of 1-2 samples) or ``sigmas`` times the two medians' combined within-run noise, if larger.
    """
    ref, now = _prepare(reference, higher_is_better), _prepare(new, higher_is_better)
    if ref.badness is None or now.badness is None:
        return insufficient(0, options, "a median that is not positive cannot be judged")
    few = min(ref.n, now.n) < FEW_SAMPLES
    floor = math.log(options.few_threshold if few else options.threshold)
    bar = max(floor, options.sigmas * math.hypot(ref.noise, now.noise))
    excess = now.badness - ref.badness
    return PerfJudgement(
        Verdict.REGRESSION if excess > bar else Verdict.OK,
        1,
        1,
        factor=math.exp(excess),
        bar=math.exp(bar),
        centre=reference.median,
        window=(reference.run_id, reference.run_id),
    )


def judge_series(
    points: Sequence[Point], *, higher_is_better: bool, options: JudgeOptions = JudgeOptions()
) -> list[PerfJudgement]:
    """The verdict on every point of a series, each judged as the newest run of its night.

    Point ``i`` gets exactly what :func:`judge_performance` says with ``points[: i + 1]``.
    """
    prepared = [_prepare(p, higher_is_better) for p in points]
    usable = [i for i, p in enumerate(prepared) if p.badness is not None]
    out = []
    for i in range(len(prepared)):
        start = i - options.persist + 1
        if start < 0:
            out.append(insufficient(0, options, f"fewer than {options.persist} recent runs"))
            continue
        end = bisect.bisect_left(usable, start)
        window = [prepared[j] for j in usable[max(0, end - options.window) : end]]
        out.append(_judge(window, prepared[start : i + 1], options, higher_is_better))
    return out


# --------------------------------------------------------------------------- hard breaks


@dataclass(frozen=True)
class Finding:
    """One regression: what broke, how it was before and is now, and against which run."""

    kind: FindingKind
    subject: str
    before: str
    after: str
    detail: str = ""
    baseline_run: str | None = None


def comparable(prior: Iterable[ResultRow]) -> list[ResultRow]:
    """The earlier results whose checks, tests and benchmarks mean something (the env existed)."""
    return [r for r in prior if r.outcome.has_env]


def outcome_baseline(prior: Sequence[ResultRow], new: ResultRow) -> ResultRow | None:
    """What the newest outcome is compared with.

    An unavailable night says nothing about the env (an index or the machine was out), so an
    attempted outcome is compared with the newest earlier attempted one; the first unavailable
    night after an attempted one is compared with it (and flagged once, not every night after).
    """
    if not prior:
        return None
    if new.outcome is Outcome.UNAVAILABLE:
        return prior[-1]
    attempted = [r for r in prior if r.outcome is not Outcome.UNAVAILABLE]
    return attempted[-1] if attempted else prior[-1]


def outcome_break(prior: Sequence[ResultRow], new: ResultRow) -> Finding | None:
    base = outcome_baseline(prior, new)
    if base is None or new.outcome.rank <= base.outcome.rank:
        return None
    return Finding("outcome", "env", base.outcome, new.outcome, new.reason or "", base.run_id)


def check_breaks(
    new: Sequence[CheckRow], earlier: Sequence[tuple[str, Sequence[CheckRow]]]
) -> tuple[list[Finding], int]:
    """Checks that passed in the newest earlier comparable result that had them and now fail.

    ``earlier`` is (run id, checks) of comparable results, newest first. Returns the findings and
    how many checks had an earlier result to compare with.
    """
    findings, compared = [], 0
    for c in new:
        found = next(((run, o) for run, rows in earlier for o in rows if o.name == c.name), None)
        if found is None:
            continue
        compared += 1
        run, old = found
        if old.ok and not c.ok:
            layer = f"[layer {c.layer}]" if c.layer else ""
            findings.append(
                Finding(
                    "check",
                    c.name,
                    f"ok ({old.found})",
                    f"expected {c.expected}, found {c.found}",
                    " ".join(x for x in (c.message, layer) if x),
                    run,
                )
            )
    return findings, compared


def compat_breaks(
    new: Sequence[CompatRow], earlier: Sequence[tuple[str, Sequence[CompatRow]]]
) -> tuple[list[Finding], int]:
    """Compat tests that passed the last time they ran (skips do not count) and now fail."""
    last: dict[str, tuple[str, str]] = {}
    for run, rows in reversed(earlier):  # oldest first, so the newest run wins
        for t in rows:
            if t.outcome not in _NOT_RUN_TEST:
                last[t.test_id] = (run, t.outcome)
    findings, compared = [], 0
    for t in new:
        if t.test_id not in last:
            continue
        compared += 1
        run, before = last[t.test_id]
        if before == "passed" and t.outcome in _FAILED_TEST:
            findings.append(
                Finding("compat", t.test_id, before, t.outcome, (t.message or "")[:300], run)
            )
    return findings, compared


def _suite_ran(row: ResultRow) -> bool:
    return row.compat_error is None and row.n_passed + row.n_failed + row.n_skipped > 0


def suite_crash(new: ResultRow, earlier: Sequence[ResultRow]) -> Finding | None:
    """The compat suite crashed or timed out (an error, no outcomes) where it ran cleanly before.

    ``earlier``: comparable results, newest first.
    """
    if new.compat_error is None:
        return None
    base = next((r for r in earlier if _suite_ran(r)), None)
    if base is None:
        return None
    ran = base.n_passed + base.n_failed + base.n_skipped
    return Finding(
        "compat-suite", "compat suite", f"{ran} tests ran", "crashed", new.compat_error, base.run_id
    )


def benchmark_breaks(
    new: Sequence[BenchRow], earlier: Sequence[tuple[str, Sequence[BenchRow]]]
) -> list[Finding]:
    """Benchmarks that ran and now error.

    ``earlier``: (run id, benchmarks) of comparable results, newest first. A record that errors
    and never ran before (the program's own failure record) counts when benchmarks that ran in
    the newest earlier result with benchmarks are now missing: the program stopped before them.
    """
    keys = {b.key for b in new}
    with_benchmarks = next(((run, rows) for run, rows in earlier if rows), None)
    findings = []
    for b in (b for b in new if b.error is not None):
        last = next(((run, o) for run, rows in earlier for o in rows if o.key == b.key), None)
        if last is not None and last[1].error is None:
            findings.append(
                Finding("benchmark-error", b.key, "ran", "error", b.error[:300], last[0])
            )
        elif last is None and with_benchmarks is not None:
            run, rows = with_benchmarks
            missing = sorted({o.key for o in rows if o.error is None} - keys)
            if missing:
                detail = f"{b.error[:300]}; {len(missing)} benchmark(s) that ran are missing"
                findings.append(
                    Finding("benchmark-error", b.key, f"{len(missing)} ran", "error", detail, run)
                )
    return findings


def performance_finding(key: str, unit: str, latest: float, judgement: PerfJudgement) -> Finding:
    """A performance regression as a finding (``judgement.regressed`` must hold)."""
    assert judgement.centre is not None and judgement.window is not None
    first, last = judgement.window
    return Finding(
        "performance",
        key,
        f"{judgement.centre:.4g} {unit}",
        f"{latest:.4g} {unit}",
        judgement.summary() + f" (runs {first} … {last})",
        last,
    )
