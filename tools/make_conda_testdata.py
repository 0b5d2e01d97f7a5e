"""Write tests/data/conda/*.yml through conda-lock's own lockfile models and writer.

No conda channel is reachable where envlab is developed, so `conda-lock lock` cannot run there.
These files are written by conda-lock's writer from package records typed in by hand (real
conda-forge names, versions and builds; the md5/sha256 values are placeholders derived from the
URL, not the packages' real hashes). Regenerate on request only:
`python tools/make_conda_testdata.py`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from conda_lock.lockfile import write_conda_lock_file
from conda_lock.lockfile.v1.models import HashModel, LockMeta, TimeMeta
from conda_lock.lockfile.v2prelim.models import LockedDependency, Lockfile

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "conda"
CHANNEL = "https://conda.anaconda.org/conda-forge"

GOOD = {
    "linux-64": [
        ("python", "3.11.11", "h9e4cc4f_1_cpython"),
        ("pip", "25.0.1", "pyh8b19718_0"),
        ("numpy", "2.2.6", "py311h5d046bc_0"),
        ("scipy", "1.15.2", "py311h8f841c2_0"),
        ("pandas", "2.2.3", "py311h7db5c69_3"),
        ("scikit-learn", "1.6.1", "py311h57cc02b_0"),
        ("h5py", "3.13.0", "nompi_py311hb639ac4_100"),
        ("ffmpeg", "7.1.1", "gpl_h0b79d52_704"),
        ("libblas", "3.9.0", "31_h59b9bed_openblas"),
        ("libcblas", "3.9.0", "31_he106b2a_openblas"),
        ("liblapack", "3.9.0", "31_h7ac8fdf_openblas"),
        ("libopenblas", "0.3.29", "pthreads_h94d23a6_0"),
        ("threadpoolctl", "3.6.0", "pyhecae5ae_0"),
        ("joblib", "1.4.2", "pyhd8ed1ab_1"),
        ("tzdata", "2025b", "h78e105d_0"),
    ],
    "win-64": [
        ("python", "3.11.11", "h3f84c4b_1_cpython"),
        ("pip", "25.0.1", "pyh8b19718_0"),
        ("numpy", "2.2.6", "py311h5e411d1_0"),
        ("scipy", "1.15.2", "py311h99d06ae_0"),
        ("pandas", "2.2.3", "py311hcf9f919_3"),
        ("scikit-learn", "1.6.1", "py311hdcb8d17_0"),
        ("h5py", "3.13.0", "nompi_py311h67016bb_100"),
        ("ffmpeg", "7.1.1", "gpl_h2b0aa7e_704"),
        ("libblas", "3.9.0", "31_h11dc60a_openblas"),
        ("libcblas", "3.9.0", "31_h9bd4c3b_openblas"),
        ("liblapack", "3.9.0", "31_h2526c6b_openblas"),
        ("libopenblas", "0.3.29", "pthreads_head3c61_0"),
        ("threadpoolctl", "3.6.0", "pyhecae5ae_0"),
        ("joblib", "1.4.2", "pyhd8ed1ab_1"),
    ],
}
# Seed 000's mistakes: Pillow from conda and MKL as the BLAS.
BAD = {
    "win-64": [
        ("python", "3.11.11", "h3f84c4b_1_cpython"),
        ("pillow", "11.1.0", "py311h43e43bb_0"),
        ("libblas", "3.9.0", "31_h641d27c_mkl"),
        ("mkl", "2024.2.2", "h66d3029_15"),
    ]
}


def dependency(platform: str, name: str, version: str, build: str) -> LockedDependency:
    noarch = build.startswith(("pyh", "pyhd"))
    subdir = "noarch" if noarch else platform
    url = f"{CHANNEL}/{subdir}/{name}-{version}-{build}.conda"
    digest = hashlib.sha256(url.encode()).hexdigest()
    return LockedDependency(
        name=name,
        version=version,
        manager="conda",
        platform=platform,
        dependencies={},
        url=url,
        hash=HashModel(md5=digest[:32], sha256=digest),
        build=build,
        categories={"main"},
    )


def write(name: str, records: dict[str, list[tuple[str, str, str]]]) -> None:
    packages = [dependency(p, *r) for p, rs in records.items() for r in rs]
    meta = LockMeta(
        content_hash={p: hashlib.sha256(p.encode()).hexdigest() for p in records},
        channels=[{"url": "conda-forge", "used_env_vars": []}],
        platforms=list(records),
        sources=["envspecs/stable-conda.environment.yml"],
        time_metadata=TimeMeta(created_at="2026-11-22T00:00:00Z"),
    )
    write_conda_lock_file(
        Lockfile(package=packages, metadata=meta), OUT / name, metadata_choices=None
    )


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    write("conda-lock.yml", GOOD)
    write("conda-lock-bad.yml", BAD)
