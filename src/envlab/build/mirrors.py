"""Locked files through a mirror: with ``ENVLAB_INDEX_<NAME>`` set, every file of a locked layer
of that index comes from the mirror, or the layer is not installed.

A lock records each file's declared URL, which for PyPI lives on another host than the index
(files.pythonhosted.org), so substituting the index URL is not enough. Each locked file is found
on the mirror's project page by file name and its URL rewritten in a copy of the lock that names
no other host (the locked sha256 stays, and uv checks it); a file the mirror lacks is left out,
and a package left with no file refuses the layer. Which file of each package was installed,
and from where, is read back afterwards for the result.
"""

from __future__ import annotations

import json
import posixpath
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from packaging.markers import InvalidMarker, Marker
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from envlab.errors import IndexUnavailable, Unavailable
from envlab.results.schema import FileSource
from envlab.spec.indexes import Index, IndexFile, project_files

Fetch = Callable[[Index, str], list[IndexFile]]
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
# How many missing packages a refusal names before "and N more".
_NAMED = 8


@dataclass(frozen=True)
class Candidate:
    """A file the (possibly rewritten) lock lets uv install for one package."""

    name: str
    version: str | None
    filename: str
    url: str
    sha256: str | None
    mirror: bool


def filename_of(url: str) -> str:
    return urllib.parse.unquote(posixpath.basename(urllib.parse.urlsplit(url).path))


def route(
    lock: Path,
    index: Index,
    copy: Path,
    *,
    marker_env: Mapping[str, str] | None = None,
    fetch: Fetch | None = None,
) -> list[Candidate]:
    """Write the lock to install into ``copy`` and return the files it allows.

    Without a mirror the copy is the lock itself. With one, every file URL points at the mirror;
    raises :class:`Unavailable` naming the mirror and the packages it lacks (nothing fetched).
    ``marker_env`` overrides marker variables for the target interpreter (its Python version).
    """
    data = tomllib.loads(lock.read_text(encoding="utf-8"))
    if not index.mirrored:
        copy.write_text(lock.read_text(encoding="utf-8"), encoding="utf-8")
        return [c for pkg in data.get("packages", []) for c in _declared(pkg)]
    pages = Pages(index, fetch)
    kept, missing, candidates = [], [], []
    for pkg in data.get("packages", []):
        routed = _route_package(pkg, pages)
        if routed is None:
            if _applies(pkg.get("marker"), marker_env):
                missing.append(f"{pkg['name']} {pkg.get('version', '')}".strip())
            continue  # not installed on this interpreter: nothing to fetch
        kept.append(routed)
        candidates += _declared(routed, mirror=True)
    if missing:
        named = ", ".join(missing[:_NAMED]) + (
            f" and {len(missing) - _NAMED} more" if len(missing) > _NAMED else ""
        )
        raise Unavailable(
            f"index {index.name!r}: the mirror {index.url} ({index.env_var}) does not serve the "
            f"locked files of {len(missing)} package(s): {named}; nothing was fetched from "
            f"{index.declared_url} or any other host: mirror those files there"
        )
    copy.write_text(dumps({**data, "packages": kept}), encoding="utf-8")
    return candidates


class Pages:
    """Project pages of the mirror, fetched once per package."""

    def __init__(self, index: Index, fetch: Fetch | None = None) -> None:
        self.index = index
        self.fetch = fetch or (lambda i, name: project_files(i, name))
        self.cache: dict[str, dict[str, IndexFile]] = {}

    def files(self, name: str) -> dict[str, IndexFile]:
        key = canonicalize_name(name)
        if key not in self.cache:
            try:
                found = self.fetch(self.index, key)
            except IndexUnavailable as exc:
                if "HTTP 404" not in exc.detail:
                    raise  # the mirror is down or no index: the layer is unavailable as a whole
                found = []
            self.cache[key] = {f.filename: f for f in found}
        return self.cache[key]

    def locate(self, name: str, url: str) -> str | None:
        """The mirror's URL of the locked file at ``url`` (None: the mirror lacks it)."""
        found = self.files(name).get(filename_of(url))
        return found.url if found else None


def _route_package(pkg: dict[str, Any], pages: Pages) -> dict[str, Any] | None:
    """The package entry with every file the mirror serves pointed there (None: it serves none)."""
    served = pages.files(pkg["name"])
    out = {k: v for k, v in pkg.items() if k not in ("wheels", "sdist")}
    wheels = [w for w in (_on_mirror(w, served) for w in pkg.get("wheels", [])) if w]
    if wheels:
        out["wheels"] = wheels
    if "sdist" in pkg and (sdist := _on_mirror(pkg["sdist"], served)):
        out["sdist"] = sdist
    return out if wheels or "sdist" in out else None


def _on_mirror(entry: dict[str, Any], served: dict[str, IndexFile]) -> dict[str, Any] | None:
    """The locked file entry pointed at the mirror's file of the same name, if it has one.

    The locked hash stays in the entry: uv checks it on download, so a mirror serving another
    file under that name fails the install as a hash mismatch (tampering is never installed).
    """
    found = served.get(filename_of(entry.get("url", "")))
    return None if found is None else {**entry, "url": found.url}


def _applies(marker: str | None, env: Mapping[str, str] | None) -> bool:
    """Whether a package with ``marker`` is installed for the target (unknown: assume so)."""
    if not marker:
        return True
    try:
        return Marker(marker).evaluate(dict(env or {}))
    except (InvalidMarker, ValueError, KeyError):
        return True


def _declared(pkg: dict[str, Any], mirror: bool = False) -> list[Candidate]:
    entries = [*pkg.get("wheels", []), *([pkg["sdist"]] if "sdist" in pkg else [])]
    return [
        Candidate(
            canonicalize_name(pkg["name"]),
            str(pkg["version"]) if "version" in pkg else None,
            filename_of(e.get("url", "")),
            e.get("url", ""),
            (e.get("hashes") or {}).get("sha256"),
            mirror,
        )
        for e in entries
        if e.get("url")
    ]


# --------------------------------------------------------------------------- what was installed


def installed_tags(env_dir: Path) -> dict[str, set[str]]:
    """{canonical name: wheel tags} of every distribution installed in the env (its WHEEL file)."""
    found: dict[str, set[str]] = {}
    for pattern in ("lib/python*/site-packages/*.dist-info", "Lib/site-packages/*.dist-info"):
        for info in env_dir.glob(pattern):
            name = canonicalize_name(info.name.split("-")[0])
            try:
                text = (info / "WHEEL").read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            found[name] = {ln.split(":", 1)[1].strip() for ln in text.splitlines() if ":" in ln}
    return found


def installed_sources(
    candidates: list[Candidate], installed: Mapping[str, str], tags: Mapping[str, set[str]]
) -> list[FileSource]:
    """One record per installed locked package: the file of the lock it was installed from."""
    by_name: dict[str, list[Candidate]] = {}
    for c in candidates:
        by_name.setdefault(c.name, []).append(c)
    out = []
    for name, files in sorted(by_name.items()):
        if name not in installed:
            continue
        chosen = _chosen(files, tags.get(name, set()))
        out.append(
            FileSource(
                name=name,
                version=installed[name],
                url=chosen.url,
                sha256=chosen.sha256,
                mirror=chosen.mirror,
            )
        )
    return out


def _chosen(files: list[Candidate], tags: set[str]) -> Candidate:
    """The wheel whose tags the installed WHEEL file carries; else the sdist (built here)."""
    if len(files) == 1:
        return files[0]
    for c in files:
        if c.filename.endswith(".whl"):
            try:
                wheel_tags = {str(t) for t in parse_wheel_filename(c.filename)[3]}
            except InvalidWheelFilename:
                continue
            if wheel_tags & tags:
                return c
    return next((c for c in files if not c.filename.endswith(".whl")), files[0])


# --------------------------------------------------------------------------- writing the copy


def dumps(data: Mapping[str, Any]) -> str:
    """TOML for a pylock document: top-level values, then its arrays of tables (``[[packages]]``),
    every value inline."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in data.items() if not _is_tables(v)]
    for key, value in data.items():
        if _is_tables(value):
            for table in value:
                lines += ["", f"[[{_key(key)}]]"]
                lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML: {value!r}")
