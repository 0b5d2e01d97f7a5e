"""Freshness before reuse: an env whose build-time layers' index moved is rebuilt onto the newer
versions (a new nightly, a new release for an unlocked env); ``--no-refresh`` keeps it and says so.
Local indexes on 127.0.0.1 publish the newer versions between two runs."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import envlab, make_project
from localindex import LocalIndexes, build_wheel, serve

from envlab.build import freshness
from envlab.results.schema import Result, load
from envlab.spec.indexes import Index

PY = f"{sys.version_info.major}.{sys.version_info.minor}"
SPEC = """
description = "demo: resolved at build time, with a nightly layer"
python = "{python}"
platforms = ["linux-64"]
[torch]
packages = ["torch==2.10.0"]
index = "torchidx"
[stack]
add = ["timmish"]
[nightly]
packages = ["torch"]
index = "nightlyidx"
[expect]
nightly-max-age-days = 100000
"""


@pytest.fixture
def indexes(tmp_path: Path) -> Iterator[LocalIndexes]:
    with serve(tmp_path / "index") as idx:
        idx.add("torchidx", "torch", "2.10.0+cpu", ["filelock"])
        idx.add("torchidx", "filelock", "3.0")
        idx.add("pypi", "filelock", "3.0")
        idx.add("pypi", "timmish", "1.0", ["torch>=2"])
        idx.add("nightlyidx", "torch", "2.12.0.dev20261120+cpu", ["filelock"])
        idx.add("nightlyidx", "filelock", "3.0")
        yield idx


def project(tmp_path: Path, idx: LocalIndexes) -> tuple[Path, dict[str, str]]:
    root = make_project(
        tmp_path,
        indexes={
            "pypi": "https://pypi.org/simple",
            "torchidx": "https://download.pytorch.org/whl/cpu",
            "nightlyidx": "https://download.pytorch.org/whl/nightly/cpu",
        },
        envs={"demo": SPEC.format(python=PY)},
        stack=[],
    )
    env = {
        **idx.mirrors("pypi", "torchidx", "nightlyidx"),
        "ENVLAB_HOST_ID": "testhost",
    }
    return root, env


def run(root: Path, env: dict[str, str], run_id: str, *extra: str) -> tuple[Result, str]:
    argv = ["--root", str(root), "test", "demo", "--no-compat", *extra]
    done = envlab(*argv, env={**env, "ENVLAB_RUN_ID": run_id})
    assert done.returncode == 0, done.stderr[-3000:]
    return load(root / "reports" / "runs" / run_id / "testhost" / "demo.json"), done.stderr


def test_a_new_nightly_on_the_index_rebuilds_and_no_refresh_keeps_the_env(
    indexes: LocalIndexes, tmp_path: Path
) -> None:
    root, env = project(tmp_path, indexes)
    first, _ = run(root, env, "r1")
    assert not first.build.reused and first.facts.torch.version == "2.12.0.dev20261120+cpu"
    assert {c.name: c.found for c in first.checks}["index-fresh"] == "up to date"

    same, log = run(root, env, "r2")
    assert same.build.reused and "the index serves nothing newer" in log

    indexes.add("nightlyidx", "torch", "2.12.0.dev20261121+cpu", ["filelock"])
    kept, log = run(root, env, "r3", "--no-refresh")
    moved = "torch 2.12.0.dev20261120+cpu -> 2.12.0.dev20261121+cpu (index 'nightlyidx')"
    assert f"--no-refresh: reusing the env although the index moved since: {moved}" in log
    assert kept.build.reused and kept.facts.torch.version == "2.12.0.dev20261120+cpu"
    fresh = {c.name: c for c in kept.checks}["index-fresh"]
    assert fresh.ok and fresh.found == f"older: {moved}"
    assert fresh.message.startswith("warning: kept by --no-refresh")

    rebuilt, log = run(root, env, "r4")
    assert f"the index moved since the build: {moved}: rebuilding" in log
    assert not rebuilt.build.reused and rebuilt.facts.torch.version == "2.12.0.dev20261121+cpu"
    assert {c.name: c.found for c in rebuilt.checks}["index-fresh"] == "rebuilt onto them"
    again, log = run(root, env, "r5")
    assert again.build.reused, log  # what the index served at the rebuild is the new baseline


def test_a_new_release_of_an_unlocked_package_rebuilds_onto_it(
    indexes: LocalIndexes, tmp_path: Path
) -> None:
    root, env = project(tmp_path, indexes)
    first, _ = run(root, env, "r1")
    assert first.facts.distributions["timmish"].version == "1.0"
    indexes.add("pypi", "timmish", "1.1", ["torch>=2"])
    rebuilt, log = run(root, env, "r2")
    assert "timmish 1.0 -> 1.1 (index 'pypi'): rebuilding" in log
    assert not rebuilt.build.reused and rebuilt.facts.distributions["timmish"].version == "1.1"


def test_an_unreachable_index_keeps_the_env_and_says_so(tmp_path: Path) -> None:
    with serve(tmp_path / "index") as idx:
        for index in ("torchidx", "nightlyidx"):
            idx.add(index, "filelock", "3.0")
        idx.add("torchidx", "torch", "2.10.0+cpu", ["filelock"])
        idx.add("nightlyidx", "torch", "2.12.0.dev20261120+cpu", ["filelock"])
        idx.add("pypi", "filelock", "3.0")
        idx.add("pypi", "timmish", "1.0", ["torch>=2"])
        root, env = project(tmp_path, idx)
        run(root, env, "r1")
    kept, log = run(root, env, "r2")  # the same indexes, now gone
    assert kept.build.reused and "freshness: could not ask the index" in log
    fresh = {c.name: c for c in kept.checks}["index-fresh"]
    assert fresh.found == "unknown" and "Connection refused" in fresh.message


@pytest.mark.parametrize(
    ("filename", "python", "platform", "offered"),
    [
        ("torch-2.10.0-cp311-cp311-manylinux_2_28_x86_64.whl", "3.11", "linux-64", True),
        ("torch-2.10.0-cp312-cp312-manylinux_2_28_x86_64.whl", "3.11", "linux-64", False),
        ("torch-2.10.0-cp311-cp311-macosx_11_0_arm64.whl", "3.11", "linux-64", False),
        ("torch-2.10.0-cp311-cp311-macosx_11_0_arm64.whl", "3.11", "osx-arm64", True),
        ("torch-2.10.0-cp311-cp311-win_amd64.whl", "3.11", "win-64", True),
        ("av-19.0.2-cp312-abi3-manylinux_2_28_x86_64.whl", "3.11", "linux-64", False),
        ("av-19.0.2-cp312-abi3-manylinux_2_28_x86_64.whl", "3.13", "linux-64", True),
        ("timmish-1.0-py3-none-any.whl", "3.11", "win-64", True),
        ("timmish-1.0.tar.gz", "3.11", "linux-64", True),
        ("timmish-1.0-cp311-cp311-manylinux_2_28_aarch64.whl", "3.11", "linux-64", False),
    ],
)
def test_which_files_count_for_an_env(
    filename: str, python: str, platform: str, offered: bool
) -> None:
    assert (freshness._version_of(filename, python, platform) is not None) is offered


def test_newest_honours_the_specifier_and_pre_releases(tmp_path: Path) -> None:
    folder = tmp_path / "idx" / "torch"
    for version in ("2.10.0+cpu", "2.11.0+cpu", "2.12.0.dev20261121+cpu"):
        build_wheel(folder, "torch", version)
    index = Index("idx", (tmp_path / "idx").as_uri(), "https://x/simple", "")
    ask = {"python": PY, "platform": "linux-64"}
    assert freshness.newest(index, "torch", pre=False, **ask) == "2.11.0+cpu"
    assert freshness.newest(index, "torch", pre=True, **ask) == "2.12.0.dev20261121+cpu"
    assert freshness.newest(index, "torch==2.10.0", pre=False, **ask) == "2.10.0+cpu"
    assert freshness.newest(index, "torch<2", pre=False, **ask) is None


def test_a_release_whose_wheels_all_need_a_newer_python_is_not_offered_by_its_sdist() -> None:
    files = [
        "av-18.1.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        "av-18.1.0.tar.gz",
        "av-19.0.2-cp312-abi3-manylinux_2_28_x86_64.whl",
        "av-19.0.2.tar.gz",
        "onlysdist-1.0.tar.gz",
    ]
    offered = {str(v) for v in freshness._offered(files, "3.11", "linux-64")}
    assert offered == {"18.1.0", "1.0"}
    assert "19.0.2" in {str(v) for v in freshness._offered(files, "3.12", "linux-64")}
