"""Layered builds against local indexes on 127.0.0.1 holding small generated wheels.

Proves the dependency-confusion failure for real: with pip's merged-index strategy
(``--extra-index-url``) a transitive dependency gets the wrong torch; with envlab's layers it gets
the declared one; a clobbered torch is caught by verification; unreachable indexes and missing
wheels are reported.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import envlab, make_project
from localindex import LocalIndexes, serve

from envlab.results.schema import load

DEMO = """
description = "demo: torch from the torch index, a stack that needs torch"
python = "{python}"
platforms = ["linux-64"]
[torch]
packages = ["torch==2.10.0"]
index = "torchidx"
[stack]
add = [{stack}]
[expect]
torch-version = "2.10.0"
torch-local = "cpu"
cpu-only = true
"""
NIGHTLY = DEMO.replace(
    "[expect]", '[nightly]\npackages = ["torch"]\nindex = "nightlyidx"\n[expect]'
).replace('torch-version = "2.10.0"\ntorch-local = "cpu"', "nightly-max-age-days = 100000")
PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def populate(idx: LocalIndexes) -> None:
    idx.add("torchidx", "torch", "2.10.0+cpu", ["filelock"])
    idx.add("torchidx", "filelock", "3.0")
    idx.add("pypi", "torch", "2.10.0", ["filelock", "nvidia-cublas-cu12"])
    idx.add("pypi", "torch", "2.11.0", ["filelock", "nvidia-cublas-cu12"])
    idx.add("pypi", "nvidia-cublas-cu12", "12.8.4.1")
    idx.add("pypi", "filelock", "3.0")
    idx.add("pypi", "timmish", "1.0", ["torch>=2"])
    idx.add("pypi", "oldtorchpkg", "1.0", ["torch<2"])
    idx.add("pypi", "torch", "1.13.1", ["filelock"])
    idx.add("nightlyidx", "torch", "2.12.0.dev20261120+cpu", ["filelock"])
    idx.add("nightlyidx", "filelock", "3.0")


@pytest.fixture
def indexes(tmp_path: Path) -> Iterator[LocalIndexes]:
    with serve(tmp_path / "index", delays={"timmish": 0.0}) as idx:
        populate(idx)
        yield idx


def project(
    tmp_path: Path, idx: LocalIndexes, stack: str = '"timmish"', text: str = DEMO
) -> tuple[Path, dict[str, str]]:
    """A project whose indexes.toml declares public URLs; the local index is set as their mirror."""
    root = make_project(
        tmp_path,
        indexes={
            "pypi": "https://pypi.org/simple",
            "torchidx": "https://download.pytorch.org/whl/cpu",
            "nightlyidx": "https://download.pytorch.org/whl/nightly/cpu",
        },
        envs={"demo": text.format(python=PY, stack=stack)},
        stack=[],
    )
    env = {
        **idx.mirrors("pypi", "torchidx", "nightlyidx"),
        "ENVLAB_HOST_ID": "testhost",
        "ENVLAB_RUN_ID": "run1",
    }
    return root, env


def only_result(root: Path) -> dict:
    files = list((root / "reports" / "runs").glob("*/*/*.json"))
    assert len(files) == 1, files
    return json.loads(load(files[0]).model_dump_json())


def test_extra_index_url_lets_a_transitive_dependency_pick_the_wrong_torch(
    indexes: LocalIndexes, tmp_path: Path
) -> None:
    """pip's strategy merges all indexes and takes the best version anywhere: the classic bug."""
    argv = [
        "uv",
        "pip",
        "compile",
        "--no-config",
        "--python-version",
        PY,
        "-",
        "--index-url",
        indexes.url("torchidx"),
        "--extra-index-url",
        indexes.url("pypi"),
        "--index-strategy",
        "unsafe-best-match",
    ]  # pip's behaviour with --extra-index-url
    done = subprocess.run(
        argv, input="torch\ntimmish\n", capture_output=True, text=True, check=True
    )
    assert "torch==2.11.0" in done.stdout  # PyPI's torch, not the torch index's 2.10.0+cpu
    assert "nvidia-cublas-cu12" in done.stdout


def test_layers_keep_the_declared_torch(indexes: LocalIndexes, tmp_path: Path) -> None:
    root, env = project(tmp_path, indexes)
    done = envlab("--root", str(root), "test", "demo", "--no-compat", env=env)
    assert done.returncode == 0, done.stderr
    result = only_result(root)
    assert result["outcome"] == "built", result["reason"]
    assert [layer["name"] for layer in result["build"]["layers"]] == ["base", "torch", "stack"]
    torch_layer, stack_layer = result["build"]["layers"][1:]
    assert torch_layer["index_url"] == indexes.url("torchidx")
    argv = torch_layer["commands"][0]["argv"]
    assert argv[argv.index("--index-url") + 1] == indexes.url("torchidx")
    assert (
        "--extra-index-url" not in argv
        and "--extra-index-url" not in stack_layer["commands"][0]["argv"]
    )
    assert "--constraint" in stack_layer["commands"][0]["argv"]
    dists = result["facts"]["distributions"]
    assert dists["torch"]["version"] == "2.10.0+cpu" and "timmish" in dists
    assert not any(n.startswith("nvidia-") for n in dists)
    assert all(c["ok"] for c in result["checks"]), result["checks"]
    assert result["facts"]["torch"]["cuda"] is None


def test_second_run_reuses_the_env(indexes: LocalIndexes, tmp_path: Path) -> None:
    root, env = project(tmp_path, indexes)
    assert envlab("--root", str(root), "test", "demo", "--no-compat", env=env).returncode == 0
    env["ENVLAB_RUN_ID"] = "run2"
    done = envlab("--root", str(root), "test", "demo", "--no-compat", env=env)
    assert done.returncode == 0
    assert "reusing" in done.stderr and "layer torch" not in done.stderr
    result = load(root / "reports" / "runs" / "run2" / "testhost" / "demo.json")
    assert result.build.reused and result.outcome == "built"


def test_a_clobbered_torch_is_caught(indexes: LocalIndexes, tmp_path: Path) -> None:
    root, env = project(tmp_path, indexes)
    assert envlab("--root", str(root), "test", "demo", "--no-compat", env=env).returncode == 0
    python = root / ".envlab" / "envs" / "demo" / "bin" / "python"
    subprocess.run(
        [
            "uv",
            "pip",
            "install",
            "--no-config",
            "--python",
            str(python),
            "--index-url",
            indexes.url("pypi"),
            "torch==2.11.0",
        ],
        check=True,
        capture_output=True,
    )
    env["ENVLAB_RUN_ID"] = "run2"
    done = envlab("--root", str(root), "test", "demo", "--no-compat", env=env)
    assert done.returncode == 1
    result = load(root / "reports" / "runs" / "run2" / "testhost" / "demo.json")
    assert result.outcome == "verify-failed"
    failed = {c.name: c for c in result.checks if not c.ok}
    assert failed["torch-layer-intact"].found == "torch 2.11.0"
    assert (
        failed["torch-layer-intact"].message
        == "torch was replaced by something installed after the build"
    )
    assert (
        "no-nvidia-dists" in failed and "cpu-only-torch" not in failed
    )  # the fake 2.11.0 reports no CUDA


def test_stack_needing_another_torch_is_an_error_naming_the_package(
    indexes: LocalIndexes, tmp_path: Path
) -> None:
    root, env = project(tmp_path, indexes, stack='"oldtorchpkg"')
    done = envlab("--root", str(root), "test", "demo", "--no-compat", env=env)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "envlab: error: demo: build-failed: stack layer: oldtorchpkg requires torch<2"
    ), last
    assert only_result(root)["outcome"] == "build-failed"
    envs = root / ".envlab" / "envs"
    assert not [p.name for p in envs.iterdir() if p.is_dir()], "no half-built env left behind"


def test_unreachable_index_is_unavailable_in_one_line(
    indexes: LocalIndexes, tmp_path: Path
) -> None:
    root, env = project(tmp_path, indexes)
    env["ENVLAB_INDEX_TORCHIDX"] = "http://127.0.0.1:9/simple"
    done = envlab("--root", str(root), "test", "demo", env=env)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "envlab: error: demo: unavailable: index 'torchidx' unreachable (http://127.0.0.1:9/simple)"
    )
    assert (
        "set ENVLAB_INDEX_TORCHIDX to a reachable mirror of https://download.pytorch.org/whl/cpu"
        in last
    )
    assert "Traceback" not in done.stderr
    assert only_result(root)["outcome"] == "unavailable"
    envs = root / ".envlab" / "envs"
    assert not envs.exists() or not [p for p in envs.iterdir() if p.is_dir()], "nothing built"


def test_missing_wheel_is_unavailable(indexes: LocalIndexes, tmp_path: Path) -> None:
    root, env = project(tmp_path, indexes, text=DEMO.replace("torch==2.10.0", "torch==2.1.2"))
    done = envlab("--root", str(root), "test", "demo", "--no-compat", env=env)
    assert done.returncode == 2
    result = only_result(root)
    assert result["outcome"] == "unavailable"
    assert "torch layer: wheel missing: torch==2.1.2" in result["reason"]
    assert f"index 'torchidx' ({indexes.url('torchidx')})" in result["reason"]


def test_nightly_is_forced_last_with_pre(indexes: LocalIndexes, tmp_path: Path) -> None:
    root, env = project(tmp_path, indexes, text=NIGHTLY)
    done = envlab("--root", str(root), "test", "demo", "--no-compat", env=env)
    assert done.returncode == 0, done.stderr
    result = only_result(root)
    layers = result["build"]["layers"]
    assert [layer["name"] for layer in layers] == ["base", "torch", "stack", "nightly"]
    argv = layers[-1]["commands"][0]["argv"]
    assert "--prerelease=allow" in argv and argv[argv.index("--reinstall-package") + 1] == "torch"
    assert argv[argv.index("--index-url") + 1] == indexes.url("nightlyidx")
    assert result["facts"]["torch"]["version"] == "2.12.0.dev20261120+cpu"
    assert {c["name"]: c["ok"] for c in result["checks"]}["nightly-fresh"]


def test_an_interrupted_build_is_never_reused(tmp_path: Path) -> None:
    with serve(tmp_path / "index", delays={"timmish": 30.0}) as idx:
        populate(idx)
        root, env = project(tmp_path, idx)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "envlab.cli",
                "--root",
                str(root),
                "test",
                "demo",
                "--no-compat",
            ],
            env={**os.environ, **env},
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        for line in proc.stderr:
            if "layer stack" in line or time.monotonic() > deadline:
                break
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        envs = root / ".envlab" / "envs"
        assert not (envs / "demo").exists(), "the env appears only when complete"
        assert [p.name for p in envs.iterdir() if p.name.startswith(".demo.partial-")]
    with serve(tmp_path / "index") as idx2:
        _, env2 = project(tmp_path / "again", idx2)
        env.update({k: v for k, v in env2.items() if k.startswith("ENVLAB_INDEX_")})
        done = envlab("--root", str(root), "test", "demo", "--no-compat", env=env)
        assert done.returncode == 0, done.stderr
        assert "reusing" not in done.stderr and "layer torch" in done.stderr
        leftovers = (root / ".envlab" / "envs").iterdir()
        assert not [p for p in leftovers if p.name.startswith(".") and p.is_dir()]
    shutil.rmtree(root / ".envlab")
