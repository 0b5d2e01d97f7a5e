"""Measure what envlab's build + verification costs over a raw install, and a second compat run.

    python tools/measure_verify.py [--env stable] [--rounds 3] [--work DIR]

1. Build + verify of ``--env`` from its lock (``envlab test ENV --no-compat`` into an empty envs
   directory) against a raw ``uv venv`` + ``uv pip install`` of the same lock files with the same
   uv cache (warmed first by an untimed raw install), online as a user runs it and offline (the
   install envlab makes when every locked file is cached), each kind leading in turn so that a
   machine getting busier or quieter favours none; each env is removed, untimed, after its turn.
2. A compat run twice in one unchanged env (``envlab test ENV`` twice; the second run reuses the
   env and its caches): the suite's duration as each result records it.

Prints one line per measurement and the ratios (medians). Needs the env's index (PyPI for
``stable``) and room for one env at a time (about 8 GB for ``stable``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from envlab.build.interpreters import find  # noqa: E402
from envlab.build.uv import UNSET_FOR_UV, find_executable  # noqa: E402
from envlab.spec import platforms  # noqa: E402
from envlab.spec.envspec import Matrix  # noqa: E402


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in UNSET_FOR_UV}, **extra}


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    if done.returncode not in (0, 1):  # 1: envlab ran, and something failed a check
        raise SystemExit(
            f"{' '.join(argv[:4])} ... failed ({done.returncode}): {done.stderr[-800:]}"
        )
    return elapsed


def envlab(args: list[str], work: Path, run_id: str) -> float:
    env = _env(
        {
            "ENVLAB_ENVS_DIR": str(work / "envs"),
            "ENVLAB_RUNS_DIR": str(work / "runs"),
            "ENVLAB_HISTORY_DB": str(work / "history.sqlite"),
            "ENVLAB_HOST_ID": "measure",
            "ENVLAB_RUN_ID": run_id,
        }
    )
    seconds = timed([sys.executable, "-m", "envlab.cli", "--root", str(ROOT), *args], env)
    if not (work / "runs" / run_id).is_dir():  # exit 1 is also a crash before any result
        raise SystemExit(f"envlab {' '.join(args)} wrote no result in {seconds:.1f} s")
    return seconds


def raw_install(env_name: str, python: Path, work: Path, offline: bool = False) -> float:
    """``uv venv`` + ``uv pip install`` of the env's lock files, one per layer, as a user would
    (``offline``: from uv's cache only, as envlab installs a lock whose files are all cached)."""
    uv = find_executable()
    target = work / "raw"
    locks = sorted((ROOT / "locks" / env_name).glob(f"pylock.{platforms.current()}-*.toml"))
    order = {"torch": 0, "stack": 1, "nightly": 2}
    locks.sort(key=lambda p: order.get(p.stem.rsplit("-", 1)[-1], 9))
    argv = [[uv, "venv", "-q", "--no-config", "--python", str(python), str(target)]]
    pip = [uv, "pip", "install", "-q", "--no-config", "--preview-features", "pylock"]
    pip += ["--offline"] if offline else []
    argv += [[*pip, "--python", str(target / "bin" / "python"), "-r", str(lock)] for lock in locks]
    start = time.monotonic()
    for command in argv:
        subprocess.run(command, env=_env({}), check=True, capture_output=True)
    return time.monotonic() - start


# raw: what a user runs (uv asks the server about every cached file); raw-offline: the same from
# uv's cache alone, the install envlab makes when every locked file is cached
KINDS = ("raw", "envlab", "raw-offline")


def compat_seconds(work: Path, run_id: str, env_name: str) -> float:
    result = work / "runs" / run_id / "measure" / f"{env_name}.json"
    compat = json.loads(result.read_text(encoding="utf-8")).get("compat") or {}
    return float(compat.get("duration_s") or 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="stable")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, help="scratch directory (default: a temporary one)")
    args = parser.parse_args()
    spec = Matrix(ROOT / "envspecs").get(args.env)
    python = find(spec.python).path
    work = args.work or Path(tempfile.mkdtemp(prefix="envlab-measure-"))
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    shutil.rmtree(work / "raw", ignore_errors=True)
    print(f"warm-up (untimed, fills the uv cache): raw {raw_install(args.env, python, work):.1f} s")
    for i in range(args.rounds):
        for kind in KINDS[i % len(KINDS) :] + KINDS[: i % len(KINDS)]:  # each kind leads in turn
            shutil.rmtree(work / "envs", ignore_errors=True)
            shutil.rmtree(work / "raw", ignore_errors=True)
            if kind == "envlab":
                seconds = envlab(["test", args.env, "--no-compat"], work, f"build{i}")
            else:
                seconds = raw_install(args.env, python, work, offline=kind == "raw-offline")
            times[kind].append(seconds)
            print(f"round {i + 1}: {kind:11} {seconds:6.1f} s", flush=True)
    shutil.rmtree(work / "raw", ignore_errors=True)
    median = {kind: statistics.median(found) for kind, found in times.items()}
    for baseline in ("raw", "raw-offline"):
        print(
            f"build + verify: envlab median {median['envlab']:.1f} s, {baseline} uv median "
            f"{median[baseline]:.1f} s: ratio {median['envlab'] / median[baseline]:.2f}"
        )
    envlab(["test", args.env], work, "compat1")  # the env of the last round: its first run
    envlab(["test", args.env], work, "compat2")
    first, second = (compat_seconds(work, r, args.env) for r in ("compat1", "compat2"))
    print(f"compat suite in an unchanged env: first run {first:.1f} s, second run {second:.1f} s")
    shutil.rmtree(work / "envs", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
