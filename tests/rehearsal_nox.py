"""The ``nox`` command of the rehearsal (tests/rehearsal.py): the workspace's own noxfile drives it.

``nox -l ...`` is the real nox. ``nox -s NAME -- ARGS`` loads ``noxfile.py`` and calls session
NAME with a stand-in session object whose ``install`` does nothing (envlab is installed already)
and whose ``run("envlab", ...)`` checks the command line against envlab's own parser before it
runs it: a session the noxfile lacks, or arguments the CLI no longer takes, fail the step.

One change is made on purpose: ``envlab test`` runs with ``--no-compat`` and without benchmarks,
since the rehearsal's small envs hold stub torch wheels (a compat suite or benchmark needs the
real torch); building, verifying and recording each env is what the rehearsal plays.
"""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any


class Session:
    """What the noxfile's sessions use of ``nox.Session``."""

    def __init__(self, name: str, posargs: list[str]) -> None:
        self.name = name
        self.posargs = posargs

    def install(self, *args: str, **kwargs: Any) -> None:
        return None

    def log(self, *args: Any, **kwargs: Any) -> None:
        print(*args, file=sys.stderr)

    def run(self, program: str, *args: str, **kwargs: Any) -> None:
        if program != "envlab":
            raise SystemExit(f"rehearsal: session {self.name} runs {program!r}, not envlab")
        from envlab.cli import parser

        parser().parse_args(list(args))  # exits 2 with argparse's message on drift
        argv = list(args)
        if argv and argv[0] == "test":
            argv = _without_bench(argv) + ["--no-compat"]
            print(f"rehearsal: envlab {' '.join(argv)} (stub torch: no compat, no bench)")
        done = subprocess.run([sys.executable, "-m", "envlab.cli", *argv], check=False)
        if done.returncode != 0:
            # as nox: the command's exit code in the log, exit code 1 for the failed session
            print(f"nox > Command envlab failed with exit code {done.returncode}", file=sys.stderr)
            print(f"nox > Session {self.name} failed.", file=sys.stderr)
            raise SystemExit(1)


def _without_bench(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--bench":
            skip = True
            continue
        if not arg.startswith("--bench="):
            out.append(arg)
    return out


def main(argv: list[str]) -> int:
    if "-s" not in argv and "--session" not in argv:
        return subprocess.call([sys.executable, "-m", "nox", *argv])
    flag = "-s" if "-s" in argv else "--session"
    name = argv[argv.index(flag) + 1]
    posargs = argv[argv.index("--") + 1 :] if "--" in argv else []
    runpy.run_path(str(Path.cwd() / "noxfile.py"))
    from nox import registry

    session = registry.get().get(name)
    if session is None:
        print(f"nox > Sessions not found: {name}", file=sys.stderr)
        return 1
    session(Session(name, posargs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
