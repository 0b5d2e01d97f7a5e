"""Does a build's compiled arch list cover a device? Computed from the flags, not hoped for.

The rule itself (SASS, PTX, arch-specific ``a`` and family-specific ``f`` flags) lives in
:mod:`envlab.verify.archrule`, which is stdlib-only so that it can be copied verbatim into the
compat suite; this module re-exports it for envlab and adds the display helpers.
"""

from __future__ import annotations

from envlab.verify.archrule import (
    Arch,
    Capability,
    Verdict,
    coverage,
    covers,
    parse_arch_list,
    runs_on,
)

__all__ = [
    "Arch",
    "Capability",
    "Verdict",
    "coverage",
    "covers",
    "describe",
    "parse_arch_list",
    "runs_on",
    "sorted_flags",
]


def sorted_flags(flags: list[str] | str) -> list[str]:
    """The parsed arch flags, deduplicated and ordered by capability (SASS before PTX at a tie)."""
    archs = {str(a): a for a in parse_arch_list(flags)}.values()
    return [str(a) for a in sorted(archs, key=lambda a: (a.cap, a.kind != "sm", a.suffix))]


def describe(flags: list[str] | str) -> str:
    """'sm_37 sm_50 ... sm_90', or 'no CUDA kernels' for an empty list (a CPU build)."""
    ordered = sorted_flags(flags)
    return " ".join(ordered) if ordered else "no CUDA kernels"
