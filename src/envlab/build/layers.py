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
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from envlab.build import conda, interpreters, rattler_engine
from envlab.build.uv import UNSET_FOR_UV, Uv
from envlab.errors import (
    BuildFailed,
    CommandError,
    IndexUnavailable,
    Unavailable,
    UnsupportedPlatform,
)
from envlab.fsutil import atomic_write_json, stable_hash
from envlab.log import log
from envlab.outcome import LayerStatus, Outcome
from envlab.proc import Completed, run
from envlab.results.schema import BuildRecord, Command, LayerRecord
from envlab.spec import indexes, platforms
from envlab.spec.envspec import EnvSpec, Matrix

BUILD_FORMAT = 1  # bump when the layout of a built env changes
MARKER = "envlab-build.json"
FACTS = "envlab-facts.json"
# Packages of the torch layer that are tied to the torch build and must not move in later layers.
_DIST_INFO = re.compile(r"site-packages/([^/]+)-([^-/]+)\.(?:dist|egg)-info(?:/|$)")
_BUILD_COUPLED = re.compile(r"^(torch|torchvision|torchaudio|triton|pytorch-triton.*|nvidia-.*)$")


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
                layer.index.url if layer.index else None,
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
    if conda_base is None:
        interpreter = interpreter or interpreters.find(spec.python, uv)
    idx = matrix.indexes
    locks = locks or {}
    layers = [
        LayerPlan(
            "torch",
            list(spec.torch.packages),
            idx[spec.torch.index_for(platform)],
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
    mirrors = [i for i in idx.values() if i.mirrored]
    return BuildPlan(spec, platform, interpreter, layers, envs_dir / spec.name, mirrors, conda_base)


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
            log(f"{p.spec.name}: checking index {index.name!r} ({index.url}) serves {package!r}")
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
    for stale in parent.glob(f".{p.spec.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
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
        # only the stack is held to the torch layer; the nightly layer replaces it on purpose
        pins = constraints if layer.name == "stack" else None
        failure = _install_layer(layer, lr, python, pins, partial, p.mirrors, uv)
        lr.duration_s = round(time.monotonic() - t0, 2)
        if failure is not None:
            outcome, reason = failure
            log(f"{p.spec.name}: {outcome}: {reason}")
            return BuildResult(outcome, record, reason=reason)
        after = uv.installed(python)
        changed = {n: v for n, v in after.items() if before.get(n) != v}
        layer_packages[layer.name] = changed
        log(
            f"{p.spec.name}: layer {layer.name}: {len(changed)} package(s) installed or changed "
            f"in {lr.duration_s:.1f}s"
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
    mirrors: list[indexes.Index],
    uv: Uv,
) -> tuple[Outcome, str] | None:
    """Run the layer's uv command(s), recorded in ``lr``; (outcome, reason) if one failed."""
    assert layer.index is not None
    t0 = time.monotonic()
    try:
        if layer.lock is not None:
            done = uv.install_locked(python, layer.lock, work, mirrors, layer.reinstall)
        else:
            done = uv.install(
                python,
                layer.requirements,
                index_url=layer.index.url,
                prerelease=layer.pre,
                reinstall=layer.reinstall,
                constraints=constraints,
                editables=layer.editables,
            )
    except CommandError as exc:
        duration = round(time.monotonic() - t0, 2)
        lr.commands.append(Command(argv=exc.argv, returncode=exc.returncode, duration_s=duration))
        outcome, reason = uv.explain_failure(layer.name, layer.index, exc.output)
        lr.outcome, lr.message = LayerStatus.for_outcome(outcome), reason
        return outcome, reason
    lr.commands.append(_command(done))
    if layer.lock is not None and layer.editables:
        # locks pin the editables' dependencies; the local projects themselves go on top as-is
        try:
            done = uv.install(python, editables=layer.editables, no_deps=True, stream=False)
        except CommandError as exc:
            lr.outcome = LayerStatus.FAILED
            lr.message = f"{layer.name} layer: editable install failed: {exc}"
            return Outcome.BUILD_FAILED, lr.message
        lr.commands.append(_command(done))
    return None


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


def save_facts(env_dir: Path, facts: dict) -> None:
    atomic_write_json(env_dir / FACTS, {"fingerprint": site_fingerprint(env_dir), "facts": facts})


def cached_facts(env_dir: Path) -> dict | None:
    """Probe facts saved after the last verification, if nothing was installed since."""
    try:
        saved = json.loads((env_dir / FACTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if saved.get("fingerprint") != site_fingerprint(env_dir):
        return None
    return saved.get("facts")
