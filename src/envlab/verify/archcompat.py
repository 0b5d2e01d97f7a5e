"""Does a build's compiled arch list cover a device? Computed, not hoped for (design rule 6).

- SASS ``sm_XY`` runs on devices of the same major version with minor >= Y
  (``sm_86`` runs on 8.6 and 8.9, not on 9.0). Arch-specific ``sm_XYa`` runs on X.Y only.
- PTX ``compute_XY`` is JIT-compiled by the driver for any device with capability >= X.Y
  (slow first start, and only if the driver is new enough for the PTX).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_ARCH = re.compile(r"^(sm|compute)_(\d+)(\d)([af]?)$")

Verdict = Literal["sass", "ptx", "none"]


@dataclass(frozen=True, order=True)
class Capability:
    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> Capability:
        """Accept '8.6', '86', 'sm_86', 'compute_86', '12.0', '120'."""
        value = text.strip().lower().removeprefix("sm_").removeprefix("compute_").rstrip("af")
        if "." in value:
            major, minor = value.split(".", 1)
            return cls(int(major), int(minor))
        if not value.isdigit() or len(value) < 2:
            raise ValueError(f"expected a compute capability like '8.6' or 'sm_86', found {text!r}")
        return cls(int(value[:-1]), int(value[-1]))

    @property
    def sm(self) -> str:
        return f"sm_{self.major}{self.minor}"

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


@dataclass(frozen=True)
class Arch:
    kind: Literal["sm", "compute"]
    cap: Capability
    suffix: str = ""

    @classmethod
    def parse(cls, text: str) -> Arch:
        match = _ARCH.match(text.strip().lower())
        if not match:
            raise ValueError(f"expected an arch flag like 'sm_90' or 'compute_90', found {text!r}")
        kind, major, minor, suffix = match.groups()
        return cls(kind, Capability(int(major), int(minor)), suffix)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.kind}_{self.cap.major}{self.cap.minor}{self.suffix}"


def parse_arch_list(flags: list[str] | str) -> list[Arch]:
    """Parse ``torch._C._cuda_getArchFlags()`` output (or a list); unknown tokens are ignored."""
    tokens = flags.split() if isinstance(flags, str) else flags
    found = []
    for token in tokens:
        try:
            found.append(Arch.parse(token))
        except ValueError:
            continue
    return found


def runs_on(arch: Arch, device: Capability) -> Verdict:
    if arch.kind == "sm":
        if arch.suffix == "a":
            return "sass" if arch.cap == device else "none"
        return (
            "sass"
            if (arch.cap.major == device.major and arch.cap.minor <= device.minor)
            else "none"
        )
    return "ptx" if arch.cap <= device else "none"


def coverage(flags: list[str] | str, device: Capability | str) -> tuple[Verdict, str]:
    """How a build with ``flags`` runs on ``device``: native SASS, PTX JIT, or not at all."""
    cap = device if isinstance(device, Capability) else Capability.parse(device)
    archs = parse_arch_list(flags)
    if not archs:
        return "none", "the build has no CUDA kernels (empty arch list)"
    sass = [a for a in archs if runs_on(a, cap) == "sass"]
    if sass:
        return "sass", f"{sass[-1]} kernels run natively on {cap.sm}"
    ptx = [a for a in archs if runs_on(a, cap) == "ptx"]
    if ptx:
        return (
            "ptx",
            f"no {cap.major}.x SASS; {ptx[-1]} PTX is JIT-compiled for {cap.sm} (slow first start)",
        )
    listed = " ".join(str(a) for a in archs)
    return "none", f"{cap.sm} is not covered by the compiled arch list ({listed})"


def covers(flags: list[str] | str, device: Capability | str) -> bool:
    return coverage(flags, device)[0] != "none"


def sorted_flags(flags: list[str] | str) -> list[str]:
    """The parsed arch flags, deduplicated and ordered by capability (SASS before PTX at a tie)."""
    archs = {str(a): a for a in parse_arch_list(flags)}.values()
    return [str(a) for a in sorted(archs, key=lambda a: (a.cap, a.kind != "sm", a.suffix))]


def describe(flags: list[str] | str) -> str:
    """'sm_37 sm_50 ... sm_90', or 'no CUDA kernels' for an empty list (a CPU build)."""
    ordered = sorted_flags(flags)
    return " ".join(ordered) if ordered else "no CUDA kernels"
