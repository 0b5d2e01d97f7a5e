"""The factor view: each factored envspec's cells as a pivot, and one benchmark as a heat-map.

Factors keep their declaration order: the last one spans the columns, the one before it the
rows, and any earlier ones make one panel per combination of their values (``python``, ``torch``,
``variant``: one panel per Python, torch releases by variants). A cell shows its latest outcome
and compat pass rate; a combination without a result on that host shows as not run. The
benchmark is the one asked for (a substring of its key), else the one most cells recorded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import product
from typing import Protocol

from envlab.outcome import Outcome
from envlab.results.history import ResultRow


class Bench(Protocol):
    """What the factor view needs of a benchmark result (the report's BenchView has it)."""

    @property
    def key(self) -> str: ...
    @property
    def env(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def median(self) -> float: ...
    @property
    def unit(self) -> str: ...
    @property
    def higher_is_better(self) -> bool: ...
    @property
    def error(self) -> str | None: ...


@dataclass(frozen=True)
class FactorCell:
    """One cell's latest result on one host."""

    env: str
    outcome: Outcome
    reason: str | None
    passed: int
    failed: int
    skipped: int
    run_id: str
    bench: float | None = None  # the chosen benchmark's median

    @property
    def pass_rate(self) -> float | None:
        ran = self.passed + self.failed
        return self.passed / ran if ran else None

    @property
    def compat(self) -> str:
        """'67/69 compat' (passed of passed + failed), or '' when the suite did not run."""
        ran = self.passed + self.failed
        return f"{self.passed}/{ran} compat" if ran else ""


@dataclass(frozen=True)
class FactorPanel:
    title: str  # the panel factors' values ('python=3.12'); '' without panel factors
    rows: list[str]
    columns: list[str]
    grid: list[list[FactorCell | None]]  # [row][column]; None: no result for that combination


@dataclass(frozen=True)
class FactorView:
    """One factored envspec on one host."""

    matrix: str
    host: str
    row_factor: str | None  # None: a single factor, one row
    column_factor: str
    panel_factors: list[str]
    panels: list[FactorPanel]
    counts: list[tuple[Outcome, int]]  # most severe first
    bench_key: str | None = None
    bench_unit: str = ""
    higher_is_better: bool = False
    bench_note: str = ""  # why there is no heat-map, when there is none
    figure: object | None = None  # the heat-map (render's FigureView), set by the report

    @property
    def cells(self) -> int:
        return sum(c is not None for p in self.panels for row in p.grid for c in row)

    @property
    def problems(self) -> list[FactorCell]:
        """Cells that did not build as declared, for the reasons listed under the pivot."""
        found = [
            c for p in self.panels for row in p.grid for c in row if c and not c.outcome.healthy
        ]
        return sorted(found, key=lambda c: (c.outcome.severity, c.env))


@dataclass
class _Matrix:
    """The cells of one (factored envspec, host), gathered from the latest results."""

    matrix: str
    host: str
    factors: list[str] = field(default_factory=list)
    values: dict[str, list[str]] = field(default_factory=dict)
    cells: list[tuple[dict[str, str], FactorCell]] = field(default_factory=list)

    def at(self, values: Mapping[str, str]) -> FactorCell | None:
        return next((c for v, c in self.cells if v == values), None)


def natural(value: str) -> tuple[tuple[int, object], ...]:
    """Sort key that puts 3.9 before 3.10 and cu126 before cu128."""
    parts = re.findall(r"\d+|\D+", value)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def build(
    rows: Sequence[ResultRow],
    cells: Mapping[int, tuple[str, dict[str, str]]],
    benches: Sequence[Bench],
    choice: str | None = None,
) -> list[FactorView]:
    """A factor view per (factored envspec, host) among ``rows`` (the latest result of each
    env and host); ``cells`` are the factor values of the rows that are matrix cells."""
    gathered: dict[tuple[str, str], _Matrix] = {}
    for r in rows:
        if r.rid not in cells:
            continue
        matrix, values = cells[r.rid]
        m = gathered.setdefault((matrix, r.host_id), _Matrix(matrix, r.host_id))
        for name, value in values.items():
            if name not in m.factors:
                m.factors.append(name)
            if value not in m.values.setdefault(name, []):
                m.values[name].append(value)
        cell = FactorCell(r.env, r.outcome, r.reason, r.n_passed, r.n_failed, r.n_skipped, r.run_id)
        m.cells.append((dict(values), cell))
    return [_view(m, benches, choice) for _, m in sorted(gathered.items())]


def _chosen(
    m: _Matrix, benches: Sequence[Bench], choice: str | None
) -> tuple[str | None, dict[str, Bench], str]:
    """(benchmark key, env -> its result, a note when there is none) for the heat-map."""
    envs = {c.env for _, c in m.cells}
    mine = [b for b in benches if b.host == m.host and b.env in envs and b.error is None]
    keys = sorted({b.key for b in mine})
    if choice:
        keys = [k for k in keys if choice in k]
    if not keys:
        why = f"no benchmark matching {choice!r}" if choice else "no cell recorded benchmarks"
        return None, {}, f"{why} (run the cells with `-- --bench quick`)"
    count = {k: sum(b.key == k for b in mine) for k in keys}
    key = max(keys, key=lambda k: count[k])  # on a tie, the first key in sorted order
    return key, {b.env: b for b in mine if b.key == key}, ""


def _view(m: _Matrix, benches: Sequence[Bench], choice: str | None) -> FactorView:
    key, by_env, note = _chosen(m, benches, choice)
    order = {f: sorted(m.values[f], key=natural) for f in m.factors}
    column = m.factors[-1]
    row = m.factors[-2] if len(m.factors) > 1 else None
    panel_factors = m.factors[:-2]
    panels = []
    for combo in product(*(order[f] for f in panel_factors)):
        fixed = dict(zip(panel_factors, combo, strict=True))
        rows = order[row] if row else [""]
        grid = []
        for row_value in rows:
            line = []
            for col_value in order[column]:
                at = {**fixed, column: col_value, **({row: row_value} if row else {})}
                cell = m.at(at)
                if cell is not None and cell.env in by_env:
                    cell = replace(cell, bench=by_env[cell.env].median)
                line.append(cell)
            grid.append(line)
        if any(c is not None for line in grid for c in line):
            title = ", ".join(f"{k}={v}" for k, v in fixed.items())
            panels.append(FactorPanel(title, rows, order[column], grid))
    counts: dict[Outcome, int] = {}
    for _, cell in m.cells:
        counts[cell.outcome] = counts.get(cell.outcome, 0) + 1
    first = by_env[next(iter(by_env))] if by_env else None
    return FactorView(
        m.matrix,
        m.host,
        row,
        column,
        panel_factors,
        panels,
        [(o, counts[o]) for o in Outcome.by_severity() if counts.get(o)],
        key,
        first.unit if first else "",
        first.higher_is_better if first else False,
        note,
    )
