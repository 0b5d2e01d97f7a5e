"""History store: an embedded SQLite index over every result ever ingested.

JSON results under ``reports/runs`` stay the interchange format; this database only indexes them
so that reports and regression checks over thousands of runs stay fast. Ingesting is idempotent:
a result is keyed by (run_id, host id, env), and a file whose size and mtime did not change since
the last ingest is not parsed again. Results stay in the history after their JSON is deleted.

The JSON results are the source of truth: a history that is no readable database (truncated,
overwritten) is set aside and rebuilt from them by :func:`open_history`, which says so in one
line; deleting the file rebuilds it too.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from envlab.errors import ResultError, UserError
from envlab.fsutil import exclusive, unwritable
from envlab.log import log
from envlab.outcome import Outcome
from envlab.results.schema import Result, load
from envlab.results.store import Store

DB_VERSION = 1
BUSY_TIMEOUT_S = 120.0  # how long a writer waits for another (a concurrent report) to commit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    rid INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    host_id TEXT NOT NULL,
    env TEXT NOT NULL,
    created TEXT NOT NULL,
    hostname TEXT NOT NULL,
    host_os TEXT NOT NULL,
    host_cpu TEXT NOT NULL,
    gpu TEXT,
    driver TEXT,
    outcome TEXT NOT NULL,
    reason TEXT,
    spec_hash TEXT NOT NULL,
    description TEXT NOT NULL,
    python TEXT,
    torch TEXT,
    torch_cuda TEXT,
    cudnn TEXT,
    build_s REAL NOT NULL,
    build_reused INTEGER NOT NULL,
    n_passed INTEGER NOT NULL,
    n_failed INTEGER NOT NULL,
    n_skipped INTEGER NOT NULL,
    compat_error TEXT,
    source TEXT,
    UNIQUE (run_id, host_id, env)
);
CREATE INDEX IF NOT EXISTS results_created ON results (created, run_id);
CREATE INDEX IF NOT EXISTS results_series ON results (env, host_id, created);
CREATE TABLE IF NOT EXISTS checks (
    rid INTEGER NOT NULL REFERENCES results (rid) ON DELETE CASCADE,
    name TEXT NOT NULL, ok INTEGER NOT NULL, expected TEXT NOT NULL, found TEXT NOT NULL,
    layer TEXT, message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS checks_rid ON checks (rid);
CREATE TABLE IF NOT EXISTS compat (
    rid INTEGER NOT NULL REFERENCES results (rid) ON DELETE CASCADE,
    test_id TEXT NOT NULL, category TEXT NOT NULL, outcome TEXT NOT NULL, duration_s REAL NOT NULL,
    message TEXT, skip_reason TEXT, gpu INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS compat_rid ON compat (rid);
CREATE TABLE IF NOT EXISTS benchmarks (
    rid INTEGER NOT NULL REFERENCES results (rid) ON DELETE CASCADE,
    key TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL, params TEXT NOT NULL,
    unit TEXT NOT NULL, higher_is_better INTEGER NOT NULL, samples TEXT NOT NULL,
    median REAL NOT NULL, iqr REAL NOT NULL, cv REAL NOT NULL, noisy INTEGER NOT NULL,
    peak REAL, peak_source TEXT, fraction_of_peak REAL, error TEXT
);
CREATE INDEX IF NOT EXISTS benchmarks_rid ON benchmarks (rid);
CREATE INDEX IF NOT EXISTS benchmarks_key ON benchmarks (key);
CREATE TABLE IF NOT EXISTS distributions (
    rid INTEGER NOT NULL REFERENCES results (rid) ON DELETE CASCADE,
    name TEXT NOT NULL, version TEXT, installer TEXT
);
CREATE INDEX IF NOT EXISTS distributions_rid ON distributions (rid);
CREATE TABLE IF NOT EXISTS factors (
    rid INTEGER NOT NULL REFERENCES results (rid) ON DELETE CASCADE,
    matrix TEXT NOT NULL, position INTEGER NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS factors_rid ON factors (rid);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    rid INTEGER, skipped TEXT
);
"""


def benchmark_key(name: str, version: int, params: dict[str, Any], unit: str) -> str:
    """Identity of a benchmark series: same name, version, params and unit are comparable."""
    text = ",".join(f"{k}={params[k]}" for k in sorted(params))
    return f"{name}@v{version}" + (f"[{text}]" if text else "") + f" ({unit})"


@dataclass(frozen=True)
class ResultRow:
    """One (run, host, env) result as the report and regression checks see it."""

    rid: int
    run_id: str
    host_id: str
    env: str
    created: str
    hostname: str
    host_os: str
    host_cpu: str
    gpu: str | None
    driver: str | None
    outcome: Outcome
    reason: str | None
    spec_hash: str
    description: str
    python: str | None
    torch: str | None
    torch_cuda: str | None
    cudnn: str | None
    build_s: float
    build_reused: bool
    n_passed: int
    n_failed: int
    n_skipped: int
    compat_error: str | None
    source: str | None


@dataclass(frozen=True)
class CheckRow:
    rid: int
    name: str
    ok: bool
    expected: str
    found: str
    layer: str | None
    message: str


@dataclass(frozen=True)
class CompatRow:
    rid: int
    test_id: str
    category: str
    outcome: str
    duration_s: float
    message: str | None
    skip_reason: str | None
    gpu: bool


@dataclass(frozen=True)
class BenchRow:
    rid: int
    key: str
    name: str
    unit: str
    higher_is_better: bool
    samples: tuple[float, ...]
    median: float
    iqr: float
    cv: float
    noisy: bool
    fraction_of_peak: float | None
    peak_source: str | None
    error: str | None


@dataclass(frozen=True)
class SeriesPoint:
    """One run's result of one benchmark for one (env, host)."""

    rid: int
    run_id: str
    created: str
    median: float
    iqr: float
    unit: str
    higher_is_better: bool
    samples: tuple[float, ...]


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    created: str
    hosts: int
    envs: int


@dataclass
class IngestReport:
    ingested: int = 0
    unchanged: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)


class History:
    """The SQLite index. Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
        try:
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except BaseException:
            self.db.close()
            raise

    def check(self) -> None:
        """Raise sqlite3.DatabaseError unless every page of the database reads back sound."""
        found = [row[0] for row in self.db.execute("PRAGMA quick_check(1)")]
        if found != ["ok"]:
            raise sqlite3.DatabaseError(found[0] if found else "quick_check said nothing")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def _migrate(self) -> None:
        row = None
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'db_version'").fetchone()
        except sqlite3.OperationalError:
            pass
        if row is not None and int(row[0]) != DB_VERSION:
            # The database is only an index of the JSON results: rebuild rather than migrate.
            log(f"history {self.path}: index version {row[0]} != {DB_VERSION}; rebuilding it")
            for (name,) in self.db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            ).fetchall():
                self.db.execute(f'DROP TABLE IF EXISTS "{name}"')
        self.db.executescript(_SCHEMA)
        self.db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('db_version', ?)", (str(DB_VERSION),)
        )
        self.db.commit()

    @contextmanager
    def _tx(self) -> Iterator[None]:
        try:
            yield
            self.db.commit()
        except BaseException:
            self.db.rollback()
            raise

    # ----------------------------------------------------------------------- ingest

    def ingest_dir(self, runs_dir: Path) -> IngestReport:
        """Index every result file under ``runs_dir``; unchanged files are not parsed again."""
        report = IngestReport()
        known = {
            path: (size, mtime, skipped)
            for path, size, mtime, skipped in self.db.execute(
                "SELECT path, size, mtime_ns, skipped FROM files"
            )
        }
        with self._tx():
            for path in Store(runs_dir).files():
                key = str(path.resolve())
                try:
                    st = path.stat()
                except OSError as exc:
                    report.skipped.append((path, f"{path}: cannot stat ({exc})"))
                    continue
                previous = known.get(key)
                if previous is not None and previous[:2] == (st.st_size, st.st_mtime_ns):
                    if previous[2]:
                        report.skipped.append((path, previous[2]))
                    else:
                        report.unchanged += 1
                    continue
                try:
                    result = load(path)
                except ResultError as exc:
                    reason = str(exc)
                    report.skipped.append((path, reason))
                    self.db.execute(
                        "INSERT OR REPLACE INTO files VALUES (?, ?, ?, NULL, ?)",
                        (key, st.st_size, st.st_mtime_ns, reason),
                    )
                    continue
                rid = self._insert(result, source=key)
                self.db.execute(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, NULL)",
                    (key, st.st_size, st.st_mtime_ns, rid),
                )
                report.ingested += 1
        for path, reason in report.skipped:
            log(f"history: skipped {path}: {reason}")
        return report

    def ingest(self, results: Iterable[Result]) -> int:
        """Index results given in memory (idempotent); returns how many were written."""
        count = 0
        with self._tx():
            for result in results:
                self._insert(result, source=None)
                count += 1
        return count

    def _insert(self, r: Result, source: str | None) -> int:
        torch = r.facts.torch
        counts = r.compat.counts() if r.compat else {"passed": 0, "failed": 0, "skipped": 0}
        gpu = (
            ", ".join(
                g.name + (f" (sm {g.compute_capability})" if g.compute_capability else "")
                for g in r.host.gpus
            )
            or None
        )
        # Replacing by the unique key deletes the old row; ON DELETE CASCADE clears its children.
        self.db.execute(
            "DELETE FROM results WHERE run_id = ? AND host_id = ? AND env = ?",
            (r.run_id, r.host.id, r.env),
        )
        cur = self.db.execute(
            "INSERT INTO results (run_id, host_id, env, created, hostname, host_os, host_cpu, gpu,"
            " driver, outcome, reason, spec_hash, description, python, torch, torch_cuda, cudnn,"
            " build_s, build_reused, n_passed, n_failed, n_skipped, compat_error, source)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                r.run_id,
                r.host.id,
                r.env,
                r.created,
                r.host.hostname,
                f"{r.host.os} {r.host.machine}",
                r.host.cpu,
                gpu,
                r.host.driver,
                r.outcome,
                r.reason,
                r.spec_hash,
                r.description,
                r.facts.python.version,
                torch.version,
                torch.cuda,
                # cuDNN reports an integer (91002); the column holds versions as text
                None if torch.cudnn is None else str(torch.cudnn),
                r.build.duration_s,
                int(r.build.reused),
                counts["passed"],
                counts["failed"],
                counts["skipped"],
                r.compat.error if r.compat else None,
                source,
            ),
        )
        rid = int(cur.lastrowid or 0)
        self.db.executemany(
            "INSERT INTO checks VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(rid, c.name, int(c.ok), c.expected, c.found, c.layer, c.message) for c in r.checks],
        )
        if r.compat:
            self.db.executemany(
                "INSERT INTO compat VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        rid,
                        t.id,
                        t.category,
                        t.outcome,
                        t.duration_s,
                        t.message,
                        t.skip_reason,
                        int(t.gpu),
                    )
                    for t in r.compat.tests
                ],
            )
        self.db.executemany(
            "INSERT INTO benchmarks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    rid,
                    benchmark_key(b.name, b.version, b.params, b.unit),
                    b.name,
                    b.version,
                    json.dumps(b.params, sort_keys=True, default=str),
                    b.unit,
                    int(b.higher_is_better),
                    json.dumps(b.samples),
                    b.median,
                    b.iqr,
                    b.cv,
                    int(b.noisy),
                    b.peak,
                    b.peak_source,
                    b.fraction_of_peak,
                    b.error,
                )
                for b in r.benchmarks
            ],
        )
        self.db.executemany(
            "INSERT INTO distributions VALUES (?, ?, ?, ?)",
            [(rid, name, d.version, d.installer) for name, d in r.facts.distributions.items()],
        )
        if r.matrix:
            self.db.executemany(
                "INSERT INTO factors VALUES (?, ?, ?, ?, ?)",
                [(rid, r.matrix, i, k, v) for i, (k, v) in enumerate(r.factors.items())],
            )
        return rid

    # ----------------------------------------------------------------------- queries

    def runs(self) -> list[RunInfo]:
        """Every run, oldest first (by its earliest result's creation time, then id)."""
        rows = self.db.execute(
            "SELECT run_id, MIN(created) AS c, COUNT(DISTINCT host_id), COUNT(DISTINCT env)"
            " FROM results GROUP BY run_id ORDER BY c, run_id"
        )
        return [RunInfo(run_id, created, hosts, envs) for run_id, created, hosts, envs in rows]

    def count_results(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def _rows(self, where: str, args: tuple[Any, ...]) -> list[ResultRow]:
        cols = ", ".join(ResultRow.__dataclass_fields__)
        rows = self.db.execute(
            f"SELECT {cols} FROM results WHERE {where} ORDER BY created, run_id, env, host_id", args
        )
        names = list(ResultRow.__dataclass_fields__)
        out = []
        for row in rows:
            values = dict(zip(names, row, strict=True))
            values["build_reused"] = bool(values["build_reused"])
            values["outcome"] = Outcome(values["outcome"])
            out.append(ResultRow(**values))
        return out

    def results_for_run(self, run_id: str) -> list[ResultRow]:
        return self._rows("run_id = ?", (run_id,))

    def series(self, env: str, host_id: str) -> list[ResultRow]:
        """All results of one (env, host), oldest first."""
        return self._rows("env = ? AND host_id = ?", (env, host_id))

    def latest_per_pair(self) -> list[ResultRow]:
        """The newest result of every (env, host) ever seen."""
        return self._rows(
            "rid IN (SELECT rid FROM (SELECT rid, ROW_NUMBER() OVER (PARTITION BY env, host_id"
            " ORDER BY created DESC, run_id DESC) AS n FROM results) WHERE n = 1)",
            (),
        )

    def latest_with_benchmarks(self) -> list[ResultRow]:
        """The newest result of every (env, host) that recorded benchmarks."""
        return self._rows(
            "rid IN (SELECT rid FROM (SELECT r.rid, ROW_NUMBER() OVER (PARTITION BY r.env,"
            " r.host_id ORDER BY r.created DESC, r.run_id DESC) AS n FROM results r"
            " WHERE EXISTS (SELECT 1 FROM benchmarks b WHERE b.rid = r.rid)) WHERE n = 1)",
            (),
        )

    def checks(self, rids: Iterable[int]) -> dict[int, list[CheckRow]]:
        out: dict[int, list[CheckRow]] = {}
        for row in self._by_rid(
            "SELECT rid, name, ok, expected, found, layer, message FROM checks", rids
        ):
            out.setdefault(row[0], []).append(
                CheckRow(row[0], row[1], bool(row[2]), row[3], row[4], row[5], row[6])
            )
        return out

    def compat(self, rids: Iterable[int]) -> dict[int, list[CompatRow]]:
        out: dict[int, list[CompatRow]] = {}
        query = (
            "SELECT rid, test_id, category, outcome, duration_s, message, skip_reason, gpu"
            " FROM compat"
        )
        for row in self._by_rid(query, rids):
            out.setdefault(row[0], []).append(CompatRow(*row[:7], gpu=bool(row[7])))
        return out

    def benchmarks(self, rids: Iterable[int]) -> dict[int, list[BenchRow]]:
        out: dict[int, list[BenchRow]] = {}
        query = (
            "SELECT rid, key, name, unit, higher_is_better, samples, median, iqr, cv, noisy,"
            " fraction_of_peak, peak_source, error FROM benchmarks"
        )
        for row in self._by_rid(query, rids):
            out.setdefault(row[0], []).append(
                BenchRow(
                    row[0],
                    row[1],
                    row[2],
                    row[3],
                    bool(row[4]),
                    tuple(json.loads(row[5])),
                    row[6],
                    row[7],
                    row[8],
                    bool(row[9]),
                    row[10],
                    row[11],
                    row[12],
                )
            )
        return out

    def distributions(self, rids: Iterable[int]) -> dict[int, dict[str, str | None]]:
        out: dict[int, dict[str, str | None]] = {}
        for rid, name, version in self._by_rid(
            "SELECT rid, name, version FROM distributions", rids
        ):
            out.setdefault(rid, {})[name] = version
        return out

    def factors(self, rids: Iterable[int]) -> dict[int, tuple[str, dict[str, str]]]:
        """rid -> (factored envspec, factor values in declaration order) of matrix cells."""
        out: dict[int, tuple[str, dict[str, str]]] = {}
        query = "SELECT rid, matrix, name, value FROM factors"
        rows = sorted(self._by_rid(query, rids), key=lambda r: r[0])
        for rid, matrix, name, value in rows:
            out.setdefault(rid, (matrix, {}))[1][name] = value
        return out

    def _by_rid(self, query: str, rids: Iterable[int]) -> Iterator[tuple[Any, ...]]:
        ids = sorted(set(rids))
        for start in range(0, len(ids), 500):  # stay below SQLite's bound-parameter limit
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            yield from self.db.execute(f"{query} WHERE rid IN ({marks}) ORDER BY rowid", chunk)

    def benchmark_series(self) -> dict[tuple[str, str, str], list[SeriesPoint]]:
        """(benchmark key, env, host) -> every run's median, oldest first. One query."""
        rows = self.db.execute(
            "SELECT b.key, r.env, r.host_id, r.rid, r.run_id, r.created, b.median, b.iqr, b.unit,"
            " b.higher_is_better, b.samples"
            " FROM benchmarks b JOIN results r ON r.rid = b.rid WHERE b.error IS NULL"
            " ORDER BY r.created, r.run_id"
        )
        out: dict[tuple[str, str, str], list[SeriesPoint]] = {}
        for key, env, host, rid, run_id, created, median, iqr, unit, hib, samples in rows:
            out.setdefault((key, env, host), []).append(
                SeriesPoint(
                    rid, run_id, created, median, iqr, unit, bool(hib), tuple(json.loads(samples))
                )
            )
        return out

    def outcome_counts(self) -> dict[str, dict[Outcome, int]]:
        """run id -> outcome -> number of (env, host) results."""
        out: dict[str, dict[Outcome, int]] = {}
        for run_id, outcome, n in self.db.execute(
            "SELECT run_id, outcome, COUNT(*) FROM results GROUP BY run_id, outcome"
        ):
            out.setdefault(run_id, {})[Outcome(outcome)] = n
        return out


def open_history(db_path: Path, runs_dir: Path | None = None) -> tuple[History, IngestReport]:
    """Open the history at ``db_path`` and ingest ``runs_dir`` into it (if given).

    A history that is no readable database is set aside (``<name>.corrupt-<time>``) and rebuilt
    from the JSON results, with one line saying so. One that cannot be written (a read-only
    ``reports/``) raises a one-line :class:`UserError`.
    """
    problem = unwritable(db_path.parent)
    if problem:
        raise UserError(
            f"history {db_path}: cannot write it: {problem}; expected a writable directory "
            "(make it writable, or set ENVLAB_HISTORY_DB to a path that is)"
        )
    # one process at a time checks (and if need be rebuilds) the file
    with exclusive(db_path.with_name(db_path.name + ".lock")):
        history = _open_sound(db_path, runs_dir)
    report = IngestReport()
    if runs_dir is not None:
        try:
            report = history.ingest_dir(runs_dir)
        except sqlite3.OperationalError as exc:
            history.close()
            raise UserError(f"history {db_path}: cannot write it: {exc}") from None
        log(
            f"history {db_path}: {report.ingested} result(s) ingested, "
            f"{report.unchanged} unchanged, {len(report.skipped)} skipped; "
            f"{history.count_results()} in total"
        )
    return history, report


def _open_sound(db_path: Path, runs_dir: Path | None) -> History:
    """The history at ``db_path``, rebuilt empty (to be re-ingested) when it is unreadable."""
    try:
        history = History(db_path)
    except sqlite3.OperationalError as exc:  # locked, read-only file, no space: not corruption
        raise UserError(f"history {db_path}: cannot open it: {exc}") from None
    except sqlite3.DatabaseError as exc:
        return _rebuilt(db_path, runs_dir, exc)
    try:
        history.check()
    except sqlite3.DatabaseError as exc:
        history.close()
        return _rebuilt(db_path, runs_dir, exc)
    return history


def _rebuilt(db_path: Path, runs_dir: Path | None, exc: Exception) -> History:
    aside = db_path.with_name(f"{db_path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm", "-journal"):
        source = db_path.with_name(db_path.name + suffix)
        if source.exists():
            source.replace(aside.with_name(aside.name + suffix))
    source_text = f"the JSON results under {runs_dir}" if runs_dir else "the JSON results"
    log(
        f"history {db_path}: unreadable ({exc}); rebuilding it from {source_text} "
        f"(the unreadable file is kept as {aside.name})"
    )
    return History(db_path)
