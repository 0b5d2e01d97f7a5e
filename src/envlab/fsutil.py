"""Atomic file writes (honouring the umask), writability checks, file locks, content hashing."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_UMASK_LOCK = threading.Lock()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old file or the whole new one."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it,
    then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            # mkstemp makes the file 0600; teams share reports/, so give it the mode a plain
            # open() would have given it under this umask
            os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def umask() -> int:
    """The process umask (read without changing it where the OS says it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # os.umask only sets it: set and restore, one thread at a time
        current = os.umask(0o022)
        os.umask(current)
    return current


def unwritable(directory: Path) -> str | None:
    """Why files cannot be created in ``directory`` (made if missing), or None when they can.

    Tries for real (a temporary file), so read-only mounts, full disks and ACLs all show.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".envlab-write-check-", dir=directory)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        return f"{exc.strerror or type(exc).__name__} ({directory})"
    return None


class LockHeld(Exception):
    """A file lock is held by another process (and the caller would not wait)."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path, self.holder = path, holder
        super().__init__(f"{path} is held by {holder}")


@contextmanager
def exclusive(
    path: Path,
    *,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
    poll_s: float = 0.2,
) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block.

    The lock is the OS's (flock, or a locked byte on Windows): it goes with the process, so a
    killed holder never leaves it behind. Another holder makes this wait (``on_wait`` is told
    who, once) or, without ``wait``, raise :class:`LockHeld`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if not _try_lock(fd):
            holder = _holder(fd)
            if not wait:
                raise LockHeld(path, holder)
            if on_wait is not None:
                on_wait(holder)
            while not _try_lock(fd):
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode("utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return f"another envlab ({text})" if text else "another envlab process"


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def stable_hash(*parts: Any) -> str:
    """SHA-256 over a canonical JSON encoding of ``parts`` (first 16 hex digits)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def dir_size(path: Path) -> int:
    """Bytes used by regular files below ``path`` (hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key not in seen:
                seen.add(key)
                total += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
    return total


def read_toml(path: Path, error: type[Exception], what: str) -> dict[str, Any]:
    """Parse the TOML file at ``path``; a missing or malformed file raises ``error`` in one line."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: file not found (expected {what})") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: expected valid TOML ({what}), found a syntax error: {exc}") from None
