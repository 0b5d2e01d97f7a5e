"""The ``reports/runs`` tree: one JSON document per (run, host, env), written atomically.

Results from several machines are merged by copying their files into one ``reports/runs``; a
corrupt or foreign file is reported and skipped, never fatal to a reader.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from envlab.errors import ResultError
from envlab.fsutil import atomic_write_text
from envlab.results.schema import SCHEMA_VERSION, Result, load


def safe_name(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", value) or "unknown"


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


class Store:
    """The ``reports/runs`` tree."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, result: Result) -> Path:
        return (
            self.root
            / safe_name(result.run_id)
            / safe_name(result.host.id)
            / f"{safe_name(result.env)}.json"
        )

    def write(self, result: Result) -> Path:
        """Stamp the current schema version, validate, and write atomically."""
        stamped = Result.model_validate(result.model_dump() | {"schema_version": SCHEMA_VERSION})
        path = self.path_for(stamped)
        atomic_write_text(path, stamped.to_json())
        return path

    def files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("*/*/*.json") if not p.name.startswith("."))

    def scan(self) -> Iterator[Result | Skipped]:
        """Every result under the store; a corrupt or foreign file is yielded as Skipped."""
        for path in self.files():
            try:
                yield load(path)
            except ResultError as exc:
                yield Skipped(path, str(exc))
