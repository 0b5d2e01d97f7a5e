"""Freshness before reuse: has the index moved since an env's build-time layers were resolved?

A locked layer installs exactly its lock, so reusing it is safe until the lock changes. A layer
resolved at build time (an unlocked env such as ``latest``, a nightly layer) holds whatever the
index served that day: reused as it is, ``latest`` would never move again and a nightly env would
keep yesterday's build while its index serves today's. So before reusing such an env, envlab asks
each of those layers' indexes, with one request per package (mirrors included: the index's
effective URL), for the newest version it serves for this env's platform and Python, and rebuilds
when that moved since the build. What the indexes served is kept beside the env
(``envlab-index.json``), so a package the resolver holds back for a good reason (a constraint)
does not trigger a rebuild on every run.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import Tag
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from envlab.build import layers
from envlab.errors import IndexUnavailable
from envlab.fsutil import atomic_write_json
from envlab.log import log
from envlab.spec import indexes

SNAPSHOT = "envlab-index.json"
# Wheel platform tags per envlab platform: (prefixes, architectures); "any" fits everywhere.
_PLATFORM_TAGS = {
    "linux-64": (("manylinux", "musllinux", "linux"), ("x86_64",)),
    "linux-aarch64": (("manylinux", "musllinux", "linux"), ("aarch64",)),
    "win-64": (("win",), ("amd64",)),
    "osx-arm64": (("macosx",), ("arm64", "universal2")),
    "osx-64": (("macosx",), ("x86_64", "universal2", "intel")),
}
_WORKERS = 8


@dataclass(frozen=True)
class Moved:
    """A package whose newest version on its index changed since the env was built."""

    package: str
    index: str
    before: str
    now: str

    def __str__(self) -> str:
        return f"{self.package} {self.before} -> {self.now} (index {self.index!r})"


@dataclass
class Freshness:
    """What the indexes of the build-time layers serve now, and what moved since the build."""

    newest: dict[str, str] = field(default_factory=dict)  # package -> newest version now
    moved: list[Moved] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # why a package could not be asked
    rebuild: bool = False


def build_time_layers(p: layers.BuildPlan) -> list[layers.LayerPlan]:
    """The layers of ``p`` resolved when the env is built (no lock to install exactly)."""
    return [lay for lay in p.layers if lay.lock is None and lay.requirements and lay.index]


def _fits(tag: Tag, python: str, platform: str) -> bool:
    """Whether a wheel tag installs on ``platform`` with CPython ``python`` ("3.11")."""
    major, minor = python.split(".")[:2]
    if tag.interpreter.startswith("cp"):
        version = tag.interpreter[2:]
        fits_python = version == f"{major}{minor}" or (
            tag.abi == "abi3" and version[:1] == major and int(version[1:] or 0) <= int(minor)
        )
    else:
        fits_python = tag.interpreter in (f"py{major}", f"py{major}{minor}")
    if not fits_python:
        return False
    if tag.platform == "any":
        return True
    prefixes, arches = _PLATFORM_TAGS.get(platform, ((), ()))
    return tag.platform.startswith(prefixes) and tag.platform.endswith(arches)


def _version_of(filename: str, python: str, platform: str) -> Version | None:
    """The version a file offers this env (None: a wheel for another platform or Python)."""
    try:
        if filename.endswith(".whl"):
            _, version, _, tags = parse_wheel_filename(filename)
            return version if any(_fits(t, python, platform) for t in tags) else None
        return parse_sdist_filename(filename)[1]
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


def _offered(filenames: list[str], python: str, platform: str) -> set[Version]:
    """The versions this env can install: a wheel of it fits, or it publishes no wheel at all.

    A release with wheels, none for this Python or platform, is not offered by its sdist: such a
    release has dropped this Python (av 19 ships wheels for 3.12+ and an sdist that requires it).
    """
    fitting: set[Version] = set()
    wheeled: set[Version] = set()
    sdists: set[Version] = set()
    for name in filenames:
        version = _version_of(name, python, platform)
        try:
            if name.endswith(".whl"):
                wheeled.add(parse_wheel_filename(name)[1])
                if version is not None:
                    fitting.add(version)
            elif version is not None:
                sdists.add(version)
        except InvalidWheelFilename:
            continue
    return fitting | (sdists - wheeled)


def newest(
    index: indexes.Index, requirement: str, *, python: str, platform: str, pre: bool
) -> str | None:
    """The newest version of ``requirement`` that ``index`` serves for this env (one request)."""
    req = Requirement(requirement)
    files = indexes.project_files(index, req.name)
    versions = _offered([f.filename for f in files], python, platform)
    allowed = [
        v
        for v in versions
        if req.specifier.contains(v, prereleases=pre or None) or not req.specifier
    ]
    if not pre:
        allowed = [v for v in allowed if not v.is_prerelease] or allowed
    return str(max(allowed)) if allowed else None


def survey(p: layers.BuildPlan) -> Freshness:
    """The newest version of every requirement of ``p``'s build-time layers, asked concurrently."""
    found = Freshness()
    asks = [
        (layer, requirement)
        for layer in build_time_layers(p)
        for requirement in layer.requirements
        if "/" not in requirement  # a path or URL requirement has no index to ask
    ]

    def ask(item: tuple[layers.LayerPlan, str]) -> tuple[str, str | None, str | None]:
        layer, requirement = item
        assert layer.index is not None
        name = canonicalize_name(Requirement(requirement).name)
        try:
            version = newest(
                layer.index, requirement, python=p.spec.python, platform=p.platform, pre=layer.pre
            )
        except IndexUnavailable as exc:
            return name, None, str(exc)
        return name, version, None if version else f"{name}: no file for this env on the index"

    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        for name, version, problem in pool.map(ask, asks):
            if version:
                found.newest[name] = version
            if problem:
                found.unknown.append(problem)
    return found


def load_snapshot(env_dir: Path) -> dict[str, str] | None:
    """What the indexes served when the env was built (None: not recorded)."""
    try:
        data = json.loads((env_dir / SNAPSHOT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    newest = data.get("newest") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in newest.items()} if isinstance(newest, dict) else None


def save_snapshot(env_dir: Path, fresh: Freshness) -> None:
    """Record what the indexes served for this build (only a complete survey is a baseline)."""
    if fresh.newest and not fresh.unknown:
        atomic_write_json(env_dir / SNAPSHOT, {"newest": fresh.newest})


def _moved(p: layers.BuildPlan, fresh: Freshness, before: dict[str, str]) -> list[Moved]:
    index_of = {
        canonicalize_name(Requirement(r).name): layer.index.name
        for layer in build_time_layers(p)
        if layer.index
        for r in layer.requirements
        if "/" not in r
    }
    moved = []
    for name, now in sorted(fresh.newest.items()):
        then = before.get(name)
        if then is not None and Version(now) > Version(then):
            moved.append(Moved(name, index_of.get(name, "?"), then, now))
    return moved


def before_reuse(p: layers.BuildPlan, *, refresh: bool = True) -> Freshness:
    """Ask the indexes of ``p``'s build-time layers what they serve now; ``rebuild`` is set when a
    reusable env was resolved from older versions (and ``refresh`` allows rebuilding)."""
    if not build_time_layers(p):
        return Freshness()
    fresh = survey(p)
    name = p.spec.name
    for problem in fresh.unknown:
        log(f"{name}: freshness: could not ask the index ({problem})")
    reused = layers.reusable(p)
    if reused is None:
        return fresh  # built now anyway: the build resolves today's versions
    before = load_snapshot(p.env_dir)
    if before is None:
        log(f"{name}: no record of what the index served at build time: comparing with the env")
        before = {n: v for pkgs in reused.layer_packages.values() for n, v in pkgs.items()}
    fresh.moved = _moved(p, fresh, before)
    if not fresh.moved:
        if not fresh.unknown:
            log(f"{name}: the index serves nothing newer than this env was built from")
        return fresh
    moved = "; ".join(str(m) for m in fresh.moved)
    if refresh:
        log(f"{name}: the index moved since the build: {moved}: rebuilding")
        fresh.rebuild = True
    else:
        log(f"{name}: --no-refresh: reusing the env although the index moved since: {moved}")
    return fresh
