# Generated from src/envlab/verify/archrule.py by tools/sync_archrule.py; do not edit.
# Edit the source, then run: python tools/sync_archrule.py
"""Which GPUs a compiled CUDA arch flag runs on: the one SASS/PTX rule, standard library only.

This module is the single source of the rule. ``tools/sync_archrule.py`` copies it verbatim into
``compat_tests/_archrule.py`` so the compat suite, which runs inside each built env and can
import nothing from envlab, applies the same rule; keep it free of non-stdlib imports.

The rule, for a flag built for capability X.Y and a device of capability D:

- SASS ``sm_XY`` runs on devices of the same major with minor >= Y: ``sm_86`` runs on 8.6 and
  8.9, never on 9.0 (SASS does not cross a major version).
- PTX ``compute_XY`` is JIT-compiled by the driver for any device with D >= X.Y, across majors
  (slow first start, and only if the driver is new enough for the PTX).
- Arch-specific ``sm_XYa`` / ``compute_XYa`` (Hopper on, e.g. ``sm_90a``, ``sm_100a``) use
  features that are not guaranteed on any other architecture, so both run or JIT on exactly X.Y.
- Family-specific ``sm_XYf`` / ``compute_XYf`` (CUDA 12.9+, Blackwell on, e.g. ``sm_100f``)
  use features guaranteed on devices of the same major with minor >= Y: ``compute_100f`` runs
  on 10.0 and 10.3 but not on 11.x or 12.x, SASS and PTX alike.

Source: NVIDIA, "NVIDIA Blackwell and NVIDIA CUDA 12.9 Introduce Family-Specific Architecture
Features" (developer.nvidia.com/blog, 2025) and the CUDA C++ Programming Guide, "Feature
Availability" / "Feature Set Compiler Targets"; the SASS/PTX part is the Blackwell
Compatibility Guide's "Application Compatibility" section.
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
        """Accept '8.6', '86', 'sm_86', 'compute_86', 'sm_90a', '12.0', '120'."""
        value = text.strip().lower().removeprefix("sm_").removeprefix("compute_").rstrip("af")
        if "." in value:
            major, minor = value.split(".", 1)
            if major.isdigit() and minor.isdigit():
                return cls(int(major), int(minor))
        elif value.isdigit() and len(value) >= 2:
            return cls(int(value[:-1]), int(value[-1]))
        raise ValueError(f"expected a compute capability like '8.6' or 'sm_86', found {text!r}")

    @property
    def sm(self) -> str:
        return f"sm_{self.major}{self.minor}"

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


@dataclass(frozen=True)
class Arch:
    """One compiled arch flag: SASS (``sm``) or PTX (``compute``), plain, ``a`` or ``f``."""

    kind: Literal["sm", "compute"]
    cap: Capability
    suffix: Literal["", "a", "f"] = ""

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
    """How code built for ``arch`` runs on ``device``: native SASS, PTX JIT, or not at all."""
    own = arch.cap
    if arch.suffix == "a":
        fits = own == device
    elif arch.suffix == "f" or arch.kind == "sm":
        fits = own.major == device.major and own.minor <= device.minor
    else:
        fits = own <= device
    if not fits:
        return "none"
    return "sass" if arch.kind == "sm" else "ptx"


def coverage(flags: list[str] | str, device: Capability | str) -> tuple[Verdict, str]:
    """How a build with ``flags`` runs on ``device`` (SASS preferred over PTX), and why."""
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
