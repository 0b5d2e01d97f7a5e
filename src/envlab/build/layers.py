"""Layered env builds with uv: base venv -> torch layer -> stack layer -> [nightly reinstall].

Rules enforced here:
- the torch layer comes from the env's torch index only (``--index-url``, never an extra index);
- the stack is resolved with the installed torch layer pinned as constraints, so a stack package
  that needs another torch is a resolution error naming that package, not a silent swap;
- a nightly env ends with a forced reinstall of the torch family from the nightly index;
- an unreachable index or a missing wheel is an ``unavailable`` outcome, never a substitution.

An env is built in a partial directory and renamed into place only when every layer succeeded,
so an interrupted build is never reused. An env whose build key (spec, requirements, index URLs,
interpreter, lock) is unchanged is reused. Every uv command goes through ``build.uv.Uv``.

One process at a time builds or uses an env (:func:`hold`, a file lock beside it). A partial
directory is named after the process building it: it is never removed while that process lives,
and removed by the next build of any env once it has died (killed mid-build).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from envlab.build import conda, interpreters, mirrors, progress, rattler_engine
from envlab.build.uv import UNSET_FOR_UV, Uv
from envlab.errors import (
    BuildFailed,
    Busy,
    CommandError,
    IndexUnavailable,
    NotPublished,
    Unavailable,
    UnsupportedPlatform,
)
from envlab.fsutil import LockHeld, atomic_write_json, exclusive, stable_hash
from envlab.log import detail, log
from envlab.outcome import LayerStatus, Outcome
from envlab.proc import Completed, alive, run
from envlab.results.schema import BuildRecord, Command, FileSource, LayerRecord
from envlab.spec import indexes, platforms
from envlab.spec.envspec import EnvSpec, Matrix

BUILD_FORMAT = 1  # bump when the layout of a built env changes
MARKER = "envlab-build.json"
FACTS = "envlab-facts.json"
# Packages of the torch layer that are tied to the torch build and must not move in later layers.
_DIST_INFO = re.compile(r"site-packages/([^/]+)-([^-/]+)\.(?:dist|egg)-info(?:/|$)")
_BUILD_COUPLED = re.compile(r"^(torch|torchvision|torchaudio|triton|pytorch-triton.*|nvidia-.*)$")
# What a build leaves beside the envs while it runs: .<env>.partial-<pid>, .<env>.old-<pid>
_IN_FLIGHT = re.compile(r"^\.(?P<env>[a-z][a-z0-9-]*)\.(?:partial|old)-(?P<pid>\d+)$")


# NVML's Python bindings match the nvidia-* pattern but are a stack package, built against nothing.
_NOT_BUILD_COUPLED = frozenset({"nvidia-ml-py"})


def build_coupled(name: str) -> bool:
    """Whether distribution ``name`` (canonical) is built against torch and moves with it."""
    return name not in _NOT_BUILD_COUPLED and bool(_BUILD_COUPLED.match(name))


@dataclass(frozen=True)
class LayerPlan:
    name: str
    requirements: list[str]
    index: indexes.Index | None
    pre: bool = False
    reinstall: tuple[str, ...] = ()
    lock: Path | None = None  # install exactly this pylock.toml instead of resolving
    editables: tuple[Path, ...] = ()  # local projects installed editable in this layer


@dataclass(frozen=True)
class CondaBase:
    """A conda base layer: the env's environment.yml, locked in conda-lock's format."""

    environment: Path
    lockfile: Path
    engine: conda.Engine = conda.Engine.RATTLER


@dataclass(frozen=True)
class BuildPlan:
    spec: EnvSpec
    platform: str
    interpreter: interpreters.Interpreter | None  # None for a conda base (conda provides Python)
    layers: list[LayerPlan]
    env_dir: Path
    mirrors: list[indexes.Index] = field(default_factory=list)
    conda: CondaBase | None = None

    @cached_property
    def key(self) -> str:
        """Hash of every input of the build, lock contents included (read once per plan)."""
        layers = [
            (
                layer.name,
                layer.requirements,
                _source_key(layer.index),
                layer.pre,
                layer.lock.read_text(encoding="utf-8") if layer.lock else None,
            )
            for layer in self.layers
        ]
        base: object = None
        if self.conda:
            lockfile = self.conda.lockfile
            base = lockfile.read_text(encoding="utf-8") if lockfile.exists() else None
        elif self.interpreter:
            base = (str(self.interpreter.path), self.interpreter.version)
        return stable_hash(BUILD_FORMAT, self.spec.spec_hash, self.platform, base, layers)

    def indexes(self) -> list[tuple[indexes.Index, str]]:
        """(index, a package it must serve) for every index the build uses."""
        seen: dict[str, tuple[indexes.Index, str]] = {}
        for layer in self.layers:
            if layer.index and layer.index.name not in seen and layer.requirements:
                seen[layer.index.name] = (layer.index, Requirement(layer.requirements[0]).name)
        return list(seen.values())


@dataclass
class BuildResult:
    outcome: Outcome
    record: BuildRecord
    reason: str | None = None
    python: Path | None = None
    layer_packages: dict[str, dict[str, str]] = field(default_factory=dict)


def env_python(env_dir: Path) -> Path:
    if sys.platform != "win32":
        return env_dir / "bin/python"
    # a conda prefix keeps python.exe at its root on Windows; a venv keeps it in Scripts/
    return env_dir / ("python.exe" if (env_dir / "conda-meta").is_dir() else "Scripts/python.exe")


def check_platform(spec: EnvSpec, platform: str) -> None:
    if platform in spec.unsupported:
        raise UnsupportedPlatform(
            f"{spec.name} is unsupported on {platform}: {spec.unsupported[platform]}"
        )
    if platform not in spec.platforms:
        raise UnsupportedPlatform(
            f"{spec.name} does not declare platform {platform} "
            f"(declares {', '.join(spec.platforms)})"
        )


def _source_key(index: indexes.Index | None) -> object:
    """What identifies a layer's source in the build key: its URL; for a local wheelhouse also
    its files, since a rebuilt custom torch often keeps its version (and file name)."""
    if index is None or not index.find_links or "://" in index.url:
        return index.url if index else None
    folder = Path(index.url)
    files = sorted(folder.iterdir()) if folder.is_dir() else []
    return [index.url, [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]]


def check_published(spec: EnvSpec) -> None:
    """A matrix cell whose build the published-releases tables rule out is unavailable as it
    is: nothing is built (or resolved) to find out."""
    if spec.cell is not None and spec.cell.no_such_build:
        raise NotPublished(f"no such build: {spec.cell.no_such_build}")


def plan(
    matrix: Matrix,
    spec: EnvSpec,
    envs_dir: Path,
    platform: str | None = None,
    interpreter: interpreters.Interpreter | None = None,
    locks: dict[str, Path] | None = None,
    conda_base: CondaBase | None = None,
    uv: Uv | None = None,
) -> BuildPlan:
    """The layers of ``spec`` on ``platform`` (default: this machine's), from ``locks`` if given.

    ``uv`` is asked for interpreters it knows of when none is given (default: the real uv).
    """
    platform = platform or platforms.current()
    check_platform(spec, platform)
    check_published(spec)
    if conda_base is None:
        interpreter = interpreter or interpreters.find(spec.python, uv)
    idx = matrix.indexes
    locks = locks or {}
    layers = [
        LayerPlan(
            "torch",
            list(spec.torch.packages),
            matrix.torch_index(spec, platform),
            spec.torch.pre,
            lock=locks.get("torch"),
        ),
        LayerPlan(
            "stack",
            matrix.stack_for(spec),
            idx[spec.stack.index],
            lock=locks.get("stack"),
            editables=tuple(matrix.editables(spec)),
        ),
    ]
    if spec.nightly:
        names = tuple(Requirement(r).name for r in spec.nightly.packages)
        layers.append(
            LayerPlan(
                "nightly",
                list(spec.nightly.packages),
                idx[spec.nightly.index],
                True,
                names,
                lock=locks.get("nightly"),
            )
        )
    mirrored = [i for i in idx.values() if i.mirrored]
    return BuildPlan(
        spec, platform, interpreter, layers, envs_dir / spec.name, mirrored, conda_base
    )


# --------------------------------------------------------------------------- one at a time


def lock_path(envs_dir: Path, name: str) -> Path:
    return envs_dir / f".{name}.lock"


@contextmanager
def hold(envs_dir: Path, name: str, *, wait: bool = True) -> Iterator[None]:
    """Build or use env ``name`` alone: another envlab doing so makes this wait (or, without
    ``wait``, raise :class:`Busy`) until it is done."""

    def waiting(holder: str) -> None:
        log(f"{name}: waiting for {holder}, which is building or testing this env")

    try:
        with exclusive(lock_path(envs_dir, name), wait=wait, on_wait=waiting):
            yield
    except LockHeld as exc:
        raise Busy(
            f"{name}: {exc.holder} is building or testing this env; not waiting (--no-wait): "
            "run again when it is done"
        ) from None


def reap_orphans(envs_dir: Path, holding: str | None = None) -> list[Path]:
    """Remove the partial (and half-swapped old) env directories of processes that died.

    A directory whose process is alive is never touched, nor one of an env whose lock another
    process holds (its builder may live in another PID namespace); ``holding`` is the env whose
    lock the caller holds. Returns what was removed.
    """
    removed = []
    for path in sorted(envs_dir.glob(".*-*")) if envs_dir.is_dir() else []:
        match = _IN_FLIGHT.match(path.name)
        if not match or alive(int(match["pid"])) or not path.is_dir():
            continue
        if match["env"] == holding:
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                with exclusive(lock_path(envs_dir, match["env"]), wait=False):
                    shutil.rmtree(path, ignore_errors=True)
            except LockHeld:
                continue
        removed.append(path)
        log(f"removed {path.name}: left by a build whose process (pid {match['pid']}) died")
    return removed


# --------------------------------------------------------------------------- reuse


def read_marker(env_dir: Path) -> dict | None:
    try:
        return json.loads((env_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def site_fingerprint(env_dir: Path) -> str:
    """Hash of the installed dist-info names (changes when anything is (re)installed)."""
    names = sorted(p.name for p in env_dir.glob("lib/python*/site-packages/*.dist-info"))
    names += sorted(p.name for p in env_dir.glob("Lib/site-packages/*.dist-info"))
    return stable_hash(names)


def reusable(p: BuildPlan) -> BuildResult | None:
    """The env of ``p`` as it is, if it was completely built from the same inputs."""
    marker = read_marker(p.env_dir)
    if not marker or marker.get("key") != p.key or not env_python(p.env_dir).exists():
        return None
    record = BuildRecord.model_validate(marker["record"]).model_copy(update={"reused": True})
    return BuildResult(
        Outcome.BUILT,
        record,
        python=env_python(p.env_dir),
        layer_packages=marker.get("layer_packages", {}),
    )


# --------------------------------------------------------------------------- building


def _constraints(packages: dict[str, str]) -> str:
    return "".join(f"{n}=={v}\n" for n, v in sorted(packages.items()) if _BUILD_COUPLED.match(n))


def _conda_pins_file(p: BuildPlan, env_dir: Path) -> Path | None:
    """The conda base's Python packages as a constraints file in ``env_dir`` (None: no base)."""
    if p.conda is None:
        return None
    path = env_dir / "envlab-conda-constraints.txt"
    path.write_text(_conda_constraints(p), encoding="utf-8")
    return path


def _conda_constraints(p: BuildPlan) -> str:
    """The conda base's Python packages, pinned: a resolved stack keeps, never replaces them."""
    if p.conda is None:
        return ""
    pins = conda.python_pins(p.conda.lockfile, p.platform)
    return "".join(f"{n}=={v}\n" for n, v in sorted(pins.items()))


def _command(done: Completed) -> Command:
    return Command(argv=done.argv, returncode=done.returncode, duration_s=round(done.duration_s, 2))


def build(
    p: BuildPlan,
    *,
    force: bool = False,
    probe_indexes: bool = True,
    on_layer: Callable[[str], None] | None = None,
    uv: Uv | None = None,
) -> BuildResult:
    """Build (or reuse) the env of ``p``; an env-level failure is returned as its outcome.

    ``uv`` runs every uv command (default: the real uv through :func:`envlab.proc.run`).
    """
    reap_orphans(p.env_dir.parent, holding=p.spec.name)
    if not force:
        reused = reusable(p)
        if reused is not None:
            log(f"{p.spec.name}: reusing {p.env_dir} (inputs unchanged, key {p.key})")
            return reused
    locks = [str(layer.lock) for layer in p.layers if layer.lock]
    locks += [str(p.conda.lockfile)] if p.conda else []
    interpreter = (
        f"{p.interpreter.path} ({p.interpreter.version})" if p.interpreter else "conda base"
    )
    record = BuildRecord(
        env_dir=str(p.env_dir),
        build_key=p.key,
        interpreter=interpreter,
        lock=", ".join(locks) or None,
    )
    if probe_indexes:
        for index, package in p.indexes():
            detail(f"{p.spec.name}: checking index {index.name!r} ({index.url}) serves {package!r}")
            try:
                indexes.probe(index, package)
            except IndexUnavailable as exc:
                log(f"{p.spec.name}: unavailable: {exc}")
                return BuildResult(Outcome.UNAVAILABLE, record, reason=str(exc))
    return _build_aside(p, record, on_layer, uv or Uv())


def _build_aside(
    p: BuildPlan, record: BuildRecord, on_layer: Callable[[str], None] | None, uv: Uv
) -> BuildResult:
    """Build every layer in a partial directory; put it in place (with its marker) when complete."""
    started = time.monotonic()
    parent = p.env_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    # A conda prefix embeds its path, so it is built in place (the marker, written last, says it is
    # complete); a uv venv is relocatable and is built aside, then renamed into place.
    target = p.env_dir if p.conda else parent / f".{p.spec.name}.partial-{os.getpid()}"
    if p.conda:
        shutil.rmtree(target, ignore_errors=True)
    complete = False
    try:
        result = _build_layers(p, target, record, on_layer, uv)
        if result.outcome is not Outcome.BUILT:
            return result
        record.duration_s = round(time.monotonic() - started, 2)
        atomic_write_json(
            target / MARKER,
            {
                "key": p.key,
                "record": record.model_dump(mode="json"),
                "layer_packages": result.layer_packages,
                "fingerprint": site_fingerprint(target),
            },
        )
        if not p.conda:
            _swap_into_place(target, p.env_dir)
        complete = True
        result.python = env_python(p.env_dir)
        return result
    finally:
        if not complete:
            shutil.rmtree(target, ignore_errors=True)


def _build_layers(
    p: BuildPlan,
    partial: Path,
    record: BuildRecord,
    on_layer: Callable[[str], None] | None,
    uv: Uv,
) -> BuildResult:
    failed = _base_layer(p, partial, record, uv)
    if failed is not None:
        return failed
    python = env_python(partial)
    # a conda base brings Python packages of its own: they are no layer's changes
    before: dict[str, str] = uv.installed(python) if p.conda else {}
    layer_packages: dict[str, dict[str, str]] = {}
    # a conda base's Python packages hold every pip layer (torchvision needs numpy, say)
    held = _conda_pins_file(p, partial)
    constraints: Path | None = None
    for layer in p.layers:
        if on_layer:
            on_layer(layer.name)
        assert layer.index is not None
        lr = LayerRecord(
            name=layer.name,
            index=layer.index.name,
            index_url=layer.index.url,
            requirements=list(layer.requirements),
        )
        record.layers.append(lr)
        if not layer.requirements:
            lr.outcome = LayerStatus.SKIPPED
            continue
        t0 = time.monotonic()
        source = (
            f"lock {layer.lock.name}" if layer.lock else f"{len(layer.requirements)} requirement(s)"
        )
        log(
            f"{p.spec.name}: layer {layer.name}: {source} "
            f"from index {layer.index.name!r} ({layer.index.url})"
            + (" [forced reinstall, --pre]" if layer.reinstall else "")
        )
        # only the stack is held to the torch layer (and the conda base, in its constraints); the
        # nightly layer replaces the torch layer on purpose
        pins = constraints if layer.name == "stack" else held
        failure, candidates = _install_layer(layer, lr, python, pins, partial, uv, _marker_env(p))
        lr.duration_s = round(time.monotonic() - t0, 2)
        if failure is not None:
            outcome, reason = failure
            log(f"{p.spec.name}: {outcome}: {reason}")
            return BuildResult(outcome, record, reason=reason)
        after = uv.installed(python)
        changed = {n: v for n, v in after.items() if before.get(n) != v}
        layer_packages[layer.name] = changed
        lr.files = _file_sources(layer, candidates, after, changed, partial)
        log(
            f"{p.spec.name}: layer {layer.name}: {len(changed)} package(s) installed or changed "
            f"in {lr.duration_s:.1f}s"
            + (f", every file from the mirror {layer.index.url}" if layer.index.mirrored else "")
        )
        if layer.name == "torch":
            constraints = partial / "envlab-torch-constraints.txt"
            text = _constraints(after) + _conda_constraints(p)
            constraints.write_text(text, encoding="utf-8")
        before = after
    return BuildResult(Outcome.BUILT, record, layer_packages=layer_packages)


def _install_layer(
    layer: LayerPlan,
    lr: LayerRecord,
    python: Path,
    constraints: Path | None,
    work: Path,
    uv: Uv,
    marker_env: dict[str, str] | None = None,
) -> tuple[tuple[Outcome, str] | None, list[mirrors.Candidate]]:
    """Run the layer's uv command(s), recorded in ``lr``: ((outcome, reason) if one failed, the
    locked files it allowed). A mirrored index's locked files come from the mirror only."""
    assert layer.index is not None
    t0 = time.monotonic()
    candidates: list[mirrors.Candidate] = []
    downloads = progress.Downloads(f"{layer.name} layer", log)
    try:
        with progress.Ticker(downloads.tick):
            if layer.lock is not None:
                copy = work / layer.lock.name
                candidates = mirrors.route(layer.lock, layer.index, copy, marker_env=marker_env)
                done = uv.install_locked(python, copy, layer.reinstall, on_line=downloads.on_line)
            else:
                done = uv.install(
                    python,
                    layer.requirements,
                    index_url=None if layer.index.find_links else layer.index.url,
                    find_links=layer.index.url if layer.index.find_links else None,
                    prerelease=layer.pre,
                    reinstall=layer.reinstall,
                    constraints=constraints,
                    editables=layer.editables,
                    on_line=downloads.on_line,
                )
    except Unavailable as exc:  # the mirror is down, or lacks locked files: nothing fetched
        lr.outcome, lr.message = LayerStatus.UNAVAILABLE, f"{layer.name} layer: {exc}"
        return (Outcome.UNAVAILABLE, lr.message), candidates
    except CommandError as exc:
        duration = round(time.monotonic() - t0, 2)
        lr.commands.append(Command(argv=exc.argv, returncode=exc.returncode, duration_s=duration))
        outcome, reason = uv.explain_failure(layer.name, layer.index, exc.output)
        lr.outcome, lr.message = LayerStatus.for_outcome(outcome), reason
        return (outcome, reason), candidates
    lr.commands.append(_command(done))
    if layer.lock is not None and layer.editables:
        # locks pin the editables' dependencies; the local projects themselves go on top as-is
        try:
            done = uv.install(python, editables=layer.editables, no_deps=True, stream=False)
        except CommandError as exc:
            lr.outcome = LayerStatus.FAILED
            lr.message = f"{layer.name} layer: editable install failed: {exc}"
            return (Outcome.BUILD_FAILED, lr.message), candidates
        lr.commands.append(_command(done))
    return None, candidates


def _marker_env(p: BuildPlan) -> dict[str, str] | None:
    """Marker variables of the env's interpreter (a conda base's: unknown until it exists)."""
    if p.interpreter is None:
        return None
    version = p.interpreter.version
    return {"python_full_version": version, "python_version": ".".join(version.split(".")[:2])}


def _file_sources(
    layer: LayerPlan,
    candidates: list[mirrors.Candidate],
    installed: dict[str, str],
    changed: dict[str, str],
    env_dir: Path,
) -> list[FileSource]:
    """Where each file the layer installed came from: the locked file's URL (after any mirror),
    or, for a resolved layer, the project page of the index it was resolved from."""
    if layer.lock is not None:
        return mirrors.installed_sources(candidates, installed, mirrors.installed_tags(env_dir))
    assert layer.index is not None
    mirrored = layer.index.mirrored
    return [
        FileSource(name=name, version=v, url=f"{layer.index.url}/{name}/", mirror=mirrored)
        for name, v in sorted(changed.items())
    ]


def _base_layer(p: BuildPlan, target: Path, record: BuildRecord, uv: Uv) -> BuildResult | None:
    """Create the base (a uv venv, or a conda prefix from its lockfile); the result if it failed."""
    t0 = time.monotonic()
    try:
        base, create = _base_command(p, target, uv)
    except Unavailable as exc:
        return BuildResult(Outcome.UNAVAILABLE, record, reason=f"base layer: {exc}")
    record.layers.append(base)
    try:
        done = create()
    except (CommandError, BuildFailed, Unavailable) as exc:
        outcome = exc.outcome or Outcome.BUILD_FAILED
        base.outcome, base.message = LayerStatus.for_outcome(outcome), str(exc)
        return BuildResult(outcome, record, reason=f"base layer: {exc}")
    base.commands.append(_command(done))
    base.duration_s = round(time.monotonic() - t0, 2)
    return None


def _base_command(
    p: BuildPlan, target: Path, uv: Uv
) -> tuple[LayerRecord, Callable[[], Completed]]:
    """The base layer's record and the command creating it."""
    if p.conda and p.conda.engine is conda.Engine.RATTLER:
        lockfile, platform = p.conda.lockfile, p.platform
        log(f"{p.spec.name}: layer base: conda prefix from {lockfile.name} with py-rattler")
        base = LayerRecord(name="base", index="conda", requirements=[f"conda-lock {lockfile}"])
        return base, lambda: rattler_engine.install(lockfile, target, platform)
    if p.conda:
        exe = conda.find_executable()
        lockfile = p.conda.lockfile
        log(f"{p.spec.name}: layer base: conda prefix from {lockfile.name} with {exe.name}")
        argv = conda.install_argv(exe, lockfile, target)
        base = LayerRecord(name="base", index="conda", requirements=[f"conda-lock {lockfile}"])
        # not uv, but the caller's index settings and active env must not reach it either
        return base, lambda: run(argv, unset=UNSET_FOR_UV, stream=True)
    interpreter = p.interpreter
    assert interpreter is not None
    log(
        f"{p.spec.name}: layer base: uv venv with Python {interpreter.version} ({interpreter.path})"
    )
    base = LayerRecord(name="base", requirements=[f"python=={interpreter.version}"])
    return base, lambda: uv.venv(target, interpreter.path)


def _swap_into_place(partial: Path, final: Path) -> None:
    """Replace ``final`` by ``partial``, removing the old env only once the new one is complete."""
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    if final.exists():
        final.rename(old)
    partial.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def conda_distributions(env_dir: Path) -> dict[str, str]:
    """Python distributions the conda base installed ({canonical name: version}), read from the
    files its conda-meta records list (conda names are not PyPI's: python-tzdata is tzdata)."""
    found: dict[str, str] = {}
    for record in sorted((env_dir / "conda-meta").glob("*.json")):
        try:
            files = json.loads(record.read_text(encoding="utf-8")).get("files", [])
        except (OSError, ValueError):
            continue
        for path in files:
            match = _DIST_INFO.search(path)
            if match:
                found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def save_facts(env_dir: Path, facts: dict, probe: str = "") -> None:
    """Save probe ``facts`` with what they depend on: the installed set, the ``probe`` version."""
    saved = {"fingerprint": site_fingerprint(env_dir), "probe": probe, "facts": facts}
    atomic_write_json(env_dir / FACTS, saved)


def cached_facts(env_dir: Path, probe: str | None = None) -> dict | None:
    """Probe facts saved after the last verification, if nothing was installed since (and, given
    ``probe``, gathered by that version of the probe: a newer probe reads more)."""
    try:
        saved = json.loads((env_dir / FACTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if saved.get("fingerprint") != site_fingerprint(env_dir):
        return None
    if probe is not None and saved.get("probe") != probe:
        return None
    return saved.get("facts")
