"""A conda channel generated at test time: ``.tar.bz2`` packages and ``repodata.json`` per subdir,
read from ``file://`` or served on 127.0.0.1.

The packages that get installed are real: the interpreter running the tests, relocated into a
``python`` package (its ELF run paths rewritten to ``$ORIGIN``-relative ones, the text files that
name its install prefix marked for conda's prefix replacement), pip from that interpreter's
``ensurepip`` wheel, and numpy repacked from the test environment (a PyPI build bundling
OpenBLAS). Everything else (the BLAS selector packages, MKL, a conda Pillow, the win-64
records) is metadata only: it is solved and locked, never installed on this machine.
"""

from __future__ import annotations

import base64
import bz2
import hashlib
import http.server
import io
import json
import os
import posixpath
import re
import struct
import sys
import sysconfig
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

PY = f"{sys.version_info.major}.{sys.version_info.minor}"
PYTAG = f"py{sys.version_info.major}{sys.version_info.minor}"
SUBDIRS = ("noarch", "linux-64", "win-64")
TIMESTAMP_MS = 1767225600000  # 2026-01-01: fixed, so generated channels are reproducible


@dataclass(frozen=True)
class Entry:
    """One file of a package: its bytes, or the target of a symlink."""

    data: bytes = b""
    link: str | None = None
    mode: int = 0o644
    placeholder: str | None = None  # text file naming the build prefix, replaced at install


@dataclass
class LocalChannel:
    """A channel rooted at ``root/<subdir>/``; ``url`` is ``file://`` until :func:`serve`."""

    root: Path
    url: str = ""
    records: dict[str, dict[str, dict]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.url = self.url or self.root.as_uri()

    def add(
        self,
        name: str,
        version: str,
        build: str,
        subdir: str = "noarch",
        depends: list[str] | None = None,
        files: dict[str, Entry] | None = None,
        noarch: str | None = None,
        build_number: int = 0,
        track_features: str = "",
    ) -> Path:
        """Write ``name-version-build.tar.bz2`` into ``subdir`` and index it; return its path."""
        index = {
            "name": name,
            "version": version,
            "build": build,
            "build_number": build_number,
            "depends": list(depends or []),
            "subdir": subdir,
            "timestamp": TIMESTAMP_MS,
            "license": "test",
        }
        if noarch:
            index["noarch"] = noarch
        if track_features:
            index["track_features"] = track_features
        if subdir != "noarch":
            index["platform"], _, index["arch"] = subdir.partition("-")
            index["arch"] = {"64": "x86_64"}.get(index["arch"], index["arch"])
        fn = f"{name}-{version}-{build}.tar.bz2"
        path = self.root / subdir / fn
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_archive(index, files or {}))
        data = path.read_bytes()
        record = {
            **index,
            "md5": hashlib.md5(data).hexdigest(),
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }
        self.records.setdefault(subdir, {})[fn] = record
        self.write_repodata()
        return path

    def write_repodata(self) -> None:
        for subdir in SUBDIRS:
            (self.root / subdir).mkdir(parents=True, exist_ok=True)
            doc = {
                "info": {"subdir": subdir},
                "packages": dict(sorted(self.records.get(subdir, {}).items())),
                "packages.conda": {},
                "removed": [],
                "repodata_version": 1,
            }
            (self.root / subdir / "repodata.json").write_text(json.dumps(doc, indent=1))

    def package_url(self, subdir: str, name: str) -> str:
        fn = next(f for f in self.records[subdir] if f.startswith(f"{name}-"))
        return f"{self.url}/{subdir}/{fn}"


def _archive(index: dict, files: dict[str, Entry]) -> bytes:
    """A ``.tar.bz2`` conda package: ``info/index.json``, ``info/paths.json`` and the files."""
    paths = []
    for path, entry in sorted(files.items()):
        item: dict = {"_path": path, "path_type": "softlink" if entry.link else "hardlink"}
        if not entry.link:
            item |= {
                "sha256": hashlib.sha256(entry.data).hexdigest(),
                "size_in_bytes": len(entry.data),
            }
        if entry.placeholder:
            item |= {"prefix_placeholder": entry.placeholder, "file_mode": "text"}
        paths.append(item)
    info = {
        "info/index.json": json.dumps(index, indent=1).encode(),
        "info/paths.json": json.dumps({"paths": paths, "paths_version": 1}, indent=1).encode(),
        "info/files": "".join(f"{p}\n" for p in sorted(files)).encode(),
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in info.items():
            _add_member(tar, path, Entry(data))
        for path, entry in sorted(files.items()):
            _add_member(tar, path, entry)
    # level 1: the relocated interpreter is tens of MB and is built once per test session
    return bz2.compress(raw.getvalue(), compresslevel=1)


def _add_member(tar: tarfile.TarFile, path: str, entry: Entry) -> None:
    member = tarfile.TarInfo(path)
    member.mtime = TIMESTAMP_MS // 1000
    if entry.link is not None:
        member.type, member.linkname = tarfile.SYMTYPE, entry.link
        tar.addfile(member)
        return
    member.size, member.mode = len(entry.data), entry.mode
    tar.addfile(member, io.BytesIO(entry.data))


# --------------------------------------------------------------------------- the interpreter

_SKIP_STDLIB = re.compile(
    r"^(test|tests|idlelib|tkinter|turtledemo|ensurepip|lib2to3|site-packages|config-[^/]*)(/|$)"
    r"|(^|/)__pycache__(/|$)|(^|/)tests?/"
)


def python_package_files(prefix: Path | None = None) -> dict[str, Entry]:
    """The interpreter at ``prefix`` (default: the one running) as relocatable package files."""
    prefix = Path(prefix or sys.base_prefix)
    stdlib = Path(sysconfig.get_path("stdlib", vars={"installed_base": str(prefix)}))
    rel_stdlib = stdlib.relative_to(prefix).as_posix()
    files: dict[str, Entry] = {}
    exe = f"python{PY}"
    files[f"bin/{exe}"] = _relocated(prefix / "bin" / exe, prefix, "$ORIGIN/../lib")
    files["bin/python3"] = Entry(link=exe)
    files["bin/python"] = Entry(link=exe)
    libdir = prefix / "lib"
    for lib in sorted(libdir.glob("libpython*.so*")):
        rel = f"lib/{lib.name}"
        if lib.is_symlink():
            files[rel] = Entry(link=os.readlink(lib))
        else:
            files[rel] = _relocated(lib, prefix, "$ORIGIN")
    for path in sorted(stdlib.rglob("*")):
        rel = path.relative_to(stdlib).as_posix()
        if _SKIP_STDLIB.search(rel) or path.is_dir():
            continue
        target = f"{rel_stdlib}/{rel}"
        if path.is_symlink():
            files[target] = Entry(link=os.readlink(path))
        else:
            depth = "/".join([".."] * (target.count("/") - 1))
            files[target] = _relocated(path, prefix, f"$ORIGIN/{depth}")
    files[f"{rel_stdlib}/site-packages/README.txt"] = Entry(b"site-packages of the conda base\n")
    # the C headers, as conda-forge's python ships them: torch.compile's CPU backend includes
    # Python.h when it builds its kernels
    include = Path(sysconfig.get_path("include", vars={"installed_base": str(prefix)}))
    for path in sorted(include.rglob("*")):
        if path.is_file():
            target = f"{include.relative_to(prefix).as_posix()}/{path.relative_to(include)}"
            files[target] = _relocated(path, prefix, "$ORIGIN")
    return files


def _relocated(path: Path, prefix: Path, origin_libdir: str) -> Entry:
    """``path`` made relocatable: ELF run paths into ``prefix`` rewritten, text files marked."""
    data = bytearray(path.read_bytes())
    mode = 0o755 if os.access(path, os.X_OK) else 0o644
    old = str(prefix).encode()
    if data[:4] == b"\x7fELF":
        _rewrite_runpath(data, old + b"/lib", origin_libdir.encode())
        return Entry(bytes(data), mode=mode)
    if old in data:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return Entry(bytes(data), mode=mode)
        return Entry(bytes(data), mode=mode, placeholder=str(prefix))
    return Entry(bytes(data), mode=mode)


def _dynamic_strings(data: bytearray) -> tuple[int, dict[int, list[int]]]:
    """(file offset of the dynamic string table, {d_tag: [d_val]}) of an ELF64 LE file."""
    if data[4] != 2 or data[5] != 1:
        raise ValueError("only 64-bit little-endian ELF files are relocated")
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads, dynamic = [], (0, 0)
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize
        )
        if p_type == 1:  # PT_LOAD
            loads.append((p_offset, p_vaddr))
        elif p_type == 2:  # PT_DYNAMIC
            dynamic = (p_offset, p_filesz)
    tags: dict[int, list[int]] = {}
    for at in range(dynamic[0], dynamic[0] + dynamic[1], 16):
        tag, value = struct.unpack_from("<qQ", data, at)
        if tag == 0:
            break
        tags.setdefault(tag, []).append(value)
    if 5 not in tags:  # no DT_STRTAB: nothing dynamic to rewrite
        return 0, {}
    offset, vaddr = max(((o, v) for o, v in loads if v <= tags[5][0]), key=lambda ov: ov[1])
    return offset + tags[5][0] - vaddr, tags


def _rewrite_runpath(data: bytearray, old: bytes, new: bytes) -> None:
    """Rewrite a DT_RUNPATH/DT_RPATH equal to ``old`` as the shorter ``new`` (in place)."""
    strtab, tags = _dynamic_strings(data)
    for tag in (15, 29):  # DT_RPATH, DT_RUNPATH
        for value in tags.get(tag, []):
            start = strtab + value
            end = data.index(b"\0", start)
            if bytes(data[start:end]) != old:
                continue
            if len(new) > end - start:
                raise ValueError(f"run path {new!r} is longer than {old!r}")
            data[start:end] = new + b"\0" * (end - start - len(new))


# --------------------------------------------------------------------------- Python packages


def _site_files(dist: metadata.Distribution) -> dict[str, Entry]:
    """The files of an installed distribution that live in site-packages (scripts left out)."""
    files: dict[str, Entry] = {}
    for f in dist.files or []:
        rel = f.as_posix()
        if rel.startswith("..") or "__pycache__" in rel or rel.endswith(".pyc"):
            continue
        path = Path(str(dist.locate_file(f)))
        if path.is_file():
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            files[rel] = Entry(path.read_bytes(), mode=mode)
    return files


def installed(name: str) -> metadata.Distribution:
    """An installed distribution of the test environment (the source of repacked packages)."""
    return metadata.distribution(name)


def _scripts(dist: metadata.Distribution, site: str) -> dict[str, Entry]:
    """The distribution's files outside site-packages (numpy's ``bin/f2py``), at their paths in
    the prefix: its RECORD lists them, and a conda package ships them too."""
    files: dict[str, Entry] = {}
    for f in dist.files or []:
        path = Path(str(dist.locate_file(f)))
        if f.as_posix().startswith("..") and path.is_file():
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            files[posixpath.normpath(f"{site}/{f.as_posix()}")] = Entry(
                path.read_bytes(), mode=mode
            )
    return files


def conda_python_package(
    channel: LocalChannel, name: str, depends: list[str], subdir: str = "linux-64"
) -> Path:
    """Repack the installed distribution ``name`` as a conda package for this Python."""
    dist = installed(name)
    site = sysconfig.get_path("purelib", vars={"base": "."}).lstrip("./")
    files = {f"{site}/{rel}": entry for rel, entry in _site_files(dist).items()}
    files |= _scripts(dist, site)
    files[f"{site}/{_dist_info(dist)}/INSTALLER"] = Entry(b"conda\n")
    return channel.add(
        name.lower(),
        dist.version,
        f"{PYTAG}h0_0",
        subdir,
        [f"python {PY}.*", *depends],
        files,
    )


def conda_noarch_from_wheel(channel: LocalChannel, wheel: Path, depends: list[str]) -> Path:
    """A ``noarch: python`` conda package with the contents of a pure-Python wheel."""
    name, version = wheel.name.split("-")[:2]
    files: dict[str, Entry] = {}
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir() or ".data/" in info.filename:
                continue
            files[f"site-packages/{info.filename}"] = Entry(archive.read(info))
    dist_info = next(p.split("/")[1] for p in files if p.endswith(".dist-info/METADATA"))
    files[f"site-packages/{dist_info}/INSTALLER"] = Entry(b"conda\n")
    return channel.add(
        name.lower(), version, "pyhd8ed1ab_0", "noarch", ["python >=3.8", *depends], files, "python"
    )


def ensurepip_wheel() -> Path:
    """pip's wheel as bundled with the running interpreter's ``ensurepip``."""
    stdlib = Path(sysconfig.get_path("stdlib", vars={"installed_base": sys.base_prefix}))
    return next((stdlib / "ensurepip" / "_bundled").glob("pip-*.whl"))


def _dist_info(dist: metadata.Distribution) -> str:
    return next(
        f.parts[0] for f in dist.files or [] if f.parts and f.parts[0].endswith(".dist-info")
    )


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheel_from_installed(directory: Path, name: str) -> Path:
    """Repack the installed distribution ``name`` as a wheel (real package, tag of its WHEEL)."""
    dist = installed(name)
    dist_info = _dist_info(dist)
    files = {
        rel: entry.data
        for rel, entry in _site_files(dist).items()
        if not rel.endswith(("/RECORD", "/INSTALLER", "/REQUESTED", "/direct_url.json"))
    }
    wheel_meta = files[f"{dist_info}/WHEEL"].decode()
    tag = re.search(r"^Tag: (\S+)$", wheel_meta, re.M)
    assert tag, f"{name}: no Tag in its WHEEL file"
    record = "".join(f"{p},{_record_hash(d)},{len(d)}\n" for p, d in sorted(files.items()))
    record += f"{dist_info}/RECORD,,\n"
    files[f"{dist_info}/RECORD"] = record.encode()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{dist_info.removesuffix('.dist-info')}-{tag.group(1)}.whl"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in sorted(files.items()):
            info = zipfile.ZipInfo(path, date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return target


# --------------------------------------------------------------------------- serving


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


@contextmanager
def serve(channel: LocalChannel) -> Iterator[LocalChannel]:
    """Serve ``channel`` on 127.0.0.1 (an ephemeral port) for the duration of the block."""

    def handler(*args: object, **kwargs: object) -> _Quiet:
        return _Quiet(*args, directory=str(channel.root), **kwargs)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LocalChannel(
            channel.root, f"http://127.0.0.1:{server.server_address[1]}", channel.records
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def wheels_from_installed(index_dir: Path, roots: list[str]) -> list[Path]:
    """Repack ``roots`` and their installed dependencies as wheels under ``index_dir/<name>/``."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo, wheels = list(roots), []
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        wheels.append(wheel_from_installed(index_dir / name, name))
        for line in installed(name).requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return wheels
