"""Knowledge as data: driver/CUDA/arch/wheel/GPU/ISA tables from ``knowledge.toml``, plus the
published-variants table of :mod:`envlab.spec.releases` (its one source, shared with the spec wing).

Loaded and validated strictly (unknown keys rejected, every entry carries its source); the
lookups here are the only way the rest of the hardware wing reads those tables.
"""

from __future__ import annotations

import functools
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import Field, ValidationError, field_validator

from envlab.errors import SpecError, UserError, first_problem
from envlab.spec import releases as published
from envlab.spec.releases import Entry, VariantEntry, release_of, torch_spec
from envlab.verify.archcompat import Arch, Capability

OsFamily = Literal["linux", "windows"]
_DRIVER = re.compile(r"^\d+\.\d+(\.\d+)?$")
_CUDA = re.compile(r"^\d+\.\d+$")


class KnowledgeError(UserError):
    """``knowledge.toml`` is malformed."""


def driver_key(version: str) -> tuple[int, ...]:
    """'570.124.06' -> (570, 124, 6), for ordering driver versions."""
    return tuple(int(part) for part in version.strip().split("."))


def cuda_key(version: str) -> tuple[int, int]:
    major, minor = version.strip().split(".")[:2]
    return int(major), int(minor)


def _driver(value: str | None) -> str | None:
    if value is not None and not _DRIVER.match(value):
        raise ValueError(f"a driver version like '570.26', found {value!r}")
    return value


def _cuda(value: str) -> str:
    if not _CUDA.match(value):
        raise ValueError(f"a CUDA version like '12.8', found {value!r}")
    return value


class DriverEntry(Entry):
    cuda: str
    linux: str
    windows: str | None = None

    _check_cuda = field_validator("cuda")(_cuda)
    _check_driver = field_validator("linux", "windows")(_driver)

    def minimum(self, os: OsFamily) -> str | None:
        return self.linux if os == "linux" else self.windows


class MinorCompatEntry(Entry):
    major: int
    linux: str
    windows: str | None = None

    _check_driver = field_validator("linux", "windows")(_driver)

    def minimum(self, os: OsFamily) -> str | None:
        return self.linux if os == "linux" else self.windows


class CudaArchEntry(Entry):
    cuda: str
    lowest: str
    highest: str

    _check_cuda = field_validator("cuda")(_cuda)

    @field_validator("lowest", "highest")
    @classmethod
    def _arch(cls, value: str) -> str:
        Capability.parse(value)
        return value

    def compiles_for(self, cap: Capability) -> bool:
        return Capability.parse(self.lowest) <= cap <= Capability.parse(self.highest)


class WheelEntry(Entry):
    variant: str
    torch: str
    arch_flags: list[str]
    confidence: Literal["measured", "build-script", "inferred"]
    unpinned: bool = False

    _check_torch = field_validator("torch")(torch_spec)

    @field_validator("arch_flags")
    @classmethod
    def _flags(cls, value: list[str]) -> list[str]:
        for flag in value:
            Arch.parse(flag)
        return value

    def matches(self, torch_version: str) -> bool:
        try:
            version = Version(torch_version)
        except InvalidVersion:
            return False
        return SpecifierSet(self.torch).contains(Version(version.base_version), prereleases=True)


Availability = Literal["published", "not-published", "unknown"]


class GpuEntry(Entry):
    names: list[str] = Field(min_length=1)
    cc: str

    @field_validator("cc")
    @classmethod
    def _cc(cls, value: str) -> str:
        Capability.parse(value)
        return value


class IsaNote(Entry):
    machine: Literal["x86_64", "aarch64"]
    text: str
    when_all: list[str] = Field(default_factory=list)
    when_any: list[str] = Field(default_factory=list)
    when_none: list[str] = Field(default_factory=list)

    def applies(self, machine: str, flags: set[str]) -> bool:
        return (
            machine == self.machine
            and all(f in flags for f in self.when_all)
            and (not self.when_any or any(f in flags for f in self.when_any))
            and not any(f in flags for f in self.when_none)
        )


def _gpu_words(name: str) -> str:
    words = re.sub(r"\b(NVIDIA|GEFORCE|TESLA|QUADRO)\b", " ", name.upper())
    return " ".join(words.split())


class Knowledge(Entry):
    source: str = "envlab knowledge.toml"
    schema_: int = Field(alias="schema")
    checked_through: str = Field(pattern=r"^\d+\.\d+$")
    driver: list[DriverEntry]
    minor_compat: list[MinorCompatEntry]
    cuda_arch: list[CudaArchEntry]
    wheel: list[WheelEntry]
    variant: list[VariantEntry]
    gpu: list[GpuEntry]
    isa_note: list[IsaNote] = Field(default_factory=list)

    # ------------------------------------------------------------------ drivers
    def toolkit_driver(self, cuda: str) -> DriverEntry | None:
        """The driver row for exactly this CUDA minor release."""
        return next((d for d in self.driver if cuda_key(d.cuda) == cuda_key(cuda)), None)

    def max_cuda(self, driver: str, os: OsFamily) -> DriverEntry | None:
        """The newest CUDA release whose toolkit driver is <= ``driver`` (None: older than all)."""
        fits = [
            d for d in self.driver if (m := d.minimum(os)) and driver_key(m) <= driver_key(driver)
        ]
        return max(fits, key=lambda d: cuda_key(d.cuda), default=None)

    def minor_compat_for(self, major: int) -> MinorCompatEntry | None:
        return next((m for m in self.minor_compat if m.major == major), None)

    # ------------------------------------------------------------------ toolkits
    def toolkit_archs(self, cuda: str) -> CudaArchEntry | None:
        """The arch range of the newest table row at or below ``cuda`` within its major."""
        major = cuda_key(cuda)[0]
        rows = [
            a
            for a in self.cuda_arch
            if cuda_key(a.cuda)[0] == major and cuda_key(a.cuda) <= cuda_key(cuda)
        ]
        return max(rows, key=lambda a: cuda_key(a.cuda), default=None)

    def first_cuda_for(self, cap: Capability) -> CudaArchEntry | None:
        """The oldest toolkit in the table that compiles SASS for ``cap``."""
        rows = [a for a in self.cuda_arch if a.compiles_for(cap)]
        return min(rows, key=lambda a: cuda_key(a.cuda), default=None)

    def last_cuda_for(self, cap: Capability) -> CudaArchEntry | None:
        """The newest toolkit in the table that still compiles SASS for ``cap``."""
        rows = [a for a in self.cuda_arch if a.compiles_for(cap)]
        return max(rows, key=lambda a: cuda_key(a.cuda), default=None)

    # ------------------------------------------------------------------ wheels
    def wheel_for(self, variant: str, torch_version: str | None) -> WheelEntry | None:
        """The known arch list of a (variant, torch version) wheel; unpinned -> the current one."""
        rows = [w for w in self.wheel if w.variant == variant]
        if torch_version is None:
            return next((w for w in rows if w.unpinned), None)
        return next((w for w in rows if w.matches(torch_version)), None)

    # ------------------------------------------------------------------ published variants
    def releases(self) -> list[Version]:
        """Every torch release the variant table speaks of, up to ``checked-through``: for each
        major named in it, minors 0 up to the highest one named (a new major starts at 0)."""
        newest = Version(self.checked_through)
        named = [newest] + [
            Version(spec.version)
            for entry in self.variant
            for spec in SpecifierSet(entry.torch)
            if "*" not in spec.version
        ]
        top: dict[int, int] = {}
        for version in named:
            top[version.major] = max(top.get(version.major, 0), version.minor)
        found = [
            Version(f"{major}.{minor}") for major, last in top.items() for minor in range(last + 1)
        ]
        return sorted(v for v in found if v <= newest)

    def variant_entry(self, name: str) -> VariantEntry | None:
        return next((v for v in self.variant if v.name == name), None)

    def availability(self, variant: str, torch_version: str) -> Availability:
        """Is ``variant`` published for ``torch_version``'s release? 'unknown' past the table."""
        entry, release = self.variant_entry(variant), release_of(torch_version)
        if entry is None or release is None:
            return "unknown"
        if not entry.publishes(release):
            # a closed range is a recorded fact even for releases after checked-through
            return "not-published"
        return "published" if release <= Version(self.checked_through) else "unknown"

    def published_for(self, torch_version: str) -> list[VariantEntry]:
        """The variants published for ``torch_version``'s release (empty past the table)."""
        release = release_of(torch_version)
        if release is None or release > Version(self.checked_through):
            return []
        return sorted(
            (v for v in self.variant if v.publishes(release)), key=lambda v: cuda_key(v.cuda)
        )

    def published_range(self, variant: str) -> tuple[Version, Version] | None:
        """(first, last) release of the table that ``variant`` is published for."""
        entry = self.variant_entry(variant)
        found = [r for r in self.releases() if entry and entry.publishes(r)]
        return (found[0], found[-1]) if found else None

    def nearest_published(self, variant: str, torch_version: str) -> list[VariantEntry]:
        """The variants published for that release, nearest CUDA version to ``variant`` first.

        At equal distance the older CUDA comes first, since it runs on older drivers too.
        """
        major, minor = cuda_key(f"{variant[2:-1]}.{variant[-1]}")

        def distance(entry: VariantEntry) -> tuple[int, tuple[int, int]]:
            have = cuda_key(entry.cuda)
            # CUDA minors stay below 10, so major*10+minor orders releases on one line
            return abs(have[0] * 10 + have[1] - major * 10 - minor), have

        return sorted(
            (v for v in self.published_for(torch_version) if v.name != variant), key=distance
        )

    # ------------------------------------------------------------------ GPUs and CPUs
    def gpu_cc(self, name: str) -> GpuEntry | None:
        """The table row whose longest product name occurs (as whole words) in ``name``."""
        words = _gpu_words(name)
        best: tuple[int, GpuEntry] | None = None
        for entry in self.gpu:
            for product in entry.names:
                key = _gpu_words(product)
                found = re.search(rf"(?<!\w){re.escape(key)}(?!\w)", words)
                if found and (best is None or len(key) > best[0]):
                    best = (len(key), entry)
        return best[1] if best else None

    def isa_notes(self, machine: str, flags: set[str]) -> list[IsaNote]:
        return [n for n in self.isa_note if n.applies(machine, flags)]


# the keys of Knowledge read from the spec wing's releases table, not from knowledge.toml
_FROM_RELEASES = ("checked-through", "variant")


def parse(text: str, source: str = "knowledge.toml") -> Knowledge:
    """Parse and validate knowledge TOML; one-line :class:`KnowledgeError` on any problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KnowledgeError(
            f"{source}: expected valid TOML, found a syntax error: {exc}"
        ) from None
    moved = [key for key in _FROM_RELEASES if key in data]
    if moved:
        raise KnowledgeError(
            f"{source}: unknown key {moved[0]!r} (the published-variants table lives in "
            "src/envlab/spec/releases.toml)"
        )
    try:
        shared = published.raw()
    except (OSError, tomllib.TOMLDecodeError, SpecError) as exc:
        raise KnowledgeError(f"envlab/spec/releases.toml: {exc}") from None
    data |= {key: shared[key] for key in _FROM_RELEASES if key in shared}
    try:
        return Knowledge.model_validate(data)
    except ValidationError as exc:
        message = first_problem(exc)
        more = f" (+{exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise KnowledgeError(f"{source}: {message}{more}") from None


def load(path: Path | None = None) -> Knowledge:
    """The packaged knowledge (cached), or the file at ``path``."""
    if path is not None:
        return parse(path.read_text(encoding="utf-8"), str(path))
    return _packaged()


@functools.cache
def _packaged() -> Knowledge:
    text = resources.files("envlab.hardware").joinpath("knowledge.toml").read_text(encoding="utf-8")
    return parse(text, "envlab/data/knowledge.toml")
