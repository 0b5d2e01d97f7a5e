"""Layered env builds with uv: base venv -> torch layer -> stack layer -> [nightly forced reinstall].

Rules enforced here (design rules 1, 2, 3, 5):
- the torch layer comes from the env's torch index only (``--index-url``, never an extra index);
- the stack is resolved with the installed torch layer pinned as constraints, so a stack package
  that needs another torch is a resolution error naming that package, not a silent swap;
- a nightly env ends with a forced reinstall of the torch family from the nightly index;
- an unreachable index or a missing wheel is an ``unavailable`` outcome, never a substitution.

An env is built in a partial directory and renamed into place only when every layer succeeded,
so an interrupted build is never reused. An env whose build key (spec, requirements, index URLs,
interpreter, lock) is unchanged is reused.
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
from pathlib import Path

from packaging.requirements import Requirement

from envlab.build import conda, interpreters
from envlab.errors import (
    CommandError,
    CondaUnavailable,
    IndexUnavailable,
    UnsupportedPlatform,
    UserError,
)
from envlab.fsutil import atomic_write_json, stable_hash
from envlab.log import log
from envlab.outcome import LayerStatus, Outcome
from envlab.proc import run
from envlab.results.schema import BuildRecord, Command, LayerRecord
from envlab.spec import indexes, platforms
from envlab.spec.envspec import EnvSpec, Matrix

BUILD_FORMAT = 1  # bump when the layout of a built env changes
MARKER = "envlab-build.json"
FACTS = "envlab-facts.json"
# uv/pip settings from the caller's environment must not add or replace indexes behind our back.
UNSET_FOR_UV = (
    "UV_INDEX",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_FIND_LINKS",
    "UV_INDEX_STRATEGY",
    "UV_PRERELEASE",
    "UV_CONSTRAINT",
    "UV_OVERRIDE",
    "UV_TORCH_BACKEND",
    "UV_NO_INDEX",
    "UV_PYTHON",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
)
# Packages of the torch layer that are tied to the torch build and must not move in later layers.
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
    """A conda base layer: the env's environment.yml, locked by conda-lock."""

    environment: Path
    lockfile: Path


@dataclass(frozen=True)
class BuildPlan:
    spec: EnvSpec
    platform: str
    interpreter: interpreters.Interpreter | None  # None for a conda base (conda provides Python)
    layers: list[LayerPlan]
    env_dir: Path
    mirrors: list[indexes.Index] = field(default_factory=list)
    conda: CondaBase | None = None

    @property
    def key(self) -> str:
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
        base = (
            (
                self.conda.lockfile.read_text(encoding="utf-8")
                if self.conda.lockfile.exists()
                else None
            )
            if self.conda
            else (str(self.interpreter.path), self.interpreter.version)
            if self.interpreter
            else None
        )
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
    return env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def check_platform(spec: EnvSpec, platform: str) -> None:
    if platform in spec.unsupported:
        raise UnsupportedPlatform(
            f"{spec.name} is unsupported on {platform}: {spec.unsupported[platform]}"
        )
    if platform not in spec.platforms:
        raise UnsupportedPlatform(
            f"{spec.name} does not declare platform {platform} (declares {', '.join(spec.platforms)})"
        )


def plan(
    matrix: Matrix,
    spec: EnvSpec,
    envs_dir: Path,
    platform: str | None = None,
    interpreter: interpreters.Interpreter | None = None,
    locks: dict[str, Path] | None = None,
    conda_base: CondaBase | None = None,
) -> BuildPlan:
    """The layers of ``spec`` on ``platform`` (default: this machine's), from ``locks`` where given."""
    platform = platform or platforms.current()
    check_platform(spec, platform)
    if conda_base is None:
        interpreter = interpreter or interpreters.find(spec.python)
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
    """Hash of the installed distributions' dist-info names (changes when anything is (re)installed)."""
    names = sorted(p.name for p in env_dir.glob("lib/python*/site-packages/*.dist-info"))
    names += sorted(p.name for p in env_dir.glob("Lib/site-packages/*.dist-info"))
    return stable_hash(names)


def reusable(p: BuildPlan) -> BuildRecord | None:
    marker = read_marker(p.env_dir)
    if not marker or marker.get("key") != p.key or not env_python(p.env_dir).exists():
        return None
    record = BuildRecord.model_validate(marker["record"])
    return record.model_copy(update={"reused": True})


# --------------------------------------------------------------------------- building


def _uv() -> str:
    exe = shutil.which("uv")
    if exe:
        return exe
    try:
        from uv import find_uv_bin  # the PyPI 'uv' package ships the binary

        return find_uv_bin()
    except Exception:  # noqa: BLE001 - any failure means "not installed"
        raise UserError(
            "uv not found: expected the 'uv' executable on PATH (pip install uv)"
        ) from None


def installed(python: Path) -> dict[str, str]:
    out = run(
        [_uv(), "pip", "list", "--no-config", "--python", python, "--format", "json"],
        quiet=True,
        unset=UNSET_FOR_UV,
    )
    return {_norm(d["name"]): d["version"] for d in json.loads(out.output.strip().splitlines()[-1])}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _layer_argv(
    layer: LayerPlan,
    python: Path,
    constraints: Path | None,
    work: Path,
    mirrors: list[indexes.Index],
) -> list[str]:
    assert layer.index is not None
    if layer.lock is not None:
        return _locked_argv(layer, python, work, mirrors)
    argv = [
        _uv(),
        "pip",
        "install",
        "--no-config",
        "--python",
        str(python),
        "--index-url",
        layer.index.url,
    ]
    if layer.pre:
        argv.append("--prerelease=allow")
    for name in layer.reinstall:
        argv += ["--reinstall-package", name]
    if constraints:
        argv += ["--constraint", str(constraints)]
    for path in layer.editables:
        argv += ["--editable", str(path)]
    return argv + list(layer.requirements)


_MISSING = re.compile(
    r"(?:no version of|not found in the package registry|no versions? of) ([A-Za-z0-9_.\-]+(?:[=<>!~]=?[^\s,]+)?)"
)
_CONFLICT = re.compile(
    r"(?:all versions of|[Bb]ecause) ([A-Za-z0-9_.\-]+)(?:[=<>!~]=?[^\s]+)? depends? on (torch[^\s,]*)"
)
_HASH = re.compile(
    r"hash mismatch|Hash mismatch|doesn't match the hash|hashes? (?:do|does) not match",
    re.IGNORECASE,
)
_NETWORK = re.compile(
    r"(Failed to fetch|error sending request|Connection refused|dns error|timed out|Could not connect)",
    re.IGNORECASE,
)


def explain_failure(layer: LayerPlan, output: str) -> tuple[Outcome, str]:
    """(outcome, one-line reason) for a failed layer command."""
    index = layer.index
    where = f"index {index.name!r} ({index.url})" if index else "no index"
    if _HASH.search(output):
        line = next((ln.strip() for ln in output.splitlines() if _HASH.search(ln)), "hash mismatch")
        return (
            Outcome.BUILD_FAILED,
            f"{layer.name} layer: a downloaded file does not match its locked hash, install refused ({line})",
        )
    if _NETWORK.search(output):
        hint = index.hint() if index else ""
        return Outcome.UNAVAILABLE, f"{layer.name} layer: {where} unreachable; {hint}"
    conflict = _CONFLICT.search(output)
    if conflict and layer.name != "torch":
        return Outcome.BUILD_FAILED, (
            f"{layer.name} layer: {conflict.group(1)} requires {conflict.group(2)}, "
            "which conflicts with the installed torch layer (torch is a layer, never a transitive dependency)"
        )
    missing = _MISSING.search(output)
    if missing:
        outcome = (
            Outcome.UNAVAILABLE if layer.name in ("torch", "nightly") else Outcome.BUILD_FAILED
        )
        return (
            outcome,
            f"{layer.name} layer: wheel missing: {missing.group(1)} is not served by {where}",
        )
    last = next((ln.strip() for ln in reversed(output.splitlines()) if ln.strip()), "no output")
    return Outcome.BUILD_FAILED, f"{layer.name} layer failed: {last}"


def _locked_argv(
    layer: LayerPlan, python: Path, work: Path, mirrors: list[indexes.Index]
) -> list[str]:
    """Install exactly the locked files (hashes checked by uv); mirror URLs substituted where set."""
    assert layer.lock is not None and layer.index is not None
    text = layer.lock.read_text(encoding="utf-8")
    for index in mirrors:
        text = text.replace(index.declared_url + "/", index.url + "/")
    copy = work / layer.lock.name
    copy.write_text(text, encoding="utf-8")
    argv = [
        _uv(),
        "pip",
        "install",
        "--no-config",
        "--preview-features",
        "pylock",
        "--python",
        str(python),
    ]
    for name in layer.reinstall:
        argv += ["--reinstall-package", name]
    return argv + ["-r", str(copy)]


def _constraints(packages: dict[str, str]) -> str:
    return "".join(f"{n}=={v}\n" for n, v in sorted(packages.items()) if _BUILD_COUPLED.match(n))


def build(
    p: BuildPlan,
    *,
    force: bool = False,
    probe_indexes: bool = True,
    on_layer: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build (or reuse) the env of ``p``. Never raises for an env-level failure: returns its outcome."""
    spec = p.spec
    if not force:
        record = reusable(p)
        if record is not None:
            log(f"{spec.name}: reusing {p.env_dir} (inputs unchanged, key {p.key})")
            return BuildResult(
                Outcome.BUILT,
                record,
                python=env_python(p.env_dir),
                layer_packages=read_marker(p.env_dir).get("layer_packages", {}),
            )  # type: ignore[union-attr]
    locks = [str(layer.lock) for layer in p.layers if layer.lock] + (
        [str(p.conda.lockfile)] if p.conda else []
    )
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
            log(f"{spec.name}: checking index {index.name!r} ({index.url}) serves {package!r}")
            try:
                indexes.probe(index, package)
            except IndexUnavailable as exc:
                log(f"{spec.name}: unavailable: {exc}")
                return BuildResult(Outcome.UNAVAILABLE, record, reason=str(exc))
    started = time.monotonic()
    parent = p.env_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".{spec.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    # A conda prefix embeds its path, so it is built in place (the marker, written last, says it is
    # complete); a uv venv is relocatable and is built aside, then renamed into place.
    target = p.env_dir if p.conda else parent / f".{spec.name}.partial-{os.getpid()}"
    if p.conda:
        shutil.rmtree(target, ignore_errors=True)
    complete = False
    try:
        result = _build_layers(p, target, record, on_layer)
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
    p: BuildPlan, partial: Path, record: BuildRecord, on_layer: Callable[[str], None] | None
) -> BuildResult:
    spec = p.spec
    # base
    t0 = time.monotonic()
    try:
        argv, base = _base_layer(p, partial)
    except CondaUnavailable as exc:
        return BuildResult(Outcome.UNAVAILABLE, record, reason=f"base layer: {exc}")
    record.layers.append(base)
    try:
        done = run(argv, unset=UNSET_FOR_UV, stream=p.conda is not None)
        base.commands.append(
            Command(argv=done.argv, returncode=0, duration_s=round(done.duration_s, 2))
        )
    except CommandError as exc:
        base.outcome, base.message = LayerStatus.FAILED, str(exc)
        return BuildResult(Outcome.BUILD_FAILED, record, reason=f"base layer: {exc}")
    base.duration_s = round(time.monotonic() - t0, 2)
    python = env_python(partial)
    before: dict[str, str] = {}
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
            f"{spec.name}: layer {layer.name}: {source} from index {layer.index.name!r} ({layer.index.url})"
            + (" [forced reinstall, --pre]" if layer.reinstall else "")
        )
        argv = _layer_argv(
            layer, python, constraints if layer.name == "stack" else None, partial, p.mirrors
        )
        try:
            done = run(argv, stream=True, unset=UNSET_FOR_UV)
            lr.commands.append(
                Command(argv=done.argv, returncode=0, duration_s=round(done.duration_s, 2))
            )
        except CommandError as exc:
            lr.commands.append(
                Command(
                    argv=exc.argv,
                    returncode=exc.returncode,
                    duration_s=round(time.monotonic() - t0, 2),
                )
            )
            outcome, reason = explain_failure(layer, exc.output)
            lr.outcome = LayerStatus.for_outcome(outcome)
            lr.message = reason
            lr.duration_s = round(time.monotonic() - t0, 2)
            log(f"{spec.name}: {outcome}: {reason}")
            return BuildResult(outcome, record, reason=reason)
        if layer.lock is not None and layer.editables:
            # locks pin the editables' dependencies; the local projects themselves go on top as-is
            argv = [_uv(), "pip", "install", "--no-config", "--python", str(python), "--no-deps"]
            for path in layer.editables:
                argv += ["--editable", str(path)]
            try:
                done = run(argv, unset=UNSET_FOR_UV)
                lr.commands.append(
                    Command(argv=done.argv, returncode=0, duration_s=round(done.duration_s, 2))
                )
            except CommandError as exc:
                lr.outcome, lr.message = (
                    LayerStatus.FAILED,
                    f"{layer.name} layer: editable install failed: {exc}",
                )
                return BuildResult(Outcome.BUILD_FAILED, record, reason=lr.message)
        after = installed(python)
        changed = {n: v for n, v in after.items() if before.get(n) != v}
        layer_packages[layer.name] = changed
        lr.duration_s = round(time.monotonic() - t0, 2)
        log(
            f"{spec.name}: layer {layer.name}: {len(changed)} package(s) installed or changed in {lr.duration_s:.1f}s"
        )
        if layer.name == "torch":
            constraints = partial / "envlab-torch-constraints.txt"
            constraints.write_text(_constraints(after), encoding="utf-8")
        before = after
    return BuildResult(Outcome.BUILT, record, layer_packages=layer_packages)


def _base_layer(p: BuildPlan, target: Path) -> tuple[list[str], LayerRecord]:
    """The command creating the base (a uv venv, or a conda prefix from its lockfile)."""
    if p.conda:
        exe = conda.find_executable()
        log(f"{p.spec.name}: layer base: conda prefix from {p.conda.lockfile.name} with {exe.name}")
        return conda.install_argv(exe, p.conda.lockfile, target), LayerRecord(
            name="base", index="conda", requirements=[f"conda-lock {p.conda.lockfile}"]
        )
    assert p.interpreter is not None
    log(
        f"{p.spec.name}: layer base: uv venv with Python {p.interpreter.version} ({p.interpreter.path})"
    )
    argv = [
        _uv(),
        "venv",
        "--no-config",
        "--relocatable",
        "--python",
        str(p.interpreter.path),
        str(target),
    ]
    return argv, LayerRecord(name="base", requirements=[f"python=={p.interpreter.version}"])


def _swap_into_place(partial: Path, final: Path) -> None:
    """Replace ``final`` by ``partial`` (the old env is removed only once the new one is complete)."""
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    if final.exists():
        final.rename(old)
    partial.rename(final)
    shutil.rmtree(old, ignore_errors=True)


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
