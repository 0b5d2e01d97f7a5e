"""Find a Python interpreter of a requested minor version: PATH, pyenv, then uv's own."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from envlab.build.uv import Uv
from envlab.errors import CommandError, InterpreterNotFound
from envlab.proc import run


@dataclass(frozen=True)
class Interpreter:
    path: Path
    version: str  # full X.Y.Z

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


def _quiet(argv: list[str]) -> str | None:
    """stdout of a probe command, or None if it failed (a missing interpreter is no error here)."""
    try:
        done = run(argv, check=False, quiet=True, timeout=30)
    except CommandError:
        return None
    return done.output.strip() if done.returncode == 0 else None


def _identify(path: Path) -> tuple[str, Path] | None:
    """(X.Y.Z, the base interpreter behind ``path``: behind a pyenv shim or a venv) or None.

    Builds must not depend on whichever venv happens to be first on PATH (e.g. a nox session's).
    """
    code = (
        "import os, sys; print('%d.%d.%d' % sys.version_info[:3], "
        "os.path.realpath(getattr(sys, '_base_executable', sys.executable)))"
    )
    text = _quiet([str(path), "-c", code]) or ""
    version, _, exe = text.partition(" ")
    return (version, Path(exe)) if re.fullmatch(r"\d+\.\d+\.\d+", version) and exe else None


def _pyenv_roots() -> list[Path]:
    roots = []
    if os.environ.get("PYENV_ROOT"):
        roots.append(Path(os.environ["PYENV_ROOT"]))
    roots.append(Path.home() / ".pyenv")
    return [r / "versions" for r in roots if (r / "versions").is_dir()]


def candidates(minor: str, uv: Uv | None = None) -> list[Path]:
    """Places a ``minor`` interpreter may be, most preferred first (not yet verified)."""
    found: list[Path] = []
    for name in (f"python{minor}",):
        exe = shutil.which(name)
        if exe:
            found.append(Path(exe))
    for versions in _pyenv_roots():
        for entry in sorted(versions.glob(f"{minor}.*"), reverse=True):
            if re.fullmatch(rf"{re.escape(minor)}\.\d+", entry.name):
                found.append(entry / "bin" / f"python{minor}")
    known = (uv or Uv()).python_find(minor)
    if known:
        found.append(known)
    for exe_name in ("python3", "python"):
        exe = shutil.which(exe_name)
        if exe:
            found.append(Path(exe))
    return found


def find(minor: str, uv: Uv | None = None) -> Interpreter:
    """The first working interpreter of version ``minor``; else an error listing what was found.

    ``uv`` is asked for the interpreters it knows of (default: the real uv).
    """
    seen: dict[str, str] = {}
    for path in candidates(minor, uv):
        if not path.exists():
            continue
        found = _identify(path)
        if found is None:
            continue
        version, real = found
        if version.startswith(minor + "."):
            return Interpreter(real, version)
        seen.setdefault(version, str(path))
    for versions in _pyenv_roots():
        for entry in versions.iterdir():
            if re.fullmatch(r"\d+\.\d+\.\d+", entry.name):
                seen.setdefault(entry.name, str(entry))
    listing = ", ".join(sorted(seen, key=lambda v: tuple(map(int, v.split("."))))) or "none"
    raise InterpreterNotFound(
        f"Python {minor} not found (looked on PATH, in pyenv versions and uv's interpreters); "
        f"found: {listing}. Install it, e.g. `pyenv install {minor}` or `uv python install {minor}`"
    )
