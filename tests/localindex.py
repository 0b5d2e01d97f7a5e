"""A PEP 503 package index on 127.0.0.1 serving small generated wheels, for resolver tests.

Several named indexes are served by one server under ``/<index>/simple/``. Wheels are real
(installable) but tiny: a package module exposing ``__version__`` and, for ``torch``, a
``version.cuda`` attribute derived from the local tag (``+cu128`` -> ``"12.8"``, ``+cpu`` -> None)
and, when given, the compiled arch list ``torch._C._cuda_getArchFlags()`` reports.
"""

from __future__ import annotations

import base64
import contextlib
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
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

from envlab.spec.indexes import mirror_variable


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _module_source(
    name: str,
    version: str,
    arch_flags: str | None = None,
    git_version: str | None = None,
    cuda: str | None = None,
) -> str:
    source = f'__version__ = "{version}"\n'
    if name == "torch":
        local = version.partition("+")[2]
        if cuda is None and re.fullmatch(r"cu\d{3,}", local):
            cuda = f"{local[2:-1]}.{local[-1]}"
        # a release binary has a git version; a fixed one per version keeps wheels reproducible
        git_version = git_version or hashlib.sha1(version.encode()).hexdigest()
        source += (
            "import types as _t\n"
            f"version = _t.SimpleNamespace(cuda={cuda!r}, __version__={version!r}, "
            f"debug=False, git_version={git_version!r})\n"
        )
        source += _FAKE_TORCH_RUNTIME.format(cuda_build=cuda is not None)
        if arch_flags is not None:
            # what a real CUDA torch reports without a GPU: the compiled arch list, no devices
            source += f"_C._cuda_getArchFlags = lambda: {arch_flags!r}\n"
    return source


# What torch's release wheels report on a machine without a GPU, as far as envlab's probe asks:
# build features present, cuDNN and NCCL loaded as compiled, CUDA unusable (no driver).
_FAKE_TORCH_RUNTIME = """
def _no_driver():
    raise RuntimeError("Found no NVIDIA driver on your system.")


cuda = _t.SimpleNamespace(
    is_available=lambda: False,
    device_count=lambda: 0,
    get_arch_list=lambda: [],
    init=_no_driver,
    has_magma={cuda_build},
    nccl=_t.SimpleNamespace(version=lambda: (2, 27, 5)),
)
backends = _t.SimpleNamespace(
    cudnn=_t.SimpleNamespace(is_available=lambda: {cuda_build}, version=lambda: 91002),
    mkl=_t.SimpleNamespace(is_available=lambda: True),
    mkldnn=_t.SimpleNamespace(is_available=lambda: True),
    openmp=_t.SimpleNamespace(is_available=lambda: True),
    xnnpack=_t.SimpleNamespace(enabled=True),
)
__config__ = _t.SimpleNamespace(
    show=lambda: "BLAS_INFO=mkl, LAPACK_INFO=mkl",
    parallel_info=lambda: "ATen/Parallel:\\n  at::get_num_threads() : 1",
)
_cudnn_version = (9, 10, 2)
_C = _t.SimpleNamespace(
    _cudnn=_t.SimpleNamespace(
        getCompileVersion=lambda: _cudnn_version, getRuntimeVersion=lambda: _cudnn_version
    )
)

# torchvision's image ops, as its release wheels register them (built against libjpeg-turbo)
ops = _t.SimpleNamespace(
    image=_t.SimpleNamespace(_jpeg_version=lambda: 80, _is_compiled_against_turbo=lambda: True)
)


def get_num_threads():
    return 1

"""


def build_wheel(
    directory: Path,
    name: str,
    version: str,
    requires: list[str] | None = None,
    payload: str = "",
    arch_flags: str | None = None,
    git_version: str | None = None,
    cuda: str | None = None,
) -> Path:
    """Write ``name-version-py3-none-any.whl`` with the given Requires-Dist lines; return its path.

    ``payload`` is appended to the module, to make a different file with the same name.
    ``arch_flags`` (torch only) is what ``torch._C._cuda_getArchFlags()`` returns, e.g.
    ``"sm_50 sm_60 sm_90"``; ``git_version`` (torch only) is ``torch.version.git_version``;
    ``cuda`` (torch only) is ``torch.version.cuda`` where the local tag does not say it (a source
    build's ``+gitee1b680``).
    """
    dist = name.replace("-", "_")
    dist_info = f"{dist}-{version}.dist-info"
    source = _module_source(name, version, arch_flags, git_version, cuda) + payload
    files = {
        f"{dist}/__init__.py": source.encode(),
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
    return _write_wheel(directory, f"{dist}-{version}-py3-none-any.whl", dist_info, files)


def _write_wheel(directory: Path, filename: str, dist_info: str, files: dict[str, bytes]) -> Path:
    """Zip ``files`` with a RECORD into ``directory/filename``."""
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    record += f"{dist_info}/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        # a fixed timestamp keeps wheels (and so their hashes, and golden lockfiles) reproducible
        for path, data in [*files.items(), (f"{dist_info}/RECORD", record.encode())]:
            archive.writestr(zipfile.ZipInfo(path, date_time=(2026, 1, 1, 0, 0, 0)), data)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / filename
    target.write_bytes(buffer.getvalue())
    return target


_NOT_REPACKED = re.compile(
    r"(__pycache__|\.pyc$|\.dist-info/(RECORD|INSTALLER|REQUESTED|direct_url\.json)$)"
)


def repack_installed(directory: Path, name: str) -> Path:
    """A wheel of the pure-Python distribution ``name`` as installed in this interpreter.

    Lets a local index serve real packages (pytest and its dependencies, to run a suite inside a
    built env) without reaching PyPI.
    """
    dist = metadata.distribution(name)
    files: dict[str, bytes] = {}
    for entry in dist.files or []:
        path = str(entry).replace("\\", "/")
        if path.startswith("..") or _NOT_REPACKED.search(path):
            continue  # console scripts live outside site-packages; installers write them again
        files[path] = Path(str(entry.locate())).read_bytes()
    dist_info = next(p.split("/")[0] for p in files if p.split("/")[0].endswith(".dist-info"))
    stem = dist_info.removesuffix(".dist-info")
    return _write_wheel(directory, f"{stem}-py3-none-any.whl", dist_info, files)


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
        git_version: str | None = None,
    ) -> Path:
        path = build_wheel(
            self.root / index / canonicalize_name(name),
            name,
            version,
            requires,
            payload,
            arch_flags,
            git_version,
        )
        self.packages.setdefault(index, []).append((name, version))
        return path

    def add_installed(self, index: str, name: str) -> Path:
        """Serve the distribution ``name`` installed in this interpreter (see repack_installed)."""
        path = repack_installed(self.root / index / canonicalize_name(name), name)
        self.packages.setdefault(index, []).append((name, metadata.version(name)))
        return path

    def url(self, index: str) -> str:
        return f"{self.base_url}/{index}/simple"

    def mirrors(self, *indexes: str) -> dict[str, str]:
        """The environment that points each named index of a project at this server."""
        return {mirror_variable(index): self.url(index) for index in indexes}

    def remove(self, index: str, name: str, version: str) -> None:
        for wheel in (self.root / index / canonicalize_name(name)).glob(f"*-{version}-*.whl"):
            wheel.unlink()

    def wheel(self, index: str, name: str, version: str) -> Path:
        return next((self.root / index / canonicalize_name(name)).glob(f"*-{version}-*.whl"))


def _wheel_metadata(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(name)


class _Handler(http.server.BaseHTTPRequestHandler):
    root: Path
    delays: dict[str, float]
    ranges: bool  # answer Range requests with 206 (else the whole file, as some servers do)
    metadata: bool  # serve PEP 658 core metadata (``<wheel>.metadata``) and announce it

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
        wanted = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range") or "")
        if self.ranges and wanted and len(parts) == 4:
            body = self._send_range(body, wanted.group(1), wanted.group(2))
        else:
            self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            # a client reading only part of a file (a range-aware installer) may hang up early
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

    def _send_range(self, body: bytes, first: str, last: str) -> bytes:
        """Start a 206 answer for ``bytes=first-last`` (or the suffix ``bytes=-last``)."""
        size = len(body)
        start = int(first) if first else max(0, size - int(last))
        end = min(size - 1, int(last)) if first and last else size - 1
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        return body[start : end + 1]

    def _route(self, parts: list[str]) -> tuple[bytes | None, str]:
        # /<index>/simple/<project>/ -> project page; /<index>/simple/<project>/<wheel> -> the file
        if len(parts) == 3 and parts[1] == "simple":
            project = self.root / parts[0] / canonicalize_name(parts[2])
            wheels = sorted(project.glob("*.whl")) if project.is_dir() else []
            if not wheels:
                return None, ""
            links = "".join(
                f'<a href="{w.name}#sha256={_sha256(w)}"{self._core_metadata(w)}>'
                f"{w.name}</a><br/>\n"
                for w in wheels
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
            wheel = path.with_suffix("")
            if self.metadata and path.suffix == ".metadata" and wheel.is_file():
                return _wheel_metadata(wheel), "text/plain"
        return None, ""

    def _core_metadata(self, wheel: Path) -> str:
        if not self.metadata:
            return ""
        digest = hashlib.sha256(_wheel_metadata(wheel)).hexdigest()
        return f' data-core-metadata="sha256={digest}"'


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a delayed download must not hold up shutdown


@contextmanager
def serve(
    root: Path,
    delays: dict[str, float] | None = None,
    *,
    ranges: bool = False,
    metadata: bool = False,
) -> Iterator[LocalIndexes]:
    """Serve ``root`` on 127.0.0.1 (an ephemeral port) for the duration of the block.

    ``delays`` maps a project name to seconds to wait before serving its files (slow downloads).
    ``ranges``: answer HTTP byte ranges; ``metadata``: serve PEP 658 ``.metadata`` files.
    """
    attrs = {"root": root, "delays": dict(delays or {}), "ranges": ranges, "metadata": metadata}
    handler = type("Handler", (_Handler,), attrs)
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LocalIndexes(root, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
