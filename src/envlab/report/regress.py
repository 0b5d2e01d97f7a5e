"""Regression detection: the newest run against a baseline, per (env, host, check / benchmark).

Regressions: an env that built and no longer does (or now fails verification), an expectation
check or compat test that passed and now fails, a benchmark that now errors, and a benchmark
slower by more than ``threshold`` *and* significant on the raw samples (one-sided Mann–Whitney U,
``p < alpha``), optionally in each of the last ``persist`` runs. Each regression comes with what
changed underneath between baseline and newest: packages, torch build, driver, python, spec.

Baseline per (env, host): the result just before the last ``persist`` runs (default), the named
baseline run, or the ``window`` results before the last ``persist`` runs (benchmark samples pooled;
checks compared with the newest of them). With several baseline runs, the threshold rises to the
spread of their medians: samples of one run share the machine's state of the moment (measured
here: 10-20% between back-to-back runs on a shared 2-core VM), which the rank test cannot see.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from envlab.errors import UserError
from envlab.fsutil import atomic_write_text
from envlab.log import log
from envlab.report.templating import environment
from envlab.results.history import BenchRow, History, ResultRow, open_history
from envlab.run import stats

DEFAULT_THRESHOLD = 1.10
DEFAULT_ALPHA = 0.01
DEFAULT_WINDOW = 5  # baseline runs pooled: their spread is the between-run noise floor
EXIT_REGRESSION = 1

_FAILED = {"failed", "error", "xpassed"}

FindingKind = Literal["outcome", "check", "compat", "benchmark-error", "performance"]


@dataclass(frozen=True)
class PerfVerdict:
    """How much worse ``new`` is than ``base`` (factor > 1 = worse) and how significant."""

    factor: float
    p: float
    regressed: bool


def perf_verdict(
    base: Sequence[float],
    new: Sequence[float],
    *,
    higher_is_better: bool,
    threshold: float,
    alpha: float,
) -> PerfVerdict:
    """Slower by more than ``threshold`` on the medians AND one-sided Mann–Whitney U ``p < alpha``."""
    if len(base) < 2 or len(new) < 2:
        return PerfVerdict(1.0, 1.0, False)
    mb, mn = statistics.median(base), statistics.median(new)
    if mb <= 0 or mn <= 0:
        return PerfVerdict(1.0, 1.0, False)
    factor = mb / mn if higher_is_better else mn / mb
    if factor <= threshold:  # the rank test cannot make a small slowdown a regression
        return PerfVerdict(factor, 1.0, False)
    p = one_sided_p_worse(base, new, higher_is_better=higher_is_better)
    return PerfVerdict(factor, p, p < alpha)


def noise_floor(run_medians: Sequence[float]) -> float:
    """Ratio of the largest to the smallest median among baseline runs (1.0 with fewer than two)."""
    positive = [m for m in run_medians if m > 0]
    return max(positive) / min(positive) if len(positive) >= 2 else 1.0


def one_sided_p_worse(
    base: Sequence[float], new: Sequence[float], *, higher_is_better: bool
) -> float:
    """One-sided Mann–Whitney U p-value for "``new`` is stochastically worse than ``base``"."""
    _u, p = stats.mann_whitney_u_one_sided(
        list(new), list(base), "less" if higher_is_better else "greater"
    )
    return p


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    subject: str
    before: str
    after: str
    detail: str = ""


@dataclass(frozen=True)
class Change:
    """One difference underneath an env between baseline and newest."""

    what: Literal["package", "torch", "driver", "python", "gpu", "spec"]
    name: str
    before: str | None
    after: str | None


@dataclass
class PairReport:
    env: str
    host: str
    newest: ResultRow
    baseline: ResultRow | None
    baseline_runs: list[str]
    findings: list[Finding] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    compared_checks: int = 0
    compared_benchmarks: int = 0
    note: str = ""

    @property
    def regressed(self) -> bool:
        return bool(self.findings)


@dataclass
class RegressReport:
    newest_run: str | None
    baseline_label: str
    threshold: float
    alpha: float
    persist: int
    pairs: list[PairReport] = field(default_factory=list)
    missing: list[ResultRow] = field(default_factory=list)

    @property
    def regressions(self) -> list[PairReport]:
        return [p for p in self.pairs if p.regressed]

    @property
    def count(self) -> int:
        return sum(len(p.findings) for p in self.pairs)


def _built(row: ResultRow) -> bool:
    return row.outcome.has_env


def changes_between(history: History, before: ResultRow, after: ResultRow) -> list[Change]:
    """Packages, torch build, driver, python, GPU and spec differences from ``before`` to ``after``."""
    out: list[Change] = []
    for what, name, a, b in (
        ("torch", "torch", before.torch, after.torch),
        ("torch", "torch.version.cuda", before.torch_cuda, after.torch_cuda),
        ("torch", "cudnn", before.cudnn, after.cudnn),
        ("driver", "driver", before.driver, after.driver),
        ("gpu", "gpu", before.gpu, after.gpu),
        ("python", "python", before.python, after.python),
        ("spec", "spec hash", before.spec_hash, after.spec_hash),
    ):
        if a != b and (a is not None or b is not None):
            out.append(Change(what, name, a, b))  # type: ignore[arg-type]
    dists = history.distributions([before.rid, after.rid])
    old, new = dists.get(before.rid, {}), dists.get(after.rid, {})
    if old or new:  # an env that did not build has no distributions: nothing to compare
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name) and not (
                name == "torch" and any(c.name == "torch" for c in out)
            ):
                out.append(Change("package", name, old.get(name), new.get(name)))
    return out


def _compare_outcome(base: ResultRow, new: ResultRow, pair: PairReport) -> None:
    if new.outcome.rank > base.outcome.rank:
        pair.findings.append(Finding("outcome", "env", base.outcome, new.outcome, new.reason or ""))


def _compare_checks(history: History, base: ResultRow, new: ResultRow, pair: PairReport) -> None:
    checks = history.checks([base.rid, new.rid])
    before = {c.name: c for c in checks.get(base.rid, [])}
    for c in checks.get(new.rid, []):
        old = before.get(c.name)
        if old is not None:
            pair.compared_checks += 1
            if old.ok and not c.ok:
                pair.findings.append(
                    Finding(
                        "check",
                        c.name,
                        f"ok ({old.found})",
                        f"expected {c.expected}, found {c.found}",
                        " ".join(
                            x for x in (c.message, f"[layer {c.layer}]" if c.layer else "") if x
                        ),
                    )
                )
    compat = history.compat([base.rid, new.rid])
    passed = {t.test_id for t in compat.get(base.rid, []) if t.outcome == "passed"}
    seen = {t.test_id for t in compat.get(base.rid, [])}
    for t in compat.get(new.rid, []):
        if t.test_id in seen:
            pair.compared_checks += 1
        if t.test_id in passed and t.outcome in _FAILED:
            pair.findings.append(
                Finding("compat", t.test_id, "passed", t.outcome, (t.message or "")[:300])
            )


def _compare_benchmarks(
    history: History,
    base_rows: list[ResultRow],
    recent: list[ResultRow],
    pair: PairReport,
    threshold: float,
    alpha: float,
) -> None:
    benches = history.benchmarks([r.rid for r in base_rows + recent])
    pooled: dict[str, list[float]] = {}
    run_medians: dict[str, list[float]] = {}
    for r in base_rows:
        for b in benches.get(r.rid, []):
            if b.error is None:
                pooled.setdefault(b.key, []).extend(b.samples)
                run_medians.setdefault(b.key, []).append(b.median)
    per_run: list[dict[str, BenchRow]] = [
        {b.key: b for b in benches.get(r.rid, [])} for r in recent
    ]
    for key, b in per_run[-1].items():
        if key not in pooled:
            continue
        pair.compared_benchmarks += 1
        if b.error is not None:
            pair.findings.append(Finding("benchmark-error", key, "ran", "error", b.error[:300]))
            continue
        # Samples of one run share the machine's state of the moment; how far the baseline runs'
        # medians disagree among themselves is noise a slowdown must exceed to count.
        floor = noise_floor(run_medians[key])
        effective = max(threshold, floor)
        verdicts = []
        for run in per_run:
            rb = run.get(key)
            if rb is None or rb.error is not None:
                break
            verdicts.append(
                perf_verdict(
                    pooled[key],
                    rb.samples,
                    higher_is_better=rb.higher_is_better,
                    threshold=effective,
                    alpha=alpha,
                )
            )
        if len(verdicts) == len(recent) and all(v.regressed for v in verdicts):
            v = verdicts[-1]
            base_median = statistics.median(pooled[key])
            persisted = f", in each of the last {len(recent)} runs" if len(recent) > 1 else ""
            pair.findings.append(
                Finding(
                    "performance",
                    key,
                    f"{base_median:.4g} {b.unit}",
                    f"{b.median:.4g} {b.unit}",
                    f"{v.factor:.2f}x worse (> {effective:.2f}x"
                    + (
                        f", raised from {threshold:.2f}x by the spread between baseline runs"
                        if effective > threshold
                        else ""
                    )
                    + f"), one-sided Mann-Whitney U p = {v.p:.2g} "
                    f"(< {alpha:g}){persisted}" + ("; samples flagged noisy" if b.noisy else ""),
                )
            )


def compare(
    history: History,
    *,
    baseline: str | None = None,
    window: int | None = DEFAULT_WINDOW,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    persist: int = 1,
    newest_run: str | None = None,
) -> RegressReport:
    """Compare ``newest_run`` (default: the newest run) with its baseline, per (env, host)."""
    if threshold < 1.0:
        raise UserError(
            f"regress: expected a slowdown threshold >= 1.0 (e.g. 1.10), found {threshold}"
        )
    if not 0 < alpha < 1:
        raise UserError(f"regress: expected 0 < alpha < 1, found {alpha}")
    if persist < 1 or (window is not None and window < 1):
        raise UserError("regress: --persist and --window must be at least 1")
    runs = [r.run_id for r in history.runs()]
    if baseline is not None and baseline not in runs:
        recent = ", ".join(runs[-5:]) or "none"
        raise UserError(
            f"regress: baseline run {baseline!r} is not in the history (recent runs: {recent})"
        )
    label = (
        f"run {baseline}"
        if baseline
        else f"the {window} result(s) before"
        if window
        else "the previous result"
    )
    if persist > 1 and not baseline:
        label += f" the last {persist} runs"
    newest_run = newest_run or (runs[-1] if runs else None)
    report = RegressReport(newest_run, label, threshold, alpha, persist)
    if newest_run is None:
        return report
    newest_rows = history.results_for_run(newest_run)
    for new in newest_rows:
        series = history.series(new.env, new.host_id)
        idx = next(i for i, r in enumerate(series) if r.rid == new.rid)
        recent = series[max(0, idx - persist + 1) : idx + 1]
        if baseline is not None:
            base_rows = [r for r in series if r.run_id == baseline]
            recent = [r for r in recent if r.run_id != baseline]
        else:
            start = idx - len(recent) + 1
            base_rows = series[max(0, start - (window or 1)) : start]
        pair = PairReport(
            new.env,
            new.host_id,
            new,
            base_rows[-1] if base_rows else None,
            [r.run_id for r in base_rows],
        )
        report.pairs.append(pair)
        if not base_rows or not recent:
            pair.note = (
                "no result for this env and host in the baseline run"
                if baseline
                else "first result for this env and host: nothing to compare with"
            )
            continue
        base = base_rows[-1]
        _compare_outcome(base, new, pair)
        if _built(base) and _built(new):
            _compare_checks(history, base, new, pair)
            if len(recent) == persist:
                _compare_benchmarks(history, base_rows, recent, pair, threshold, alpha)
            else:
                pair.note = (
                    f"fewer than {persist} results after the baseline: benchmarks not judged yet"
                )
        if pair.findings or new.spec_hash != base.spec_hash:
            pair.changes = changes_between(history, base, new)
    present = {(r.env, r.host_id) for r in newest_rows}
    report.missing = [r for r in history.latest_per_pair() if (r.env, r.host_id) not in present]
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
    baseline: str | None,
    window: int | None,
    threshold: float,
    alpha: float,
    persist: int,
    out_md: Path,
) -> int:
    """``envlab regress``: ingest, compare, write Markdown; exit 1 on a regression."""
    history, _ingest = open_history(db_path, runs_dir)
    with history:
        report = compare(
            history,
            baseline=baseline,
            window=window,
            threshold=threshold,
            alpha=alpha,
            persist=persist,
        )
        markdown = render_markdown(report)
    atomic_write_text(out_md, markdown)
    summary = write_step_summary(markdown)
    if report.newest_run is None:
        log(f"regress: no results under {runs_dir}; nothing to compare")
    for pair in report.regressions:
        for f in pair.findings:
            log(
                f"REGRESSION {pair.env} on {pair.host}: {f.kind} {f.subject}: {f.before} -> {f.after}"
                + (f" ({f.detail})" if f.detail else "")
            )
    log(
        f"regress: {report.count} regression(s) in {len(report.regressions)} env/host pair(s) "
        f"of run {report.newest_run} vs {report.baseline_label}"
    )
    log(f"wrote {out_md}" + (f" and the step summary {summary}" if summary else ""))
    return EXIT_REGRESSION if report.regressions else 0
