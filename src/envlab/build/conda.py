"""Conda bases: ``envspecs/<env>.environment.yml`` locked with conda-lock, installed with
micromamba/mamba/conda, with the pip layers (torch, stack) put on top by uv.

conda-lock assumes a ``__cuda`` virtual package on linux-64/win-64 unless told otherwise, so GPU
envs lock with an explicit virtual-package spec (their expected CUDA) and CPU envs with
``--without-cuda``. Seed 000's rules are checked on the lockfile: no Pillow from conda, and the
BLAS of numpy/scipy is OpenBLAS (``libblas=*=*openblas*``), never MKL.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from envlab.errors import CondaUnavailable, LockError
from envlab.spec.envspec import EnvSpec

EXECUTABLES = ("micromamba", "mamba", "conda")
GET_ONE = (
    "install micromamba (https://mamba.readthedocs.io/en/latest/installation/micromamba-installation.html) "
    "or miniforge, and put it on PATH"
)
# Minimum glibc declared for linux-64 locks: the manylinux_2_28 baseline of current torch wheels.
LINUX_GLIBC = "2.28"


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


def virtual_packages(spec: EnvSpec, platforms: list[str]) -> str:
    """conda-lock ``--virtual-package-spec`` YAML declaring the CUDA the GPU env is built for."""
    if not is_gpu(spec):
        raise ValueError(f"{spec.name} is not a GPU env: lock it with --without-cuda")
    lines = [
        "# written by envlab: the CUDA driver this env's builds target (conda-lock would assume one)",
        "subdirs:",
    ]
    for platform in platforms:
        if platform not in ("linux-64", "linux-aarch64", "win-64"):
            continue
        lines += [f"  {platform}:", "    packages:", f'      __cuda: "{spec.expect.cuda}"']
        if platform.startswith("linux"):
            lines.append(f'      __glibc: "{LINUX_GLIBC}"')
    return "\n".join(lines) + "\n"


def conda_platforms(spec: EnvSpec) -> list[str]:
    return [p for p in spec.platforms if p not in spec.unsupported]


def lock_argv(
    spec: EnvSpec, environment: Path, lockfile: Path, exe: Path | None, vpkg_file: Path | None
) -> list[str]:
    """The ``conda-lock lock`` command for ``spec`` (GPU: explicit virtual packages; CPU: without CUDA)."""
    argv = ["conda-lock", "lock", "--file", str(environment), "--lockfile", str(lockfile)]
    for platform in conda_platforms(spec):
        argv += ["--platform", platform]
    if exe is not None:
        argv += ["--micromamba"] if exe.name.startswith("micromamba") else ["--conda", str(exe)]
    if is_gpu(spec):
        if vpkg_file is None:
            raise ValueError("a GPU env needs a virtual-package spec file")
        argv += ["--virtual-package-spec", str(vpkg_file)]
    else:
        argv.append("--without-cuda")
    return argv


def install_argv(exe: Path, lockfile: Path, prefix: Path) -> list[str]:
    """Create ``prefix`` from ``lockfile`` (micromamba reads conda-lock files directly)."""
    if exe.name.startswith("micromamba"):
        return [str(exe), "create", "--yes", "--prefix", str(prefix), "--file", str(lockfile)]
    return ["conda-lock", "install", "--conda", str(exe), "--prefix", str(prefix), str(lockfile)]


def read_lockfile(path: Path) -> list[LockedPackage]:
    """Packages of a conda-lock lockfile (v1 or v2), parsed by conda-lock's own models."""
    from conda_lock.lockfile import parse_conda_lock_file

    try:
        lockfile = parse_conda_lock_file(path)
    except FileNotFoundError:
        raise LockError(
            f"{path}: conda lockfile not found; run `nox -s lock` on a machine with conda"
        ) from None
    except Exception as exc:  # noqa: BLE001 - yaml/pydantic/version errors all mean "not a valid lockfile"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LockError(
            f"{path}: expected a conda-lock lockfile, found an invalid one ({first})"
        ) from None
    return [
        LockedPackage(
            p.name, p.version, p.manager, p.platform, p.url, p.build, p.hash.md5, p.hash.sha256
        )
        for p in lockfile.package
    ]


def rule_violations(packages: list[LockedPackage], platform: str) -> list[str]:
    """Seed 000's gotchas, checked on the locked conda packages of ``platform``."""
    conda = {p.name: p for p in packages if p.platform == platform and p.manager == "conda"}
    problems = []
    if "pillow" in conda:
        problems.append(
            f"{platform}: pillow {conda['pillow'].version} comes from conda; it must come from pip "
            "(conda's imaging DLLs break pip's torchvision on Windows): remove it from the environment.yml"
        )
    if "mkl" in conda or any(
        (conda[n].build or "").find("mkl") >= 0 for n in ("libblas", "libcblas") if n in conda
    ):
        problems.append(
            f"{platform}: MKL is locked as the BLAS (a second OpenMP runtime, libiomp5, next to "
            "torch's): pin libblas=*=*openblas* in the environment.yml"
        )
    elif "libblas" in conda and "openblas" not in (conda["libblas"].build or ""):
        problems.append(f"{platform}: libblas build {conda['libblas'].build!r} is not OpenBLAS")
    return problems
