"""Platform names (conda-style, as in conda-lock and pixi) and their uv/pip equivalents."""

from __future__ import annotations

import platform
import sys

# name -> uv --python-platform target
UV_TARGETS: dict[str, str] = {
    "linux-64": "x86_64-manylinux_2_28",
    "linux-aarch64": "aarch64-manylinux_2_28",
    "win-64": "x86_64-pc-windows-msvc",
    "osx-arm64": "aarch64-apple-darwin",
    "osx-64": "x86_64-apple-darwin",
}

KNOWN = tuple(UV_TARGETS)


def current() -> str:
    """The conda-style name of the platform envlab runs on."""
    machine = platform.machine().lower()
    arm = machine in ("arm64", "aarch64")
    if sys.platform.startswith("linux"):
        return "linux-aarch64" if arm else "linux-64"
    if sys.platform == "darwin":
        return "osx-arm64" if arm else "osx-64"
    if sys.platform == "win32":
        return "win-64"
    return f"{sys.platform}-{machine}"
