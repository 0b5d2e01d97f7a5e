"""The locks committed in locks/ match the envspecs (an edit without relocking fails here) and pin
the builds the envs ask for."""

from __future__ import annotations

import pytest
from helpers import ROOT

from envlab.build import lock
from envlab.project import Project
from envlab.spec.envspec import Matrix

PROJECT = Project(ROOT)
MATRIX = Matrix(PROJECT.envspecs)
LOCKED = [(s, p) for s in MATRIX.all() for p in s.platforms if lock.env_locks(PROJECT, s, p)]


def test_some_locks_are_committed() -> None:
    assert {(s.name, p) for s, p in LOCKED} >= {("stable", "linux-64"), ("cpu", "osx-arm64")}


@pytest.mark.parametrize(("spec", "platform"), LOCKED, ids=[f"{s.name}-{p}" for s, p in LOCKED])
def test_committed_lock_is_fresh(spec, platform: str) -> None:
    locks = lock.env_locks(PROJECT, spec, platform)
    assert locks is not None
    assert lock.staleness(MATRIX, spec, locks, platform) is None
    for layer in locks.values():
        assert layer.files and all(f.sha256 and len(f.sha256) == 64 for f in layer.files)


def test_stable_linux_lock_is_the_cu128_build() -> None:
    torch_layer = lock.read(lock.lock_path(PROJECT, "stable", "linux-64", "torch"))
    assert torch_layer.packages["torch"] == "2.10.0"
    assert torch_layer.packages["nvidia-cudnn-cu12"].startswith("9.10")
    assert torch_layer.packages["nvidia-cuda-runtime-cu12"].startswith("12.8")


def test_cpu_macos_lock_has_no_cuda_wheels() -> None:
    torch_layer = lock.read(lock.lock_path(PROJECT, "cpu", "osx-arm64", "torch"))
    assert torch_layer.packages["torch"] == "2.10.0"
    assert not [n for n in torch_layer.packages if n.startswith("nvidia-")]
    assert all(
        "macosx" in f.url for f in torch_layer.files if f.name == "torch" and f.url.endswith(".whl")
    )
