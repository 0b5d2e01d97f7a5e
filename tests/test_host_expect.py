"""`test-host --expect ENV` runs every check of that env on an interpreter envlab did not build:
the expectations, integrity, and conformance to the env's committed lock for this platform."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import envlab, make_project
from localindex import LocalIndexes, serve

from envlab.build.uv import find_executable
from envlab.results.schema import Result, load

PY = f"{sys.version_info.major}.{sys.version_info.minor}"
SPEC = f"""
description = "demo"
python = "{PY}"
platforms = ["linux-64"]
[torch]
packages = ["torch==2.10.0"]
index = "torchidx"
[stack]
add = ["timmish"]
[expect]
torch-local = "cpu"
"""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], LocalIndexes]]:
    with serve(tmp_path / "index") as idx:
        idx.add("torchidx", "torch", "2.10.0+cpu", ["filelock"])
        idx.add("torchidx", "filelock", "3.0")
        idx.add("pypi", "filelock", "3.0")
        idx.add("pypi", "filelock", "3.1")
        idx.add("pypi", "timmish", "1.0", ["torch>=2"])
        root = make_project(
            tmp_path,
            indexes={"pypi": "https://pypi.org/simple", "torchidx": "https://x/whl/cpu"},
            envs={"demo": SPEC},
            stack=[],
        )
        env = {
            **idx.mirrors("pypi", "torchidx"),
            "ENVLAB_HOST_ID": "h",
        }
        done = envlab("--root", str(root), "lock", "--platform", "linux-64", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        done = envlab("--root", str(root), "test", "demo", "--no-compat", env=env)
        assert done.returncode == 0, done.stderr
        yield root, env, idx


def host_run(root: Path, env: dict[str, str], run_id: str) -> Result:
    python = root / ".envlab" / "envs" / "demo" / "bin" / "python"
    argv = ["--root", str(root), "test-host", "--python", str(python), "--expect", "demo"]
    done = envlab(*argv, "--name", "there", env={**env, "ENVLAB_RUN_ID": run_id})
    assert done.returncode in (0, 1), done.stderr  # 1: no pytest in the env, so no compat suite
    return load(root / "reports" / "runs" / run_id / "h" / "there.json")


def test_lock_conformance_and_integrity_apply_to_an_existing_interpreter(
    lab: tuple[Path, dict[str, str], LocalIndexes],
) -> None:
    root, env, idx = lab
    clean = host_run(root, env, "t1")
    checks = {c.name: c for c in clean.checks}
    assert {"matches-lock", "installed-files-intact", "pip-check", "torch-build-features"} <= set(
        checks
    )
    assert all(c.ok for c in clean.checks), [c for c in clean.checks if not c.ok]
    assert checks["matches-lock"].found == "3 installed, all locked"
    python = root / ".envlab" / "envs" / "demo" / "bin" / "python"
    argv = [find_executable(), "pip", "install", "--no-config", "--python", str(python)]
    argv += ["--index-url", idx.url("pypi"), "filelock==3.1"]
    subprocess.run(argv, check=True, capture_output=True)
    moved = host_run(root, env, "t2")
    failed = {c.name: c for c in moved.checks if not c.ok}
    assert moved.outcome == "verify-failed"
    assert failed["matches-lock"].found == "other version: filelock 3.1 (locked 3.0)"
    assert "Fix: rebuild it from the lock" in failed["matches-lock"].message
