"""The default conda engine: py-rattler solves and installs, no conda executable needed.

Locking solves the environment.yml per platform (any platform, from any machine) against the
env's channels (mirrors substituted) with the env's explicit virtual packages, and writes
conda-lock's own lockfile model (declared URLs, md5 and sha256, conda-lock's content hash), so
`conda-lock install` and micromamba read it as their own. Installing fetches exactly the locked
files of this platform, checks each one's sha256 (md5 where no sha256 is locked) before anything
is linked, and links them into the prefix with rattler.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from envlab.build import channels, conda
from envlab.errors import BuildFailed, ChannelUnavailable, LockError, Unavailable
from envlab.fsutil import atomic_write_text
from envlab.log import log
from envlab.proc import Completed
from envlab.spec.envspec import EnvSpec

if TYPE_CHECKING:
    from conda_lock.lockfile.v2prelim.models import LockedDependency, Lockfile
    from conda_lock.models.lock_spec import LockSpecification
    from rattler import RepoDataRecord

DOWNLOADS = 8  # parallel package downloads


def cache_dir() -> Path:
    """Where downloaded packages, repodata and extracted packages are kept between builds."""
    configured = os.environ.get("ENVLAB_CONDA_PKGS_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "envlab" / "conda"


def engine_version() -> str:
    from importlib.metadata import version

    return f"py-rattler {version('py-rattler')}"


# --------------------------------------------------------------------------- locking


def lock(spec: EnvSpec, environment: Path, lockfile: Path) -> Lockfile:
    """Solve ``environment`` for the env's platforms; conda-lock's model of ``lockfile``."""
    from conda_lock.lockfile.v2prelim.models import Lockfile as LockfileModel
    from conda_lock.lockfile.v2prelim.models import LockMeta

    platforms = conda.conda_platforms(spec)
    ls = conda.lock_spec(environment, platforms)
    chans = conda.check_channels(spec, environment)
    packages: list[LockedDependency] = []
    with conda.virtual_package_repo(spec, platforms) as repo:
        hashes = conda.content_hashes(ls, repo)
        for platform in platforms:
            log(f"{spec.name} {platform}: solving the conda base with {engine_version()}")
            records = _solve(spec, ls, platform, chans, repo.all_repodata.get(platform, {}))
            packages += [_locked(r, platform, chans) for r in records]
    return LockfileModel(
        package=packages,
        metadata=LockMeta(
            content_hash=hashes,
            channels=list(ls.channels),
            platforms=platforms,
            sources=[os.path.relpath(environment, lockfile.parent).replace(os.sep, "/")],
        ),
    )


def write(content: Lockfile, path: Path) -> None:
    """Write ``content`` with conda-lock's own writer (its layout and help text), atomically."""
    from conda_lock.lockfile import write_conda_lock_file

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="envlab-conda-lock-") as tmp:
        staged = Path(tmp) / path.name
        write_conda_lock_file(content, staged, metadata_choices=None)
        atomic_write_text(path, staged.read_text(encoding="utf-8"))


def _match_specs(ls: LockSpecification, platform: str, where: str) -> list[str]:
    """The environment.yml's dependencies for ``platform`` as rattler match specs."""
    specs = []
    for dep in ls.dependencies[platform]:
        if dep.manager != "conda":
            raise LockError(
                f"{where}: expected conda packages only, found the pip package {dep.name!r}: "
                "pip packages belong in the envspec's [stack]"
            )
        version, build = getattr(dep, "version", None), getattr(dep, "build", None)
        if version is None or getattr(dep, "conda_channel", None):
            raise LockError(
                f"{where}: expected plain `name[=version[=build]]` specs, found {dep.name!r} "
                "with a URL or a channel prefix"
            )
        specs.append(" ".join([dep.name, version or "*", *([build] if build else [])]))
    return specs


def _solve(
    spec: EnvSpec,
    ls: LockSpecification,
    platform: str,
    chans: list[channels.Channel],
    virtual: dict,
) -> list[RepoDataRecord]:
    import rattler
    from rattler.exceptions import SolverError

    vpkgs = [
        rattler.GenericVirtualPackage(
            rattler.PackageName(p["name"]),
            rattler.Version(p["version"]),
            rattler.BuildString(p["build"]),
        )
        for p in virtual.get("packages", {}).values()
    ]
    where = f"{spec.name} {platform}"
    gateway = rattler.Gateway(cache_dir=cache_dir() / "repodata", show_progress=False)
    try:
        return asyncio.run(
            rattler.solve(
                [c.url for c in chans],
                _match_specs(ls, platform, where),
                gateway=gateway,
                platforms=[platform, "noarch"],
                virtual_packages=vpkgs,
                channel_relations="disabled",
            )
        )
    except SolverError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise LockError(
            f"{where}: the conda base cannot be solved: {' '.join(lines)[:600]}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - rattler's fetch errors: the channel did not answer
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        ch = chans[0]
        raise ChannelUnavailable(ch.name, ch.url, first, ch.hint()) from None


def _locked(
    record: RepoDataRecord, platform: str, chans: list[channels.Channel]
) -> LockedDependency:
    from conda_lock.lockfile.v2prelim.models import HashModel, LockedDependency

    url = record.url
    for ch in chans:
        url = ch.declared(url)
    depends = {}
    for dep in record.depends:
        name, _, constraint = dep.partition(" ")
        depends[name] = constraint.strip() or "*"
    return LockedDependency(
        name=record.name.normalized,
        version=str(record.version),
        manager="conda",
        platform=platform,
        dependencies=depends,
        url=url,
        hash=HashModel(
            md5=record.md5.hex() if record.md5 else None,
            sha256=record.sha256.hex() if record.sha256 else None,
        ),
        build=str(record.build),
        categories={"main"},
    )


# --------------------------------------------------------------------------- installing


def install(lockfile: Path, prefix: Path, platform: str) -> Completed:
    """Create ``prefix`` with exactly the locked conda packages of ``platform``, hash-checked."""
    import rattler

    started = time.monotonic()
    content = conda.parse_lockfile(lockfile)
    chans = conda.lockfile_channels(content)
    wanted = [p for p in conda.packages_of(content) if p.platform == platform]
    if not wanted:
        raise LockError(f"{lockfile}: expected packages for {platform}, found none; relock it")
    pip = [p.name for p in wanted if p.manager != "conda"]
    if pip:
        raise LockError(
            f"{lockfile}: expected conda packages only, found pip packages ({', '.join(pip)}): "
            "pip packages belong in the envspec's [stack]"
        )
    log(f"layer base: fetching {len(wanted)} locked conda package(s) for {platform}")
    pkgs = cache_dir() / "pkgs"
    pkgs.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(DOWNLOADS) as pool:
        files = list(pool.map(lambda p: _fetch(p, chans, pkgs), wanted))

    async def link() -> None:
        records = await asyncio.gather(
            *(rattler.RepoDataRecord.from_package_archive(f) for f in files)
        )
        await rattler.install(
            list(records),
            prefix,
            cache_dir=cache_dir() / "extracted",
            show_progress=False,
            execute_link_scripts=False,
        )

    try:
        asyncio.run(link())
    except Exception as exc:  # noqa: BLE001 - rattler's installer errors: the prefix is unusable
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise BuildFailed(
            f"conda base: installing into {prefix} failed: {' '.join(lines)[:400]}"
        ) from None
    argv = [
        engine_version(),
        "install",
        "--platform",
        platform,
        "--prefix",
        str(prefix),
        str(lockfile),
    ]
    return Completed(argv, 0, f"{len(files)} conda package(s) linked", time.monotonic() - started)


def _fetch(pkg: conda.LockedPackage, chans: list[channels.Channel], into: Path) -> Path:
    """The locked file of ``pkg`` in the download cache, its hash checked against the lock."""
    ch = channels.for_url(pkg.url, chans)
    url = ch.effective(pkg.url) if ch else pkg.url
    target = into / url.rsplit("/", 1)[-1]
    if target.exists() and _digest_matches(pkg, target.read_bytes()):
        return target
    data = _download(url, pkg, ch)
    if not _digest_matches(pkg, data):
        algo, want = ("sha256", pkg.sha256) if pkg.sha256 else ("md5", pkg.md5)
        found = hashlib.new(algo, data).hexdigest()
        raise LockError(
            f"conda package {pkg.name} {pkg.version} ({url}): expected {algo} {want}, "
            f"found {found}; the file changed since it was locked"
        )
    staged = target.with_name(f".{target.name}.{os.getpid()}")
    staged.write_bytes(data)
    staged.replace(target)
    return target


def _digest_matches(pkg: conda.LockedPackage, data: bytes) -> bool:
    if pkg.sha256:
        return hashlib.sha256(data).hexdigest() == pkg.sha256
    if pkg.md5:
        return hashlib.md5(data).hexdigest() == pkg.md5
    raise LockError(f"conda package {pkg.name} {pkg.version}: expected a locked hash, found none")


def _download(url: str, pkg: conda.LockedPackage, ch: channels.Channel | None) -> bytes:
    """The bytes at ``url``; a gone file (404/410) and an unreachable channel say which."""
    if url.startswith("file://"):
        path = Path(unquote(urlparse(url).path))
        if not path.is_file():
            raise Unavailable(f"locked conda package {pkg.name} {pkg.version} is gone: {url}")
        return path.read_bytes()
    detail = ""
    for attempt in range(3):
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                raise Unavailable(
                    f"locked conda package {pkg.name} {pkg.version} is gone (HTTP {exc.code}): "
                    f"{url}; relock with `nox -s lock`"
                ) from None
            detail = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            detail = str(getattr(exc, "reason", exc)) or type(exc).__name__
        time.sleep(0.5 * 2**attempt)
    if ch is None:
        raise Unavailable(f"conda package {pkg.name} {pkg.version}: {url} unreachable: {detail}")
    raise ChannelUnavailable(ch.name, ch.url, detail, ch.hint())
