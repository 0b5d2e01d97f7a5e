"""The report: one self-contained HTML page, a Markdown summary for a CI step summary, PNG plots.

Everything is read from the history store (after ingesting ``runs_dir``); the newest run is the
headline. Templates (``envlab/templates``) are fed view-model objects built here; plots are made
by :mod:`envlab.report.plots` from plain data.
"""

from __future__ import annotations

import base64
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from envlab.fsutil import atomic_write_bytes, atomic_write_text
from envlab.log import log
from envlab.outcome import Outcome
from envlab.report import plots
from envlab.report.regress import (
    DEFAULT_ALPHA,
    DEFAULT_THRESHOLD,
    Change,
    RegressReport,
    changes_between,
    compare,
    perf_verdict,
)
from envlab.report.templating import environment
from envlab.results import export
from envlab.results.history import BenchRow, History, ResultRow, RunInfo, SeriesPoint, open_history

MD_LIMIT = 1024 * 1024  # GitHub's step summary limit per step
_TORCH_FAMILY = ("torch", "torchvision", "torchaudio", "triton")


@dataclass(frozen=True)
class FigureView:
    name: str
    title: str
    caption: str
    path: Path
    data_uri: str


@dataclass(frozen=True)
class HostView:
    id: str
    hostname: str
    os: str
    cpu: str
    gpu: str | None
    driver: str | None


@dataclass(frozen=True)
class EnvView:
    env: str
    host: str
    outcome: Outcome
    reason: str | None
    torch: str | None
    cuda: str | None
    python: str | None
    passed: int
    failed: int
    skipped: int
    build_s: float
    reused: bool
    compat_error: str | None

    @property
    def ran_compat(self) -> bool:
        return self.passed + self.failed + self.skipped > 0


@dataclass(frozen=True)
class ProblemView:
    env: str
    host: str
    name: str
    expected: str | None
    found: str | None
    detail: str
    layer: str | None = None


@dataclass(frozen=True)
class BenchView:
    key: str
    env: str
    host: str
    label: str
    median: float
    q1: float
    q3: float
    unit: str
    higher_is_better: bool
    fraction_of_peak: float | None
    peak_source: str | None
    noisy: bool
    n: int
    error: str | None


@dataclass(frozen=True)
class PackageTable:
    columns: list[str]
    rows: list[tuple[str, list[str | None]]]
    compared: int  # distributions compared in total


@dataclass(frozen=True)
class BaselineDiff:
    env: str
    host: str
    baseline_run: str
    changes: list[Change]


@dataclass(frozen=True)
class RunView:
    run_id: str
    created: str
    hosts: int
    outcomes: dict[Outcome, int]


@dataclass
class ReportView:
    """Everything the templates show; built once, rendered to HTML and Markdown."""

    generated: str
    newest: RunInfo | None
    total_runs: int
    total_results: int
    multi_host: bool
    hosts: list[HostView] = field(default_factory=list)
    envs: list[EnvView] = field(default_factory=list)
    outcome_counts: dict[Outcome, int] = field(default_factory=dict)
    # the summary cards: built first, then what needs attention, then what could not run here
    outcome_cards: list[Outcome] = field(
        default_factory=lambda: [
            Outcome.BUILT,
            *(o for o in Outcome.by_severity() if o.failed),
            Outcome.UNAVAILABLE,
        ]
    )
    failed_checks: list[ProblemView] = field(default_factory=list)
    failed_tests: list[ProblemView] = field(default_factory=list)
    benches: list[BenchView] = field(default_factory=list)
    figures: dict[str, FigureView] = field(default_factory=dict)
    packages: PackageTable | None = None
    baseline_diffs: list[BaselineDiff] = field(default_factory=list)
    regress: RegressReport | None = None
    missing: list[ResultRow] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    runs: list[RunView] = field(default_factory=list)
    history_points: int = 0
    history_marks: int = 0


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path
    plots: list[Path]
    tables: list[Path] = field(default_factory=list)


def _label(env: str, host: str, multi_host: bool) -> str:
    return f"{env} @ {host}" if multi_host else env


def _quartiles(samples: Sequence[float], median: float) -> tuple[float, float]:
    if len(samples) < 2:
        return median, median
    q = statistics.quantiles(samples, n=4, method="inclusive")
    return q[0], q[2]


def _parse_time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return datetime(1970, 1, 1, tzinfo=UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _package_order(name: str) -> tuple[int, str]:
    if name in _TORCH_FAMILY:
        return 0, str(_TORCH_FAMILY.index(name))
    return (2, name) if name.startswith("nvidia-") else (1, name)


# --------------------------------------------------------------------------- view model


class _Builder:
    def __init__(
        self,
        history: History,
        out_dir: Path,
        *,
        history_runs: int | None,
        threshold: float,
        alpha: float,
    ) -> None:
        self.h = history
        self.out_dir = out_dir
        self.history_runs = history_runs
        self.threshold = threshold
        self.alpha = alpha

    def build(self, skipped: list[tuple[str, str]]) -> ReportView:
        runs = self.h.runs()
        newest = runs[-1] if runs else None
        rows = self.h.results_for_run(newest.run_id) if newest else []
        multi_host = (
            len({r.host_id for r in rows}) > 1
            or len({r.host_id for r in self.h.latest_per_pair()}) > 1
        )
        rows.sort(key=lambda r: (r.outcome.severity, r.env, r.host_id))
        view = ReportView(
            generated=datetime.now(UTC).isoformat(timespec="seconds"),
            newest=newest,
            total_runs=len(runs),
            total_results=self.h.count_results(),
            multi_host=multi_host,
            skipped=skipped,
        )
        counts = self.h.outcome_counts()
        view.runs = [
            RunView(r.run_id, r.created, r.hosts, counts.get(r.run_id, {}))
            for r in reversed(runs[-15:])
        ]
        if not rows:
            return view
        view.hosts = self._hosts(rows)
        view.envs = [
            EnvView(
                r.env,
                r.host_id,
                r.outcome,
                r.reason,
                r.torch,
                r.torch_cuda,
                r.python,
                r.n_passed,
                r.n_failed,
                r.n_skipped,
                r.build_s,
                r.build_reused,
                r.compat_error,
            )
            for r in rows
        ]
        for r in rows:
            view.outcome_counts[r.outcome] = view.outcome_counts.get(r.outcome, 0) + 1
        rids = [r.rid for r in rows]
        by_rid = {r.rid: r for r in rows}
        for rid, checks in self.h.checks(rids).items():
            for c in checks:
                if not c.ok:
                    r = by_rid[rid]
                    view.failed_checks.append(
                        ProblemView(
                            r.env, r.host_id, c.name, c.expected, c.found, c.message, c.layer
                        )
                    )
        compat = self.h.compat(rids)
        for rid, tests in compat.items():
            for t in tests:
                if t.outcome in ("failed", "error", "xpassed"):
                    r = by_rid[rid]
                    view.failed_tests.append(
                        ProblemView(r.env, r.host_id, t.test_id, None, t.outcome, t.message or "")
                    )
        view.figures["compat"] = self._compat_figure(rows, compat, multi_host)
        view.benches = self._benches(rows, self.h.benchmarks(rids), multi_host)
        if view.benches:
            view.figures["benchmarks"] = self._bench_figure(view.benches)
        history_fig = self._history_figure(multi_host, view)
        if history_fig:
            view.figures["history"] = history_fig
        view.packages = self._packages(rows, multi_host)
        if view.packages and view.packages.rows:
            view.figures["packages"] = self._figure(
                "packages",
                "Package differences between envs",
                "Only packages whose version differs between the envs that built in the newest run.",
                plots.package_matrix(view.packages.columns, view.packages.rows[:45]),
            )
        if len(runs) > 1:
            view.regress = compare(self.h, threshold=self.threshold, alpha=self.alpha)
            view.missing = view.regress.missing
            view.baseline_diffs = [
                BaselineDiff(
                    p.env, p.host, p.baseline.run_id, changes_between(self.h, p.baseline, p.newest)
                )
                for p in view.regress.pairs
                if p.baseline is not None
            ]
        return view

    def _hosts(self, rows: list[ResultRow]) -> list[HostView]:
        seen: dict[str, HostView] = {}
        for r in rows:
            seen.setdefault(
                r.host_id, HostView(r.host_id, r.hostname, r.host_os, r.host_cpu, r.gpu, r.driver)
            )
        return list(seen.values())

    def _figure(self, name: str, title: str, caption: str, png: bytes) -> FigureView:
        path = self.out_dir / "plots" / f"{name}.png"
        atomic_write_bytes(path, png)
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        return FigureView(name, title, caption, path, uri)

    def _compat_figure(
        self, rows: list[ResultRow], compat: dict[int, list], multi_host: bool
    ) -> FigureView:
        categories: list[str] = []
        matrix = []
        for r in rows:
            cells: dict[str, list[int]] = {}
            for t in compat.get(r.rid, []):
                if t.category not in categories:
                    categories.append(t.category)
                cell = cells.setdefault(t.category, [0, 0, 0])
                if t.outcome == "passed":
                    cell[0] += 1
                elif t.outcome in ("failed", "error", "xpassed"):
                    cell[1] += 1
                else:
                    cell[2] += 1
            label = _label(r.env, r.host_id, multi_host)
            if r.outcome is Outcome.VERIFY_FAILED:
                label += " (verify-failed)"
            reason = r.reason or (r.compat_error if r.outcome.healthy and not cells else None)
            matrix.append(
                plots.MatrixRow(
                    label, r.outcome, reason, {k: plots.Cell(*v) for k, v in cells.items()}
                )
            )
        png = plots.compat_matrix(matrix, categories)
        return self._figure(
            "compat",
            "Compat matrix",
            "Compat tests run inside each env, per category (passed/total; failures in red). Envs "
            "that could not be built span their row with the reason.",
            png,
        )

    def _benches(
        self, rows: list[ResultRow], benches: dict[int, list[BenchRow]], multi_host: bool
    ) -> list[BenchView]:
        out = []
        for r in rows:
            for b in benches.get(r.rid, []):
                q1, q3 = _quartiles(b.samples, b.median)
                out.append(
                    BenchView(
                        b.key,
                        r.env,
                        r.host_id,
                        _label(r.env, r.host_id, multi_host),
                        b.median,
                        q1,
                        q3,
                        b.unit,
                        b.higher_is_better,
                        b.fraction_of_peak,
                        b.peak_source,
                        b.noisy,
                        len(b.samples),
                        b.error,
                    )
                )
        out.sort(key=lambda b: (b.key, b.env, b.host))
        return out

    def _bench_figure(self, benches: list[BenchView]) -> FigureView:
        groups: dict[str, plots.BarGroup] = {}
        for b in benches:
            if b.error is not None:
                continue
            group = groups.setdefault(b.key, plots.BarGroup(b.key, b.unit, b.higher_is_better, []))
            group.bars.append(plots.Bar(b.label, b.median, b.q1, b.q3, b.fraction_of_peak, b.noisy))
        return self._figure(
            "benchmarks",
            "Benchmarks across envs",
            "Median of the raw samples per env; whiskers span the interquartile range; the best env "
            "is dark blue; % of the device's peak where known.",
            plots.bench_comparison(list(groups.values())),
        )

    def _history_figure(self, multi_host: bool, view: ReportView) -> FigureView | None:
        series = self.h.benchmark_series()
        groups: dict[str, plots.LineGroup] = {}
        for (key, env, host), points in sorted(series.items()):
            if self.history_runs:
                points = points[-self.history_runs :]
            if len(points) < 2:
                continue
            marks = self._regression_marks(points)
            view.history_points += len(points)
            view.history_marks += len(marks)
            group = groups.setdefault(key, plots.LineGroup(key, points[0].unit, []))
            group.lines.append(
                plots.Line(
                    _label(env, host, multi_host),
                    [_parse_time(p.created) for p in points],
                    [p.median for p in points],
                    marks,
                )
            )
        if not groups:
            return None
        return self._figure(
            "history",
            "Benchmark history",
            f"Median per run for each env{' and host' if multi_host else ''}. Red triangles: slower than "
            f"the previous run by more than {self.threshold:.2f}x and significant (one-sided "
            f"Mann-Whitney U, p < {self.alpha:g}).",
            plots.bench_history(list(groups.values())),
        )

    def _regression_marks(self, points: list[SeriesPoint]) -> list[int]:
        return [
            i
            for i in range(1, len(points))
            if perf_verdict(
                points[i - 1].samples,
                points[i].samples,
                higher_is_better=points[i].higher_is_better,
                threshold=self.threshold,
                alpha=self.alpha,
            ).regressed
        ]

    def _packages(self, rows: list[ResultRow], multi_host: bool) -> PackageTable | None:
        built = [r for r in rows if r.outcome.has_env]
        dists = self.h.distributions([r.rid for r in built])
        built = [r for r in built if dists.get(r.rid)]
        if len(built) < 2:
            return None
        columns = [_label(r.env, r.host_id, multi_host) for r in built]
        names = sorted({n for r in built for n in dists[r.rid]}, key=_package_order)
        table = []
        for name in names:
            versions = [dists[r.rid].get(name) for r in built]
            if len(set(versions)) > 1:
                table.append((name, versions))
        return PackageTable(columns, table, len(names))


# --------------------------------------------------------------------------- rendering


def render_html(view: ReportView) -> str:
    return environment().get_template("report.html.j2").render(v=view)


def render_markdown(view: ReportView, html_name: str = "report.html") -> str:
    """The Markdown summary, shortened (fewer rows) until it fits a CI step summary."""
    template = environment().get_template("report.md.j2")
    for limit in (200, 40, 10):
        text = template.render(v=view, limit=limit, html_name=html_name)
        if len(text.encode("utf-8")) < MD_LIMIT - 4096:
            return text
    cut = text.encode("utf-8")[: MD_LIMIT - 4096].decode("utf-8", "ignore")
    return cut + "\n\n*(summary truncated; see the HTML report)*\n"


def build_report(
    runs_dir: Path,
    out_dir: Path,
    db_path: Path,
    *,
    history_runs: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
) -> ReportPaths:
    """Ingest ``runs_dir`` into the history at ``db_path`` and write the report into ``out_dir``."""
    history, ingest = open_history(db_path, runs_dir)
    with history:
        log("report: building the view from the history")
        view = _Builder(
            history, out_dir, history_runs=history_runs, threshold=threshold, alpha=alpha
        ).build([(str(p), reason) for p, reason in ingest.skipped])
        tables = export.write_csv(history, out_dir)
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    atomic_write_text(html_path, render_html(view))
    atomic_write_text(md_path, render_markdown(view, html_path.name))
    return ReportPaths(html_path, md_path, [f.path for f in view.figures.values()], tables)


def main(runs_dir: Path, out_dir: Path, db_path: Path) -> int:
    """``envlab report``: write report.html, report.md and plots/*.png under ``out_dir``."""
    paths = build_report(runs_dir, out_dir, db_path)
    log(f"report: wrote {paths.html}")
    log(f"report: wrote {paths.markdown}")
    for path in [*paths.plots, *paths.tables]:
        log(f"report: wrote {path}")
    return 0
