"""Conda channels of an environment.yml, mirror overrides and reachability probes.

A channel named ``NAME`` (``conda-forge``) lives at ``https://conda.anaconda.org/NAME``; a channel
given as a URL is its own. Either can be pointed at a mirror (an air-gapped copy, a proxy, a local
channel in tests) with ``ENVLAB_CHANNEL_<NAME>`` (upper case, ``-`` as ``_``), as package indexes
are with ``ENVLAB_INDEX_<NAME>``. Lockfiles keep the declared URLs; a mirror is substituted when
solving, installing and checking drift.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote, urlparse

from envlab.errors import ChannelUnavailable
from envlab.spec.indexes import Mirrored

CHANNEL_ALIAS = "https://conda.anaconda.org"


@dataclass(frozen=True)
class Channel(Mirrored):
    """A channel with its effective URL (after any mirror override)."""

    VARIABLE_PREFIX: ClassVar[str] = "ENVLAB_CHANNEL_"


def channel(entry: str) -> Channel:
    """The channel of an environment.yml ``channels:`` entry (a name or a URL)."""
    entry = entry.strip().rstrip("/")
    if re.match(r"^(https?|file)://", entry):
        declared, name = entry, entry.rsplit("/", 1)[-1]
    else:
        declared, name = f"{CHANNEL_ALIAS}/{entry}", entry
    return Channel(*Channel.resolve(name, declared))


def for_url(url: str, channels: list[Channel]) -> Channel | None:
    """The channel a locked package URL belongs to."""
    return next((c for c in channels if url.startswith(c.declared_url + "/")), None)


def probe(ch: Channel, subdir: str = "noarch", timeout: float = 10.0, attempts: int = 2) -> None:
    """Check that ``ch`` serves ``<subdir>/repodata.json``; raise ChannelUnavailable otherwise."""
    target = f"{ch.url}/{subdir}/repodata.json"
    if target.startswith("file://"):
        if not Path(unquote(urlparse(target).path)).is_file():
            raise ChannelUnavailable(ch.name, ch.url, f"no {subdir}/repodata.json", ch.hint())
        return
    detail = ""
    for _ in range(attempts):
        request = urllib.request.Request(target, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                return
        except urllib.error.HTTPError as exc:
            detail = f"HTTP {exc.code} for {subdir}/repodata.json"
            if exc.code in (404, 410):
                break
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            detail = str(getattr(exc, "reason", exc)) or type(exc).__name__
    raise ChannelUnavailable(ch.name, ch.url, detail, ch.hint())
