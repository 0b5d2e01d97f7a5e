"""Named package indexes (``envspecs/indexes.toml``), mirror overrides, project pages, probes.

Every index ``NAME`` can be pointed at a mirror with the environment variable
``ENVLAB_INDEX_<NAME>`` (upper case, ``-`` as ``_``), e.g. ``ENVLAB_INDEX_PYTORCH_CU128``.
An index answers for a package with a project page (PEP 503 HTML or PEP 691 JSON) listing the
package's files; anything else (a login page, a proxy's error page) is not an index.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from envlab.errors import IndexUnavailable, SpecError
from envlab.fsutil import read_toml


class IndexEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str
    description: str = ""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^(https?|file)://", value):
            raise ValueError(f"an http(s):// or file:// URL, found {value!r}")
        return value.rstrip("/")


@dataclass(frozen=True)
class Mirrored:
    """A source of packages (an index, a conda channel) at its declared URL, or at a mirror set
    for it in the environment (``<VARIABLE_PREFIX><NAME>``); locks keep the declared URLs."""

    VARIABLE_PREFIX: ClassVar[str] = "ENVLAB_INDEX_"

    name: str
    url: str  # effective: the mirror's when one is set
    declared_url: str

    @classmethod
    def variable(cls, name: str) -> str:
        """The environment variable that points source ``name`` at a mirror."""
        return cls.VARIABLE_PREFIX + re.sub(r"[^A-Z0-9]", "_", name.upper())

    @classmethod
    def resolve(cls, name: str, declared_url: str) -> tuple[str, str, str]:
        """(name, effective URL, declared URL): the mirror set in the environment, if any."""
        url = os.environ.get(cls.variable(name), "").strip().rstrip("/") or declared_url
        return name, url, declared_url

    @property
    def env_var(self) -> str:
        return self.variable(self.name)

    @property
    def mirrored(self) -> bool:
        return self.url != self.declared_url

    def effective(self, url: str) -> str:
        """A locked (declared) URL as fetched here (the mirror substituted)."""
        if self.mirrored and url.startswith(self.declared_url + "/"):
            return self.url + url[len(self.declared_url) :]
        return url

    def declared(self, url: str) -> str:
        """A URL as found here (maybe on the mirror) as it is locked."""
        if self.mirrored and url.startswith(self.url + "/"):
            return self.declared_url + url[len(self.url) :]
        return url

    def hint(self) -> str:
        return f"set {self.env_var} to a reachable mirror of {self.declared_url}"


@dataclass(frozen=True)
class Index(Mirrored):
    """A named index with its effective URL (after any mirror override)."""

    description: str = ""
    find_links: bool = False  # a wheelhouse: a flat directory or page of wheels, not an index

    def hint(self) -> str:
        if self.find_links:
            return (
                f"put the torch layer's wheels (the build and its dependencies) in {self.url}: "
                "that layer installs from the wheelhouse alone"
            )
        return super().hint()


@dataclass(frozen=True)
class IndexFile:
    """One file of a project page: its name, absolute URL and sha256 (when the page gives it)."""

    filename: str
    url: str
    sha256: str | None = None


def mirror_variable(name: str) -> str:
    return Index.variable(name)


def load_indexes(path: Path) -> dict[str, Index]:
    data = read_toml(path, SpecError, "the named package indexes")
    found: dict[str, Index] = {}
    for name, body in data.items():
        if not isinstance(body, dict):
            raise SpecError(f"{path}: field {name!r}: expected a table with 'url', found {body!r}")
        try:
            entry = IndexEntry.model_validate(body)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            loc = ".".join([name, *map(str, err["loc"])])
            if err["type"] == "extra_forbidden":
                raise SpecError(
                    f"{path}: unknown key {loc!r} (expected one of: description, url)"
                ) from None
            msg = err["msg"].removeprefix("Value error, ")
            raise SpecError(f"{path}: field {loc!r}: expected {msg}") from None
        found[name] = Index(*Index.resolve(name, entry.url), entry.description)
    if "pypi" not in found:
        raise SpecError(
            f"{path}: expected an index named 'pypi', found {', '.join(found) or 'none'}"
        )
    return found


JSON_TYPE = "application/vnd.pypi.simple.v1+json"
_ACCEPT = f"{JSON_TYPE}, text/html;q=0.1"


def probe(index: Index, package: str = "torch", timeout: float = 10.0, attempts: int = 2) -> None:
    """Check that ``index`` serves ``package``: its project page lists at least one file of it.

    Raises IndexUnavailable naming the index; network errors are retried once; a 404 means the
    index does not serve the package; a page that is no project page is not an index.
    """
    project_files(index, package, timeout=timeout, attempts=attempts)


def project_files(
    index: Index, package: str, timeout: float = 30.0, attempts: int = 2
) -> list[IndexFile]:
    """The files of ``package`` on ``index``'s project page (PEP 503 HTML or PEP 691 JSON).

    Raises IndexUnavailable when the index cannot be reached, does not serve the package, or
    answers with something that is not a project page listing the package's files.
    """
    name = canonicalize_name(package)
    if index.find_links:
        return _wheelhouse_files(index, name, timeout, attempts)
    if index.url.startswith("file://"):
        return _local_files(index, name)
    url = f"{index.url}/{name}/"
    body, content_type = _fetch(index, url, package, timeout, attempts)
    files = _parse_page(body, content_type, url)
    mine = [f for f in files if _belongs(f.filename, name)]
    if not mine:
        found = content_type or "no content type"
        raise IndexUnavailable(
            index.name,
            index.url,
            f"its page for {package!r} is not a package index project page (expected PEP 503 "
            f"HTML or PEP 691 JSON listing {name} files, found {found}, {len(body)} bytes, "
            f"{len(files)} file link(s), none of {name})",
            index.hint(),
            reached=True,
        )
    return mine


def _local_files(index: Index, name: str) -> list[IndexFile]:
    """A ``file://`` index: a directory per project holding its files."""
    folder = Path(urllib.parse.unquote(index.url.removeprefix("file://"))) / name
    files = sorted(p for p in folder.iterdir() if _belongs(p.name, name)) if folder.is_dir() else []
    if not files:
        raise IndexUnavailable(
            index.name, index.url, f"no {name}/ in the local index", index.hint()
        )
    return [IndexFile(p.name, p.as_uri()) for p in files]


def wheelhouse_index(declared: str, root: Path) -> Index:
    """A wheelhouse (``[torch] wheelhouse``) as the torch layer's source: a URL, or a directory
    (relative to the project ``root``)."""
    if re.match(r"^(https?|file)://", declared):
        url = declared.rstrip("/")
    else:
        url = str((root / declared).resolve())
    return Index("wheelhouse", url, url, "wheels of one's own builds", find_links=True)


def _wheelhouse_files(index: Index, name: str, timeout: float, attempts: int) -> list[IndexFile]:
    """The wheels of ``name`` in a wheelhouse: a flat directory, or a page linking to them."""
    if re.match(r"^https?://", index.url):
        body, content_type = _fetch(index, index.url + "/", name, timeout, attempts)
        files = _parse_page(body, content_type, index.url + "/")
    else:
        folder = Path(urllib.parse.unquote(index.url.removeprefix("file://")))
        found = sorted(folder.iterdir()) if folder.is_dir() else []
        files = [IndexFile(p.name, p.as_uri()) for p in found]
    mine = [f for f in files if _belongs(f.filename, name)]
    if not mine:
        raise IndexUnavailable(
            index.name, index.url, f"no {name} wheel in the wheelhouse", index.hint()
        )
    return mine


def _fetch(
    index: Index, url: str, package: str, timeout: float, attempts: int
) -> tuple[bytes, str]:
    detail = ""
    for _ in range(attempts):
        request = urllib.request.Request(url, headers={"Accept": _ACCEPT})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                ctype = response.headers.get("Content-Type", "")
                return response.read(), ctype.split(";")[0].strip().lower()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                detail = f"it does not serve {package!r} (HTTP 404)"
                raise IndexUnavailable(
                    index.name, index.url, detail, index.hint(), reached=True
                ) from None
            detail = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            detail = str(reason) or type(exc).__name__
    raise IndexUnavailable(index.name, index.url, detail, index.hint())


def _parse_page(body: bytes, content_type: str, page_url: str) -> list[IndexFile]:
    """Every file link of a project page; [] for an answer that is neither format."""
    text = body.decode("utf-8", errors="replace")
    if "json" in content_type:
        try:
            data = json.loads(text)
        except ValueError:
            return []
        entries = data.get("files") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            return []
        return [
            IndexFile(
                str(e["filename"]),
                urllib.parse.urljoin(page_url, str(e["url"])),
                (e.get("hashes") or {}).get("sha256"),
            )
            for e in entries
            if isinstance(e, dict) and "filename" in e and "url" in e
        ]
    links = _Anchors()
    links.feed(text)
    found = []
    for href in links.hrefs:
        absolute = urllib.parse.urljoin(page_url, href)
        parts = urllib.parse.urlsplit(absolute)
        filename = urllib.parse.unquote(posixpath.basename(parts.path))
        sha = (
            parts.fragment.removeprefix("sha256=") if parts.fragment.startswith("sha256=") else None
        )
        found.append(IndexFile(filename, urllib.parse.urlunsplit(parts._replace(fragment="")), sha))
    return found


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href") if tag == "a" else None
        if href:
            self.hrefs.append(href)


def _belongs(filename: str, name: str) -> bool:
    """``filename`` is a wheel or sdist of the project ``name`` (canonical)."""
    try:
        if filename.endswith(".whl"):
            return parse_wheel_filename(filename)[0] == name
        return parse_sdist_filename(filename)[0] == name
    except (InvalidWheelFilename, InvalidSdistFilename):
        return False
