"""Conda bases: ``envspecs/<env>.environment.yml`` locked into conda-lock's ``conda-lock.yml``.

Two engines read and write the same lockfile: py-rattler (the default, shipped with envlab: no
conda needed, see ``rattler_engine``) and conda-lock driving a conda/mamba/micromamba executable.
Both solve with the same explicit virtual packages (the env's CUDA for GPU envs, a glibc baseline
for Linux; conda-lock would otherwise assume a CUDA driver) and both leave the same content hash,
computed by conda-lock, so either sees the other's lock as current. The lab's rules are checked on
every lock: no Pillow from conda, and numpy/scipy's BLAS is OpenBLAS (``libblas=*=*openblas*``),
never MKL.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from envlab.build import channels
from envlab.errors import CondaUnavailable, LockError
from envlab.spec.envspec import EnvSpec

if TYPE_CHECKING:
    from conda_lock.lockfile.v2prelim.models import Lockfile
    from conda_lock.models.lock_spec import LockSpecification
    from conda_lock.virtual_package import FakeRepoData


class Engine(StrEnum):
    """What locks and installs a conda base."""

    RATTLER = "rattler"
    CONDA_LOCK = "conda-lock"


EXECUTABLES = ("micromamba", "mamba", "conda")
GET_ONE = (
    "install micromamba "
    "(https://mamba.readthedocs.io/en/latest/installation/micromamba-installation.html) "
    "or miniforge and put it on PATH, or use the default engine (--conda-engine rattler)"
)
# Minimum glibc declared for linux locks: the manylinux_2_28 baseline of current torch wheels.
LINUX_GLIBC = "2.28"
# The virtual packages every lock assumes per platform (conda-lock's defaults, less its CUDA).
BASE_VIRTUAL_PACKAGES = {
    "linux-64": {
        "__unix": "0",
        "__linux": "5.10",
        "__archspec": "1 x86_64",
        "__glibc": LINUX_GLIBC,
    },
    "linux-aarch64": {
        "__unix": "0",
        "__linux": "5.10",
        "__archspec": "1 aarch64",
        "__glibc": LINUX_GLIBC,
    },
    "osx-64": {"__unix": "0", "__archspec": "1 x86_64", "__osx": "11.0"},
    "osx-arm64": {"__unix": "0", "__archspec": "1 arm64", "__osx": "11.0"},
    "win-64": {"__win": "0", "__archspec": "1 x86_64"},
}
CUDA_PLATFORMS = ("linux-64", "linux-aarch64", "win-64")


@dataclass(frozen=True)
class LockedPackage:
    name: str
    version: str
    manager: str  # conda | pip
    platform: str
    url: str
    build: str | None
    md5: str | None
    sha256: str | None


def environment_file(envspecs: Path, spec: EnvSpec) -> Path | None:
    """The env's conda base (``<env>.environment.yml`` beside its spec), if it has one."""
    path = envspecs / f"{spec.name}.environment.yml"
    return path if path.exists() else None


def find_executable() -> Path:
    for name in EXECUTABLES:
        exe = shutil.which(name)
        if exe:
            return Path(exe)
    raise CondaUnavailable(f"no conda executable ({', '.join(EXECUTABLES)}) on PATH: {GET_ONE}")


def is_gpu(spec: EnvSpec) -> bool:
    return bool(spec.expect.cuda) and not spec.expect.cpu_only


def conda_platforms(spec: EnvSpec) -> list[str]:
    return [p for p in spec.platforms if p not in spec.unsupported]


def virtual_packages(spec: EnvSpec, platforms: list[str]) -> str:
    """conda-lock ``--virtual-package-spec`` YAML: the platform baseline, plus the CUDA a GPU env
    is built for (a CPU env declares none, so nothing CUDA-only can be solved into it)."""
    lines = ["# written by envlab: the virtual packages this env's locks assume", "subdirs:"]
    for platform in platforms:
        if platform not in BASE_VIRTUAL_PACKAGES:
            continue
        packages = dict(BASE_VIRTUAL_PACKAGES[platform])
        if is_gpu(spec) and platform in CUDA_PLATFORMS:
            packages["__cuda"] = str(spec.expect.cuda)
        lines += [f"  {platform}:", "    packages:"]
        lines += [f'      {name}: "{version}"' for name, version in packages.items()]
    return "\n".join(lines) + "\n"


def lock_argv(
    spec: EnvSpec, environment: Path, lockfile: Path, exe: Path | None, vpkg_file: Path
) -> list[str]:
    """``conda-lock lock`` for ``spec`` with its explicit virtual packages."""
    argv = ["conda-lock", "lock", "--file", str(environment), "--lockfile", str(lockfile)]
    for platform in conda_platforms(spec):
        argv += ["--platform", platform]
    if exe is not None:
        argv += ["--micromamba"] if exe.name.startswith("micromamba") else ["--conda", str(exe)]
    return [*argv, "--virtual-package-spec", str(vpkg_file)]


def install_argv(exe: Path, lockfile: Path, prefix: Path) -> list[str]:
    """Create ``prefix`` from ``lockfile`` (micromamba reads conda-lock files directly)."""
    if exe.name.startswith("micromamba"):
        return [str(exe), "create", "--yes", "--prefix", str(prefix), "--file", str(lockfile)]
    return ["conda-lock", "install", "--conda", str(exe), "--prefix", str(prefix), str(lockfile)]


# --------------------------------------------------------------------------- the lockfile


def parse_lockfile(path: Path) -> Lockfile:
    """A conda-lock lockfile (v1 or v2) parsed by conda-lock's own models."""
    from conda_lock.lockfile import parse_conda_lock_file

    try:
        return parse_conda_lock_file(path)
    except FileNotFoundError:
        raise LockError(f"{path}: conda lockfile not found; run `nox -s lock`") from None
    except Exception as exc:  # noqa: BLE001 - yaml/pydantic/version errors all mean "not a valid lockfile"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LockError(
            f"{path}: expected a conda-lock lockfile, found an invalid one ({first})"
        ) from None


def packages_of(lockfile: Lockfile) -> list[LockedPackage]:
    return [
        LockedPackage(
            p.name, p.version, p.manager, p.platform, p.url, p.build, p.hash.md5, p.hash.sha256
        )
        for p in lockfile.package
    ]


def read_lockfile(path: Path) -> list[LockedPackage]:
    """Packages of a conda-lock lockfile (v1 or v2), parsed by conda-lock's own models."""
    return packages_of(parse_lockfile(path))


def lockfile_channels(lockfile: Lockfile) -> list[channels.Channel]:
    return [channels.channel(c.url) for c in lockfile.metadata.channels]


def rule_violations(packages: list[LockedPackage], platform: str) -> list[str]:
    """The lab's conda rules, checked on the locked conda packages of ``platform``."""
    conda = {p.name: p for p in packages if p.platform == platform and p.manager == "conda"}
    problems = []
    if "pillow" in conda:
        problems.append(
            f"{platform}: pillow {conda['pillow'].version} comes from conda; it must come from pip "
            "(conda's imaging DLLs break pip's torchvision on Windows): "
            "remove it from the environment.yml"
        )
    mkl_numpy = [n for n in ("numpy", "scipy") if n in conda and "mkl" in (conda[n].build or "")]
    if (
        "mkl" in conda
        or mkl_numpy
        or any("mkl" in (conda[n].build or "") for n in ("libblas", "libcblas") if n in conda)
    ):
        problems.append(
            f"{platform}: MKL is locked as the BLAS (a second OpenMP runtime, libiomp5, next to "
            "torch's): pin libblas=*=*openblas* in the environment.yml"
        )
    elif "libblas" in conda and "openblas" not in (conda["libblas"].build or ""):
        problems.append(f"{platform}: libblas build {conda['libblas'].build!r} is not OpenBLAS")
    return problems


def python_pins(lockfile: Path | None, platform: str) -> dict[str, str]:
    """Versions of the Python packages the conda base provides on ``platform``: the pip layers
    are constrained to them (they keep, never replace, conda's packages)."""
    if lockfile is None or not lockfile.exists():
        return {}
    pins = {}
    for pkg in read_lockfile(lockfile):
        if pkg.platform != platform or pkg.manager != "conda" or pkg.name == "python":
            continue
        if not (pkg.build or "").startswith("py"):
            # not a Python package (conda's tzdata is the zoneinfo database, not PyPI's tzdata)
            continue
        try:
            Version(pkg.version)
        except InvalidVersion:
            continue  # not a Python-style version: not a package pip could install anyway
        pins[canonicalize_name(pkg.name)] = pkg.version
    return pins


# --------------------------------------------------------------------------- inputs and staleness


def lock_spec(environment: Path, platforms: list[str]) -> LockSpecification:
    """The environment.yml as conda-lock reads it (selectors applied, per platform)."""
    from conda_lock.lookup import DEFAULT_MAPPING_URL
    from conda_lock.src_parser import make_lock_spec

    try:
        # the mapping URL is only fetched for pip: entries, which envlab rejects before solving
        return make_lock_spec(
            src_files=[environment], platform_overrides=platforms, mapping_url=DEFAULT_MAPPING_URL
        )
    except Exception as exc:  # noqa: BLE001 - conda-lock's parser raises many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LockError(
            f"{environment}: expected a conda environment file, found: {first}"
        ) from None


def spec_channels(ls: LockSpecification) -> list[channels.Channel]:
    return [channels.channel(c.url) for c in ls.channels]


def check_channels(spec: EnvSpec, environment: Path) -> list[channels.Channel]:
    """The env's channels, each probed: raises ChannelUnavailable naming its mirror variable."""
    found = spec_channels(lock_spec(environment, conda_platforms(spec)))
    if not found:
        raise LockError(f"{environment}: expected at least one channel, found none")
    for ch in found:
        channels.probe(ch)
    return found


@contextmanager
def virtual_package_repo(spec: EnvSpec, platforms: list[str]) -> Iterator[FakeRepoData]:
    """conda-lock's repository of the env's virtual packages (what both engines solve with)."""
    import tempfile

    from conda_lock.virtual_package import virtual_package_repo_from_specification

    with tempfile.TemporaryDirectory(prefix="envlab-vpkg-") as tmp:
        path = Path(tmp) / "virtual-packages.yml"
        path.write_text(virtual_packages(spec, platforms), encoding="utf-8")
        repo = virtual_package_repo_from_specification(path)
        with repo:
            yield repo


def content_hashes(ls: LockSpecification, repo: FakeRepoData) -> dict[str, str]:
    """conda-lock's content hash per platform (what `conda-lock lock` compares to relock)."""
    from conda_lock.content_hash import compute_content_hashes

    return dict(compute_content_hashes(ls, repo))


def staleness(spec: EnvSpec, environment: Path, lockfile: Path) -> str | None:
    """Why ``lockfile`` no longer matches the environment.yml (or the virtual packages)."""
    platforms = conda_platforms(spec)
    locked = parse_lockfile(lockfile)
    with virtual_package_repo(spec, platforms) as repo:
        want = content_hashes(lock_spec(environment, platforms), repo)
    stale = sorted(p for p in platforms if locked.metadata.content_hash.get(p) != want[p])
    if stale:
        return (
            f"{lockfile.parent.name}/{lockfile.name} ({', '.join(stale)}) is stale: "
            f"{environment.name} or the env's CUDA changed since it was locked; "
            f"run `nox -s lock -- {spec.name}`"
        )
    return None
