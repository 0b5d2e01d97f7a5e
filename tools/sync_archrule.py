"""Copy the GPU-arch rule into the compat suite (stdlib only; nothing is imported from envlab).

    python tools/sync_archrule.py           # (re)write compat_tests/_archrule.py
    python tools/sync_archrule.py --check   # exit 1 if compat_tests/_archrule.py is stale

The compat suite runs inside each built env, where envlab is not importable, so it gets a
verbatim copy of ``src/envlab/verify/archrule.py`` under a header saying where it came from.
The source must import only the standard library, or the copy would break in the env.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path("src/envlab/verify/archrule.py")
TARGET = Path("compat_tests/_archrule.py")
COMMAND = "python tools/sync_archrule.py"


def header() -> str:
    return (
        f"# Generated from {SOURCE.as_posix()} by tools/sync_archrule.py; do not edit.\n"
        f"# Edit the source, then run: {COMMAND}\n"
    )


def render(source_text: str) -> str:
    """The generated copy: the header, then the source unchanged."""
    return header() + source_text


def foreign_imports(source_text: str) -> list[str]:
    """Modules the source imports that are not the standard library (at any nesting level)."""
    found = []
    for node in ast.walk(ast.parse(source_text)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # A relative import would name a sibling that the compat suite does not have.
            names = ["." * node.level + (node.module or "")] if node.level else [node.module or ""]
        else:
            continue
        found += [name for name in names if name.split(".")[0] not in sys.stdlib_module_names]
    return sorted(set(found))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help=f"exit 1 if {TARGET} is stale")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (for tests)")
    args = parser.parse_args(argv)
    source, target = args.root / SOURCE, args.root / TARGET
    text = source.read_text(encoding="utf-8")
    foreign = foreign_imports(text)
    if foreign:
        print(
            f"sync_archrule: {SOURCE} imports {', '.join(foreign)}; the compat suite can import "
            "only the standard library",
            file=sys.stderr,
        )
        return 2
    wanted = render(text)
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current != wanted:
            state = "is missing" if current is None else f"differs from {SOURCE}"
            print(f"sync_archrule: {TARGET} {state}; run: {COMMAND}", file=sys.stderr)
            return 1
        print(f"sync_archrule: {TARGET} is up to date")
        return 0
    target.write_text(wanted, encoding="utf-8")
    print(f"sync_archrule: wrote {TARGET} from {SOURCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
