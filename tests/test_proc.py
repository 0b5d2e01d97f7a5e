"""The one subprocess wrapper: logs the quoted command, captures output,
typed error with the code."""

from __future__ import annotations

import pytest

from envlab import log
from envlab.errors import CommandError
from envlab.proc import run


def test_captures_output_and_logs_the_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log, "_VERBOSE", True)  # command lines are details (-v)
    done = run(["sh", "-c", "echo 'hello world'; echo err >&2"])
    assert done.returncode == 0 and done.output == "hello world\nerr\n"
    assert "$ sh -c 'echo '\"'\"'hello world'\"'\"'; echo err >&2'" in capsys.readouterr().err


def test_failure_raises_with_code_and_shows_output(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CommandError) as info:
        run(["sh", "-c", "echo boom; exit 3"])
    assert info.value.returncode == 3 and "boom" in info.value.output
    assert "command failed with exit code 3" in str(info.value) and "(boom)" in str(info.value)
    assert "    | boom" in capsys.readouterr().err


def test_missing_executable_is_a_command_error() -> None:
    with pytest.raises(CommandError, match="exit code 127"):
        run(["envlab-no-such-program"])


def test_timeout_kills_a_silent_command() -> None:
    done = run(["sleep", "30"], timeout=0.5, check=False, quiet=True)
    assert done.returncode != 0 and done.duration_s < 10
    assert "killed after 0.5s timeout" in done.output


def test_unset_removes_inherited_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_EXTRA_INDEX_URL", "http://evil.example/simple")
    done = run(
        ["sh", "-c", "echo ${UV_EXTRA_INDEX_URL:-unset}"], unset=("UV_EXTRA_INDEX_URL",), quiet=True
    )
    assert done.output.strip() == "unset"
