"""What an env's torch build is believed to be, and whether PyTorch still publishes it.

An env's build (torch release, CUDA variant, compiled arch list) is read from its envspec and the
knowledge tables before anything is built; a probe of a built env replaces the arch list. Whether
the variant is published for that release comes from the knowledge table of published variants.
"""

from __future__ import annotations

from dataclasses import dataclass

from envlab.hardware import knowledge
from envlab.spec.envspec import EnvSpec
from envlab.spec.releases import pinned_torch, variant_of


@dataclass(frozen=True)
class Build:
    """What an env's torch build is believed to be, and where that belief comes from."""

    torch: str | None
    variant: str | None  # cu128, cu118, cpu, ... (None: not knowable before a build)
    cuda: str | None
    flags: list[str] | None  # None: compiled arch list unknown
    flags_source: str | None = None
    confidence: str | None = None  # probe | measured | build-script | inferred
    index: str | None = None

    @property
    def label(self) -> str:
        return f"torch {self.torch or '(unpinned)'} {self.variant or '?'}"


def infer_build(
    spec: EnvSpec,
    platform: str,
    facts: knowledge.Knowledge,
    arch_flags: dict[str, list[str]] | None = None,
) -> Build:
    """The env's build: torch pin + variant (local tag, expect.cuda, index name) + arch list."""
    version, local = pinned_torch(spec)
    index = spec.torch.index_for(platform)
    variant = variant_of(spec, local, index)
    cuda = spec.expect.cuda
    if cuda is None and variant and variant.startswith("cu"):
        cuda = f"{variant[2:-1]}.{variant[-1]}"
    if arch_flags is not None and spec.name in arch_flags:
        return Build(
            version,
            variant,
            cuda,
            list(arch_flags[spec.name]),
            "probe of the built env (torch._C._cuda_getArchFlags())",
            "probe",
            index,
        )
    if variant == "cpu":
        return Build(version, variant, None, [], "CPU-only build", "spec", index)
    if variant is None:
        return Build(version, None, cuda, None, None, None, index)
    wheel = facts.wheel_for(variant, version)
    if wheel is None:
        return Build(version, variant, cuda, None, None, None, index)
    source = (
        wheel.source
        if version
        else f"assumed current {variant} builds (torch unpinned): {wheel.source}"
    )
    return Build(version, variant, cuda, list(wheel.arch_flags), source, wheel.confidence, index)


# --------------------------------------------------------------------------- still published?


def availability(build: Build, facts: knowledge.Knowledge) -> tuple[str, str, str] | None:
    """(state, text, source) when the build's variant is not (or not known to be) published
    for its torch release; None when it is, or when there is nothing to check (unpinned, CPU)."""
    if not (build.torch and build.variant and build.variant.startswith("cu")):
        return None
    state = facts.availability(build.variant, build.torch)
    entry = facts.variant_entry(build.variant)
    release = knowledge.release_of(build.torch)
    if state == "published" or release is None:
        return None
    if entry is None:
        return "unknown", f"{build.variant} is not in the table of published variants", ""
    if state == "unknown":
        return (
            state,
            f"whether torch {release} is published as {build.variant} is not known "
            f"(the table of published variants stops at torch {facts.checked_through})",
            entry.source,
        )
    span = facts.published_range(build.variant)
    where = f"torch {span[0]}-{span[1]}" if span else "no release in the table"
    nearest = facts.nearest_published(build.variant, build.torch)
    advice = (
        f"; published for torch {release}: {', '.join(v.name for v in nearest)} "
        f"(nearest: {nearest[0].name})"
        if nearest
        else ""
    )
    text = (
        f"torch {release} is not published as {build.variant} "
        f"({build.variant} builds exist for {where}){advice}"
    )
    return "not-published", text, entry.source


def variant_warnings(spec: EnvSpec, platform: str) -> list[str]:
    """``lock --verify``/``--diff``: a warning when the env asks for a variant the index no
    longer publishes (or never published) for its torch release, naming the nearest that is."""
    facts = knowledge.load()
    found = availability(infer_build(spec, platform, facts), facts)
    if found is None or found[0] != "not-published":
        return []
    return [f"{spec.name}: {found[1]}"]
