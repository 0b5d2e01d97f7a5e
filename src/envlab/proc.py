"""The one subprocess wrapper: argv lists, the quoted command logged,
output captured and shown on failure."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from envlab.errors import CommandError
from envlab.log import log


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    returncode: int
    output: str
    duration_s: float


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
) -> Completed:
    """Run ``argv``; log it; capture stdout+stderr (echoing live when ``stream``).

    Raises :class:`CommandError` carrying the return code and captured output when ``check``
    and the command fails; the output is printed to stderr so the failure can be diagnosed.
    ``unset`` removes variables from the inherited environment (e.g. index settings for uv).
    """
    args = [os.fspath(a) for a in argv]
    if not quiet:
        log(f"$ {shlex.join(args)}")
    full_env = {k: v for k, v in os.environ.items() if k not in unset}
    if env:
        full_env.update(env)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
    except FileNotFoundError as exc:
        raise CommandError(args, 127, f"executable not found: {args[0]} ({exc})") from None
    chunks: list[str] = []
    assert proc.stdout is not None
    # A reader thread drains the pipe, so the timeout holds even for a command that prints nothing.
    reader = threading.Thread(target=_drain, args=(proc.stdout, chunks, stream), daemon=True)
    with proc:
        reader.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            chunks.append(f"\n[envlab] killed after {timeout}s timeout\n")
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            reader.join(timeout=10)
    output = "".join(chunks)
    done = Completed(args, proc.returncode, output, time.monotonic() - start)
    if check and done.returncode != 0:
        if not stream and output.strip():
            sys.stderr.write(_indent(output[-8000:]))
        raise CommandError(args, done.returncode, output)
    return done


def _drain(pipe: IO[str], chunks: list[str], stream: bool) -> None:
    for line in pipe:
        chunks.append(line)
        if stream:
            sys.stderr.write("    " + line)
            sys.stderr.flush()


def _indent(text: str) -> str:
    return "".join("    | " + line + "\n" for line in text.rstrip("\n").splitlines())
