"""The conda base path, tested without conda: spec -> commands, virtual packages, lockfile parsing,
the lab's rules, constraints for the pip layers, and a build through a stand-in micromamba.
A real conda-lock run is marked `conda` and skipped where no conda executable/channel exists."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, envlab, make_project
from localindex import LocalIndexes, serve

from envlab.build import conda
from envlab.build.lock import conda_constraints
from envlab.results.schema import load
from envlab.spec.envspec import Matrix

DATA = ROOT / "tests" / "data" / "conda"
MATRIX = Matrix(ROOT / "envspecs")
PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def test_shipped_conda_envs() -> None:
    for name in ("stable-conda", "brain-encoders"):
        spec = MATRIX.get(name)
        env_file = conda.environment_file(MATRIX.dir, spec)
        assert env_file is not None
        deps = yaml.safe_load(env_file.read_text())["dependencies"]
        assert "libblas=*=*openblas" in deps and not any(str(d).startswith("pillow") for d in deps)
        assert f"python={spec.python}" in deps
    assert conda.environment_file(MATRIX.dir, MATRIX.get("stable")) is None
    assert [p.name for p in MATRIX.editables(MATRIX.get("brain-encoders"))] == ["amod-encoder"]


def test_virtual_packages_for_a_gpu_env() -> None:
    spec = MATRIX.get("stable-conda")
    doc = yaml.safe_load(conda.virtual_packages(spec, ["linux-64", "win-64", "osx-arm64"]))
    assert doc == {
        "subdirs": {
            "linux-64": {"packages": {"__cuda": "12.8", "__glibc": "2.28"}},
            "win-64": {"packages": {"__cuda": "12.8"}},
        }
    }
    with pytest.raises(ValueError, match="not a GPU env"):
        conda.virtual_packages(MATRIX.get("cpu"), ["linux-64"])


def test_lock_command_gpu_vs_cpu(tmp_path: Path) -> None:
    gpu = MATRIX.get("stable-conda")
    argv = conda.lock_argv(
        gpu, Path("env.yml"), Path("conda-lock.yml"), Path("/opt/bin/micromamba"), Path("vp.yml")
    )
    assert argv[:6] == ["conda-lock", "lock", "--file", "env.yml", "--lockfile", "conda-lock.yml"]
    assert argv.count("--platform") == 2 and "osx-arm64" not in argv
    assert "--micromamba" in argv and argv[-2:] == ["--virtual-package-spec", "vp.yml"]
    assert "--without-cuda" not in argv
    cpu = MATRIX.get("cpu")
    argv = conda.lock_argv(
        cpu, Path("env.yml"), Path("conda-lock.yml"), Path("/usr/bin/conda"), None
    )
    assert argv[-1] == "--without-cuda" and "--virtual-package-spec" not in argv
    assert argv[argv.index("--conda") + 1] == "/usr/bin/conda"
    with pytest.raises(ValueError, match="virtual-package spec"):
        conda.lock_argv(gpu, Path("e"), Path("l"), None, None)


def test_install_commands() -> None:
    assert conda.install_argv(Path("/x/micromamba"), Path("l.yml"), Path("/envs/p")) == [
        "/x/micromamba",
        "create",
        "--yes",
        "--prefix",
        "/envs/p",
        "--file",
        "l.yml",
    ]
    assert conda.install_argv(Path("/x/conda"), Path("l.yml"), Path("/envs/p")) == [
        "conda-lock",
        "install",
        "--conda",
        "/x/conda",
        "--prefix",
        "/envs/p",
        "l.yml",
    ]


def test_read_real_format_lockfile() -> None:
    packages = conda.read_lockfile(DATA / "conda-lock.yml")
    linux = {p.name: p for p in packages if p.platform == "linux-64"}
    assert linux["numpy"].version == "2.2.6" and linux["numpy"].manager == "conda"
    assert linux["libblas"].build == "31_h59b9bed_openblas"
    assert linux["numpy"].url.endswith("/linux-64/numpy-2.2.6-py311h5d046bc_0.conda")
    assert {p.platform for p in packages} == {"linux-64", "win-64"}
    assert conda.rule_violations(packages, "linux-64") == []
    assert conda.rule_violations(packages, "win-64") == []


def test_rules_catch_conda_pillow_and_mkl() -> None:
    problems = conda.rule_violations(conda.read_lockfile(DATA / "conda-lock-bad.yml"), "win-64")
    assert len(problems) == 2
    assert "pillow 11.1.0 comes from conda" in problems[0]
    assert "MKL is locked as the BLAS" in problems[1] and "libblas=*=*openblas*" in problems[1]


def test_invalid_lockfile_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "conda-lock.yml"
    bad.write_text("version: 7\npackage: []\n")
    with pytest.raises(Exception, match=r"expected a conda-lock lockfile, found an invalid one"):
        conda.read_lockfile(bad)
    with pytest.raises(Exception, match=r"conda lockfile not found; run `nox -s lock`"):
        conda.read_lockfile(tmp_path / "missing.yml")


def test_conda_versions_constrain_the_pip_layers() -> None:
    pins = conda_constraints(DATA / "conda-lock.yml", "linux-64")
    assert pins["numpy"] == "2.2.6" and pins["scikit-learn"] == "1.6.1"
    assert pins["joblib"] == "1.4.2"  # noarch python package (build pyh...)
    assert (
        "python" not in pins
        and "tzdata" not in pins
        and "libblas" not in pins
        and "ffmpeg" not in pins
    )
    assert conda_constraints(None, "linux-64") == {}


def test_no_conda_means_unavailable_and_pip_envs_still_lock(tmp_path: Path) -> None:
    if any(shutil.which(x) for x in conda.EXECUTABLES):
        pytest.skip("a conda executable is installed here: this test is about its absence")
    root = make_project(tmp_path, envs={"c": (ROOT / "envspecs" / "stable-conda.toml").read_text()})
    shutil.copy(
        ROOT / "envspecs" / "stable-conda.environment.yml", root / "envspecs" / "c.environment.yml"
    )
    done = envlab(
        "--root",
        str(root),
        "test",
        "c",
        "--no-compat",
        env={"ENVLAB_HOST_ID": "h", "ENVLAB_RUN_ID": "r"},
    )
    assert done.returncode == 2
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(
        "envlab: error: c: unavailable: no conda executable (micromamba, mamba, conda) on PATH: install micromamba"
    )
    done = envlab("--root", str(root), "lock", "--platform", "linux-64", env={})
    assert done.returncode == 0 and "c: unavailable: no conda executable" in done.stdout


FAKE_MICROMAMBA = """#!/bin/sh
# Stand-in for micromamba: records its arguments, makes the prefix a plain venv.
echo "$@" >> "{log}"
while [ $# -gt 0 ]; do case "$1" in --prefix) prefix="$2"; shift;; esac; shift; done
exec "{uv}" venv --quiet --python "{python}" "$prefix"
"""


@pytest.fixture
def fake_micromamba(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    bindir, log = tmp_path / "bin", tmp_path / "micromamba.log"
    bindir.mkdir()
    exe = bindir / "micromamba"
    exe.write_text(FAKE_MICROMAMBA.format(log=log, uv=shutil.which("uv"), python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    yield bindir, log


def test_build_on_a_conda_base(tmp_path: Path, fake_micromamba: tuple[Path, Path]) -> None:
    bindir, log = fake_micromamba
    spec = (
        f'description = "c"\npython = "{PY}"\nplatforms = ["linux-64"]\n'
        '[torch]\npackages = ["torch==2.10.0"]\nindex = "torchidx"\n[stack]\nadd = ["timmish"]\n'
        '[expect]\ntorch-local = "cpu"\n'
    )
    with serve(tmp_path / "index") as idx:
        _populate(idx)
        root = make_project(
            tmp_path,
            indexes={"pypi": idx.url("pypi"), "torchidx": idx.url("torchidx")},
            envs={"c": spec},
            stack=[],
        )
        shutil.copy(
            ROOT / "envspecs" / "stable-conda.environment.yml",
            root / "envspecs" / "c.environment.yml",
        )
        done = envlab(
            "--root",
            str(root),
            "test",
            "c",
            "--no-compat",
            env={
                "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
                "ENVLAB_HOST_ID": "h",
                "ENVLAB_RUN_ID": "r",
            },
        )
        assert (
            done.returncode == 2
            and "conda base is not locked (locks/c/conda-lock.yml is missing)" in done.stderr
        )
        (root / "locks" / "c").mkdir(parents=True)
        shutil.copy(DATA / "conda-lock.yml", root / "locks" / "c" / "conda-lock.yml")
        done = envlab(
            "--root",
            str(root),
            "test",
            "c",
            "--no-compat",
            env={
                "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
                "ENVLAB_HOST_ID": "h",
                "ENVLAB_RUN_ID": "r",
            },
        )
        assert done.returncode == 0, done.stderr
    result = load(root / "reports" / "runs" / "r" / "h" / "c.json")
    base = result.build.layers[0]
    assert base.index == "conda" and base.commands[0].argv[1:3] == ["create", "--yes"]
    assert log.read_text().split()[:5] == [
        "create",
        "--yes",
        "--prefix",
        str(root / ".envlab" / "envs" / "c"),
        "--file",
    ]
    assert result.facts["distributions"]["torch"]["version"] == "2.10.0+cpu"
    assert (
        json.loads((root / ".envlab" / "envs" / "c" / "envlab-build.json").read_text())["key"]
        == result.build.build_key
    )


def _populate(idx: LocalIndexes) -> None:
    idx.add("torchidx", "torch", "2.10.0+cpu")
    idx.add("pypi", "timmish", "1.0", ["torch>=2"])


@pytest.mark.conda
@pytest.mark.network
def test_real_conda_lock(tmp_path: Path) -> None:
    """With conda/micromamba and a reachable channel: lock stable-conda for real and check the rules."""
    root = make_project(
        tmp_path,
        envs={"stable-conda": (ROOT / "envspecs" / "stable-conda.toml").read_text()},
        stack=["rich"],
    )
    shutil.copy(ROOT / "envspecs" / "stable-conda.environment.yml", root / "envspecs")
    done = envlab("--root", str(root), "lock", "stable-conda", "--platform", "linux-64")
    assert done.returncode == 0, done.stdout + done.stderr
    packages = conda.read_lockfile(root / "locks" / "stable-conda" / "conda-lock.yml")
    assert conda.rule_violations(packages, "linux-64") == []
