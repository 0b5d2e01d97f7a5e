"""Measure what envlab's build + verification costs over a raw install, and a second compat run.

    python tools/measure_verify.py [--env stable] [--rounds 3] [--work DIR]

1. Build + verify of ``--env`` from its lock (``envlab test ENV --no-compat`` into an empty envs
   directory) against a raw ``uv venv`` + ``uv pip install`` of the same lock files with the same
   uv cache (warmed first by an untimed raw install), alternating (raw first in odd rounds,
   envlab first in even ones) so that a machine getting busier or quieter favours neither; each
   env is removed, untimed, after its round.
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
    return timed([sys.executable, "-m", "envlab.cli", "--root", str(ROOT), *args], env)


def raw_install(env_name: str, python: Path, work: Path) -> float:
    """``uv venv`` + ``uv pip install`` of the env's lock files, one per layer, as a user would."""
    uv = find_executable()
    target = work / "raw"
    locks = sorted((ROOT / "locks" / env_name).glob(f"pylock.{platforms.current()}-*.toml"))
    order = {"torch": 0, "stack": 1, "nightly": 2}
    locks.sort(key=lambda p: order.get(p.stem.rsplit("-", 1)[-1], 9))
    argv = [[uv, "venv", "-q", "--no-config", "--python", str(python), str(target)]]
    pip = [uv, "pip", "install", "-q", "--no-config", "--preview-features", "pylock"]
    argv += [[*pip, "--python", str(target / "bin" / "python"), "-r", str(lock)] for lock in locks]
    start = time.monotonic()
    for command in argv:
        subprocess.run(command, env=_env({}), check=True, capture_output=True)
    return time.monotonic() - start


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
    envlab_s, raw_s = [], []
    shutil.rmtree(work / "raw", ignore_errors=True)
    print(f"warm-up (untimed, fills the uv cache): raw {raw_install(args.env, python, work):.1f} s")
    for i in range(args.rounds):
        order = ("raw", "envlab") if i % 2 == 0 else ("envlab", "raw")
        for kind in order:
            shutil.rmtree(work / "envs", ignore_errors=True)
            shutil.rmtree(work / "raw", ignore_errors=True)
            if kind == "raw":
                raw_s.append(raw_install(args.env, python, work))
            else:
                envlab_s.append(envlab(["test", args.env, "--no-compat"], work, f"build{i}"))
            seconds = (raw_s if kind == "raw" else envlab_s)[-1]
            print(f"round {i + 1}: {kind:6} {seconds:6.1f} s", flush=True)
    shutil.rmtree(work / "raw", ignore_errors=True)
    ratio = statistics.median(envlab_s) / statistics.median(raw_s)
    print(
        f"build + verify: envlab median {statistics.median(envlab_s):.1f} s, raw uv median "
        f"{statistics.median(raw_s):.1f} s: ratio {ratio:.2f}"
    )
    envlab(["test", args.env], work, "compat1")  # the env of the last round: its first run
    envlab(["test", args.env], work, "compat2")
    first, second = (compat_seconds(work, r, args.env) for r in ("compat1", "compat2"))
    print(f"compat suite in an unchanged env: first run {first:.1f} s, second run {second:.1f} s")
    shutil.rmtree(work / "envs", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
