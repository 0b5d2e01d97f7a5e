"""Scale benchmark of the results store: a year of nights on a git branch, then what the
scheduled workflow's report job does with it, timed.

Generates ``--nights`` (365) nights x ``--envs`` (10) envs x ``--hosts`` (4) hosts of valid result
documents with tests/factories.py (compat outcomes, installed packages, the quick benchmark
figures), commits them to a local bare repository one night per commit (as the workflow would
have, untimed), then times, on a fresh machine: ``envlab results pull`` (fetch + copy into
reports/runs), indexing every result into a new history database, the report, regress with the
workflow's options; then the next night's push of one night of results and a second pull on the
same (warm) checkout. Prints the timings and the sizes of the store (the bare repository, the
checkout, the JSON files), the index and the report.

Usage: ``python tools/bench_store.py [--nights 365] [--envs 10] [--hosts 4] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import factories as f

from envlab.fsutil import dir_size
from envlab.report import regress, render
from envlab.report.judge import JudgeOptions
from envlab.results import gitstore
from envlab.results.history import open_history
from envlab.results.store import Store

ENVS = (
    "stable",
    "latest",
    "nightly",
    "cpu",
    "legacy",
    "legacy-cu118",
    "stable-conda",
    "brain-encoders",
    "stable-py312",
    "stable-py313",
)
HOSTS = ("linux-cpu", "gpu-h100", "gpu-a100", "gpu-1080ti")
# the options the scheduled workflow passes to regress
WORKFLOW_OPTIONS = JudgeOptions(window=40, min_history=5, threshold=1.10, sigmas=2, persist=1)


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout


def night(rng: random.Random, n: int, envs: int, hosts: int) -> list[Any]:
    out = []
    for h in HOSTS[:hosts]:
        host = f.host(h, gpu=None if h == "linux-cpu" else h.removeprefix("gpu-").upper())
        for env in ENVS[:envs]:
            drift = 1.0 + rng.uniform(-0.08, 0.08)
            benches = f.drifting_benchmarks(rng, drift=drift)
            out.append(f.result(run=n, env=env, host_=host, benchmarks=benches))
    return out


def build_store(base: Path, nights: int, envs: int, hosts: int) -> tuple[Path, int, list[Any]]:
    """A bare repository whose results branch holds ``nights`` nights, one commit each; returns
    it, the number of results, and one more night (the next one, not pushed)."""
    rng = random.Random(0)
    bare, work = base / "store.git", base / "writer"
    git("init", "--quiet", "--bare", str(bare), cwd=base)
    git("init", "--quiet", str(work), cwd=base)
    git("checkout", "--quiet", "--orphan", gitstore.DEFAULT_BRANCH, cwd=work)
    store = Store(work / gitstore.RUNS)
    count = 0
    for n in range(nights):
        for result in night(rng, n, envs, hosts):
            path = store.path_for(result)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(result.to_json(), encoding="utf-8")  # no fsync: not timed
            count += 1
        git("add", "--all", cwd=work)
        git(*gitstore.IDENTITY, "commit", "--quiet", "-m", f"night {n}", cwd=work)
        if n % 50 == 49:
            print(f"  generated {n + 1} nights ({count} results)", file=sys.stderr)
    git("push", "--quiet", str(bare), f"HEAD:refs/heads/{gitstore.DEFAULT_BRANCH}", cwd=work)
    git("gc", "--quiet", cwd=bare)
    return bare, count, night(rng, nights, envs, hosts)


def timed(label: str, timings: dict[str, float], fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    value = fn()
    timings[label] = time.perf_counter() - start
    print(f"  {label:44} {timings[label]:7.2f} s", file=sys.stderr)
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=365)
    parser.add_argument("--envs", type=int, default=10, choices=range(1, len(ENVS) + 1))
    parser.add_argument("--hosts", type=int, default=4, choices=range(1, len(HOSTS) + 1))
    parser.add_argument("--keep", type=Path, help="work in this (empty) directory and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="envlab-bench-store-") as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        bare, count, next_night = build_store(base, args.nights, args.envs, args.hosts)
        print(f"  store generated in {time.perf_counter() - start:.0f} s (not timed below)")
        runs, db, out = base / "ci" / "runs", base / "ci" / "history.sqlite", base / "ci" / "latest"
        branch = gitstore.GitBranch(gitstore.Remote(str(bare)), base / "ci" / "store")
        t: dict[str, float] = {}
        timed("pull (fresh checkout: fetch + copy)", t, lambda: gitstore.pull(branch, runs))
        timed("index (new history database)", t, lambda: open_history(db, runs)[0].close())
        timed("report (index up to date)", t, lambda: render.build_report(runs, out, db))
        timed(
            "regress (the workflow's options)",
            t,
            lambda: regress.main(
                runs, db, options=WORKFLOW_OPTIONS, baseline=None, out_md=out / "regressions.md"
            ),
        )
        f.write(runs, next_night)
        timed(
            f"push of the next night ({len(next_night)} results)",
            t,
            lambda: gitstore.push(branch, runs),
        )
        timed("pull again (warm checkout)", t, lambda: gitstore.pull(branch, runs))
        json_bytes = sum(p.stat().st_size for p in Store(runs).files())
        packed = git("count-objects", "-vH", cwd=bare)
        sizes = {
            "bare repository (the remote, packed)": dir_size(bare),
            "checkout (.git + files)": dir_size(branch.path),
            "JSON results (sum of file sizes)": json_bytes,
            "history.sqlite": db.stat().st_size,
            "report.html": (out / "report.html").stat().st_size,
        }
        print(
            f"\n{args.nights} nights x {args.envs} envs x {args.hosts} hosts = {count} results "
            f"in the store (+{len(next_night)} pushed)"
        )
        for label, seconds in t.items():
            print(f"  {label:44} {seconds:7.2f} s")
        for label, size in sizes.items():
            print(f"  {label:44} {size / 1e6:7.1f} MB")
        print("  git count-objects -vH (bare): " + " ".join(packed.split()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
