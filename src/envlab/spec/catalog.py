"""Stdlib-only view of envspecs/ for the noxfile: env names, defaults and tags.

The noxfile imports this before any dependency is installed, so it must not import pydantic or
anything outside the standard library. Full validation happens in :mod:`envlab.spec.envspec`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

NON_ENV_FILES = frozenset({"indexes.toml", "stack.toml"})


@dataclass(frozen=True)
class EnvEntry:
    name: str
    default: bool
    tags: tuple[str, ...]


def env_files(envspecs: Path) -> list[Path]:
    """The envspec files (one per env), sorted by name."""
    return sorted(
        (p for p in envspecs.glob("*.toml") if p.name not in NON_ENV_FILES), key=lambda p: p.stem
    )


def entries(envspecs: Path) -> list[EnvEntry]:
    """Name, default flag and tags of every env;
    a file that cannot be parsed still gets a session."""
    found = []
    for path in env_files(envspecs):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            data = {}
        tags = data.get("tags", [])
        found.append(
            EnvEntry(
                name=path.stem,
                default=data.get("default") is True,
                tags=tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
            )
        )
    return found
