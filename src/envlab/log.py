"""Progress output: every line says what is happening, prefixed by the elapsed time."""

from __future__ import annotations

import sys
import time

_START = time.monotonic()


def elapsed() -> float:
    return time.monotonic() - _START


def log(message: str) -> None:
    """Write one progress line to stderr with the elapsed time since envlab started."""
    sys.stderr.write(f"[envlab {elapsed():7.1f}s] {message}\n")
    sys.stderr.flush()
