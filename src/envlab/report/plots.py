"""PNG plots for the report (matplotlib, Agg; no pyplot global state). Inputs are plain data."""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass, field
from datetime import datetime

import matplotlib
import numpy as np

matplotlib.use("Agg")

from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from envlab.outcome import Outcome

# Colour-blind friendly enough: green/red differ in lightness too; skips are neutral grey.
COLOURS = {
    "pass": "#4caf50",
    "pass+skip": "#a5d6a7",
    "fail": "#e53935",
    "skip": "#cfd8dc",
    "none": "#ffffff",
    # an env that did not build spans its row, coloured by its outcome's tone
    "env-muted": "#90a4ae",
    "env-fail": "#ff9800",
}
DPI = 110


@dataclass(frozen=True)
class Cell:
    passed: int = 0
    failed: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class MatrixRow:
    label: str
    outcome: Outcome
    reason: str | None
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass(frozen=True)
class Bar:
    label: str
    median: float
    q1: float
    q3: float
    fraction_of_peak: float | None = None
    noisy: bool = False
    regressed: bool = False  # the judge flagged this env's latest run of the benchmark


def _short_title(key: str, width: int = 64) -> str:
    """A benchmark key ('name@v1[params] (unit)') as a name line and wrapped parameter lines."""
    head, sep, rest = key.partition("[")
    if not sep:
        return key
    params, _, unit = rest.rpartition("]")
    wrapped = textwrap.fill(params.replace(",", ", "), width=width)
    return f"{head}{unit}\n{wrapped}"


@dataclass(frozen=True)
class BarGroup:
    title: str
    unit: str
    higher_is_better: bool
    bars: list[Bar]


@dataclass(frozen=True)
class Line:
    label: str
    x: list[datetime]
    y: list[float]
    regressions: list[int] = field(default_factory=list)  # indexes into x/y


@dataclass(frozen=True)
class LineGroup:
    title: str
    unit: str
    lines: list[Line]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _cell_style(cell: Cell | None) -> tuple[str, str]:
    """(colour key, text) for one compat cell."""
    if cell is None or cell.passed + cell.failed + cell.skipped == 0:
        return "none", "–"
    total = cell.passed + cell.failed + cell.skipped
    if cell.failed:
        return "fail", f"{cell.failed} fail"
    if cell.passed and cell.skipped:
        return "pass+skip", f"{cell.passed}/{total}"
    if cell.passed:
        return "pass", f"{cell.passed}/{total}"
    return "skip", "skip"


def compat_matrix(rows: list[MatrixRow], categories: list[str]) -> bytes:
    """Env (× host) rows against compat categories; envs that did not build span their row."""
    cols = categories or ["(no compat tests ran)"]
    width = max(9.0, 1.05 * len(cols) + 3.0)
    height = 1.6 + 0.5 * max(len(rows), 1)
    fig = Figure(figsize=(width, height))
    ax = fig.add_subplot()
    for i, row in enumerate(rows):
        if not row.outcome.has_env:
            ax.add_patch(
                Rectangle(
                    (0, i),
                    len(cols),
                    1,
                    facecolor=COLOURS[f"env-{row.outcome.tone}"],
                    edgecolor="white",
                    linewidth=2,
                    hatch="//" if row.outcome.tone == "muted" else None,
                )
            )
            reason = row.reason or "no reason recorded"
            width = int(len(cols) * 10.5)
            text = textwrap.shorten(f"{row.outcome.upper()}: {reason}", width * 2, placeholder=" …")
            ax.text(
                len(cols) / 2,
                i + 0.5,
                textwrap.fill(text, width),
                ha="center",
                va="center",
                fontsize=8,
                linespacing=1.1,
                color="black",
                bbox={"facecolor": "white", "alpha": 0.88, "edgecolor": "none", "pad": 1.5},
            )
            continue
        for j, cat in enumerate(cols):
            key, text = _cell_style(row.cells.get(cat))
            ax.add_patch(
                Rectangle((j, i), 1, 1, facecolor=COLOURS[key], edgecolor="white", linewidth=2)
            )
            ax.text(
                j + 0.5,
                i + 0.5,
                text,
                ha="center",
                va="center",
                fontsize=8.5,
                color="white" if key == "fail" else "black",
                fontweight="bold" if key == "fail" else None,
            )
    ax.set_xlim(0, len(cols))
    ax.set_ylim(len(rows), 0)
    ax.set_xticks([j + 0.5 for j in range(len(cols))], cols, rotation=30, ha="right", fontsize=9)
    ax.set_yticks([i + 0.5 for i in range(len(rows))], [r.label for r in rows], fontsize=9.5)
    for tick, row in zip(ax.get_yticklabels(), rows, strict=True):
        if not row.outcome.healthy:
            tick.set_color("#e65100" if row.outcome.failed else "#546e7a")
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title("Compat matrix: tests passed per category", fontsize=11, loc="left", pad=26)
    legend = [
        Patch(facecolor=COLOURS[k], label=label)
        for k, label in (
            ("pass", "all passed"),
            ("pass+skip", "passed, some skipped"),
            ("fail", "failures"),
            ("skip", "all skipped"),
            ("env-muted", "env unavailable"),
            ("env-fail", "build/verify failed"),
        )
    ]
    ax.legend(
        handles=legend,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        ncol=6,
        fontsize=8.5,
        frameon=False,
        borderaxespad=0.2,
        handlelength=1.4,
        columnspacing=1.2,
    )
    return _png(fig)


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def bench_comparison(groups: list[BarGroup]) -> bytes:
    """One panel per benchmark: median per env (× host), IQR error bars, % of peak annotated;
    the fastest env dark blue, an env the judge flagged red."""
    n_bars = max((len(g.bars) for g in groups), default=1)
    panel_h = 0.9 + 0.36 * n_bars
    cols = 2 if len(groups) > 1 else 1
    nrows = (len(groups) + cols - 1) // cols
    fig = Figure(figsize=(6.4 * cols, panel_h * nrows + 0.4))
    for k, group in enumerate(groups):
        ax: Axes = fig.add_subplot(nrows, cols, k + 1)
        labels = [b.label for b in group.bars]
        y = list(range(len(group.bars)))
        med = [b.median for b in group.bars]
        err = [
            [max(b.median - b.q1, 0.0) for b in group.bars],
            [max(b.q3 - b.median, 0.0) for b in group.bars],
        ]
        best = (max if group.higher_is_better else min)(med) if med else None
        colours = [
            "#e53935" if b.regressed else "#1e88e5" if b.median == best else "#90caf9"
            for b in group.bars
        ]
        ax.barh(
            y,
            med,
            xerr=err,
            color=colours,
            capsize=3,
            error_kw={"elinewidth": 1, "ecolor": "#37474f"},
        )
        ax.set_yticks(y, labels, fontsize=9)
        ax.invert_yaxis()
        top = max((b.q3 for b in group.bars), default=1.0)
        ax.set_xlim(0, top * 1.45)
        for yi, b in zip(y, group.bars, strict=True):
            note = _fmt(b.median)
            if b.fraction_of_peak is not None:
                note += f"  ({b.fraction_of_peak:.0%} of peak)"
            if b.noisy:
                note += "  noisy"
            if b.regressed:
                note += "  regression"
            ax.text(max(b.q3, b.median) + top * 0.02, yi, note, va="center", fontsize=8.5)
        better = "higher is better" if group.higher_is_better else "lower is better"
        ax.set_xlabel(f"{group.unit} ({better}; bars: median, whiskers: IQR)", fontsize=8.5)
        ax.set_title(_short_title(group.title), fontsize=9, loc="left")
        ax.grid(axis="x", alpha=0.3)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    fig.tight_layout()
    return _png(fig)


def bench_history(groups: list[LineGroup]) -> bytes:
    """One panel per benchmark: median per run for each env (× host); regressions marked."""
    fig = Figure(figsize=(13, 2.7 * len(groups) + 0.6))
    cmap = matplotlib.colormaps[
        "tab10" if max((len(g.lines) for g in groups), default=0) <= 10 else "tab20"
    ]
    labels = sorted({line.label for g in groups for line in g.lines})
    colour = {label: cmap(i % cmap.N) for i, label in enumerate(labels)}
    marked = False
    axes: list[Axes] = []
    for k, group in enumerate(groups):
        ax = fig.add_subplot(len(groups), 1, k + 1, sharex=axes[0] if axes else None)
        axes.append(ax)
        for line in group.lines:
            dense = len(line.x) > 60
            ax.plot(
                line.x,
                line.y,
                color=colour[line.label],
                linewidth=1.3,
                marker=None if dense else "o",
                markersize=3.5,
                label=line.label,
            )
            if line.regressions:
                marked = True
                ax.scatter(
                    [line.x[i] for i in line.regressions],
                    [line.y[i] for i in line.regressions],
                    marker="v",
                    s=80,
                    color="#d50000",
                    edgecolor="black",
                    linewidth=0.6,
                    zorder=5,
                )
        ax.set_title(_short_title(group.title), fontsize=9, loc="left")
        ax.set_ylabel(group.unit, fontsize=9)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    locator = mdates.AutoDateLocator()
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    handles, names = axes[0].get_legend_handles_labels()
    seen = dict(zip(names, handles, strict=True))
    for ax in axes[1:]:
        for h, n in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(n, h)
    if marked:
        seen["regression (the judge's verdict)"] = axes[0].scatter(
            [], [], marker="v", s=80, color="#d50000", edgecolor="black", linewidth=0.6
        )
    fig.legend(
        list(seen.values()),
        list(seen),
        loc="upper left",
        bbox_to_anchor=(1.0, 0.98),
        fontsize=9,
        frameon=False,
    )
    fig.tight_layout()
    return _png(fig)


def package_matrix(columns: list[str], rows: list[tuple[str, list[str | None]]]) -> bytes:
    """Packages whose versions differ between envs: one row per package, versions as text."""
    height = 1.2 + 0.3 * max(len(rows), 1)
    width = max(7.0, 2.4 + 1.9 * len(columns))
    fig = Figure(figsize=(width, height))
    ax = fig.add_subplot()
    palette = ["#e3f2fd", "#fff3e0", "#e8f5e9", "#fce4ec", "#ede7f6", "#f1f8e9", "#e0f7fa"]
    for i, (_name, versions) in enumerate(rows):
        distinct = list(dict.fromkeys(v for v in versions if v is not None))
        for j, version in enumerate(versions):
            colour = (
                "#eeeeee" if version is None else palette[distinct.index(version) % len(palette)]
            )
            ax.add_patch(
                Rectangle((j, i), 1, 1, facecolor=colour, edgecolor="white", linewidth=1.5)
            )
            text = "—" if version is None else textwrap.shorten(version, 24, placeholder="…")
            ax.text(
                j + 0.5,
                i + 0.5,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="#757575" if version is None else "black",
            )
    ax.set_xlim(0, len(columns))
    ax.set_ylim(max(len(rows), 1), 0)
    ax.xaxis.tick_top()
    ax.set_xticks([j + 0.5 for j in range(len(columns))], columns, fontsize=9, fontweight="bold")
    ax.set_yticks([i + 0.5 for i in range(len(rows))], [r[0] for r in rows], fontsize=8.5)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(
        "Package versions that differ between envs (— = not installed)",
        fontsize=10,
        loc="left",
        pad=24,
    )
    return _png(fig)


@dataclass(frozen=True)
class HeatPanel:
    """One panel of a factor heat-map: rows x columns of a benchmark's medians (None: none)."""

    title: str
    rows: list[str]
    columns: list[str]
    values: list[list[float | None]]


def factor_heatmap(
    title: str,
    unit: str,
    higher_is_better: bool,
    panels: list[HeatPanel],
    axes: tuple[str, str],
) -> bytes:
    """A benchmark across the cells of a factored matrix: one heat-map per panel on one colour
    scale, the better end bright; cells without a result are left blank."""
    found = [v for p in panels for row in p.values for v in row if v is not None]
    low, high = (min(found), max(found)) if found else (0.0, 1.0)
    per_row = min(len(panels), 3)
    lines = -(-len(panels) // per_row)
    widest = max(len(p.columns) for p in panels)
    tallest = max(len(p.rows) for p in panels)
    panel_w, panel_h = max(3.4, 1.4 + 1.1 * widest), 1.4 + 0.55 * tallest
    fig = Figure(figsize=(per_row * panel_w + 1.2, lines * panel_h + 1.1))
    cmap = "viridis" if higher_is_better else "viridis_r"
    image = None
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(lines, per_row, i + 1)
        grid = np.ma.masked_invalid(
            np.array([[np.nan if v is None else v for v in row] for row in panel.values], float)
        )
        image = ax.imshow(grid, cmap=cmap, vmin=low, vmax=high, aspect="auto")
        for (r, c), value in np.ndenumerate(grid.filled(np.nan)):
            if np.isnan(value):
                ax.text(c, r, "–", ha="center", va="center", fontsize=8.5, color="#607d8b")
                continue
            red, green, blue, _ = image.cmap(image.norm(value))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            colour = "white" if dark else "#212121"
            ax.text(c, r, _fmt(float(value)), ha="center", va="center", fontsize=8.5, color=colour)
        ax.set_xticks(range(len(panel.columns)), panel.columns, fontsize=8.5)
        ax.set_yticks(range(len(panel.rows)), panel.rows, fontsize=8.5)
        ax.set_xlabel(axes[1], fontsize=9)
        ax.set_ylabel(axes[0], fontsize=9)
        ax.set_title(panel.title, fontsize=10)
    if image is not None:
        bar = fig.colorbar(image, ax=fig.axes, shrink=0.85, pad=0.03)
        bar.set_label(f"{unit} ({'higher' if higher_is_better else 'lower'} is better)", fontsize=9)
    fig.suptitle(_short_title(title, width=90), fontsize=9.5, x=0.45, y=1.02)
    return _png(fig)
