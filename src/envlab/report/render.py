"""The report: one self-contained HTML page, a Markdown summary for a CI step summary, PNG plots.

Everything is read from the history store (after ingesting ``runs_dir``). The report shows the
*current state* of every env: the latest result of each (env, host), whichever run it came from
(every nox session is a run of its own), with its run id and age; the benchmarks of the latest
result that had them; the judge's verdict on each (:mod:`envlab.report.judge`, the same one
``envlab regress`` gives) and its marks on the history plot. Templates (``templates/``) are fed
view-model objects built here; plots are made by :mod:`envlab.report.plots` from plain data.
"""

from __future__ import annotations

import base64
import hashlib
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from envlab.fsutil import atomic_write_bytes, atomic_write_text
from envlab.log import log
from envlab.outcome import Outcome
from envlab.report import factors, plots
from envlab.report.judge import JudgeOptions, PerfJudgement, Point, Verdict, judge_series
from envlab.report.regress import Change, RegressReport, compare
from envlab.report.templating import environment
from envlab.results import bisects, export
from envlab.results.bisects import Bisect
from envlab.results.history import (
    BenchRow,
    CompatRow,
    History,
    ResultRow,
    RunInfo,
    SeriesPoint,
    open_history,
)
from envlab.verify import advisory

MD_LIMIT = 1024 * 1024  # GitHub's step summary limit per step
_TORCH_FAMILY = ("torch", "torchvision", "torchaudio", "triton")
_FAILED_TEST = ("failed", "error", "xpassed")

BenchSeries = dict[tuple[str, str, str], list[SeriesPoint]]


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
    """One (env, host)'s latest result."""

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
    run_id: str
    created: str
    age: str
    in_newest_run: bool

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
    """One env's latest result of one benchmark, with the judge's verdict on it."""

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
    run_id: str = ""
    age: str = ""
    judgement: PerfJudgement | None = None

    @property
    def verdict(self) -> Verdict | None:
        return self.judgement.verdict if self.judgement else None


@dataclass(frozen=True)
class BenchGroupView:
    """One benchmark across envs: its plot and one row per env."""

    key: str
    unit: str
    higher_is_better: bool
    rows: list[BenchView]
    figure: FigureView | None


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
    outcomes: list[tuple[Outcome, int]]  # most severe first


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
    # the summary cards: what needs attention, then built, then what could not run here
    outcome_cards: list[Outcome] = field(
        default_factory=lambda: [
            *(o for o in Outcome.by_severity() if o.failed),
            Outcome.BUILT,
            Outcome.UNAVAILABLE,
        ]
    )
    failed_checks: list[ProblemView] = field(default_factory=list)
    warned_checks: list[ProblemView] = field(default_factory=list)  # hold, with a warning
    all_checks: list[tuple[ProblemView, bool]] = field(default_factory=list)  # (check, ok)
    failed_tests: list[ProblemView] = field(default_factory=list)
    benches: list[BenchView] = field(default_factory=list)
    bench_groups: list[BenchGroupView] = field(default_factory=list)
    figures: dict[str, FigureView] = field(default_factory=dict)
    packages: PackageTable | None = None
    baseline_diffs: list[BaselineDiff] = field(default_factory=list)
    regress: RegressReport | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    runs: list[RunView] = field(default_factory=list)
    history_points: int = 0
    history_marks: int = 0
    marked: list[tuple[str, str, str, str]] = field(default_factory=list)  # key, env, host, run
    rule: str = ""
    factors: list[factors.FactorView] = field(default_factory=list)  # factored envspecs
    bisects: list[Bisect] = field(default_factory=list)  # newest first

    @property
    def verdict_counts(self) -> dict[Verdict, int]:
        counts = dict.fromkeys(Verdict, 0)
        for b in self.benches:
            if b.verdict is not None:
                counts[b.verdict] += 1
        return counts


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path
    plots: list[Path]
    tables: list[Path] = field(default_factory=list)
    view: ReportView | None = None  # what the pages show, for callers that check it


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


def age(created: str, now: datetime) -> str:
    """How long before ``now`` a result was created, in the largest unit that fits."""
    seconds = max(0.0, (now - _parse_time(created)).total_seconds())
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def _package_order(name: str) -> tuple[int, str]:
    if name in _TORCH_FAMILY:
        return 0, str(_TORCH_FAMILY.index(name))
    return (2, name) if name.startswith("nvidia-") else (1, name)


def _slug(key: str) -> str:
    """A file name for a benchmark key: readable, and unique by a short hash."""
    text = re.sub(r"[^A-Za-z0-9]+", "-", key).strip("-")[:48]
    return f"{text}-{hashlib.sha1(key.encode()).hexdigest()[:6]}"


# --------------------------------------------------------------------------- view model


class _Builder:
    def __init__(
        self,
        history: History,
        out_dir: Path,
        *,
        history_runs: int | None,
        options: JudgeOptions,
        now: datetime,
        factor_bench: str | None = None,
    ) -> None:
        self.factor_bench = factor_bench
        self.h = history
        self.out_dir = out_dir
        self.history_runs = history_runs
        self.options = options.check()
        self.now = now
        self.multi_host = False

    def build(self, skipped: list[tuple[str, str]]) -> ReportView:
        runs = self.h.runs()
        newest = runs[-1] if runs else None
        state = self._state()
        self.multi_host = len({r.host_id for r in state}) > 1
        view = ReportView(
            generated=self.now.isoformat(timespec="seconds"),
            newest=newest,
            total_runs=len(runs),
            total_results=self.h.count_results(),
            multi_host=self.multi_host,
            skipped=skipped,
            rule=self.options.rule(),
        )
        counts = self.h.outcome_counts()
        view.runs = [
            RunView(r.run_id, r.created, r.hosts, _by_severity(counts.get(r.run_id, {})))
            for r in reversed(runs[-15:])
        ]
        if not state or newest is None:
            return view
        self._state_view(view, state, newest.run_id)
        series = self.h.benchmark_series()
        marks = self._marks(series)
        self._benchmarks(view, series, marks)
        self._factor_views(view, state)
        history_fig = self._history_figure(view, series, marks)
        if history_fig:
            view.figures["history"] = history_fig
        self._packages_view(view, state)
        self._regressions(view, series)
        return view

    def _state(self) -> list[ResultRow]:
        """The latest result of every (env, host): what needs attention first, newest first."""
        rows = sorted(self.h.latest_per_pair(), key=lambda r: (r.env, r.host_id))
        rows.sort(key=lambda r: _parse_time(r.created), reverse=True)
        rows.sort(key=lambda r: r.outcome.severity)
        return rows

    def _state_view(self, view: ReportView, state: list[ResultRow], newest_run: str) -> None:
        view.hosts = self._hosts(state)
        view.envs = [self._env_view(r, newest_run) for r in state]
        for r in state:
            view.outcome_counts[r.outcome] = view.outcome_counts.get(r.outcome, 0) + 1
        rids = [r.rid for r in state]
        by_rid = {r.rid: r for r in state}
        for rid, checks in self.h.checks(rids).items():
            r = by_rid[rid]
            shown = [
                (ProblemView(r.env, r.host_id, c.name, c.expected, c.found, c.message, c.layer), c)
                for c in checks
            ]
            view.failed_checks += [p for p, c in shown if not c.ok]
            view.warned_checks += [
                p for p, c in shown if c.ok and c.message.startswith(advisory.PREFIX)
            ]
            view.all_checks += [(p, bool(c.ok)) for p, c in shown]
        compat = self.h.compat(rids)
        for rid, tests in compat.items():
            r = by_rid[rid]
            view.failed_tests += [
                ProblemView(r.env, r.host_id, t.test_id, None, t.outcome, t.message or "")
                for t in tests
                if t.outcome in _FAILED_TEST
            ]
        view.figures["compat"] = self._compat_figure(state, compat)

    def _env_view(self, r: ResultRow, newest_run: str) -> EnvView:
        return EnvView(
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
            r.run_id,
            r.created,
            age(r.created, self.now),
            r.run_id == newest_run,
        )

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
        self, rows: list[ResultRow], compat: dict[int, list[CompatRow]]
    ) -> FigureView:
        categories: list[str] = []
        matrix = []
        for r in rows:
            cells: dict[str, list[int]] = {}
            for t in compat.get(r.rid, []):
                if t.category not in categories:
                    categories.append(t.category)
                cell = cells.setdefault(t.category, [0, 0, 0])
                cell[0 if t.outcome == "passed" else 1 if t.outcome in _FAILED_TEST else 2] += 1
            label = _label(r.env, r.host_id, self.multi_host)
            if r.outcome is Outcome.VERIFY_FAILED:
                label += f" ({r.outcome})"
            reason = r.reason or (r.compat_error if r.outcome.healthy and not cells else None)
            matrix.append(
                plots.MatrixRow(
                    label, r.outcome, reason, {k: plots.Cell(*v) for k, v in cells.items()}
                )
            )
        return self._figure(
            "compat",
            "Compat matrix",
            "Compat tests run inside each env's latest result, per category (passed/total; "
            "failures in red). Envs that could not be built span their row with the reason.",
            plots.compat_matrix(matrix, categories),
        )

    # ----------------------------------------------------------------------- benchmarks

    def _marks(self, series: BenchSeries) -> dict[tuple[str, str, str], list[PerfJudgement]]:
        """The judge's verdict on every point of every benchmark series (as its newest run)."""
        return {
            key: judge_series(
                [Point(p.run_id, p.median, p.samples) for p in points],
                higher_is_better=points[0].higher_is_better,
                options=self.options,
            )
            for key, points in series.items()
            if points
        }

    def _benchmarks(
        self,
        view: ReportView,
        series: BenchSeries,
        marks: dict[tuple[str, str, str], list[PerfJudgement]],
    ) -> None:
        """The latest result with benchmarks of every (env, host), one plot per benchmark."""
        rows = self.h.latest_with_benchmarks()
        benches = self.h.benchmarks([r.rid for r in rows])
        out = [self._bench_view(r, b, series, marks) for r in rows for b in benches.get(r.rid, [])]
        out.sort(key=lambda b: (b.key, b.env, b.host))
        view.benches = out
        groups: dict[str, list[BenchView]] = {}
        for b in out:
            groups.setdefault(b.key, []).append(b)
        view.bench_groups = [self._bench_group(key, rows) for key, rows in groups.items()]

    def _bench_view(
        self,
        r: ResultRow,
        b: BenchRow,
        series: BenchSeries,
        marks: dict[tuple[str, str, str], list[PerfJudgement]],
    ) -> BenchView:
        q1, q3 = _quartiles(b.samples, b.median)
        pair = (b.key, r.env, r.host_id)
        points = series.get(pair, [])
        at = next((i for i in range(len(points) - 1, -1, -1) if points[i].rid == r.rid), None)
        judgement = marks[pair][at] if at is not None else None
        return BenchView(
            b.key,
            r.env,
            r.host_id,
            _label(r.env, r.host_id, self.multi_host),
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
            r.run_id,
            age(r.created, self.now),
            judgement,
        )

    def _bench_group(self, key: str, rows: list[BenchView]) -> BenchGroupView:
        ok = [b for b in rows if b.error is None]
        figure = None
        if ok:
            group = plots.BarGroup(
                key,
                ok[0].unit,
                ok[0].higher_is_better,
                [
                    plots.Bar(
                        b.label,
                        b.median,
                        b.q1,
                        b.q3,
                        b.fraction_of_peak,
                        b.noisy,
                        b.verdict is Verdict.REGRESSION,
                    )
                    for b in ok
                ],
            )
            figure = self._figure(
                f"bench-{_slug(key)}",
                key,
                "Median of each env's latest run of it; whiskers span the interquartile range; "
                "the fastest env dark blue, a regression red; % of the device's peak where known.",
                plots.bench_comparison([group]),
            )
        return BenchGroupView(key, rows[0].unit, rows[0].higher_is_better, rows, figure)

    def _history_figure(
        self,
        view: ReportView,
        series: BenchSeries,
        marks: dict[tuple[str, str, str], list[PerfJudgement]],
    ) -> FigureView | None:
        groups: dict[str, plots.LineGroup] = {}
        for (key, env, host), points in sorted(series.items()):
            verdicts = marks[(key, env, host)]
            if self.history_runs:  # judged on the whole series, shown for the last runs only
                points, verdicts = points[-self.history_runs :], verdicts[-self.history_runs :]
            if len(points) < 2:
                continue
            flagged = [i for i, v in enumerate(verdicts) if v.regressed]
            view.history_points += len(points)
            view.history_marks += len(flagged)
            view.marked += [(key, env, host, points[i].run_id) for i in flagged]
            group = groups.setdefault(key, plots.LineGroup(key, points[0].unit, []))
            group.lines.append(
                plots.Line(
                    _label(env, host, self.multi_host),
                    [_parse_time(p.created) for p in points],
                    [p.median for p in points],
                    flagged,
                )
            )
        if not groups:
            return None
        return self._figure(
            "history",
            "Benchmark history",
            f"Median per run for each env{' and host' if self.multi_host else ''}. Red "
            "triangles: runs the judge flagged as a regression, the verdict `envlab regress` "
            "gives that run.",
            plots.bench_history(list(groups.values())),
        )

    def _factor_views(self, view: ReportView, state: list[ResultRow]) -> None:
        """A pivot per factored envspec (and host), with its benchmark heat-map."""
        cells = self.h.factors([r.rid for r in state])
        for v in factors.build(state, cells, view.benches, self.factor_bench):
            figure = None
            if v.bench_key is not None:
                png = plots.factor_heatmap(
                    v.bench_key,
                    v.bench_unit,
                    v.higher_is_better,
                    [
                        plots.HeatPanel(
                            p.title, p.rows, p.columns, [[c and c.bench for c in r] for r in p.grid]
                        )
                        for p in v.panels
                    ],
                    (v.row_factor or "", v.column_factor),
                )
                name = f"factors-{_slug(v.matrix + '@' + v.host)}"
                caption = (
                    f"Median of {v.bench_key} in each cell's latest result with benchmarks"
                    + (f" on {v.host}" if self.multi_host else "")
                    + "; one colour scale for every panel, the better end bright."
                )
                figure = self._figure(name, f"{v.matrix}: {v.bench_key}", caption, png)
            view.factors.append(replace(v, figure=figure))

    # ----------------------------------------------------------------------- the rest

    def _packages_view(self, view: ReportView, state: list[ResultRow]) -> None:
        view.packages = self._packages(state)
        if view.packages and view.packages.rows:
            view.figures["packages"] = self._figure(
                "packages",
                "Package differences between envs",
                "Only packages whose version differs between the envs' latest results that built.",
                plots.package_matrix(view.packages.columns, view.packages.rows[:45]),
            )

    def _packages(self, rows: list[ResultRow]) -> PackageTable | None:
        built = [r for r in rows if r.outcome.has_env]
        dists = self.h.distributions([r.rid for r in built])
        built = [r for r in built if dists.get(r.rid)]
        if len(built) < 2:
            return None
        columns = [_label(r.env, r.host_id, self.multi_host) for r in built]
        names = sorted({n for r in built for n in dists[r.rid]}, key=_package_order)
        table = []
        for name in names:
            versions = [dists[r.rid].get(name) for r in built]
            if len(set(versions)) > 1:
                table.append((name, versions))
        return PackageTable(columns, table, len(names))

    def _regressions(self, view: ReportView, series: BenchSeries) -> None:
        view.regress = compare(self.h, options=self.options, current_state=True, series=series)
        view.baseline_diffs = [
            BaselineDiff(p.env, p.host, p.baseline.run_id, p.changes)
            for p in view.regress.pairs
            if p.baseline is not None
        ]


def _by_severity(counts: dict[Outcome, int]) -> list[tuple[Outcome, int]]:
    return [(o, counts[o]) for o in Outcome.by_severity() if counts.get(o)]


def _remove_stale_plots(out_dir: Path, written: Sequence[Path]) -> None:
    """PNG files under ``plots/`` that this report did not write are from an older one."""
    keep = {p.resolve() for p in written}
    for path in (out_dir / "plots").glob("*.png"):
        if path.resolve() not in keep:
            path.unlink(missing_ok=True)


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
    options: JudgeOptions | None = None,
    now: datetime | None = None,
    factor_bench: str | None = None,
) -> ReportPaths:
    """Ingest ``runs_dir`` into the history at ``db_path`` and write the report into ``out_dir``.

    ``options``: the judge's (default: the calibrated defaults, as ``envlab regress``);
    ``now``: the time ages are counted to (default: the current time); ``factor_bench``: the
    benchmark (part of its key) of the factor views' heat-maps (default: the most recorded).
    """
    history, ingest = open_history(db_path, runs_dir)
    with history:
        log("report: building the view from the history")
        view = _Builder(
            history,
            out_dir,
            history_runs=history_runs,
            options=options or JudgeOptions(),
            now=now or datetime.now(UTC),
            factor_bench=factor_bench,
        ).build([(str(p), reason) for p, reason in ingest.skipped])
        tables = export.write_csv(history, out_dir)
    # bisect records live beside the runs (their steps are not part of any env's history)
    view.bisects, unreadable = bisects.read_all(runs_dir.parent / "bisect")
    view.skipped += [(str(p), reason) for p, reason in unreadable]
    figures = [f.path for f in view.figures.values()]
    figures += [g.figure.path for g in view.bench_groups if g.figure]
    figures += [v.figure.path for v in view.factors if isinstance(v.figure, FigureView)]
    _remove_stale_plots(out_dir, figures)
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    atomic_write_text(html_path, render_html(view))
    atomic_write_text(md_path, render_markdown(view, html_path.name))
    return ReportPaths(html_path, md_path, figures, tables, view)


def main(runs_dir: Path, out_dir: Path, db_path: Path, factor_bench: str | None = None) -> int:
    """``envlab report``: write report.html, report.md and plots/*.png under ``out_dir``;
    ``factor_bench`` picks the benchmark of the factor views' heat-maps (part of its key)."""
    paths = build_report(runs_dir, out_dir, db_path, factor_bench=factor_bench)
    log(f"report: wrote {paths.html}")
    log(f"report: wrote {paths.markdown}")
    for path in [*paths.plots, *paths.tables]:
        log(f"report: wrote {path}")
    return 0
