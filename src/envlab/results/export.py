"""Flat tables of the history for notebooks and spreadsheets (pandas, CSV).

One row per (run, host, env) in ``results.csv`` with the compat counts; one row per benchmark
record in ``benchmarks.csv`` with its statistics (raw samples stay in the JSON results).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from envlab.fsutil import atomic_write_text
from envlab.results.history import History

RESULTS_SQL = """
SELECT r.run_id, r.host_id, r.env, r.created, r.outcome, r.reason, r.gpu, r.driver, r.spec_hash,
       SUM(c.outcome = 'passed') AS compat_passed,
       SUM(c.outcome IN ('failed', 'error', 'xpassed')) AS compat_failed,
       SUM(c.outcome IN ('skipped', 'xfailed')) AS compat_skipped
FROM results r LEFT JOIN compat c ON c.rid = r.rid
GROUP BY r.rid ORDER BY r.created, r.env, r.host_id
"""
BENCHMARKS_SQL = """
SELECT r.run_id, r.host_id, r.env, r.created, b.name, b.version, b.params, b.unit,
       b.higher_is_better, b.median, b.iqr, b.cv, b.noisy, b.fraction_of_peak, b.error
FROM benchmarks b JOIN results r ON r.rid = b.rid ORDER BY r.created, r.env, b.name
"""


def frames(history: History) -> dict[str, pd.DataFrame]:
    """The history as DataFrames: ``results`` and ``benchmarks``."""
    return {
        "results": pd.read_sql_query(RESULTS_SQL, history.db),
        "benchmarks": pd.read_sql_query(BENCHMARKS_SQL, history.db),
    }


def write_csv(history: History, out_dir: Path) -> list[Path]:
    """Write ``results.csv`` and ``benchmarks.csv`` (atomically) into ``out_dir``."""
    written = []
    for name, frame in frames(history).items():
        path = out_dir / f"{name}.csv"
        atomic_write_text(path, frame.to_csv(index=False))
        written.append(path)
    return written
