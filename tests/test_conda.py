"""Conda bases with no conda installed: locked and installed with py-rattler from a channel
generated at test time (tests/localchannel.py), the pip layers from a local index on top.

The channel's python is the interpreter running these tests, relocated into a conda package;
its numpy is the test environment's PyPI numpy (bundling OpenBLAS) repacked; the stack's Pillow,
threadpoolctl and pytest are the test environment's own, repacked as wheels. Records that are
only locked (win-64, MKL, a conda Pillow) are metadata without payload.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, envlab, known_stable_failures, make_project
from localchannel import (
    PY,
    PYTAG,
    LocalChannel,
    conda_noarch_from_wheel,
    conda_python_package,
    ensurepip_wheel,
    python_package_files,
    serve,
    wheels_from_installed,
)
from localindex import LocalIndexes
from localindex import serve as serve_index

from envlab.build import channels, conda
from envlab.build.lock import conda_constraints
from envlab.errors import ChannelUnavailable
from envlab.outcome import Outcome
from envlab.results.schema import load
from envlab.spec.envspec import Matrix

DATA = ROOT / "tests" / "data" / "conda"
MATRIX = Matrix(ROOT / "envspecs")
DECLARED = "https://conda.anaconda.org/conda-forge"
OPENBLAS = ["libblas=*=*openblas", "libcblas=*=*openblas", "liblapack=*=*openblas"]
BASE = ["python=" + PY, "pip", "numpy", *OPENBLAS]
SPEC = f"""description = "a stable-conda-shaped env on a local channel"
python = "{PY}"
platforms = ["linux-64", "win-64"]
[unsupported]
osx-arm64 = "no CUDA on macOS"
[torch]
packages = ["torch==2.10.0"]
index = "torchidx"
[expect]
torch-local = "cpu"
blas = "openblas"
"""
# The stack's wheels are the test environment's own, repacked: Linux only for numpy and Pillow and
# for pytest (whose Windows dependency colorama is not installed here), so win-64 locks the rest.
# numpy is in the stack as in the real one: the conda base's numpy must be kept, not replaced.
LINUX = "; sys_platform == 'linux'"
STACK = [f"numpy{LINUX}", f"pillow{LINUX}", "threadpoolctl", f"pytest{LINUX}"]
COMPAT = "-k 'numpy_blas_identified or pillow_installed_by_pip or single_pil_provider'"


# --------------------------------------------------------------------------- the local channel


def _blas(ch: LocalChannel, subdir: str, vendor: str, number: int) -> None:
    """The BLAS selector packages of one vendor (conda-forge's libblas/libcblas/liblapack)."""
    build = f"{number}_{subdir.replace('-', '')}_{vendor}"
    provider = {"openblas": "libopenblas >=0.3.28,<1", "mkl": "mkl >=2024"}[vendor]
    ch.add("libblas", "3.9.0", build, subdir, [provider], build_number=number)
    for name in ("libcblas", "liblapack"):
        ch.add(name, "3.9.0", build, subdir, [f"libblas 3.9.0 {build}"], build_number=number)


def _populate(ch: LocalChannel) -> None:
    ch.add("python", sys.version.split()[0], "h0_0_cpython", "linux-64", [], python_package_files())
    conda_noarch_from_wheel(ch, ensurepip_wheel(), [])
    blas = ["libblas >=3.9.0,<4", "libcblas >=3.9.0,<4", "liblapack >=3.9.0,<4"]
    conda_python_package(ch, "numpy", blas)
    for subdir in ("linux-64", "win-64"):
        ch.add("libopenblas", "0.3.28", "h0_0", subdir)
        ch.add("mkl", "2024.2.2", "h0_0", subdir)
        _blas(ch, subdir, "openblas", 20)
        _blas(ch, subdir, "mkl", 20)
    # numpy built against MKL: a higher build number, so an env without the OpenBLAS pins gets it
    mkl = [f"python {PY}.*", "mkl >=2024", "libblas >=3.9.0,<4 *mkl"]
    ch.add("numpy", "2.4.6", f"{PYTAG}_mkl_h0_1", "linux-64", mkl, build_number=1)
    for subdir in ("linux-64", "win-64"):
        ch.add("pillow", "12.0.0", f"{PYTAG}h0_0", subdir, [f"python {PY}.*"])
    ch.add("python", sys.version.split()[0], "h0_0_cpython", "win-64")
    ch.add("numpy", "2.4.6", f"{PYTAG}h0_0", "win-64", [f"python {PY}.*", *blas])


@pytest.fixture(scope="session")
def channel_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("channel")
    _populate(LocalChannel(root))
    return root


@pytest.fixture(scope="session")
def index_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("index")
    wheels_from_installed(root / "pypi", ["numpy", "pillow", "threadpoolctl", "pytest"])
    # torch needs numpy (as torchvision does), and both indexes serve a newer numpy than conda's:
    # only the conda base's pins keep the torch and stack layers from taking it
    LocalIndexes(root).add("torchidx", "torch", "2.10.0+cpu", requires=[f"numpy{LINUX}"])
    shutil.copytree(root / "pypi" / "numpy", root / "torchidx" / "numpy")
    for index in ("torchidx", "pypi"):
        LocalIndexes(root).add(index, "numpy", "99.0")
    return root


@dataclass
class Lab:
    root: Path
    env: dict[str, str]
    channel: LocalChannel

    def run(self, *args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return envlab("--root", str(self.root), *args, env={**self.env, **(extra or {})})

    @property
    def lockfile(self) -> Path:
        return self.root / "locks" / "c" / "conda-lock.yml"

    @property
    def environment(self) -> Path:
        return self.root / "envspecs" / "c.environment.yml"


def _environment(deps: list[str], chans: list[str] | None = None) -> str:
    return yaml.safe_dump(
        {"channels": chans or ["conda-forge", "nodefaults"], "dependencies": deps}
    )


@pytest.fixture
def lab(tmp_path: Path, channel_root: Path, index_root: Path) -> Iterator[Lab]:
    """A project with env ``c`` (conda base + pip layers), the channel and the index served."""
    copy = tmp_path / "channel"
    shutil.copytree(channel_root, copy)  # tests may break their copy of the channel
    with serve(LocalChannel(copy)) as ch, serve_index(index_root) as idx:
        root = make_project(
            tmp_path,
            indexes={"pypi": idx.url("pypi"), "torchidx": idx.url("torchidx")},
            envs={"c": SPEC},
            stack=STACK,
            copy_suite=True,
        )
        (root / "envspecs" / "c.environment.yml").write_text(_environment(BASE))
        env = {
            "ENVLAB_CHANNEL_CONDA_FORGE": ch.url,
            "ENVLAB_CONDA_PKGS_DIR": str(tmp_path / "conda-cache"),
            "ENVLAB_HOST_ID": "h",
            "ENVLAB_RUN_ID": "r",
            "PATH": _path_without_conda(),
        }
        yield Lab(root, env, ch)


def _path_without_conda() -> str:
    """PATH less any directory holding a conda executable: the engine must need none."""
    dirs = os.environ["PATH"].split(os.pathsep)
    return os.pathsep.join(
        d for d in dirs if not any((Path(d) / exe).exists() for exe in conda.EXECUTABLES)
    )


# --------------------------------------------------------------------------- end to end


@pytest.mark.conda
def test_lock_build_verify_and_compat_without_conda(lab: Lab) -> None:
    done = lab.run("lock")
    assert done.returncode == 0, done.stdout + done.stderr
    content = conda.parse_lockfile(lab.lockfile)
    assert sorted(content.metadata.platforms) == ["linux-64", "win-64"]
    packages = conda.packages_of(content)
    linux = {p.name: p for p in packages if p.platform == "linux-64"}
    win = {p.name: p for p in packages if p.platform == "win-64"}
    assert set(linux) == {
        "python",
        "pip",
        "numpy",
        "libblas",
        "libcblas",
        "liblapack",
        "libopenblas",
    }
    assert set(win) == set(linux)
    assert (
        linux["libblas"].build == "20_linux64_openblas" and linux["numpy"].build == f"{PYTAG}h0_0"
    )
    # the lock keeps the declared channel, hashes of the served files, never the mirror's URL
    for p in packages:
        assert p.url.startswith(DECLARED + "/") and len(p.sha256 or "") == 64 and p.md5
    assert linux["pip"].url == f"{DECLARED}/noarch/{linux['pip'].url.rsplit('/', 1)[1]}"
    for platform in ("linux-64", "win-64"):
        for layer in ("torch", "stack"):
            assert (lab.root / "locks" / "c" / f"pylock.{platform}-{layer}.toml").exists()
    torch = (lab.root / "locks" / "c" / "pylock.linux-64-torch.toml").read_text()
    stack = (lab.root / "locks" / "c" / "pylock.linux-64-stack.toml").read_text()
    # numpy resolved to the conda base's version (not the indexes' newer 99.0), left to conda
    assert 'name = "pillow"' in stack and 'name = "numpy"' not in torch + stack
    assert "numpy-99.0" not in torch + stack
    assert lab.run("lock", "--check").returncode == 0

    done = lab.run("test", "c", "--pytest-args", COMPAT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = load(lab.root / "reports" / "runs" / "r" / "h" / "c.json")
    assert result.outcome is Outcome.BUILT, result.reason
    base = result.build.layers[0]
    assert base.index == "conda" and base.commands[0].argv[0].startswith("py-rattler ")
    checks = {c.name: c for c in result.checks}
    assert checks["numpy-blas"].ok and "openblas" in checks["numpy-blas"].found
    assert checks["pillow-from-pip"].ok
    counts = result.compat.counts()
    assert (counts["passed"], counts["failed"]) == (3, 0), result.compat
    assert result.facts.distributions["numpy"].installer == "conda"
    assert result.facts.distributions["pillow"].installer == "uv"
    _assert_runs_from_prefix(lab.root / ".envlab" / "envs" / "c")


def _assert_runs_from_prefix(prefix: Path) -> None:
    """The relocated interpreter runs from the prefix, with the prefix's libpython loaded."""
    code = (
        "import json, sys, ssl, sqlite3; "
        "maps = [ln.split()[-1] for ln in open('/proc/self/maps') if 'libpython' in ln]; "
        "print(json.dumps([sys.prefix, sorted(set(maps))]))"
    )
    done = subprocess.run(
        [str(prefix / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True
    )
    found_prefix, libs = json.loads(done.stdout)
    assert Path(found_prefix) == prefix
    assert libs and all(Path(lib).is_relative_to(prefix) for lib in libs), libs
    record = next((prefix / "conda-meta").glob("python-*.json"))
    assert json.loads(record.read_text())["name"] == "python"


@pytest.mark.conda
def test_lockfile_round_trips_through_conda_lock(lab: Lab, tmp_path: Path) -> None:
    """conda-lock's own parser reads the lockfile, and its writer writes it back unchanged."""
    from conda_lock.lockfile import parse_conda_lock_file, write_conda_lock_file

    assert lab.run("lock", "--platform", "linux-64").returncode == 0
    parsed = parse_conda_lock_file(lab.lockfile)
    again = tmp_path / "conda-lock.yml"
    write_conda_lock_file(parsed, again, metadata_choices=None)
    assert again.read_text() == lab.lockfile.read_text()
    text = lab.lockfile.read_text()
    assert "conda-lock install -n YOURENV conda-lock.yml" in text  # conda-lock's own help text
    assert yaml.safe_load(text)["version"] == 1  # the layout conda-lock writes (v1 on disk)
    # both engines agree on the content hash: conda-lock's, for the same virtual packages
    assert (
        conda.staleness(Matrix(lab.root / "envspecs").get("c"), lab.environment, lab.lockfile)
        is None
    )


@pytest.mark.conda
@pytest.mark.parametrize(
    ("deps", "message"),
    [
        (["python=" + PY, "numpy"], "MKL is locked as the BLAS"),
        ([*BASE, "pillow"], "pillow 12.0.0 comes from conda; it must come from pip"),
    ],
    ids=["mkl-numpy", "conda-pillow"],
)
def test_lab_rules_refuse_at_lock_time(lab: Lab, deps: list[str], message: str) -> None:
    lab.environment.write_text(_environment(deps))
    done = lab.run("lock", "--platform", "linux-64")
    assert done.returncode == 1
    assert (
        f"c: build-failed: c's conda base breaks the lab's rules: linux-64: {message}"
        in done.stdout
    )
    assert not list((lab.root / "locks").glob("c/*"))  # nothing written, pip layers included


@pytest.mark.conda
def test_stale_conda_lock_is_refused_and_relocked(lab: Lab) -> None:
    assert lab.run("lock", "--platform", "linux-64").returncode == 0
    lab.environment.write_text(_environment([*BASE[:-3], "libblas=*=*openblas"]))
    done = lab.run("lock", "--check")
    assert done.returncode == 1
    assert "c/conda-lock.yml (linux-64, win-64) is stale" in done.stdout
    done = lab.run("test", "c", "--no-compat")
    assert done.returncode == 2 and "is stale" in done.stderr.splitlines()[-1]
    done = lab.run("test", "c", "--no-compat", "--relock")
    assert done.returncode == 0, done.stderr[-2000:]
    assert lab.run("lock", "--check").returncode == 0


@pytest.mark.conda
def test_unlocked_pip_layers_are_held_to_the_conda_base(lab: Lab) -> None:
    """Pip layers resolved at build time (no pylock files): the torch layer too is constrained
    to the conda base's Python packages, so torch's numpy requirement keeps conda's numpy."""
    assert lab.run("lock", "--platform", "linux-64").returncode == 0
    for pylock in lab.lockfile.parent.glob("pylock.*.toml"):
        pylock.unlink()
    done = lab.run("test", "c", "--no-compat")
    assert done.returncode == 0, done.stderr[-3000:]
    result = load(lab.root / "reports" / "runs" / "r" / "h" / "c.json")
    torch = next(layer for layer in result.build.layers if layer.name == "torch")
    argv = torch.commands[0].argv
    pins = Path(argv[argv.index("--constraint") + 1]).read_text().splitlines()
    numpy = conda.python_pins(lab.lockfile, "linux-64")["numpy"]
    assert f"numpy=={numpy}" in pins
    assert result.facts.distributions["numpy"].installer == "conda"
    assert result.facts.distributions["numpy"].version == numpy


@pytest.mark.conda
def test_verify_reports_a_vanished_conda_package_as_gone(lab: Lab) -> None:
    assert lab.run("lock", "--platform", "linux-64").returncode == 0
    done = lab.run("lock", "--verify", "--platform", "linux-64")
    assert done.returncode == 0, done.stdout
    numpy = next((lab.channel.root / "linux-64").glob(f"numpy-*-{PYTAG}h0_0.tar.bz2"))
    numpy.unlink()
    done = lab.run("lock", "--verify", "--platform", "linux-64")
    assert done.returncode == 1
    gone = [ln for ln in done.stdout.splitlines() if ln.startswith("GONE")]
    assert len(gone) == 1 and "c linux-64 conda: numpy 2.4.6" in gone[0] and "HTTP 404" in gone[0]


@pytest.mark.conda
def test_a_tampered_package_fails_the_hash_check(lab: Lab) -> None:
    assert lab.run("lock", "--platform", "linux-64").returncode == 0
    pip = next((lab.channel.root / "noarch").glob("pip-*.tar.bz2"))
    pip.write_bytes(pip.read_bytes() + b"\0")
    done = lab.run("test", "c", "--no-compat")
    assert done.returncode == 2
    assert "c: build-failed: base layer: conda package pip" in done.stderr.splitlines()[-1]
    result = load(lab.root / "reports" / "runs" / "r" / "h" / "c.json")
    assert result.outcome is Outcome.BUILD_FAILED
    assert "conda package pip" in result.reason and "expected sha256" in result.reason
    assert not (lab.root / ".envlab" / "envs" / "c" / "envlab-build.json").exists()


@pytest.mark.conda
def test_unreachable_channel_makes_both_conda_envs_unavailable(tmp_path: Path) -> None:
    """The shipped conda envs, their channel pointed at a closed port: one line each, naming the
    channel and the variable that points it at a mirror."""
    root = make_project(tmp_path, envs={})
    for name in ("stable-conda", "brain-encoders"):
        for suffix in (".toml", ".environment.yml"):
            shutil.copy(ROOT / "envspecs" / f"{name}{suffix}", root / "envspecs")
    env = {"ENVLAB_CHANNEL_CONDA_FORGE": "http://127.0.0.1:9", "PATH": _path_without_conda()}
    done = envlab("--root", str(root), "lock", "--platform", "linux-64", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("stable-conda", "brain-encoders"):
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith(f"{name}:")]
        assert len(lines) == 1
        assert lines[0].startswith(
            f"{name}: unavailable: conda channel 'conda-forge' unreachable (http://127.0.0.1:9): "
        )
        assert lines[0].endswith(
            "set ENVLAB_CHANNEL_CONDA_FORGE to a reachable mirror of " + DECLARED
        )
    done = envlab(
        "--root",
        str(root),
        "test",
        "stable-conda",
        "--no-compat",
        env={**env, "ENVLAB_HOST_ID": "h", "ENVLAB_RUN_ID": "r"},
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("envlab: error: stable-conda: unavailable: conda channel 'conda-forge'")
    assert "ENVLAB_CHANNEL_CONDA_FORGE" in last


@pytest.mark.conda
@pytest.mark.network
def test_shipped_conda_env_locks_from_a_reachable_channel(tmp_path: Path) -> None:
    """With conda-forge (or its mirror, ENVLAB_CHANNEL_CONDA_FORGE) reachable: stable-conda's
    real conda base locks for both platforms within the lab's rules."""
    try:
        channels.probe(channels.channel("conda-forge"), attempts=1)
    except ChannelUnavailable as exc:
        pytest.skip(str(exc))
    root = make_project(tmp_path, envs={}, stack=["rich"])
    for suffix in (".toml", ".environment.yml"):
        shutil.copy(ROOT / "envspecs" / f"stable-conda{suffix}", root / "envspecs")
    done = envlab("--root", str(root), "lock", "stable-conda", "--platform", "linux-64")
    assert done.returncode == 0, done.stdout + done.stderr
    packages = conda.read_lockfile(root / "locks" / "stable-conda" / "conda-lock.yml")
    for platform in ("linux-64", "win-64"):
        assert conda.rule_violations(packages, platform) == []
        blas = next(p for p in packages if p.platform == platform and p.name == "libblas")
        assert "openblas" in (blas.build or "")


# --------------------------------------------------------------------------- real PyPI layers

# Skips of the full suite that are not about the missing GPU: stable-conda declares no NumPy
# major, and inductor's CPU check needs a C++ compiler on the host.
NON_GPU_SKIPS = ("expectation 'numpy_major' not declared", "no C++ compiler on PATH")


@pytest.mark.conda
@pytest.mark.network
@pytest.mark.e2e
@pytest.mark.e2e_extra
@pytest.mark.skipif(PY != "3.11", reason=f"stable-conda is Python 3.11; the channel's is {PY}")
def test_stable_conda_from_the_local_channel_with_pypi_layers(
    channel_root: Path, tmp_path: Path
) -> None:
    """`nox -s lock -- stable-conda --platform linux-64`, then `nox -s test-stable-conda`: the
    shipped envspec and stack, its conda base (python, pip, numpy on OpenBLAS) from the local
    channel, torch cu128 and the stack locked against PyPI on top, and the full compat suite."""
    with serve(LocalChannel(channel_root)) as ch:
        root = make_project(tmp_path, copy_suite=True)  # the shipped indexes: real PyPI
        for name in ("stable-conda.toml", "stack.toml"):
            shutil.copy(ROOT / "envspecs" / name, root / "envspecs")
        # the shipped environment.yml, narrowed to what the local channel packages
        (root / "envspecs" / "stable-conda.environment.yml").write_text(_environment(BASE))
        env = {
            "ENVLAB_CHANNEL_CONDA_FORGE": ch.url,
            "ENVLAB_CONDA_PKGS_DIR": str(tmp_path / "conda-cache"),
            "ENVLAB_HOST_ID": "h",
            "ENVLAB_RUN_ID": "r",
            "PATH": _path_without_conda(),
        }
        # win-64's torch index (download.pytorch.org) is not needed to build here
        done = envlab(
            "--root", str(root), "lock", "stable-conda", "--platform", "linux-64", env=env
        )
        assert done.returncode == 0, done.stdout + done.stderr
        locks = root / "locks" / "stable-conda"
        torch = (locks / "pylock.linux-64-torch.toml").read_text()
        stack = (locks / "pylock.linux-64-stack.toml").read_text()
        assert 'name = "pillow"' in torch  # by pip, with torchvision
        assert 'name = "scipy"' in stack
        # conda's numpy is kept, pinned for the resolution, in neither pip layer
        assert 'name = "numpy"' not in torch + stack
        done = envlab("--root", str(root), "test", "stable-conda", env=env)
    # the same pip wheels as stable (torch, scikit-learn) and no FFmpeg in the narrowed base:
    # stable's known failures on this host, with their reasons, and no other
    known = known_stable_failures()
    assert done.returncode == (1 if known else 0), done.stderr[-4000:]
    result = load(root / "reports" / "runs" / "r" / "h" / "stable-conda.json")
    assert result.outcome is Outcome.BUILT, result.reason
    assert [layer.name for layer in result.build.layers] == ["base", "torch", "stack"]
    assert result.build.layers[0].commands[0].argv[0].startswith("py-rattler ")
    assert all(c.ok for c in result.checks), [c for c in result.checks if not c.ok]
    checks = {c.name: c for c in result.checks}
    assert checks["numpy-blas"].found == "openblas" and checks["pillow-from-pip"].ok
    assert {"torch-local-tag", "arch-covers-sm_120", "matches-lock"} <= set(checks)
    assert result.facts.torch.version == "2.10.0+cu128"
    dists = result.facts.distributions
    assert dists["numpy"].installer == "conda" and dists["pillow"].installer == "uv"
    assert dists["scipy"].installer == "uv"
    compat = result.compat
    assert compat is not None and compat.error is None
    failed = {t.id.split("::", 1)[1]: t for t in compat.tests if t.outcome == "failed"}
    assert len(compat.tests) >= 100 and set(failed) == set(known), failed  # the full suite
    assert all(fragment in (failed[name].message or "") for name, fragment in known.items())
    skipped = [t for t in compat.tests if t.outcome == "skipped"]
    unexplained = [
        t
        for t in skipped
        if not (t.gpu and "no CUDA device" in (t.skip_reason or ""))
        and not (t.skip_reason or "").startswith(NON_GPU_SKIPS)
    ]
    assert not unexplained, unexplained


# --------------------------------------------------------------------------- the conda-lock engine


FAKE_MICROMAMBA = """#!/bin/sh
# Stand-in for micromamba: records its arguments, makes the prefix a plain venv.
echo "$@" >> "{log}"
while [ $# -gt 0 ]; do case "$1" in --prefix) prefix="$2"; shift;; esac; shift; done
exec "{uv}" venv --quiet --python "{python}" "$prefix"
"""


@pytest.mark.conda
def test_conda_lock_engine_installs_the_rattler_lockfile(lab: Lab, tmp_path: Path) -> None:
    """Both engines read the same file: a rattler-written lock, installed by (a stand-in)
    micromamba through the conda-lock engine; without an executable that engine is unavailable."""
    assert lab.run("lock", "--platform", "linux-64").returncode == 0
    done = lab.run("test", "c", "--no-compat", "--conda-engine", "conda-lock")
    assert done.returncode == 2
    assert "c: unavailable: no conda executable (micromamba, mamba, conda) on PATH" in done.stderr
    bindir, log = tmp_path / "bin", tmp_path / "micromamba.log"
    bindir.mkdir()
    exe = bindir / "micromamba"
    exe.write_text(FAKE_MICROMAMBA.format(log=log, uv=shutil.which("uv"), python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    path = f"{bindir}{os.pathsep}{lab.env['PATH']}"
    done = lab.run("test", "c", "--no-compat", "--conda-engine", "conda-lock", extra={"PATH": path})
    result = load(lab.root / "reports" / "runs" / "r" / "h" / "c.json")
    assert result.build.layers[0].commands[0].argv[1:3] == ["create", "--yes"]
    assert log.read_text().split() == [
        "create",
        "--yes",
        "--prefix",
        str(lab.root / ".envlab" / "envs" / "c"),
        "--file",
        str(lab.lockfile),
    ]
    # the stand-in links no conda package: no numpy, so the BLAS check fails, and torch's numpy
    # (left to conda by the lock) is missing
    assert done.returncode == 1 and result.outcome is Outcome.VERIFY_FAILED
    assert result.reason.startswith("numpy-blas: expected numpy/scipy BLAS openblas, found unknown")
    failed = {c.name: c for c in result.checks if not c.ok}
    assert list(failed) == ["numpy-blas", "pip-check"]
    assert "`torch` requires `numpy" in failed["pip-check"].found


@pytest.mark.conda
def test_conda_lock_install_accepts_the_lockfile(lab: Lab, tmp_path: Path) -> None:
    """Where a conda executable exists, `conda-lock install` creates the env from the lockfile."""
    exe = next((shutil.which(x) for x in conda.EXECUTABLES if shutil.which(x)), None)
    if exe is None:
        pytest.skip(
            "no conda executable (micromamba, mamba, conda) on PATH to run conda-lock install"
        )
    # declared as its own URL, so conda fetches from the local channel with no mirror variable
    lab.environment.write_text(_environment(BASE, [lab.channel.url]))
    assert lab.run("lock", "--platform", "linux-64").returncode == 0
    prefix = tmp_path / "prefix"
    done = subprocess.run(
        ["conda-lock", "install", "--conda", exe, "--prefix", str(prefix), str(lab.lockfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (prefix / "bin" / "python").exists()


# --------------------------------------------------------------------------- units


def test_shipped_conda_envs() -> None:
    for name in ("stable-conda", "brain-encoders"):
        spec = MATRIX.get(name)
        env_file = conda.environment_file(MATRIX.dir, spec)
        assert env_file is not None
        deps = yaml.safe_load(env_file.read_text())["dependencies"]
        assert "libblas=*=*openblas" in deps and not any(str(d).startswith("pillow") for d in deps)
        assert f"python={spec.python}" in deps
        assert yaml.safe_load(env_file.read_text())["channels"][0] == "conda-forge"
    assert conda.environment_file(MATRIX.dir, MATRIX.get("stable")) is None
    assert [p.name for p in MATRIX.editables(MATRIX.get("brain-encoders"))] == ["amod-encoder"]


def test_virtual_packages_gpu_and_cpu() -> None:
    gpu = yaml.safe_load(
        conda.virtual_packages(MATRIX.get("stable-conda"), ["linux-64", "win-64", "osx-arm64"])
    )["subdirs"]
    assert gpu["linux-64"]["packages"] == {
        "__unix": "0",
        "__linux": "5.10",
        "__archspec": "1 x86_64",
        "__glibc": "2.28",
        "__cuda": "12.8",
    }
    assert gpu["win-64"]["packages"] == {"__win": "0", "__archspec": "1 x86_64", "__cuda": "12.8"}
    assert "__cuda" not in gpu["osx-arm64"]["packages"]
    cpu = yaml.safe_load(conda.virtual_packages(MATRIX.get("cpu"), ["linux-64"]))["subdirs"]
    assert "__cuda" not in cpu["linux-64"]["packages"]  # nothing CUDA-only solves into a CPU env


def test_conda_lock_command() -> None:
    gpu = MATRIX.get("stable-conda")
    argv = conda.lock_argv(
        gpu, Path("env.yml"), Path("conda-lock.yml"), Path("/opt/bin/micromamba"), Path("vp.yml")
    )
    assert argv[:6] == ["conda-lock", "lock", "--file", "env.yml", "--lockfile", "conda-lock.yml"]
    assert argv.count("--platform") == 2 and "osx-arm64" not in argv
    assert "--micromamba" in argv and argv[-2:] == ["--virtual-package-spec", "vp.yml"]
    argv = conda.lock_argv(
        MATRIX.get("cpu"), Path("e"), Path("l"), Path("/usr/bin/conda"), Path("vp.yml")
    )
    assert argv[argv.index("--conda") + 1] == "/usr/bin/conda" and "--without-cuda" not in argv


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


def test_channel_mirror_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENVLAB_CHANNEL_CONDA_FORGE", raising=False)
    ch = channels.channel("conda-forge")
    assert (ch.url, ch.declared_url, ch.mirrored) == (DECLARED, DECLARED, False)
    monkeypatch.setenv("ENVLAB_CHANNEL_CONDA_FORGE", "http://mirror.test/cf/")
    ch = channels.channel("conda-forge")
    assert ch.url == "http://mirror.test/cf" and ch.env_var == "ENVLAB_CHANNEL_CONDA_FORGE"
    assert ch.effective(f"{DECLARED}/noarch/a.conda") == "http://mirror.test/cf/noarch/a.conda"
    assert ch.declared("http://mirror.test/cf/noarch/a.conda") == f"{DECLARED}/noarch/a.conda"
    own = channels.channel("file:///srv/channels/my-chan")
    assert own.declared_url == "file:///srv/channels/my-chan"
    assert own.env_var == "ENVLAB_CHANNEL_MY_CHAN"


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
