"""Stdlib-only view of envspecs/ for the noxfile: env names, defaults and tags.

The noxfile imports this before any dependency is installed, so it must not import pydantic or
anything outside the standard library. Full validation happens in :mod:`envlab.spec.envspec`.
A factored envspec (one with a ``[matrix]`` table) stands for one env per cell
(:mod:`envlab.spec.factors`); a cell named like another env makes the whole file invalid.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envlab.spec import factors

NON_ENV_FILES = frozenset({"indexes.toml", "stack.toml"})


@dataclass(frozen=True)
class EnvEntry:
    name: str
    default: bool
    tags: tuple[str, ...]
    matrix: str | None = None  # the factored envspec this env is a cell of
    factors: tuple[tuple[str, str], ...] = ()  # (factor, value) of that cell


@dataclass(frozen=True)
class Source:
    """Where one env's envspec comes from: a file, or a cell of a factored file."""

    name: str
    path: Path
    data: dict[str, Any] = field(default_factory=dict)  # the file's (or the cell's) TOML data
    cell: factors.Cell | None = None
    error: str | None = None  # why the factored file cannot be expanded (one line, no path)


def env_files(envspecs: Path) -> list[Path]:
    """The envspec files (one per env, or one per factored matrix), sorted by name."""
    return sorted(
        (p for p in envspecs.glob("*.toml") if p.name not in NON_ENV_FILES), key=lambda p: p.stem
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}  # still an env: loading it (envspec.Matrix) says what is wrong


def sources(envspecs: Path) -> list[Source]:
    """Every env, by name: a plain envspec is one env (even one that cannot be parsed); a
    factored one is one env per cell, or one env under its file name when it cannot expand."""
    read = [(path, _read(path)) for path in env_files(envspecs)]
    plain = {p.stem: p for p, data in read if not factors.is_factored(data)}
    found: dict[str, Source] = {}
    for path, data in read:
        if path.stem in plain:
            found[path.stem] = Source(path.stem, path, data)
            continue
        try:
            cells = _cells(path, data, plain, found)
        except factors.FactorError as exc:
            found[path.stem] = Source(path.stem, path, data, error=str(exc))
            continue
        found |= {c.name: Source(c.name, path, c.data, c) for c in cells}
    return list(found.values())


def _cells(
    path: Path, data: dict[str, Any], plain: dict[str, Path], found: dict[str, Source]
) -> list[factors.Cell]:
    """The cells of factored ``path``; none may take the name of another env."""
    cells = factors.expand(path.stem, data)
    for cell in cells:
        other = plain.get(cell.name) or (found[cell.name].path if cell.name in found else None)
        if other is not None:
            raise factors.FactorError(
                f"field 'matrix.name': expected env names of its own, found cell ({cell.label}) "
                f"named {cell.name!r}, the name of an env of {other.name}"
            )
    return cells


def entries(envspecs: Path) -> list[EnvEntry]:
    """Name, default flag and tags of every env (each cell of a factored envspec);
    a file that cannot be parsed still gets a session."""
    found = []
    for source in sources(envspecs):
        data = source.data
        tags = data.get("tags", [])
        cell = source.cell
        found.append(
            EnvEntry(
                name=source.name,
                # the TOML boolean only, as envspec's strict bool ("yes", 1: the file is invalid)
                default=data.get("default") is True,
                tags=tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
                matrix=source.path.stem if cell else None,
                factors=tuple(cell.values.items()) if cell else (),
            )
        )
    return found
