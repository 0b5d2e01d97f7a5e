"""The one subprocess wrapper: argv lists, the quoted command logged,
output captured and shown on failure.

Every command runs in a process group of its own, and a timeout (or an interrupt) kills the
whole group: a wrapper script whose child hangs must not hang envlab, and its children must not
hold the output pipe open after the wrapper is gone.
"""

from __future__ import annotations

import codecs
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from envlab.errors import CommandError
from envlab.log import detail, verbose

_WINDOWS = sys.platform == "win32"
# After the command exits, how long leftovers of its group may keep the output pipe open.
_LINGER_S = 5.0
# Lines of a failed command's output shown without -v (all of its last 8000 characters with -v).
_FAILURE_TAIL = 20


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    returncode: int
    output: str
    duration_s: float


class _Reader(threading.Thread):
    """Drains the command's output pipe (raw reads: no buffer lock a hung writer could hold)."""

    def __init__(self, fd: int, stream: bool, on_line: Callable[[str], None] | None = None) -> None:
        super().__init__(daemon=True)
        self.fd, self.stream, self.on_line = fd, stream, on_line
        self.chunks: list[str] = []
        self._partial = ""

    def run(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while data := os.read(self.fd, 65536):
                self._feed(decoder.decode(data))
            self._feed(decoder.decode(b"", final=True))
            if self._partial:
                self._line(self._partial)
        finally:
            os.close(self.fd)

    def _feed(self, text: str) -> None:
        self.chunks.append(text)
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._line(line)

    def _line(self, line: str) -> None:
        if self.stream:
            sys.stderr.write("    " + line + "\n")
            sys.stderr.flush()
        if self.on_line is not None:
            self.on_line(line)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    stream: bool = False,
    timeout: float | None = None,
    quiet: bool = False,
    unset: Sequence[str] = (),
    on_line: Callable[[str], None] | None = None,
) -> Completed:
    """Run ``argv``; log it; capture stdout+stderr (echoing live when ``stream`` and ``-v``).

    Raises :class:`CommandError` carrying the return code and captured output when ``check``
    and the command fails; the output's tail is printed to stderr so the failure can be
    diagnosed. ``unset`` removes variables from the inherited environment (e.g. index settings
    for uv). ``on_line`` sees every output line as it arrives (progress reporting). A
    ``timeout`` kills the command with every process it started.
    """
    args = [os.fspath(a) for a in argv]
    if not quiet:
        detail(f"$ {shlex.join(args)}")
    full_env = {k: v for k, v in os.environ.items() if k not in unset}
    if env:
        full_env.update(env)
    start = time.monotonic()
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=full_env,
            stdout=write_fd,
            stderr=write_fd,
            stdin=subprocess.DEVNULL,
            **_own_group(),
        )
    except OSError as exc:
        os.close(read_fd)
        code = 127 if isinstance(exc, FileNotFoundError) else 126
        what = "executable not found" if code == 127 else "cannot execute"
        raise CommandError(args, code, f"{what}: {args[0]} ({exc})") from None
    finally:
        os.close(write_fd)
    reader = _Reader(read_fd, stream and verbose(), on_line)
    reader.start()
    note = _wait(proc, reader, timeout)
    output = "".join(reader.chunks) + note
    done = Completed(args, proc.returncode, output, time.monotonic() - start)
    if check and done.returncode != 0:
        if not (stream and verbose()) and output.strip():
            sys.stderr.write(_indent(_tail(output)))
        raise CommandError(args, done.returncode, output)
    return done


def _own_group() -> dict[str, object]:
    if _WINDOWS:
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def _wait(proc: subprocess.Popen[bytes], reader: _Reader, timeout: float | None) -> str:
    """Wait for the command (killing its group on timeout or interrupt), then for its output.

    Returns a note to append to the output when something had to be killed.
    """
    note = ""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.wait()
        note = f"\n[envlab] killed after {timeout:g}s timeout (with every process it started)\n"
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    reader.join(timeout=_LINGER_S)
    if reader.is_alive():
        # the command exited, but processes it started still hold the pipe: they go too
        _kill_group(proc)
        reader.join(timeout=_LINGER_S)
        # a process that left the group (a daemon) may still hold it: stop waiting for it
        if reader.is_alive():
            note += "\n[envlab] stopped reading: a detached process still holds the output\n"
    return note


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc`` and every process of its group (POSIX); ``proc`` alone elsewhere."""
    if _WINDOWS:
        proc.kill()
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        # the group is gone (every member exited); the leader may still need reaping
        if proc.poll() is None:
            proc.kill()


def _tail(output: str) -> str:
    if verbose():
        return output[-8000:]
    return "\n".join(output.rstrip("\n").splitlines()[-_FAILURE_TAIL:])


def _indent(text: str) -> str:
    return "".join("    | " + line + "\n" for line in text.rstrip("\n").splitlines())


def alive(pid: int) -> bool:
    """True when a process with this id exists on this machine."""
    if pid <= 0:
        return False
    if _WINDOWS:
        return True  # os.kill(pid, 0) would send CTRL_C there: assume alive, never reap
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    except OSError:
        return False
    try:  # a zombie (killed, not yet reaped by its parent) runs nothing: it is gone
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True  # no /proc here: the signal check is all there is
    return stat.rpartition(")")[2].split()[:1] != ["Z"]
