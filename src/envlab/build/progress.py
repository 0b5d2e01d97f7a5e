"""Download progress of a layer install: bytes, percent and rate while uv downloads.

uv announces each large download (``Downloading torch (846.8MiB)``) and its end (``Downloaded
torch``), even without a terminal, but says nothing in between. A ticker reports what is in
flight every ``interval`` seconds: the bytes received (the machine's network counters where the
OS has them, else the downloads finished so far), against the announced sizes, and the rate.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

_ANNOUNCE = re.compile(r"^\s*Downloading (\S+) \((\d+(?:\.\d+)?)([KMGT]?i?B)\)\s*$")
_DONE = re.compile(r"^\s*Downloaded (\S+)\s*$")
_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}
_NET_DEV = Path("/proc/net/dev")
INTERVAL_S = 10.0  # between two progress lines of one download


def received_bytes() -> int | None:
    """Bytes received by this machine's network interfaces (Linux), None where unknown."""
    try:
        lines = _NET_DEV.read_text(encoding="ascii").splitlines()[2:]
    except OSError:
        return None
    total = 0
    for line in lines:
        _name, _, fields = line.partition(":")
        parts = fields.split()
        if parts:
            total += int(parts[0])
    return total


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


class Downloads:
    """Reads uv's output lines (``on_line``) and reports progress on each :meth:`tick`."""

    def __init__(
        self,
        label: str,
        emit: Callable[[str], None],
        counter: Callable[[], int | None] = received_bytes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.emit, self.counter, self.clock = label, emit, counter, clock
        self.sizes: dict[str, int] = {}
        self.finished: set[str] = set()
        self._lock = threading.Lock()
        self._start = self._last = (clock(), counter())

    def on_line(self, line: str) -> None:
        if match := _ANNOUNCE.match(line):
            name, number, unit = match.groups()
            with self._lock:
                self.sizes[name] = int(float(number) * _UNITS.get(unit, 1))
        elif match := _DONE.match(line):
            with self._lock:
                self.finished.add(match.group(1))

    def line(self) -> str | None:
        """The progress line now (None when nothing is being downloaded)."""
        now, count = self.clock(), self.counter()
        with self._lock:
            pending = [n for n in self.sizes if n not in self.finished]
            total = sum(self.sizes.values())
            done = sum(s for n, s in self.sizes.items() if n in self.finished)
        if not pending:
            return None
        (t0, c0), (t1, c1) = self._start, self._last
        self._last = (now, count)
        if count is not None and c0 is not None and c1 is not None:
            got = min(max(count - c0, done), total)
            rate = (count - c1) / max(now - t1, 1e-6)
        else:
            got, rate = done, done / max(now - t0, 1e-6)
        return (
            f"{self.label}: downloading {len(pending)} of {len(self.sizes)} file(s): "
            f"{human(got)} of {human(total)} ({100 * got / max(total, 1):.0f}%) "
            f"at {human(rate)}/s"
        )

    def tick(self) -> None:
        if (text := self.line()) is not None:
            self.emit(text)


class Ticker:
    """Calls ``tick`` every ``interval`` seconds in a thread, for the duration of a ``with``."""

    def __init__(self, tick: Callable[[], None], interval: float | None = None) -> None:
        self.tick, self.interval = tick, INTERVAL_S if interval is None else interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
