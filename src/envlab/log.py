"""Progress output: every line says what is happening, prefixed by the elapsed time.

The console is short by default (one line per layer and per env, failures summarised);
``envlab -v`` adds the details: each command line, uv's per-package lines, pytest's output.
"""

from __future__ import annotations

import sys
import time

_START = time.monotonic()
_VERBOSE = False


def elapsed() -> float:
    return time.monotonic() - _START


def set_verbose(on: bool) -> None:
    """Show details (commands, tool output) from now on (``envlab -v``)."""
    global _VERBOSE
    _VERBOSE = on


def verbose() -> bool:
    return _VERBOSE


def log(message: str) -> None:
    """Write one progress line to stderr with the elapsed time since envlab started."""
    sys.stderr.write(f"[envlab {elapsed():7.1f}s] {message}\n")
    sys.stderr.flush()


def detail(message: str) -> None:
    """A progress line shown only with ``-v``."""
    if _VERBOSE:
        log(message)
