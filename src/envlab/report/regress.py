"""``envlab regress``: the newest run (or every env's current state) put to the judge.

This module fetches what :mod:`envlab.report.judge` needs from the history (each (env, host)'s
earlier results, their checks, compat tests and benchmark series), collects its verdicts per
(env, host), names what changed underneath (packages, torch build, driver, python, GPU, spec)
and writes Markdown. The rules themselves live in the judge, which the report's marks also use.

Baseline per (env, host): the earlier results of that (env, host), by default all of them (the
judge picks the comparable ones: where the env existed and the item ran); with ``--baseline RUN``
only the results up to that run's.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from envlab.errors import UserError
from envlab.fsutil import atomic_write_text
from envlab.log import log
from envlab.report import judge
from envlab.report.judge import Finding, JudgeOptions, PerfJudgement, Point, Verdict
from envlab.report.templating import environment
from envlab.results.history import BenchRow, History, ResultRow, SeriesPoint, open_history

EXIT_REGRESSION = 1

BenchSeries = dict[tuple[str, str, str], list[SeriesPoint]]

# The findings `envlab bisect` can narrow down, and the option naming the item it watches.
BISECTABLE: dict[str, str] = {
    "check": "check",
    "compat": "test",
    "benchmark-error": "bench",
    "performance": "bench",
}
HARD_BREAKS = frozenset({"check", "compat", "benchmark-error"})


def bisect_item(finding: Finding) -> tuple[str, str] | None:
    """(option, item) that ``envlab bisect`` watches for ``finding``: ("test", "test_x.py::t")."""
    option = BISECTABLE.get(finding.kind)
    if option is None:
        return None
    # a benchmark finding names the series (name@v1[params] (unit)); bisect takes the name
    item = finding.subject.split("@", 1)[0] if option == "bench" else finding.subject
    return option, item


def bisect_command(pair: PairReport, finding: Finding) -> str | None:
    """The command that names the change behind ``finding``, or None if it cannot be bisected."""
    item = bisect_item(finding)
    if item is None or finding.baseline_run is None or not pair.newest.outcome.has_env:
        return None
    option, name = item
    return (
        f"nox -s bisect -- {shlex.quote(pair.env)} --good {shlex.quote(finding.baseline_run)} "
        f"--bad {shlex.quote(pair.newest.run_id)} --host {shlex.quote(pair.host)} "
        f"--{option} {shlex.quote(name)}"
    )


@dataclass(frozen=True)
class Change:
    """One difference underneath an env between its baseline and its newest result."""

    what: Literal["package", "torch", "driver", "python", "gpu", "spec"]
    name: str
    before: str | None
    after: str | None


@dataclass
class PairReport:
    """The judge's verdicts on one (env, host)'s newest result."""

    env: str
    host: str
    newest: ResultRow
    baseline: ResultRow | None  # what checks and tests were compared with (or the outcome)
    findings: list[Finding] = field(default_factory=list)
    perf: dict[str, PerfJudgement] = field(default_factory=dict)  # by benchmark key
    changes: list[Change] = field(default_factory=list)
    compared_checks: int = 0
    note: str = ""

    @property
    def regressed(self) -> bool:
        return bool(self.findings)

    def bisect_commands(self) -> list[str]:
        """The bisect command for each finding that can be bisected, in order."""
        return [c for f in self.findings if (c := bisect_command(self, f))]

    @property
    def judged(self) -> int:
        return sum(j.verdict is not Verdict.INSUFFICIENT for j in self.perf.values())

    @property
    def insufficient(self) -> list[str]:
        return [k for k, j in self.perf.items() if j.verdict is Verdict.INSUFFICIENT]

    def speed(self) -> str:
        """How the benchmarks were judged, in a few words."""
        if not self.perf:
            return "no benchmarks"
        parts = []
        windows = [j for j in self.perf.values() if j.window is not None]
        if windows:
            first = min(j.window[0] for j in windows if j.window)
            last = max(j.window[1] for j in windows if j.window)
            most = max(j.history for j in windows)
            parts.append(f"{self.judged} judged against up to {most} runs ({first} … {last})")
        if self.insufficient:
            least = min(self.perf[k].history for k in self.insufficient)
            needed = self.perf[self.insufficient[0]].needed
            parts.append(
                f"{len(self.insufficient)} not judged: insufficient history "
                f"({least} of {needed} earlier runs)"
            )
        return "; ".join(parts)


@dataclass
class RegressReport:
    newest_run: str | None
    options: JudgeOptions
    baseline: str | None = None
    current_state: bool = False
    pairs: list[PairReport] = field(default_factory=list)
    missing: list[ResultRow] = field(default_factory=list)

    @property
    def regressions(self) -> list[PairReport]:
        return [p for p in self.pairs if p.regressed]

    @property
    def count(self) -> int:
        return sum(len(p.findings) for p in self.pairs)

    @property
    def insufficient(self) -> int:
        """Benchmarks whose speed was not judged yet, over all pairs."""
        return sum(len(p.insufficient) for p in self.pairs)

    @property
    def baseline_label(self) -> str:
        if self.baseline:
            return f"the results up to run {self.baseline}"
        return "each env's earlier comparable results"

    @property
    def rule(self) -> str:
        return self.options.rule()


def options_from_args(args: argparse.Namespace) -> JudgeOptions:
    """The judge's options from ``envlab regress`` arguments (also read by the calibration)."""
    return JudgeOptions(
        window=args.window,
        min_history=args.min_history,
        threshold=args.threshold,
        sigmas=args.sigmas,
        persist=args.persist,
    ).check()


def changes_between(history: History, before: ResultRow, after: ResultRow) -> list[Change]:
    """Packages, torch build, driver, python, GPU and spec differences from ``before`` to ``after``.

    Facts of the env itself (torch, python, packages) are compared only when both results had an
    env: a build that failed has none, which is not a change of version.
    """
    both = before.outcome.has_env and after.outcome.has_env
    fields: list[tuple[str, str, str | None, str | None]] = [
        ("driver", "driver", before.driver, after.driver),
        ("gpu", "gpu", before.gpu, after.gpu),
        ("spec", "spec hash", before.spec_hash, after.spec_hash),
    ]
    if both:
        fields = [
            ("torch", "torch", before.torch, after.torch),
            ("torch", "torch.version.cuda", before.torch_cuda, after.torch_cuda),
            ("torch", "cudnn", before.cudnn, after.cudnn),
            *fields[:2],
            ("python", "python", before.python, after.python),
            fields[2],
        ]
    out = [Change(w, n, a, b) for w, n, a, b in fields if a != b]  # type: ignore[arg-type]
    if not both:
        return out
    dists = history.distributions([before.rid, after.rid])
    old, new = dists.get(before.rid, {}), dists.get(after.rid, {})
    if old and new:  # an env whose packages were not recorded has nothing to compare
        torch_changed = any(c.name == "torch" for c in out)
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name) and not (name == "torch" and torch_changed):
                out.append(Change("package", name, old.get(name), new.get(name)))
    return out


# --------------------------------------------------------------------------- judging one pair


class _Judging:
    """Fetches what the judge needs for one (env, host) and collects its verdicts."""

    def __init__(
        self, history: History, options: JudgeOptions, baseline: str | None, series: BenchSeries
    ) -> None:
        self.h = history
        self.options = options
        self.baseline = baseline
        self.series = series

    def pair(self, new: ResultRow) -> PairReport:
        rows = self.h.series(new.env, new.host_id)
        prior = rows[: next(i for i, r in enumerate(rows) if r.rid == new.rid)]
        if self.baseline is not None:
            cut = [i for i, r in enumerate(prior) if r.run_id == self.baseline]
            if not cut:
                pair = PairReport(new.env, new.host_id, new, None)
                pair.note = "no result for this env and host in the baseline run"
                return pair
            prior = prior[: cut[0] + 1]
        earlier = judge.comparable(prior)[-self.options.window :][::-1]  # newest first
        base = earlier[0] if new.outcome.has_env and earlier else judge.outcome_baseline(prior, new)
        pair = PairReport(new.env, new.host_id, new, base)
        if not prior:
            pair.note = "first result for this env and host: nothing to compare with"
        outcome = judge.outcome_break(prior, new)
        pair.findings += [outcome] if outcome else []
        if new.outcome.has_env:
            benches = self._items(new, earlier, pair)
            self._speed(new, {r.rid for r in prior}, benches, pair)
        if base is not None:
            pair.changes = changes_between(self.h, base, new)
        return pair

    def _items(
        self, new: ResultRow, earlier: Sequence[ResultRow], pair: PairReport
    ) -> list[BenchRow]:
        """Checks, compat tests, the suite itself and benchmark errors; the newest benchmarks."""
        rids = [new.rid, *(r.rid for r in earlier)]
        checks, compat = self.h.checks(rids), self.h.compat(rids)
        found, compared = judge.check_breaks(
            checks.get(new.rid, []), [(r.run_id, checks.get(r.rid, [])) for r in earlier]
        )
        tests, tests_compared = judge.compat_breaks(
            compat.get(new.rid, []), [(r.run_id, compat.get(r.rid, [])) for r in earlier]
        )
        pair.findings += found + tests
        pair.compared_checks = compared + tests_compared
        crash = judge.suite_crash(new, earlier)
        pair.findings += [crash] if crash else []
        benches = self.h.benchmarks(rids)
        pair.findings += judge.benchmark_breaks(
            benches.get(new.rid, []), [(r.run_id, benches.get(r.rid, [])) for r in earlier]
        )
        return benches.get(new.rid, [])

    def _speed(
        self, new: ResultRow, prior: set[int], benches: Sequence[BenchRow], pair: PairReport
    ) -> None:
        for b in benches:
            if b.error is not None:
                continue
            verdict = self._judge_one(b, new, prior)
            pair.perf[b.key] = verdict
            if verdict.regressed:
                pair.findings.append(judge.performance_finding(b.key, b.unit, b.median, verdict))

    def _judge_one(self, b: BenchRow, new: ResultRow, prior: set[int]) -> PerfJudgement:
        points = self.series.get((b.key, new.env, new.host_id), [])
        pos = next((i for i, p in enumerate(points) if p.rid == new.rid), None)
        persist = self.options.persist
        if pos is None:  # not in the series (it would be, unless the history changed meanwhile)
            return judge.insufficient(0, self.options)
        recent = points[max(0, pos - persist + 1) : pos + 1]
        if self.baseline is not None and any(p.rid in prior for p in recent):
            return judge.insufficient(0, self.options, f"fewer than {persist} runs after it")
        earlier = [p for p in points[: pos - len(recent) + 1] if p.rid in prior]
        return judge.judge_performance(
            [_point(p) for p in earlier],
            [_point(p) for p in recent],
            higher_is_better=b.higher_is_better,
            options=self.options,
        )


def _point(p: SeriesPoint) -> Point:
    return Point(p.run_id, p.median, p.samples)


def compare(
    history: History,
    *,
    options: JudgeOptions | None = None,
    baseline: str | None = None,
    newest_run: str | None = None,
    current_state: bool = False,
    series: BenchSeries | None = None,
) -> RegressReport:
    """The judge's verdicts on ``newest_run`` (default: the newest run), per (env, host).

    With ``current_state``, every (env, host)'s latest result is judged instead, whichever run it
    is from (the report's view). ``series``: the history's benchmark series, if already loaded.
    """
    options = (options or JudgeOptions()).check()
    runs = [r.run_id for r in history.runs()]
    if baseline is not None and baseline not in runs:
        recent = ", ".join(runs[-5:]) or "none"
        raise UserError(
            f"regress: baseline run {baseline!r} is not in the history (recent runs: {recent})"
        )
    newest_run = newest_run or (runs[-1] if runs else None)
    report = RegressReport(newest_run, options, baseline, current_state)
    if newest_run is None:
        return report
    if current_state:
        rows = history.latest_per_pair()
    else:
        rows = history.results_for_run(newest_run)
        present = {(r.env, r.host_id) for r in rows}
        report.missing = [r for r in history.latest_per_pair() if (r.env, r.host_id) not in present]
    judging = _Judging(
        history, options, baseline, series if series is not None else history.benchmark_series()
    )
    report.pairs = [judging.pair(row) for row in rows]
    report.pairs.sort(key=lambda p: (not p.regressed, p.env, p.host))
    return report


# --------------------------------------------------------------------------- output


def render_markdown(report: RegressReport, *, heading_level: int = 1) -> str:
    return environment().get_template("regress.md.j2").render(r=report, h="#" * heading_level)


def write_step_summary(markdown: str) -> Path | None:
    """Append to ``$GITHUB_STEP_SUMMARY`` when running under GitHub Actions."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(markdown)
    return Path(target)


def main(
    runs_dir: Path,
    db_path: Path,
    *,
    options: JudgeOptions,
    baseline: str | None,
    out_md: Path,
) -> int:
    """``envlab regress``: ingest, judge, write Markdown; exit 1 on a regression."""
    history, _ingest = open_history(db_path, runs_dir)
    with history:
        report = compare(history, options=options, baseline=baseline)
        markdown = render_markdown(report)
    atomic_write_text(out_md, markdown)
    summary = write_step_summary(markdown)
    if report.newest_run is None:
        log(f"regress: no results under {runs_dir}; nothing to compare; wrote {out_md}")
        return 0
    for pair in report.regressions:
        for f in pair.findings:
            log(
                f"REGRESSION {pair.env} on {pair.host}: {f.kind} {f.subject}: {f.before} -> "
                f"{f.after}" + (f" ({f.detail})" if f.detail else "")
            )
            command = bisect_command(pair, f)
            if command:
                log(f"  which change did it: {command}")
    log(
        f"regress: {report.count} regression(s) in {len(report.regressions)} env/host pair(s) "
        f"of run {report.newest_run} vs {report.baseline_label}; {report.insufficient} "
        "benchmark(s) with insufficient history to judge speed"
    )
    log(f"wrote {out_md}" + (f" and the step summary {summary}" if summary else ""))
    return EXIT_REGRESSION if report.regressions else 0
