"""Timing benchmark: a report over N synthetic runs x 5 envs (default 1,000 runs).

Generates valid result documents into a temporary directory, then times: the first report (cold:
ingest every file into a fresh history database, then build the report), a second report (warm:
nothing new to ingest), and the regression check.

Usage: ``python tools/bench_report.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import factories as f

from envlab.report import regress, render
from envlab.report.judge import JudgeOptions
from envlab.results.store import Store

ENVS = ("stable", "latest", "nightly", "cpu", "legacy")


def generate(runs_dir: Path, runs: int, hosts: int) -> int:
    rng = random.Random(0)
    host_list = [f.host(f"runner-{i}") for i in range(hosts)]
    store = Store(runs_dir)
    count = 0
    for run in range(runs):
        for host in host_list:
            for env in ENVS:
                if env == "legacy" and run % 7 == 0:
                    r = f.unavailable(run, env, host)
                else:
                    r = f.result(
                        run=run, env=env, host_=host, benchmarks=f.default_benchmarks(rng, env)
                    )
                path = store.path_for(r)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(r.to_json(), encoding="utf-8")  # no fsync: generation is not timed
                count += 1
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="write into this directory and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="envlab-bench-report-") as tmp:
        base = args.keep or Path(tmp)
        runs_dir, out_dir, db = base / "runs", base / "report", base / "history.sqlite"
        t = time.perf_counter()
        n = generate(runs_dir, args.runs, args.hosts)
        gen_s = time.perf_counter() - t
        timings = {}
        for label in ("cold (ingest all + report)", "warm (nothing new + report)"):
            t = time.perf_counter()
            render.build_report(runs_dir, out_dir, db)
            timings[label] = time.perf_counter() - t
        t = time.perf_counter()
        regress.main(
            runs_dir, db, options=JudgeOptions(), baseline=None, out_md=out_dir / "regressions.md"
        )
        timings["regress (warm)"] = time.perf_counter() - t
        print(
            f"\n{args.runs} runs x {len(ENVS)} envs x {args.hosts} host(s) = {n} results "
            f"(generated in {gen_s:.1f} s, {db.stat().st_size / 1e6:.1f} MB database)"
        )
        for label, seconds in timings.items():
            print(f"  {label:32} {seconds:6.2f} s")
        print(f"  {'HTML size':32} {(out_dir / 'report.html').stat().st_size / 1e6:6.2f} MB")
        print(f"  {'Markdown size':32} {(out_dir / 'report.md').stat().st_size / 1e3:6.1f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
