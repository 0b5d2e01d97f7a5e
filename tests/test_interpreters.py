"""Finding the requested Python: the base interpreter (not a venv's); a useful error when absent."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from envlab.build import interpreters
from envlab.errors import InterpreterNotFound


def test_finds_this_version_as_a_base_interpreter() -> None:
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = interpreters.find(minor)
    assert found.minor == minor and found.path.exists()
    # never a venv's python (a nox or tox session's venv must not leak into build keys)
    assert not (found.path.parent.parent / "pyvenv.cfg").exists()


def test_absent_version_lists_what_was_found() -> None:
    with pytest.raises(InterpreterNotFound) as info:
        interpreters.find("3.99")
    message = str(info.value)
    assert message.startswith(
        "Python 3.99 not found (looked on PATH, in pyenv versions and uv's interpreters); found: "
    )
    assert f"{sys.version_info.major}.{sys.version_info.minor}." in message
    assert "uv python install 3.99" in message and "\n" not in message


def test_candidates_include_pyenv_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "pyenv" / "versions" / "3.42.1" / "bin"
    fake.mkdir(parents=True)
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    assert fake / "python3.42" in interpreters.candidates("3.42")
