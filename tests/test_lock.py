"""Lockfiles on local indexes: golden content, staleness, exact installs, drift, tampering, diff."""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import envlab, make_project
from localindex import LocalIndexes, serve

from envlab.build.lock import check_file, read
from envlab.results.schema import load

PY = f"{sys.version_info.major}.{sys.version_info.minor}"
SPEC = f"""
description = "demo"
python = "{PY}"
platforms = ["linux-64", "win-64"]
[unsupported]
osx-arm64 = "no such build"
[torch]
packages = ["torch==2.10.0"]
index = "torchidx"
[stack]
add = ["timmish"]
[expect]
torch-local = "cpu"
"""


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], LocalIndexes]]:
    with serve(tmp_path / "index") as idx:
        idx.add("torchidx", "torch", "2.10.0+cpu", ["filelock"])
        idx.add("torchidx", "filelock", "3.0")
        idx.add(
            "torchidx", "numpy", "9.9"
        )  # the torch index mirrors numpy too: the stack must not use it
        idx.add("pypi", "torch", "2.11.0", ["filelock"])
        idx.add("pypi", "filelock", "3.1")
        idx.add("pypi", "numpy", "2.0")
        idx.add("pypi", "timmish", "1.0", ["torch>=2", "numpy"])
        root = make_project(
            tmp_path,
            indexes={
                "pypi": "https://pypi.org/simple",
                "torchidx": "https://download.pytorch.org/whl/cpu",
            },
            envs={"demo": SPEC},
            stack=[],
        )
        env = {
            **idx.mirrors("pypi", "torchidx"),
            "ENVLAB_HOST_ID": "h",
            "ENVLAB_RUN_ID": "r1",
        }
        yield root, env, idx


def lock_ok(root: Path, env: dict[str, str], *args: str) -> str:
    done = envlab("--root", str(root), "lock", *args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_lock_writes_hashed_per_platform_locks(setup, golden: Callable[[str, str], None]) -> None:
    root, env, _ = setup
    out = lock_ok(root, env)
    assert "demo osx-arm64: skipped: declared unsupported (no such build)" in out
    locks = sorted(p.name for p in (root / "locks" / "demo").iterdir())
    assert locks == [
        "pylock.linux-64-stack.toml",
        "pylock.linux-64-torch.toml",
        "pylock.win-64-stack.toml",
        "pylock.win-64-torch.toml",
    ]
    torch_lock = read(root / "locks" / "demo" / "pylock.linux-64-torch.toml")
    stack_lock = read(root / "locks" / "demo" / "pylock.linux-64-stack.toml")
    assert torch_lock.packages == {"filelock": "3.0", "torch": "2.10.0+cpu"}
    assert stack_lock.packages == {
        "numpy": "2.0",
        "timmish": "1.0",
    }  # numpy from PyPI, not the torch index
    for f in torch_lock.files + stack_lock.files:
        assert f.sha256 and len(f.sha256) == 64
    # locks record the declared URLs, not the mirror that served them
    assert all(f.url.startswith("https://download.pytorch.org/whl/cpu/") for f in torch_lock.files)
    assert all(f.url.startswith("https://pypi.org/simple/") for f in stack_lock.files)
    golden(
        "pylock.linux-64-torch.toml",
        (root / "locks" / "demo" / "pylock.linux-64-torch.toml").read_text(),
    )
    golden(
        "pylock.linux-64-stack.toml",
        (root / "locks" / "demo" / "pylock.linux-64-stack.toml").read_text(),
    )
    tomllib.loads((root / "locks" / "demo" / "pylock.win-64-stack.toml").read_text())  # valid TOML


def test_check_passes_then_fails_after_a_spec_edit(setup) -> None:
    root, env, _ = setup
    lock_ok(root, env)
    assert "lock is up to date" in lock_ok(root, env, "--check")
    spec = root / "envspecs" / "demo.toml"
    spec.write_text(spec.read_text().replace('add = ["timmish"]', 'add = ["timmish", "numpy<3"]'))
    done = envlab("--root", str(root), "lock", "--check", env=env)
    assert done.returncode == 1
    assert "locks/demo (linux-64) is stale" in done.stdout and "stale locks: demo" in done.stdout
    # test-<env> refuses the stale lock in one line, and relocks when asked
    done = envlab("--root", str(root), "test", "demo", "--no-compat", env=env)
    assert done.returncode == 2 and "is stale" in done.stderr.strip().splitlines()[-1]
    done = envlab("--root", str(root), "test", "demo", "--no-compat", "--relock", env=env)
    assert done.returncode == 0, done.stderr
    assert "lock is up to date" in lock_ok(root, env, "--check", "--platform", "linux-64")


def test_build_from_lock_installs_exactly_the_locked_set(setup) -> None:
    root, env, _ = setup
    lock_ok(root, env)
    done = envlab("--root", str(root), "test", "demo", "--no-compat", env=env)
    assert done.returncode == 0, done.stderr
    result = load(root / "reports" / "runs" / "r1" / "h" / "demo.json")
    checks = {c.name: c for c in result.checks}
    assert checks["matches-lock"].ok, checks["matches-lock"]
    assert result.build.lock and "pylock.linux-64-torch.toml" in result.build.lock
    for layer in result.build.layers[1:]:
        argv = layer.commands[0].argv
        assert "-r" in argv and Path(argv[argv.index("-r") + 1]).name.startswith("pylock.linux-64-")
    assert result.facts.versions() == {
        "filelock": "3.0",
        "torch": "2.10.0+cpu",
        "numpy": "2.0",
        "timmish": "1.0",
    }


def test_a_changed_file_hash_refuses_the_install(setup) -> None:
    root, env, idx = setup
    lock_ok(root, env)
    idx.remove("pypi", "timmish", "1.0")
    idx.add("pypi", "timmish", "1.0", ["torch>=2", "numpy"], payload="# tampered\n")
    done = envlab("--root", str(root), "test", "demo", "--no-compat", env=env)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert (
        "build-failed: stack layer: a downloaded file does not match its locked hash, "
        "install refused" in last
    )
    assert not (root / ".envlab" / "envs" / "demo").exists()


def test_drift_reports_vanished_files(setup) -> None:
    root, env, idx = setup
    lock_ok(root, env)
    assert "0 gone, 0 unreachable (network)" in lock_ok(root, env, "--verify")
    idx.remove(
        "torchidx", "torch", "2.10.0+cpu"
    )  # the index drops a wheel (as torch==2.1.2+cu118 vanished from cu118)
    done = envlab("--root", str(root), "lock", "--verify", env=env)
    assert done.returncode == 1
    gone = [ln for ln in done.stdout.splitlines() if ln.startswith("GONE")]
    # checked on the mirror set for the index (the local one), never at the declared URL
    assert len(gone) == 2 and all(
        "torch 2.10.0+cpu" in ln and "not on the mirror" in ln for ln in gone
    )


def test_network_failure_is_not_gone() -> None:
    state, detail = check_file("http://127.0.0.1:9/x.whl", attempts=2, timeout=1, backoff=0.01)
    assert state == "network" and "after 2 attempts" in detail


def test_diff_shows_upgrades_without_writing(setup) -> None:
    root, env, idx = setup
    lock_ok(root, env)
    before = (root / "locks" / "demo" / "pylock.linux-64-stack.toml").read_text()
    idx.add("pypi", "timmish", "1.1", ["torch>=2", "numpy"])
    out = lock_ok(root, env, "--diff", "--platform", "linux-64")
    assert "demo linux-64 stack: 1 change(s)" in out and "~ timmish 1.0 -> 1.1" in out
    assert "demo linux-64 torch: no change" in out
    assert (root / "locks" / "demo" / "pylock.linux-64-stack.toml").read_text() == before


def test_unreachable_index_is_reported_and_others_still_lock(setup) -> None:
    root, env, _ = setup
    (root / "envspecs" / "other.toml").write_text(
        SPEC.replace('index = "torchidx"', 'index = "pypi"')
        .replace("torch==2.10.0", "torch==2.11.0")
        .replace('torch-local = "cpu"', "")
    )
    env = {**env, "ENVLAB_INDEX_TORCHIDX": "http://127.0.0.1:9/simple"}
    out = lock_ok(root, env)
    assert (
        "demo linux-64: unavailable: torch layer: index 'torchidx' (http://127.0.0.1:9/simple) "
        "unreachable" in out
    )
    assert (root / "locks" / "other" / "pylock.linux-64-torch.toml").exists()
    assert not (root / "locks" / "demo").exists()
