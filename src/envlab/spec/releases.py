"""What PyTorch publishes: the CUDA variants and the Pythons each torch release has wheels for.

The tables live in ``releases.toml`` beside this module, every entry with its source, validated
strictly. They sit in the spec wing because a matrix cell that cannot exist (a variant not
published for its torch release, a Python the release has no wheels for) is marked when the
matrix is expanded, before anything is built; the hardware wing reads the same tables for its
advice (``lock --verify`` warnings, doctor), so there is one source.
"""

from __future__ import annotations

import functools
import re
import tomllib
from importlib import resources
from typing import TYPE_CHECKING

from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from envlab.errors import SpecError, first_problem

if TYPE_CHECKING:  # envspec marks cells with this module: a runtime import would be circular
    from envlab.spec.envspec import EnvSpec

_VARIANT = re.compile(r"^(cu\d{3}|cpu)$")
_INDEX_VARIANT = re.compile(r"pytorch-(?:nightly-)?(cu\d{3}|cpu)")


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class Entry(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=_kebab, populate_by_name=True, frozen=True
    )

    source: str = Field(min_length=1)


def torch_spec(value: str) -> str:
    """A validator: ``value`` is a PEP 440 specifier of torch releases."""
    try:
        SpecifierSet(value)
    except InvalidSpecifier:
        raise ValueError(f"a PEP 440 specifier like '==2.10.*', found {value!r}") from None
    return value


class VariantEntry(Entry):
    """The torch releases one CUDA variant (``cu126``) is published for."""

    name: str = Field(pattern=r"^cu\d{3}$")
    torch: str

    _check_torch = field_validator("torch")(torch_spec)

    @property
    def cuda(self) -> str:
        return f"{self.name[2:-1]}.{self.name[-1]}"

    def publishes(self, release: Version) -> bool:
        return SpecifierSet(self.torch).contains(release, prereleases=True)


class PythonEntry(Entry):
    """The CPython versions the torch releases of ``torch`` have wheels for."""

    torch: str
    versions: list[str] = Field(min_length=1)

    _check_torch = field_validator("torch")(torch_spec)

    @field_validator("versions")
    @classmethod
    def _versions(cls, value: list[str]) -> list[str]:
        for item in value:
            if not re.fullmatch(r"3\.\d{1,2}", item):
                raise ValueError(f"Python minor versions like '3.12', found {item!r}")
        return value

    def covers(self, release: Version) -> bool:
        return SpecifierSet(self.torch).contains(release, prereleases=True)


class Releases(Entry):
    source: str = "envlab releases.toml"
    schema_: int = Field(alias="schema")
    checked_through: str = Field(pattern=r"^\d+\.\d+$")
    variant: list[VariantEntry]
    python: list[PythonEntry]

    def variant_entry(self, name: str) -> VariantEntry | None:
        return next((v for v in self.variant if v.name == name), None)

    def python_entry(self, release: Version) -> PythonEntry | None:
        return next((p for p in self.python if p.covers(release)), None)

    def published_for(self, release: Version) -> list[VariantEntry]:
        """The variants published for ``release`` (none past ``checked-through``)."""
        if release > Version(self.checked_through):
            return []
        return [v for v in self.variant if v.publishes(release)]


def release_of(torch_version: str) -> Version | None:
    """'2.10.0+cu126' or '2.12.0.dev20261120' -> Version('2.10') / Version('2.12')."""
    try:
        version = Version(torch_version)
    except InvalidVersion:
        return None
    return Version(f"{version.major}.{version.minor}")


def parse(text: str, source: str = "releases.toml") -> Releases:
    """Parse and validate the tables; one-line :class:`SpecError` on any problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source}: expected valid TOML, found a syntax error: {exc}") from None
    try:
        return Releases.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{source}: {first_problem(exc)}") from None


def raw() -> dict:
    """The packaged tables as TOML data (what the hardware wing's knowledge merges in)."""
    return tomllib.loads(_text())


@functools.cache
def load() -> Releases:
    return parse(_text(), "envlab/spec/releases.toml")


def _text() -> str:
    return resources.files("envlab.spec").joinpath("releases.toml").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- an env's build


def pinned_torch(spec: EnvSpec) -> tuple[str | None, str | None]:
    """(version, local tag) of an exact ``torch==X[+tag]`` pin, else expect.torch_version."""
    for text in spec.torch.packages:
        req = Requirement(text)
        if req.name.lower() != "torch":
            continue
        pins = [s for s in req.specifier if s.operator in ("==", "===") and "*" not in s.version]
        if len(pins) == 1:
            version, _, local = pins[0].version.partition("+")
            return version, local or None
    expected = spec.expect.torch_version
    return (expected if expected and re.fullmatch(r"[\d.]+", expected) else None), None


def variant_of(spec: EnvSpec, local: str | None, index: str) -> str | None:
    """The CUDA variant from the pin's local tag, the expectations, or the index name."""
    variant = local or spec.expect.torch_local
    if variant and _VARIANT.match(variant):
        return variant
    if spec.expect.cpu_only:
        return "cpu"
    if spec.expect.cuda:
        return "cu" + spec.expect.cuda.replace(".", "")
    if match := _INDEX_VARIANT.fullmatch(index):
        return match.group(1)
    return None


def torch_release(spec: EnvSpec) -> Version | None:
    """The torch release (2.10) the env pins (``torch==2.10.0``, ``torch==2.10.*``), if any."""
    texts = [t for t in spec.torch.packages if Requirement(t).name.lower() == "torch"]
    texts += [f"torch{spec.expect.torch_version}"] if spec.expect.torch_version else []
    for text in texts:
        plain = re.fullmatch(r"torch([\d.]+)", text)
        try:
            specifier = Requirement(f"torch=={plain.group(1)}" if plain else text).specifier
        except ValueError:
            continue
        pins = [s for s in specifier if s.operator in ("==", "===")]
        if len(pins) == 1:
            found = release_of(pins[0].version.removesuffix(".*"))
            if found is not None:
                return found
    return None


def no_such_build(spec: EnvSpec, table: Releases | None = None) -> str | None:
    """Why the tables say ``spec``'s torch build does not exist, with the entry's source; None
    when it is published or nothing is known (an unpinned torch, a release past the tables, a
    wheelhouse of one's own builds)."""
    if spec.torch.wheelhouse:
        return None
    release = torch_release(spec)
    if release is None:
        return None
    table = table or load()
    python = table.python_entry(release)
    if python is not None and spec.python not in python.versions:
        return (
            f"torch {release} has no wheels for Python {spec.python} (it has for "
            f"{', '.join(python.versions)}; source: {python.source})"
        )
    variant = variant_of(spec, pinned_torch(spec)[1], spec.torch.index or "")
    entry = table.variant_entry(variant) if variant else None
    if entry is None or entry.publishes(release):
        return None
    published = [v.name for v in table.published_for(release)]
    also = f"; torch {release} is published as {', '.join(published)}" if published else ""
    return (
        f"torch {release} is not published as {entry.name} ({entry.name} builds exist for "
        f"torch {entry.torch}{also}; source: {entry.source})"
    )
