"""The ``reports/runs`` tree: one JSON document per (run, host, env), written atomically.

Results from several machines are merged by copying their files into one ``reports/runs``; a
corrupt or foreign file is reported and skipped, never fatal to a reader.

A result that cannot be written there (a read-only or full disk) is not lost: :meth:`Store.save`
writes it under a fallback directory, in the same layout, and says where.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from envlab.errors import ResultError
from envlab.fsutil import atomic_write_text
from envlab.results.schema import SCHEMA_VERSION, Result, load


def safe_name(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", value) or "unknown"


def fallback_roots() -> list[Path]:
    """Where results go when the store cannot be written, in order of preference:
    ``$ENVLAB_FALLBACK_DIR``, the user's state directory, the temporary directory."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    roots = [
        Path(state) / "envlab" / "unsaved-runs",
        Path(tempfile.gettempdir()) / "envlab-unsaved",
    ]
    if os.environ.get("ENVLAB_FALLBACK_DIR"):
        roots.insert(0, Path(os.environ["ENVLAB_FALLBACK_DIR"]))
    return roots


@dataclass(frozen=True)
class Saved:
    """Where a result was written; ``failed`` says why not in the store (then ``path`` is a
    fallback, or None when nothing could be written and the document went to stderr)."""

    path: Path | None
    failed: str | None = None


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

    def save(self, result: Result, fallbacks: Sequence[Path] | None = None) -> Saved:
        """:meth:`write`, or when the store cannot be written, the same file under the first
        writable fallback root (default :func:`fallback_roots`)."""
        try:
            return Saved(self.write(result))
        except OSError as exc:
            failed = f"{self.path_for(result)}: {exc.strerror or exc}"
        for root in fallbacks if fallbacks is not None else fallback_roots():
            try:
                return Saved(Store(root).write(result), failed)
            except OSError:
                continue
        return Saved(None, failed)

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
