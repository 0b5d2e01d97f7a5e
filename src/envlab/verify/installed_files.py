"""Installed files against their RECORD, scanned INSIDE an env. Stdlib only: run as
``<env-python> installed_files.py [--deep]``.

Every installed distribution's RECORD lists its files with a size and a hash. A file that is gone
or has another size means a damaged install (a deleted ``.so``, an interrupted copy) that imports
may not notice until the day that code path runs. ``--deep`` compares the hashes too (slower: it
reads every byte). Prints one JSON object on stdout.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from importlib import metadata
from typing import Any

# Problems listed in full; beyond this only their count (a wiped package lists thousands).
LIMIT = 50


def _hash_matches(path: Any, mode: str, value: str) -> bool:
    digest = hashlib.new(mode)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode() == value


def _regenerable(entry: Any) -> bool:
    """Bytecode caches: rebuilt on import (and some installers list them without a size)."""
    return "__pycache__" in entry.parts or entry.suffix == ".pyc"


def _problem(dist: Any, entry: Any, deep: bool, sizes: bool) -> str | None:
    path = dist.locate_file(entry)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if sizes and entry.size is not None and size != entry.size:
        return f"size {size} != recorded {entry.size}"
    if deep and sizes and entry.hash is not None:
        try:
            if not _hash_matches(path, entry.hash.mode, entry.hash.value):
                return f"{entry.hash.mode} differs from the recorded one"
        except (OSError, ValueError) as exc:
            return f"not hashable ({exc})"
    return None


def _installer(dist: Any) -> str:
    try:
        return (dist.read_text("INSTALLER") or "").strip()
    except Exception:  # noqa: BLE001 - a broken dist-info must not stop the scan
        return ""


def scan(deep: bool = False) -> dict[str, Any]:
    """Every RECORD entry of every distribution: present, with its size (and hash if ``deep``)."""
    problems: list[dict[str, str]] = []
    total = files = dists = 0
    no_record: list[str] = []
    for dist in metadata.distributions():
        name = dist.metadata.get("Name") or "?"
        entries = dist.files
        if entries is None:
            no_record.append(name)
            continue
        dists += 1
        # conda rewrites its build prefix inside text files when it links a package, so a conda
        # package's files legitimately differ in size from its RECORD: presence only there
        sizes = _installer(dist) != "conda"
        for entry in entries:
            if _regenerable(entry):
                continue
            files += 1
            problem = _problem(dist, entry, deep, sizes)
            if problem is not None:
                total += 1
                if len(problems) < LIMIT:
                    problems.append({"dist": name, "path": str(entry), "problem": problem})
    return {
        "distributions": dists,
        "files": files,
        "deep": deep,
        "problems": problems,
        "problems_total": total,
        "no_record": sorted(no_record),
    }


def main(argv: list[str]) -> int:
    try:
        found = scan(deep="--deep" in argv)
    except BaseException as exc:  # noqa: BLE001 - report, do not crash the caller's parse
        found = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    json.dump(found, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
