"""What differs between two package sets, grouped into changes that can only move together.

Two kinds of coupling put changes in one group:

* build coupling: torch, torchvision, torchaudio, triton and the ``nvidia-*`` wheels are built
  against each other, so a torch family of one set never runs with the CUDA libraries of the other;
* requirements: a package's new version that requires another changed package's new version (or
  an old version that the other's new version no longer satisfies) moves with it, else the
  candidate env would be one no resolver produces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from envlab.build.layers import build_coupled
from envlab.results.schema import Result

Requires = Callable[[str, str], Sequence[Requirement]]
"""(package, version) -> the requirements that version declares."""


@dataclass(frozen=True)
class Change:
    """One package that differs: upgraded or downgraded, added (no ``before``) or removed."""

    name: str
    before: str | None
    after: str | None

    def __str__(self) -> str:
        if self.before is None:
            return f"{self.name} {self.after} (added)"
        if self.after is None:
            return f"{self.name} {self.before} (removed)"
        return f"{self.name} {self.before} → {self.after}"


@dataclass(frozen=True)
class Group:
    """Changes that move together, and why (empty for a single package)."""

    changes: tuple[Change, ...]
    reasons: tuple[str, ...] = ()

    def why(self, most: int = 2) -> str:
        """Why these move together, in a few words (empty for a single package)."""
        shown = "; ".join(self.reasons[:most])
        rest = len(self.reasons) - most
        return shown + (f"; and {rest} more" if rest > 0 else "")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.changes]

    @property
    def torch_family(self) -> bool:
        return any(build_coupled(c.name) for c in self.changes)

    def label(self, most: int = 3) -> str:
        """``torchaudio 2.10.0 → 2.11.0``, or ``the torch family (torch 2.10.0 → 2.15.0, ...)``."""
        if len(self.changes) == 1:
            return str(self.changes[0])
        family = [c for c in self.changes if c.name in ("torch", "torchvision", "torchaudio")]
        shown = (family or list(self.changes))[:most]
        rest = len(self.changes) - len(shown)
        more = f" and {rest} more" if rest else ""
        inner = ", ".join(map(str, shown)) + more
        return f"the torch family ({inner})" if self.torch_family else inner


def package_set(result: Result) -> dict[str, str]:
    """{canonical name: version} of every distribution the result's probe found."""
    return {
        canonicalize_name(name): dist.version
        for name, dist in result.facts.distributions.items()
        if dist.version
    }


def diff(good: Mapping[str, str], bad: Mapping[str, str]) -> list[Change]:
    """Every package whose version differs between ``good`` and ``bad``, by name."""
    names = sorted(set(good) | set(bad))
    return [Change(n, good.get(n), bad.get(n)) for n in names if good.get(n) != bad.get(n)]


def apply(good: Mapping[str, str], groups: Iterable[Group]) -> dict[str, str]:
    """``good`` with the changes of ``groups`` made."""
    out = dict(good)
    for group in groups:
        for change in group.changes:
            if change.after is None:
                out.pop(change.name, None)
            else:
                out[change.name] = change.after
    return out


def _satisfies(version: str | None, requirement: Requirement) -> bool:
    if version is None:
        return False
    try:
        return requirement.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


class _Unions:
    """Union-find over package names, remembering why each union was made."""

    def __init__(self, names: Iterable[str]) -> None:
        self.parent = {n: n for n in names}
        self.reasons: dict[str, list[str]] = {n: [] for n in self.parent}

    def find(self, name: str) -> str:
        while self.parent[name] != name:
            self.parent[name] = self.parent[self.parent[name]]
            name = self.parent[name]
        return name

    def join(self, a: str, b: str, reason: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.reasons[ra] += self.reasons.pop(rb)
        self.reasons[ra].append(reason)


def _coupled_by_requirements(
    change: Change,
    changed: Mapping[str, Change],
    requires: Requires,
    environment: Mapping[str, str],
) -> list[tuple[str, str]]:
    """(other package, why) for each changed package that ``change`` cannot move without."""
    found = []
    for version, side in ((change.after, "after"), (change.before, "before")):
        if version is None:
            continue
        for req in requires(change.name, version):
            other = changed.get(canonicalize_name(req.name))
            if other is None or other.name == change.name:
                continue
            if req.marker is not None and not req.marker.evaluate({**environment, "extra": ""}):
                continue
            # the new version must find the other's new version, the old one keeps the old
            partner = other.before if side == "after" else other.after
            if not _satisfies(partner, req):
                found.append((other.name, f"{change.name} {version} requires {req}"))
    return found


def group(
    changes: Sequence[Change],
    requires: Requires,
    environment: Mapping[str, str],
) -> list[Group]:
    """``changes`` in groups that move together; the torch family first, then by name.

    ``environment``: marker values of the env being bisected (its Python, this platform).
    """
    unions = _Unions(c.name for c in changes)
    family = [c.name for c in changes if build_coupled(c.name)]
    for name in family[1:]:
        unions.join(family[0], name, "built against each other (torch family)")
    changed = {c.name: c for c in changes}
    for change in changes:
        for other, why in _coupled_by_requirements(change, changed, requires, environment):
            unions.join(change.name, other, why)
    members: dict[str, list[Change]] = {}
    for change in changes:
        members.setdefault(unions.find(change.name), []).append(change)
    groups = [
        Group(tuple(found), tuple(dict.fromkeys(unions.reasons[root])))
        for root, found in members.items()
    ]
    return sorted(groups, key=lambda g: (not g.torch_family, g.names[0]))
