"""Seed 002: UTF-8 I/O still works when the locale is not UTF-8 (LC_ALL=C in containers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CATEGORY = "locale"

TEXT = "✓ ✗ données 中文"
FIX = (
    "Fix: set LANG=C.UTF-8 (and LC_ALL=C.UTF-8) in the container/CI, or PYTHONUTF8=1; in code pass "
    "encoding='utf-8' to open() and subprocess.run()."
)


def _c_locale_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LC_") and k not in ("LANG", "PYTHONIOENCODING")
    }
    env.update(LC_ALL="C", LANG="C")
    return env


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        env=_c_locale_env(),
        cwd=cwd,
        timeout=60,
        check=False,
    )


def _stderr_tail(done: subprocess.CompletedProcess[bytes]) -> str:
    lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no stderr"


def test_utf8_stdout_under_c_locale(tmp_path: Path) -> None:
    """Printing non-ASCII text under LC_ALL=C (PYTHONIOENCODING unset) works and is UTF-8.

    Fix: UnicodeEncodeError with 'ascii' codec is the classic container-locale failure (CLI
    printing checkmarks): set LANG=C.UTF-8 or PYTHONUTF8=1.
    """
    done = _run(f"print({TEXT!r})", tmp_path)
    assert done.returncode == 0, (
        f"printing non-ASCII under LC_ALL=C failed: {_stderr_tail(done)}. {FIX}"
    )
    assert done.stdout.decode("utf-8", "replace").strip() == TEXT, (
        f"stdout was {done.stdout!r}, not UTF-8. {FIX}"
    )


def test_utf8_default_file_encoding_under_c_locale(tmp_path: Path) -> None:
    """open() without encoding= writes and reads UTF-8 under LC_ALL=C.

    Fix: a locale encoding of 'ANSI_X3.4-1968' means the interpreter neither coerces the C
    locale nor enables UTF-8 mode (PYTHONUTF8=0 set?); set LANG=C.UTF-8.
    """
    code = (
        "import locale\n"
        f"open('out.txt', 'w').write({TEXT!r})\n"
        f"assert open('out.txt').read() == {TEXT!r}\n"
        "print(locale.getpreferredencoding(False))\n"
    )
    done = _run(code, tmp_path)
    assert done.returncode == 0, (
        f"default-encoding file I/O under LC_ALL=C failed: {_stderr_tail(done)}. {FIX}"
    )
    data = (tmp_path / "out.txt").read_bytes()
    assert data == TEXT.encode("utf-8"), (
        f"file written in {done.stdout.decode(errors='replace').strip()!r}, not UTF-8. {FIX}"
    )


def test_non_ascii_filenames_under_c_locale(tmp_path: Path) -> None:
    """Files with non-ASCII names can be created and listed under LC_ALL=C.

    Fix: a UnicodeEncodeError on a path means the filesystem encoding fell back to ASCII;
    set LANG=C.UTF-8 (datasets with accented file names fail otherwise).
    """
    code = (
        "import os, sys\n"
        "name = 'données_✓.txt'\n"
        "open(name, 'w', encoding='utf-8').close()\n"
        "assert name in os.listdir('.'), os.listdir('.')\n"
        "print(sys.getfilesystemencoding())\n"
    )
    done = _run(code, tmp_path)
    assert done.returncode == 0, (
        f"non-ASCII file name under LC_ALL=C failed: {_stderr_tail(done)}. {FIX}"
    )
    assert (tmp_path / "données_✓.txt").exists(), (
        "the file was created under another (mis-encoded) name"
    )
