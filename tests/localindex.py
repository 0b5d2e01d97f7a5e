"""A PEP 503 package index on 127.0.0.1 serving small generated wheels, for resolver tests.

Several named indexes are served by one server under ``/<index>/simple/``. Wheels are real
(installable) but tiny: a package module exposing ``__version__`` and, for ``torch``, a
``version.cuda`` attribute derived from the local tag (``+cu128`` -> ``"12.8"``, ``+cpu`` -> None)
and, when given, the compiled arch list ``torch._C._cuda_getArchFlags()`` reports.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import re
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _module_source(name: str, version: str, arch_flags: str | None = None) -> str:
    source = f'__version__ = "{version}"\n'
    if name == "torch":
        local = version.partition("+")[2]
        cuda = f"{local[2:-1]}.{local[-1]}" if re.fullmatch(r"cu\d{3,}", local) else None
        source += (
            "import types as _t\n"
            f"version = _t.SimpleNamespace(cuda={cuda!r}, __version__={version!r})\n"
        )
        if arch_flags is not None:
            # what a real CUDA torch reports without a GPU: the compiled arch list, no devices
            source += (
                f"_C = _t.SimpleNamespace(_cuda_getArchFlags=lambda: {arch_flags!r})\n"
                "cuda = _t.SimpleNamespace(is_available=lambda: False, device_count=lambda: 0)\n"
            )
    return source


def build_wheel(
    directory: Path,
    name: str,
    version: str,
    requires: list[str] | None = None,
    payload: str = "",
    arch_flags: str | None = None,
) -> Path:
    """Write ``name-version-py3-none-any.whl`` with the given Requires-Dist lines; return its path.

    ``payload`` is appended to the module, to make a different file with the same name.
    ``arch_flags`` (torch only) is what ``torch._C._cuda_getArchFlags()`` returns, e.g.
    ``"sm_50 sm_60 sm_90"``.
    """
    dist = name.replace("-", "_")
    dist_info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}/__init__.py": (_module_source(name, version, arch_flags) + payload).encode(),
        f"{dist_info}/METADATA": (
            "Metadata-Version: 2.1\n"
            f"Name: {name}\nVersion: {version}\n"
            + "".join(f"Requires-Dist: {r}\n" for r in (requires or []))
        ).encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: envlab-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    record += f"{dist_info}/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        # a fixed timestamp keeps wheels (and so their hashes, and golden lockfiles) reproducible
        for path, data in [*files.items(), (f"{dist_info}/RECORD", record.encode())]:
            archive.writestr(zipfile.ZipInfo(path, date_time=(2026, 1, 1, 0, 0, 0)), data)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{dist}-{version}-py3-none-any.whl"
    target.write_bytes(buffer.getvalue())
    return target


@dataclass
class LocalIndexes:
    """Named indexes rooted at ``root/<index>/<project>/<wheel>``."""

    root: Path
    base_url: str = ""
    packages: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def add(
        self,
        index: str,
        name: str,
        version: str,
        requires: list[str] | None = None,
        payload: str = "",
        arch_flags: str | None = None,
    ) -> Path:
        path = build_wheel(
            self.root / index / canonicalize_name(name),
            name,
            version,
            requires,
            payload,
            arch_flags,
        )
        self.packages.setdefault(index, []).append((name, version))
        return path

    def url(self, index: str) -> str:
        return f"{self.base_url}/{index}/simple"

    def remove(self, index: str, name: str, version: str) -> None:
        for wheel in (self.root / index / canonicalize_name(name)).glob(f"*-{version}-*.whl"):
            wheel.unlink()

    def wheel(self, index: str, name: str, version: str) -> Path:
        return next((self.root / index / canonicalize_name(name)).glob(f"*-{version}-*.whl"))


class _Handler(http.server.BaseHTTPRequestHandler):
    root: Path
    delays: dict[str, float]

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        body, ctype = self._route(parts)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _route(self, parts: list[str]) -> tuple[bytes | None, str]:
        # /<index>/simple/<project>/ -> project page; /<index>/simple/<project>/<wheel> -> the file
        if len(parts) == 3 and parts[1] == "simple":
            project = self.root / parts[0] / canonicalize_name(parts[2])
            wheels = sorted(project.glob("*.whl")) if project.is_dir() else []
            if not wheels:
                return None, ""
            links = "".join(
                f'<a href="{w.name}#sha256={_sha256(w)}">{w.name}</a><br/>\n' for w in wheels
            )
            return f"<!DOCTYPE html><html><body>\n{links}</body></html>\n".encode(), "text/html"
        if len(parts) == 2 and parts[1] == "simple":
            index = self.root / parts[0]
            names = sorted(p.name for p in index.iterdir()) if index.is_dir() else []
            links = "".join(f'<a href="{n}/">{n}</a><br/>\n' for n in names)
            return f"<html><body>{links}</body></html>".encode(), "text/html"
        if (
            len(parts) == 4 and parts[1] == "simple"
        ):  # files live under the index URL, as on PyTorch's
            path = self.root / parts[0] / parts[2] / parts[3]
            if parts[2] in self.delays:
                time.sleep(self.delays[parts[2]])
            if path.is_file():
                return path.read_bytes(), "application/octet-stream"
        return None, ""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a delayed download must not hold up shutdown


@contextmanager
def serve(root: Path, delays: dict[str, float] | None = None) -> Iterator[LocalIndexes]:
    """Serve ``root`` on 127.0.0.1 (an ephemeral port) for the duration of the block.

    ``delays`` maps a project name to seconds to wait before serving its files (slow downloads).
    """
    handler = type("Handler", (_Handler,), {"root": root, "delays": dict(delays or {})})
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LocalIndexes(root, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
