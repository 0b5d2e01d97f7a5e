"""Reading a simple package index (PEP 503 HTML or PEP 691 JSON) for bisect.

A project's files with their versions and sha256 (so candidate envs install exact, hash-checked
files), a file's declared requirements (its PEP 658 ``.metadata`` where the index serves one, else
the wheel's METADATA read through HTTP byte ranges, never the whole wheel unless the server ignores
ranges) and the nightly builds an index still serves between two dates.
"""

from __future__ import annotations

import email.parser
import io
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from html.parser import HTMLParser
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from envlab.errors import IndexUnavailable, UserError
from envlab.log import log
from envlab.spec.indexes import Index

ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
TAIL = 1 << 16  # bytes of a wheel's end fetched first: the zip directory of a small wheel
WHOLE_LIMIT = 256 << 20  # a server that ignores ranges: read a wheel this big at most
_DEV_DATE = re.compile(r"\.dev(\d{8})")

Opener = Callable[..., Any]
"""A callable with the signature of :func:`urllib.request.urlopen`."""


@dataclass(frozen=True)
class IndexFile:
    """One file of a project on an index."""

    filename: str
    url: str
    version: Version
    sha256: str | None
    wheel: bool
    metadata: bool  # the index serves the file's core metadata at ``url + ".metadata"``


class _Links(HTMLParser):
    """The ``<a>`` elements of a PEP 503 project page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append(dict(attrs))


def _parse_filename(filename: str) -> tuple[Version, bool] | None:
    """(version, is a wheel) of a distribution file name; None for anything else."""
    try:
        if filename.endswith(".whl"):
            return parse_wheel_filename(filename)[1], True
        return parse_sdist_filename(filename)[1], False
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


def _file(base: str, href: str, sha256: str | None, metadata: bool) -> IndexFile | None:
    url, _, fragment = urllib.parse.urljoin(base, href).partition("#")
    if sha256 is None and fragment.startswith("sha256="):
        sha256 = fragment.removeprefix("sha256=")
    filename = urllib.parse.unquote(url.rsplit("/", 1)[-1])
    parsed = _parse_filename(filename)
    if parsed is None:
        return None
    return IndexFile(filename, url, parsed[0], sha256, parsed[1], metadata)


def parse_page(base: str, body: bytes, content_type: str) -> list[IndexFile]:
    """The files of a project page at ``base`` (JSON or HTML)."""
    found: list[IndexFile | None] = []
    if "json" in content_type:
        for entry in json.loads(body).get("files", []):
            meta = entry.get("core-metadata", entry.get("dist-info-metadata", False))
            sha = (entry.get("hashes") or {}).get("sha256")
            found.append(_file(base, entry["url"], sha, bool(meta)))
    else:
        parser = _Links()
        parser.feed(body.decode("utf-8", errors="replace"))
        for link in parser.links:
            meta = link.get("data-core-metadata") or link.get("data-dist-info-metadata")
            found.append(_file(base, link.get("href") or "", None, bool(meta)))
    return [f for f in found if f is not None]


def requirements_from_metadata(text: str, source: str) -> list[Requirement]:
    """The ``Requires-Dist`` requirements of a core metadata document."""
    message = email.parser.HeaderParser().parsestr(text)
    out = []
    for line in message.get_all("Requires-Dist") or []:
        try:
            out.append(Requirement(line))
        except InvalidRequirement as exc:
            raise UserError(
                f"{source}: expected a requirement in Requires-Dist, found {exc}"
            ) from None
    return out


class _RangeReader(io.RawIOBase):
    """A remote file read through HTTP byte ranges, enough for :class:`zipfile.ZipFile`."""

    def __init__(self, url: str, size: int, tail: bytes, fetch: Callable[[int, int], bytes]):
        super().__init__()
        self.url, self.size, self._fetch, self._pos = url, size, fetch, 0
        self._blocks: list[tuple[int, bytes]] = [(size - len(tail), tail)]

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self._pos + size)
        if end <= self._pos:
            return b""
        for start, block in self._blocks:
            if start <= self._pos and end <= start + len(block):
                data = block[self._pos - start : end - start]
                break
        else:
            # read ahead: zipfile asks for a member's header, then its name, then its data
            fetched = self._fetch(self._pos, min(self.size, max(end, self._pos + TAIL)) - 1)
            self._blocks.append((self._pos, fetched))
            data = fetched[: end - self._pos]
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class IndexReader:
    """Project pages and metadata of simple indexes, each fetched once (``opener``: injectable)."""

    def __init__(self, timeout: float = 60.0, opener: Opener = urllib.request.urlopen) -> None:
        self.timeout = timeout
        self._open = opener
        self._pages: dict[tuple[str, str], list[IndexFile]] = {}
        self._requirements: dict[str, list[Requirement]] = {}

    def _get(self, url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(url, headers=headers)
        with self._open(request, timeout=self.timeout) as response:
            return response.status, dict(response.headers), response.read()

    def files(self, index: Index, project: str) -> list[IndexFile]:
        """Every file of ``project`` on ``index`` ([] when the index does not serve it)."""
        key = (index.url, canonicalize_name(project))
        if key not in self._pages:
            url = f"{index.url}/{key[1]}/"
            try:
                _, headers, body = self._get(url, {"Accept": ACCEPT})
                ctype = headers.get("Content-Type", headers.get("content-type", ""))
                self._pages[key] = parse_page(url, body, ctype)
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    detail = f"HTTP {exc.code}"
                    raise IndexUnavailable(index.name, index.url, detail, index.hint()) from None
                self._pages[key] = []
            except (urllib.error.URLError, OSError) as exc:
                detail = str(getattr(exc, "reason", exc)) or type(exc).__name__
                raise IndexUnavailable(index.name, index.url, detail, index.hint()) from None
        return self._pages[key]

    def release(self, index: Index, project: str, version: str) -> list[IndexFile]:
        """The files of exactly ``version`` (local tag included) of ``project`` on ``index``."""
        want = Version(version)
        return [f for f in self.files(index, project) if f.version == want]

    def find(
        self, indexes: Sequence[Index], project: str, version: str
    ) -> tuple[Index, list[IndexFile]]:
        """The first of ``indexes`` serving ``project`` ``version``, with its files."""
        for index in indexes:
            found = self.release(index, project, version)
            if found:
                return index, found
        names = ", ".join(f"{i.name!r} ({i.url})" for i in indexes)
        raise UserError(
            f"bisect: {project}=={version} is not served by the env's index(es) {names}: "
            "it cannot be rebuilt from its declared indexes"
        )

    def requirements(self, file: IndexFile) -> list[Requirement]:
        """What ``file`` requires (its core metadata); an sdist has none that can be read."""
        if file.url not in self._requirements:
            self._requirements[file.url] = self._read_requirements(file)
        return self._requirements[file.url]

    def _read_requirements(self, file: IndexFile) -> list[Requirement]:
        if file.metadata:
            _, _, body = self._get(file.url + ".metadata", {})
            return requirements_from_metadata(body.decode("utf-8", "replace"), file.url)
        if not file.wheel:
            log(f"bisect: {file.filename} is an sdist: its requirements are not read")
            return []
        with zipfile.ZipFile(self._remote(file.url)) as archive:
            name = next(
                (n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)),
                None,
            )
            if name is None:
                raise UserError(f"bisect: {file.url}: expected a wheel with METADATA, found none")
            text = archive.read(name).decode("utf-8", "replace")
        return requirements_from_metadata(text, file.url)

    def _remote(self, url: str) -> io.RawIOBase | io.BytesIO:
        status, headers, body = self._get(url, {"Range": f"bytes=-{TAIL}"})
        if status != 206:  # the server sent the whole file
            if len(body) > WHOLE_LIMIT:
                raise UserError(f"bisect: {url}: serves no byte ranges and is too large to read")
            return io.BytesIO(body)
        total = headers.get("Content-Range", headers.get("content-range", "")).rpartition("/")[2]
        if not total.isdigit():
            return io.BytesIO(body)  # a range of unknown length: it is the whole file

        def fetch(start: int, end: int) -> bytes:
            return self._get(url, {"Range": f"bytes={start}-{end}"})[2]

        return _RangeReader(url, int(total), body, fetch)


def preferred(files: Sequence[IndexFile], python: str) -> IndexFile:
    """The file whose metadata best stands for this platform and Python ``python`` (``3.11``)."""
    cp = "cp" + python.replace(".", "")
    plat = {"linux": "linux", "win32": "win", "darwin": "macosx"}.get(sys.platform, sys.platform)

    def score(f: IndexFile) -> tuple[bool, bool, bool]:
        if not f.wheel:
            return (False, False, False)
        tags = parse_wheel_filename(f.filename)[3]
        return (
            True,
            any(t.interpreter in (cp, "py3") for t in tags),
            any(t.platform == "any" or t.platform.startswith(plat) for t in tags),
        )

    return max(files, key=score)


def dev_date(version: Version | str) -> date | None:
    """The date of a ``.devYYYYMMDD`` build, or None."""
    match = _DEV_DATE.search(str(version))
    if not match:
        return None
    text = match.group(1)
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def nightlies(
    reader: IndexReader, index: Index, project: str, first: date, last: date, local: str | None
) -> dict[date, Version]:
    """The newest ``project`` build of each date from ``first`` to ``last`` that ``index`` serves.

    ``local``: only builds with this local tag (``cu130``), when given.
    """
    found: dict[date, Version] = {}
    for f in reader.files(index, project):
        when = dev_date(f.version)
        if when is None or not first <= when <= last:
            continue
        if local is not None and f.version.local != local:
            continue
        if when not in found or f.version > found[when]:
            found[when] = f.version
    return dict(sorted(found.items()))
