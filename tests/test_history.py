"""History store: idempotent ingest, corrupt/foreign files skipped, queries."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import factories as f
import pytest

from envlab.results.history import History, benchmark_key, open_history


def test_ingest_is_idempotent(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    f.write(runs, f.first_run(with_benchmarks=True))
    db = tmp_path / "h.sqlite"
    with History(db) as h:
        first = h.ingest_dir(runs)
        second = h.ingest_dir(runs)
        assert (first.ingested, second.ingested, second.unchanged) == (5, 0, 5)
        assert h.count_results() == 5
    # Same results re-written (new mtime) and ingested again in memory: still one row per key.
    paths = f.write(runs, f.first_run(with_benchmarks=True))
    for p in paths:
        os.utime(p, ns=(1, 1))
    with History(db) as h:
        assert h.ingest_dir(runs).ingested == 5
        h.ingest(f.first_run(with_benchmarks=True))
        assert h.count_results() == 5
        (rid,) = [r.rid for r in h.results_for_run(f.run_id(0)[0]) if r.env == "stable"]
        assert len(h.benchmarks([rid])[rid]) == 3
        assert len(h.compat([rid])[rid]) == len(f.CATEGORIES) * 3


def test_corrupt_and_foreign_files_are_skipped_with_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    f.write(runs, f.first_run())
    bad = runs / "r-bad" / "h" / "stable.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"schema_version": 1, "run_id": ', encoding="utf-8")
    foreign_doc = json.loads(f.result(run=1).to_json())
    foreign_doc["schema_version"] = 99
    foreign = runs / "r-new" / "h" / "stable.json"
    foreign.parent.mkdir(parents=True)
    foreign.write_text(json.dumps(foreign_doc), encoding="utf-8")

    history, report = open_history(tmp_path / "h.sqlite", runs)
    with history:
        assert report.ingested == 5
        reasons = {p.name + p.parent.parent.name: r for p, r in report.skipped}
        assert "invalid JSON" in reasons["stable.jsonr-bad"]
        assert "upgrade envlab" in reasons["stable.jsonr-new"]
        err = capsys.readouterr().err
        assert f"skipped {bad}" in err and f"skipped {foreign}" in err
        # Still reported on the next ingest while the file stays broken, never fatal.
        again = history.ingest_dir(runs)
        assert len(again.skipped) == 2 and history.count_results() == 5


def test_queries(tmp_path: Path) -> None:
    rng = random.Random(3)
    results = []
    for run in range(3):
        for host_id in ("cpu-a", "cpu-b"):
            results.append(
                f.result(
                    run=run,
                    env="stable",
                    host_=f.host(host_id),
                    benchmarks=f.default_benchmarks(rng, "stable"),
                )
            )
    with History(tmp_path / "h.sqlite") as h:
        h.ingest(reversed(results))
        runs = h.runs()
        assert [r.run_id for r in runs] == [f.run_id(i)[0] for i in range(3)]
        assert all(r.hosts == 2 and r.envs == 1 for r in runs)
        series = h.benchmark_series()
        key = benchmark_key("matmul", 1, {"n": 1024, "dtype": "float32"}, "ms")
        assert [p.run_id for p in series[(key, "stable", "cpu-b")]] == [r.run_id for r in runs]
        latest = h.latest_per_pair()
        assert {(r.env, r.host_id, r.run_id) for r in latest} == {
            ("stable", "cpu-a", runs[-1].run_id),
            ("stable", "cpu-b", runs[-1].run_id),
        }
        row = latest[0]
        assert row.torch == "2.10.0+cu128" and row.torch_cuda == "12.8" and row.n_skipped == 6
        assert h.distributions([row.rid])[row.rid]["numpy"] == f.BASE_DISTS["numpy"]


def test_latest_with_benchmarks_skips_later_results_without_them(tmp_path: Path) -> None:
    """A later session that ran no benchmarks (or did not build) leaves the earlier ones current."""
    rng = random.Random(5)
    with History(tmp_path / "h.sqlite") as h:
        h.ingest(
            [
                f.result(run=0, env="stable", benchmarks=f.default_benchmarks(rng, "stable")),
                f.result(run=1, env="stable"),
                f.result(run=1, env="latest", benchmarks=f.default_benchmarks(rng, "latest")),
                f.result(run=2, env="latest", outcome="build-failed", reason="conflict"),
                f.unavailable(2, "cpu"),
            ]
        )
        latest = {(r.env, r.run_id) for r in h.latest_with_benchmarks()}
        assert latest == {("stable", f.run_id(0)[0]), ("latest", f.run_id(1)[0])}
        assert {(r.env, r.run_id) for r in h.latest_per_pair()} == {
            ("stable", f.run_id(1)[0]),
            ("latest", f.run_id(2)[0]),
            ("cpu", f.run_id(2)[0]),
        }
