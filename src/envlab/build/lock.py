"""Per-platform lockfiles for the pip layers (PEP 751 ``pylock.toml``, written by uv).

``locks/<env>/pylock.<platform>-<layer>.toml`` pins every file of a layer with its URL and hash.
Layers are locked as they are built: the torch layer from the env's torch index only; the stack
with every torch-layer package pinned and sourced from the torch index (explicit), everything
else from the stack index; the nightly layer from the nightly index with pre-releases.

Each lockfile carries ``[tool.envlab]`` with the hash of its inputs (spec, shared stack, index
URLs, Python, platform), so a stale lock is detected (``--check``); ``--diff`` shows what a relock
would change; ``--verify`` checks every locked file is still downloadable from its index.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from envlab.build import channels, conda, mirrors, rattler_engine
from envlab.build.conda import Engine
from envlab.build.layers import check_platform, check_published
from envlab.build.uv import Uv
from envlab.errors import BuildFailed, CommandError, LockError, Unavailable, stopped
from envlab.fsutil import atomic_write_text, read_toml, stable_hash
from envlab.log import log
from envlab.outcome import Outcome
from envlab.proc import run
from envlab.project import Project
from envlab.spec import platforms as platform_names
from envlab.spec.envspec import EnvSpec, Matrix
from envlab.spec.indexes import Index

LOCK_FORMAT = 1


@dataclass(frozen=True)
class LockedFile:
    name: str
    version: str
    url: str
    sha256: str | None


@dataclass
class LayerLock:
    """One parsed ``pylock.<platform>-<layer>.toml``."""

    path: Path
    env: str
    platform: str
    layer: str
    input_hash: str
    index: str
    packages: dict[str, str] = field(default_factory=dict)
    files: list[LockedFile] = field(default_factory=list)


def lock_path(project: Project, env: str, platform: str, layer: str) -> Path:
    return project.locks / env / f"pylock.{platform}-{layer}.toml"


def conda_lock_path(project: Project, env: str) -> Path:
    return project.locks / env / "conda-lock.yml"


def input_hash(matrix: Matrix, spec: EnvSpec, platform: str) -> str:
    """Hash of everything that decides a lock's content (a conda base's environment.yml too)."""
    used = sorted(
        {spec.torch.index_for(platform), spec.stack.index}
        | ({spec.nightly.index} if spec.nightly else set())
    )
    environment = conda.environment_file(matrix.dir, spec)
    return stable_hash(
        LOCK_FORMAT,
        # a cell's factor values show in its fields already; how envlab labels a cell is no input
        spec.dump(exclude={"description", "version_notes", "tags", "default", "cell"}),
        matrix.stack_for(spec),
        # a wheelhouse is the spec's own field (a path from the project root), already hashed
        {name: matrix.indexes[name].declared_url for name in used if name in matrix.indexes},
        platform,
        environment.read_text(encoding="utf-8") if environment else None,
    )


def lock_conda_base(
    project: Project, spec: EnvSpec, environment: Path, engine: Engine = Engine.RATTLER
) -> Path:
    """Lock the env's conda base (all its platforms) into locks/<env>/conda-lock.yml.

    Either engine's result is checked against the lab's rules before anything is written.
    """
    target = conda_lock_path(project, spec.name)
    if engine is Engine.RATTLER:
        content = rattler_engine.lock(spec, environment, target)
        _check_conda_rules(spec, conda.packages_of(content))
        rattler_engine.write(content, target)
    else:
        _conda_lock_cli(spec, environment, target)
    log(f"{spec.name}: conda base locked in {target.relative_to(project.root)} ({engine})")
    return target


def _check_conda_rules(spec: EnvSpec, packages: list[conda.LockedPackage]) -> None:
    problems = [
        p
        for platform in conda.conda_platforms(spec)
        for p in conda.rule_violations(packages, platform)
    ]
    if problems:
        raise LockError(f"{spec.name}'s conda base breaks the lab's rules: {'; '.join(problems)}")


def _conda_lock_cli(spec: EnvSpec, environment: Path, target: Path) -> None:
    """`conda-lock lock` with a conda executable, into a staged copy written when it passes."""
    exe = conda.find_executable()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="envlab-conda-lock-") as tmp:
        vpkg = Path(tmp) / "virtual-packages.yml"
        vpkg.write_text(conda.virtual_packages(spec, conda.conda_platforms(spec)), encoding="utf-8")
        staged = Path(tmp) / "conda-lock.yml"
        if target.exists():
            # conda-lock updates an existing lockfile in place
            staged.write_bytes(target.read_bytes())
        try:
            run(conda.lock_argv(spec, environment, staged, exe, vpkg), stream=True)
        except CommandError as exc:
            raise LockError(f"conda-lock failed for {spec.name} (exit {exc.returncode})") from None
        _check_conda_rules(spec, conda.read_lockfile(staged))
        atomic_write_text(target, staged.read_text(encoding="utf-8"))


def read(path: Path) -> LayerLock:
    """Parse a lockfile written by :func:`lock_env`; raises LockError naming the file."""
    data = read_toml(path, LockError, "a pylock.toml lockfile written by `nox -s lock`")
    meta = (data.get("tool") or {}).get("envlab")
    if not isinstance(meta, dict) or "input-hash" not in meta:
        raise LockError(
            f"{path}: expected a [tool.envlab] table with input-hash, found none "
            "(not written by envlab lock)"
        )
    lock = LayerLock(
        path,
        meta["env"],
        meta["platform"],
        meta["layer"],
        meta["input-hash"],
        meta.get("index", ""),
    )
    for pkg in data.get("packages", []):
        name, version = canonicalize_name(pkg["name"]), str(pkg.get("version", ""))
        lock.packages[name] = version
        for wheel in pkg.get("wheels", []) + ([pkg["sdist"]] if "sdist" in pkg else []):
            lock.files.append(
                LockedFile(
                    name, version, wheel.get("url", ""), (wheel.get("hashes") or {}).get("sha256")
                )
            )
    return lock


def env_locks(project: Project, spec: EnvSpec, platform: str) -> dict[str, LayerLock] | None:
    """The env's layer locks for ``platform``, or None if it has none."""
    layers = ["torch", "stack"] + (["nightly"] if spec.nightly else [])
    paths = {layer: lock_path(project, spec.name, platform, layer) for layer in layers}
    if not any(p.exists() for p in paths.values()):
        return None
    missing = [layer for layer, p in paths.items() if not p.exists()]
    if missing:
        raise LockError(
            f"locks/{spec.name}: the {', '.join(missing)} layer lock(s) for {platform} are "
            "missing; run `nox -s lock`"
        )
    return {layer: read(p) for layer, p in paths.items()}


def staleness(
    matrix: Matrix, spec: EnvSpec, locks: dict[str, LayerLock], platform: str
) -> str | None:
    """Why the locks are stale, or None when they match the current inputs."""
    want = input_hash(matrix, spec, platform)
    stale = [layer for layer, lock in locks.items() if lock.input_hash != want]
    if stale:
        return (
            f"locks/{spec.name} ({platform}) is stale: its inputs changed since it was locked "
            f"(envspec, shared stack, index URLs or Python); run `nox -s lock -- {spec.name}`"
        )
    return None


# --------------------------------------------------------------------------- resolving


def _layer_files(work: Path, layer: str) -> Path:
    return work / f"pylock.{layer}.toml"


def _strip_header_and_tag(text: str, meta: dict[str, str], rewrite: dict[str, str]) -> str:
    """Drop uv's header (it names temporary paths), rewrite mirror URLs, append [tool.envlab]."""
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    body = "\n".join(lines).strip() + "\n"
    for effective, declared in rewrite.items():
        body = body.replace(effective + "/", declared + "/")
    tool = "\n[tool.envlab]\n" + "".join(f'{k} = "{v}"\n' for k, v in meta.items())
    return body + tool


def _keep_packages(text: str, drop: set[str]) -> str:
    """Remove ``[[packages]]`` entries whose name is in ``drop`` from a pylock text."""
    head, *entries = re.split(r"(?m)^\[\[packages\]\]\n", text)
    kept = []
    for entry in entries:
        match = re.search(r'(?m)^name = "([^"]+)"', entry)
        if match and canonicalize_name(match.group(1)) in drop:
            continue
        kept.append(entry)
    return head + "".join("[[packages]]\n" + e for e in kept)


def conda_constraints(lockfile: Path | None, platform: str) -> dict[str, str]:
    """Versions the conda base provides on ``platform``: the pip layers keep, never replace them."""
    return conda.python_pins(lockfile, platform)


def _project_name(path: Path) -> str:
    return canonicalize_name(
        tomllib.loads((path / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"]
    )


def resolve(
    matrix: Matrix,
    spec: EnvSpec,
    platform: str,
    conda_lockfile: Path | None = None,
    uv: Uv | None = None,
) -> dict[str, str]:
    """Lock texts per layer for ``platform`` (nothing written). Raises on resolution failure.

    With a conda base, the versions its lockfile provides constrain the stack and are left out of
    it. ``uv`` resolves (default: the real uv).
    """
    check_platform(spec, platform)
    check_published(spec)
    uv = uv or Uv()
    with tempfile.TemporaryDirectory(prefix="envlab-lock-") as tmp:
        texts = _resolve_layers(matrix, spec, platform, conda_lockfile, Path(tmp), uv)
    indexes_by_layer = {
        "torch": matrix.torch_index(spec, platform).name,
        "stack": matrix.indexes[spec.stack.index].name,
        "nightly": spec.nightly.index if spec.nightly else "",
    }
    digest = input_hash(matrix, spec, platform)
    rewrite = {i.url: i.declared_url for i in matrix.indexes.values() if i.mirrored}
    return {
        layer: _strip_header_and_tag(
            text,
            {
                "env": spec.name,
                "platform": platform,
                "layer": layer,
                "index": indexes_by_layer[layer],
                "input-hash": digest,
                "format": str(LOCK_FORMAT),
            },
            rewrite,
        )
        for layer, text in texts.items()
    }


def _resolve_layers(
    matrix: Matrix,
    spec: EnvSpec,
    platform: str,
    conda_lockfile: Path | None,
    work: Path,
    uv: Uv,
) -> dict[str, str]:
    """uv's pylock text per layer, each layer resolved as it is built (in ``work``)."""
    conda_pins = conda_constraints(conda_lockfile, platform)
    editables = {_project_name(p): p for p in matrix.editables(spec)}
    torch_index = matrix.torch_index(spec, platform)
    stack_index = matrix.indexes[spec.stack.index]
    (work / "conda-constraints.txt").write_text(
        "".join(f"{n}=={v}\n" for n, v in sorted(conda_pins.items())), encoding="utf-8"
    )
    # torch layer: the torch index only (or the wheelhouse only); a conda base's Python packages
    # hold it too (torchvision needs numpy: pip's newest must not replace conda's)
    (work / "torch.in").write_text("\n".join(spec.torch.packages) + "\n", encoding="utf-8")
    with _layer("torch", torch_index):
        uv.compile(
            work / "torch.in",
            _layer_files(work, "torch"),
            index_url=None if torch_index.find_links else torch_index.url,
            find_links=torch_index.url if torch_index.find_links else None,
            prerelease=spec.torch.pre,
            platform=platform,
            python_version=spec.python,
            constraints=work / "conda-constraints.txt" if conda_pins else None,
        )
    torch_text = _layer_files(work, "torch").read_text(encoding="utf-8")
    torch_pins = _pins(torch_text)
    # stack layer: the torch layer pinned and sourced from the torch index (explicit), or from
    # the very files the torch layer locked when it comes from a wheelhouse
    (work / "stack").mkdir()
    (work / "stack" / "pyproject.toml").write_text(
        _stack_project(
            spec,
            torch_pins,
            matrix.stack_for(spec),
            torch_index,
            stack_index,
            editables,
            _files(torch_text) if torch_index.find_links else None,
        ),
        encoding="utf-8",
    )
    with _layer("stack", stack_index):
        uv.compile(
            work / "stack" / "pyproject.toml",
            _layer_files(work, "stack"),
            default_index=stack_index.url,
            constraints=work / "conda-constraints.txt",
            platform=platform,
            python_version=spec.python,
        )
    texts = {
        # what conda provides is left to conda in every pip layer's lock
        "torch": _keep_packages(torch_text, set(conda_pins)),
        "stack": _keep_packages(
            _layer_files(work, "stack").read_text(encoding="utf-8"),
            set(torch_pins) | set(conda_pins) | set(editables),
        ),
    }
    if spec.nightly:
        nightly_index = matrix.indexes[spec.nightly.index]
        (work / "nightly.in").write_text("\n".join(spec.nightly.packages) + "\n", encoding="utf-8")
        with _layer("nightly", nightly_index):
            uv.compile(
                work / "nightly.in",
                _layer_files(work, "nightly"),
                index_url=nightly_index.url,
                prerelease=True,
                platform=platform,
                python_version=spec.python,
            )
        nightly_text = _layer_files(work, "nightly").read_text(encoding="utf-8")
        names = {canonicalize_name(Requirement(r).name) for r in spec.nightly.packages}
        texts["nightly"] = _keep_packages(nightly_text, set(_pins(nightly_text)) - names)
    return texts


@contextmanager
def _layer(layer: str, index: Index) -> Iterator[None]:
    """Turn a failed uv command of ``layer`` into the error that stops the env with its outcome."""
    try:
        yield
    except CommandError as exc:
        outcome, reason = Uv.explain_failure(layer, index, exc.output)
        raise stopped(outcome, reason) from None


def _pins(pylock_text: str) -> dict[str, str]:
    data = tomllib.loads(pylock_text)
    return {canonicalize_name(p["name"]): str(p["version"]) for p in data.get("packages", [])}


def _files(pylock_text: str) -> dict[str, str]:
    """{package: the URL of its (first) file} of a pylock text."""
    found = {}
    for p in tomllib.loads(pylock_text).get("packages", []):
        files = p.get("wheels") or [p.get("archive") or p.get("sdist") or {}]
        url = files[0].get("url") or files[0].get("path")
        if url:
            found[canonicalize_name(p["name"])] = str(url)
    return found


def _file_source(url: str) -> str:
    """A uv source for one wheel file: a local path, or a URL."""
    if url.startswith("file://"):
        url = urllib.request.url2pathname(url.removeprefix("file://"))
    return f"{{ url = {json.dumps(url)} }}" if "://" in url else f"{{ path = {json.dumps(url)} }}"


def _stack_project(
    spec: EnvSpec,
    torch_pins: dict[str, str],
    stack: list[str],
    torch_index: Index,
    stack_index: Index,
    editables: dict[str, Path],
    torch_files: dict[str, str] | None = None,
) -> str:
    """A throwaway pyproject whose sources pin the torch layer to the torch index (explicit),
    or to its own files (``torch_files``: a wheelhouse is no index uv could be pointed at)."""
    deps = [f"{n}=={v}" for n, v in sorted(torch_pins.items())] + stack + sorted(editables)
    body = (
        '[project]\nname = "envlab-stack-lock"\nversion = "0"\n'
        f'requires-python = ">={spec.python}"\ndependencies = {json.dumps(deps)}\n'
    )
    sources = [
        f'"{n}" = {{ path = {json.dumps(str(p))}, editable = true }}\n'
        for n, p in sorted(editables.items())
    ]
    if torch_files is not None:
        sources += [f'"{n}" = {_file_source(u)}\n' for n, u in sorted(torch_files.items())]
    elif torch_index.url != stack_index.url:
        sources += [f'"{n}" = {{ index = "envlab-torch" }}\n' for n in sorted(torch_pins)]
    if sources:
        body += "\n[tool.uv.sources]\n" + "".join(sources)
    if torch_index.url != stack_index.url and torch_files is None:
        body += (
            f'\n[[tool.uv.index]]\nname = "envlab-torch"\nurl = "{torch_index.url}"\n'
            "explicit = true\n"
        )
    return body


# --------------------------------------------------------------------------- drift


def _head(url: str, timeout: float) -> int:
    """HTTP status of ``url`` (HEAD, falling back to a 1-byte ranged GET)."""
    for method, headers in (("HEAD", {}), ("GET", {"Range": "bytes=0-0"})):
        request = urllib.request.Request(url, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            if exc.code == 405 and method == "HEAD":
                continue
            return exc.code
    return 405


def check_file(
    url: str, *, attempts: int = 3, timeout: float = 15.0, backoff: float = 0.5
) -> tuple[str, str]:
    """("ok" | "gone" | "network", detail). 404/410 is gone; network errors are retried first."""
    if url.startswith("file://"):
        return (
            ("ok", "") if Path(url.removeprefix("file://")).exists() else ("gone", "file missing")
        )
    detail = ""
    for attempt in range(attempts):
        try:
            status = _head(url, timeout)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            detail = str(getattr(exc, "reason", exc))
        else:
            if status in (200, 206):
                return "ok", ""
            if status in (404, 410):
                return "gone", f"HTTP {status}"
            detail = f"HTTP {status}"
        time.sleep(backoff * (2**attempt))
    return "network", f"{detail} (after {attempts} attempts)"


# --------------------------------------------------------------------------- the command


def _diff(old: dict[str, str], new: dict[str, str]) -> list[str]:
    lines = []
    for name in sorted(set(old) | set(new)):
        if name not in old:
            lines.append(f"  + {name} {new[name]}")
        elif name not in new:
            lines.append(f"  - {name} {old[name]}")
        elif old[name] != new[name]:
            lines.append(f"  ~ {name} {old[name]} -> {new[name]}")
    return lines


def _targets(
    matrix: Matrix, envs: list[str] | None, only: list[str] | None
) -> list[tuple[EnvSpec, str]]:
    specs = [matrix.get(n) for n in envs] if envs else matrix.all()
    for p in only or []:
        if p not in platform_names.KNOWN:
            raise LockError(
                f"--platform: expected one of {', '.join(platform_names.KNOWN)}, found {p!r}"
            )
    return [(s, p) for s in specs for p in s.platforms if not only or p in only]


def main(
    project: Project,
    matrix: Matrix,
    *,
    envs: list[str] | None,
    check: bool = False,
    diff: bool = False,
    verify_urls: bool = False,
    platforms: list[str] | None = None,
    uv: Uv | None = None,
    advise: Callable[[EnvSpec, str], list[str]] | None = None,
    conda_engine: Engine = Engine.RATTLER,
) -> int:
    """``envlab lock``: write, check (``check``), diff (``diff``) or verify (``verify_urls``).

    ``advise`` gives warnings per (env, platform) for ``--diff``/``--verify``: the caller knows
    which CUDA variants the indexes still publish, this wing does not."""
    targets = _targets(matrix, envs, platforms)
    if advise and (diff or verify_urls):
        for line in dict.fromkeys(w for s, p in targets for w in advise(s, p)):
            print(f"warning: {line}")
    for spec in [matrix.get(n) for n in envs] if envs else matrix.all():
        for platform, reason in spec.unsupported.items():
            if not platforms or platform in platforms:
                log(f"{spec.name} {platform}: skipped: declared unsupported ({reason})")
    if check:
        return _check(project, matrix, targets)
    if verify_urls:
        return _verify(project, matrix, targets)
    return _lock(project, matrix, targets, write=not diff, uv=uv or Uv(), engine=conda_engine)


def _check(project: Project, matrix: Matrix, targets: list[tuple[EnvSpec, str]]) -> int:
    stale: list[str] = []
    stale_envs: list[str] = []
    for spec, platform in targets:
        try:
            locks = env_locks(project, spec, platform)
        except LockError as exc:
            stale.append(str(exc))
            stale_envs.append(spec.name)
            continue
        if locks is None:
            if not spec.locked:
                continue
            log(
                f"{spec.name} {platform}: no lock "
                "(not locked yet, or its index was unreachable when locking)"
            )
            continue
        reason = staleness(matrix, spec, locks, platform)
        if reason:
            stale.append(reason)
            stale_envs.append(spec.name)
        else:
            log(f"{spec.name} {platform}: lock is up to date")
    for spec in {s.name: s for s, _ in targets}.values():
        reason = _conda_staleness(project, spec)
        if reason:
            stale.append(reason)
            stale_envs.append(spec.name)
    for line in stale:
        print(line)
    if stale:
        print(f"stale locks: {', '.join(sorted(set(stale_envs)))}")
        return 1
    return 0


def effective_url(url: str, matrix: Matrix) -> str:
    """A locked (declared) URL with any mirror override applied."""
    for index in matrix.indexes.values():
        if index.mirrored and url.startswith(index.declared_url + "/"):
            return index.effective(url)
    return url


def _mirror_pages(matrix: Matrix, lock: LayerLock) -> mirrors.Pages | None:
    """The project pages of the lock's index when a mirror is set for it (None: no mirror)."""
    index = matrix.indexes.get(lock.index)
    return mirrors.Pages(index) if index is not None and index.mirrored else None


def _check_locked(f: LockedFile, matrix: Matrix, pages: mirrors.Pages | None) -> tuple[str, str]:
    """:func:`check_file` on the locked file, on its index's mirror when one is set: the public
    host is never asked then, and a file the mirror lacks is gone from it."""
    if pages is None:
        return check_file(effective_url(f.url, matrix))
    try:
        url = pages.locate(f.name, f.url)
    except Unavailable as exc:
        return "network", str(exc)
    return check_file(url) if url else ("gone", f"not on the mirror {pages.index.url}")


def _verify(project: Project, matrix: Matrix, targets: list[tuple[EnvSpec, str]]) -> int:
    gone, network, checked = [], [], 0
    for spec, platform in targets:
        locks = env_locks(project, spec, platform) or {}
        for layer, lock in locks.items():
            log(f"{spec.name} {platform} {layer}: checking {len(lock.files)} locked file(s)")
            pages = _mirror_pages(matrix, lock)
            for f in lock.files:
                checked += 1
                state, detail = _check_locked(f, matrix, pages)
                where = f"{spec.name} {platform} {layer}: {f.name} {f.version} ({f.url})"
                if state == "gone":
                    gone.append(f"GONE     {where}: {detail}")
                elif state == "network":
                    network.append(f"UNKNOWN  {where}: network error: {detail}")
        for name, version, url, fetched in _conda_files(project, spec, platform):
            checked += 1
            state, detail = check_file(fetched)
            where = f"{spec.name} {platform} conda: {name} {version} ({url})"
            if state == "gone":
                gone.append(f"GONE     {where}: {detail}")
            elif state == "network":
                network.append(f"UNKNOWN  {where}: network error: {detail}")
    for line in gone + network:
        print(line)
    print(
        f"checked {checked} locked file(s): {len(gone)} gone, "
        f"{len(network)} unreachable (network), {checked - len(gone) - len(network)} ok"
    )
    return 1 if gone else (3 if network else 0)


def relock(
    project: Project,
    matrix: Matrix,
    spec: EnvSpec,
    platform: str,
    uv: Uv | None = None,
    conda_engine: Engine = Engine.RATTLER,
) -> dict[str, list[str]]:
    """Resolve and write ``spec``'s locks for ``platform`` (its conda base first, when missing or
    stale); the changes per layer."""
    environment = conda.environment_file(project.envspecs, spec)
    lockfile = conda_lock_path(project, spec.name)
    if environment and (not lockfile.exists() or _conda_staleness(project, spec)):
        lock_conda_base(project, spec, environment, conda_engine)
    changes: dict[str, list[str]] = {}
    for layer, text in resolve(matrix, spec, platform, _conda_lockfile(project, spec), uv).items():
        path = lock_path(project, spec.name, platform, layer)
        old = _pins(path.read_text(encoding="utf-8")) if path.exists() else {}
        changes[layer] = _diff(old, _pins(text))
        atomic_write_text(path, text)
        log(
            f"{spec.name} {platform} {layer}: {len(_pins(text))} package(s) locked in "
            f"{path.relative_to(project.root)}"
            + (f" ({len(changes[layer])} change(s))" if old and changes[layer] else "")
        )
    return changes


def _conda_lockfile(project: Project, spec: EnvSpec) -> Path | None:
    """Where the env's conda base is locked, if it has one."""
    if conda.environment_file(project.envspecs, spec) is None:
        return None
    return conda_lock_path(project, spec.name)


def _lock(
    project: Project,
    matrix: Matrix,
    targets: list[tuple[EnvSpec, str]],
    write: bool,
    uv: Uv,
    engine: Engine = Engine.RATTLER,
) -> int:
    tally = {"problems": 0, "failures": 0}
    conda_ok: dict[str, bool] = {}  # env -> its conda base is locked (or it has none)
    for spec, platform in targets:
        if not spec.locked:
            log(
                f"{spec.name} {platform}: not locked by design "
                "(locked = false: resolved at build time)"
            )
            continue
        if spec.name not in conda_ok:
            try:
                _conda_base_for_lock(project, spec, write, engine)
                conda_ok[spec.name] = True
            except (Unavailable, BuildFailed) as exc:
                conda_ok[spec.name] = False
                _count(tally, spec.name, exc)
        if not conda_ok[spec.name]:
            continue  # its pip layers are constrained by the conda base: nothing to lock them on
        try:
            _lock_target(project, matrix, spec, platform, write, uv)
        except (Unavailable, BuildFailed) as exc:
            _count(tally, f"{spec.name} {platform}", exc)
    if tally["problems"]:
        print(
            f"{tally['problems']} env/platform lock(s) could not be resolved (see above); "
            f"the others were {'written' if write else 'checked'}"
        )
    return 1 if tally["failures"] else 0


def _count(tally: dict[str, int], where: str, exc: Unavailable | BuildFailed) -> None:
    """Report an env stopped by ``exc``; an unavailable one is not a failure of the command."""
    tally["problems"] += 1
    tally["failures"] += exc.outcome is not Outcome.UNAVAILABLE
    line = f"{where}: {exc.outcome}: {exc}"
    log(line)
    print(line)


def _conda_base_for_lock(project: Project, spec: EnvSpec, write: bool, engine: Engine) -> None:
    """Lock the env's conda base when writing; else only require what locking it needs."""
    environment = conda.environment_file(project.envspecs, spec)
    if environment is None:
        return
    if write:
        lock_conda_base(project, spec, environment, engine)
        return
    if engine is Engine.CONDA_LOCK:
        conda.find_executable()  # which fetches through its own channel settings (.condarc)
    else:
        conda.check_channels(spec, environment)


def _conda_staleness(project: Project, spec: EnvSpec) -> str | None:
    """Why the env's conda lockfile is missing or stale (None: current, or no conda base)."""
    environment = conda.environment_file(project.envspecs, spec)
    if environment is None or not spec.locked:
        return None
    lockfile = conda_lock_path(project, spec.name)
    if not lockfile.exists():
        return f"locks/{spec.name}/conda-lock.yml is missing: run `nox -s lock -- {spec.name}`"
    return conda.staleness(spec, environment, lockfile)


def _conda_files(project: Project, spec: EnvSpec, platform: str) -> list[tuple[str, str, str, str]]:
    """(name, version, locked URL, URL fetched here) of the env's locked conda packages."""
    lockfile = _conda_lockfile(project, spec)
    if lockfile is None or not lockfile.exists():
        return []
    content = conda.parse_lockfile(lockfile)
    chans = conda.lockfile_channels(content)
    found = []
    for pkg in conda.packages_of(content):
        if pkg.platform == platform:
            ch = channels.for_url(pkg.url, chans)
            found.append((pkg.name, pkg.version, pkg.url, ch.effective(pkg.url) if ch else pkg.url))
    return found


def _lock_target(
    project: Project, matrix: Matrix, spec: EnvSpec, platform: str, write: bool, uv: Uv
) -> None:
    """Relock ``spec`` on ``platform``, or (not ``write``) print what a relock would change."""
    log(f"{spec.name} {platform}: resolving")
    if write:
        relock(project, matrix, spec, platform, uv)
        return
    texts = resolve(matrix, spec, platform, _conda_lockfile(project, spec), uv)
    for layer, text in texts.items():
        path = lock_path(project, spec.name, platform, layer)
        old = _pins(path.read_text(encoding="utf-8")) if path.exists() else {}
        changes = _diff(old, _pins(text))
        print(
            f"{spec.name} {platform} {layer}: "
            + (f"{len(changes)} change(s)" if changes else "no change")
        )
        for line in changes:
            print(line)
