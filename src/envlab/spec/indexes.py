"""Named package indexes (``envspecs/indexes.toml``), mirror overrides and reachability probes.

Every index ``NAME`` can be pointed at a mirror with the environment variable
``ENVLAB_INDEX_<NAME>`` (upper case, ``-`` as ``_``), e.g. ``ENVLAB_INDEX_PYTORCH_CU128``.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

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
class Index:
    """A named index with its effective URL (after any mirror override)."""

    name: str
    url: str
    declared_url: str
    description: str

    @property
    def env_var(self) -> str:
        return mirror_variable(self.name)

    @property
    def mirrored(self) -> bool:
        return self.url != self.declared_url

    def hint(self) -> str:
        return f"set {self.env_var} to a reachable mirror of {self.declared_url}"


def mirror_variable(name: str) -> str:
    return "ENVLAB_INDEX_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


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
        url = os.environ.get(mirror_variable(name), "").strip().rstrip("/") or entry.url
        found[name] = Index(name, url, entry.url, entry.description)
    if "pypi" not in found:
        raise SpecError(
            f"{path}: expected an index named 'pypi', found {', '.join(found) or 'none'}"
        )
    return found


def probe(index: Index, package: str = "torch", timeout: float = 10.0, attempts: int = 2) -> None:
    """Check that ``index`` answers for ``package`` (PEP 503 project page); raise IndexUnavailable.

    Network errors are retried once; a 404 means the index does not serve the package.
    """
    if index.url.startswith("file://"):
        path = Path(index.url.removeprefix("file://")) / package
        if not path.exists():
            raise IndexUnavailable(
                index.name, index.url, f"no {package}/ in the local index", index.hint()
            )
        return
    url = f"{index.url}/{package}/"
    detail = ""
    for _ in range(attempts):
        request = urllib.request.Request(
            url, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read(1)
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise IndexUnavailable(
                    index.name, index.url, f"it does not serve {package!r} (HTTP 404)", index.hint()
                ) from None
            detail = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            detail = str(reason) or type(exc).__name__
    raise IndexUnavailable(index.name, index.url, detail, index.hint())
