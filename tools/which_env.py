"""Write README.md's "which env do I need?" table from the knowledge tables and envspecs/.

    python tools/which_env.py           # (re)write the table between its markers in README.md
    python tools/which_env.py --check   # exit 1 if README.md's table is out of date

The table is what `envlab doctor` picks for each compute capability and driver range
(:mod:`envlab.hardware.which`), so a change to src/envlab/hardware/knowledge.toml or to an
envspec that changes a pick shows up here, and `nox -s lint` fails until the README follows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from envlab.errors import UserError
from envlab.fsutil import atomic_write_text
from envlab.hardware import which
from envlab.spec.envspec import Matrix

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python tools/which_env.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (for tests)")
    args = parser.parse_args(argv)
    readme = args.root / "README.md"
    try:
        text = readme.read_text(encoding="utf-8")
        wanted = which.replace_block(
            text, which.render(Matrix(args.root / "envspecs")), str(readme)
        )
    except (OSError, UserError) as exc:
        print(f"which_env: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if text != wanted:
            print(
                f"which_env: the 'which env do I need?' table in {readme} differs from the "
                f"knowledge tables and envspecs; run: {COMMAND}",
                file=sys.stderr,
            )
            return 1
        print(f"which_env: {readme} is up to date")
        return 0
    if text != wanted:
        atomic_write_text(readme, wanted)
    print(f"which_env: wrote the table in {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
