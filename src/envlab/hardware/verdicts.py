"""Will an env's build run on this GPU with this driver? One verdict per (env, device), with why.

Chosen by compute capability *and* driver (uv's ``--torch-backend=auto`` looks at the driver only):
the build's compiled arch list (probed from a built env, else the knowledge table) is checked
against each GPU's compute capability (SASS/PTX rule, :mod:`envlab.verify.archcompat`) and the
build's CUDA version against the driver (toolkit driver, then minor-version compatibility).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from envlab.hardware import knowledge
from envlab.hardware.builds import Build
from envlab.hardware.detect import GpuFacts, HostFacts
from envlab.spec.envspec import EnvSpec
from envlab.verify import archcompat
from envlab.verify.archcompat import Capability

Verdict = Literal["runs", "runs-ptx", "will-not-run", "cpu-only", "unknown", "unsupported"]
# Worst first: an env's verdict on a multi-GPU host is its worst device verdict.
SEVERITY: dict[str, int] = {"will-not-run": 0, "unknown": 1, "runs-ptx": 2, "runs": 3}


@dataclass
class Finding:
    verdict: Verdict
    reason: str
    suggestion: str | None = None
    gpu: int | None = None
    notes: list[str] = field(default_factory=list)
    cause: Literal["arch", "driver"] | None = None


def _os(host: HostFacts) -> knowledge.OsFamily:
    return "windows" if host.os_family == "windows" else "linux"


def _driver_check(
    env: str, build: Build, host: HostFacts, facts: knowledge.Knowledge, needs_jit: bool
) -> tuple[bool, str | None]:
    """(ok, note or failure reason) for the build's CUDA version against the host driver."""
    if not build.cuda or not host.driver:
        return True, None if host.driver else "driver version unknown: not checked"
    os = _os(host)
    full_row = facts.toolkit_driver(build.cuda)
    compat_row = facts.minor_compat_for(knowledge.cuda_key(build.cuda)[0])
    full = full_row.minimum(os) if full_row else None
    compat = compat_row.minimum(os) if compat_row else None
    if full is None and compat is None:
        return True, f"no driver table entry for CUDA {build.cuda}: driver not checked"
    have = knowledge.driver_key(host.driver)
    if full and have >= knowledge.driver_key(full):
        return True, None
    supports = (
        f"driver {host.driver} supports CUDA <= {host.max_cuda}"
        if host.max_cuda
        else f"driver {host.driver} is older than every CUDA release in the table"
    )
    what = f"{env}'s {build.variant} build"
    full_text = f">= {full}" if full else "the driver of that toolkit (not in the table)"
    if compat and have >= knowledge.driver_key(compat):
        if needs_jit:
            return (
                False,
                f"{supports}; {what} needs PTX JIT here, which needs {full_text} "
                f"(CUDA {build.cuda})",
            )
        return True, (
            f"{supports}: {what} runs under CUDA minor-version compatibility "
            f"(no PTX JIT; {full_text} for full CUDA {build.cuda} support)"
        )
    need = compat or full
    extra = f" ({full} for full CUDA {build.cuda} support)" if full and need != full else ""
    return False, f"{supports}; {what} needs >= {need}{extra}"


def _family_gap(flags: list[str], cap: Capability) -> str:
    """'no sm_5x kernels', or why the build's kernels of that major do not reach ``cap``."""
    same = [a for a in archcompat.parse_arch_list(flags) if a.cap.major == cap.major]
    if not same:
        return f"no sm_{cap.major}x kernels"
    return f"its {' '.join(str(a) for a in same)} kernels do not run on {cap.sm}"


def _arch_reason(env: str, build: Build, cap: Capability, facts: knowledge.Knowledge) -> str:
    assert build.flags is not None
    listed = archcompat.describe(build.flags)
    first = facts.first_cuda_for(cap)
    if first and build.cuda and knowledge.cuda_key(first.cuda) > knowledge.cuda_key(build.cuda):
        return (
            f"{cap.sm} needs a cu{first.cuda.replace('.', '')}+ build; {env}'s {build.variant} "
            f"wheel does not cover it ({listed})"
        )
    toolkit = facts.toolkit_archs(build.cuda) if build.cuda else None
    if toolkit and cap < Capability.parse(toolkit.lowest):
        major = knowledge.cuda_key(toolkit.cuda)[0]
        return (
            f"CUDA {major} builds start at {toolkit.lowest} (nvcc {toolkit.cuda} cannot compile "
            f"for {cap.sm}): {env}'s {build.variant} build has no kernels for it ({listed})"
        )
    siblings = [w for w in facts.wheel if w.variant == build.variant]
    if (
        build.variant
        and siblings
        and not any(archcompat.covers(w.arch_flags, cap) for w in siblings)
    ):
        return (
            f"{cap.sm} is not covered by any {build.variant} wheel "
            f"({env}'s has {_family_gap(build.flags, cap)}: {listed})"
        )
    return f"{env}'s {build.label} has {_family_gap(build.flags, cap)} ({listed})"


def judge_device(
    env: str, build: Build, gpu: GpuFacts, host: HostFacts, facts: knowledge.Knowledge
) -> Finding:
    """Will this build run on this GPU with this driver?"""
    if gpu.compute_capability is None:
        return Finding(
            "unknown", f"GPU {gpu.index} ({gpu.name}): compute capability unknown", gpu=gpu.index
        )
    cap = Capability.parse(gpu.compute_capability)
    if build.flags is None:
        if build.variant is None:
            pinned = "pinned" if build.torch else "unpinned"
            why = (
                f"torch is {pinned} from index {build.index!r}, "
                "so its CUDA variant is known only after a build"
            )
        else:
            why = f"no known arch list for {build.label} (not in the knowledge table)"
        return Finding(
            "unknown", f"{why}; build the env so doctor can use its probed arch list", gpu=gpu.index
        )
    kind, how = archcompat.coverage(build.flags, cap)
    if kind == "none":
        return Finding(
            "will-not-run", _arch_reason(env, build, cap, facts), gpu=gpu.index, cause="arch"
        )
    ok, note = _driver_check(env, build, host, facts, needs_jit=kind == "ptx")
    if not ok:
        assert note is not None
        return Finding("will-not-run", note, gpu=gpu.index, cause="driver")
    finding = Finding("runs-ptx" if kind == "ptx" else "runs", how, gpu=gpu.index)
    if note:
        finding.notes.append(note)
    if build.confidence in ("inferred", "build-script"):
        finding.notes.append(
            f"arch list from the knowledge table ({build.confidence}, not probed): "
            "building the env replaces it with the real one"
        )
    return finding


# --------------------------------------------------------------------------- the whole matrix


def env_findings(
    spec: EnvSpec, build: Build, host: HostFacts, facts: knowledge.Knowledge
) -> list[Finding]:
    if host.platform not in spec.platforms:
        why = (
            spec.unsupported.get(host.platform)
            or f"the env does not declare platform {host.platform}"
        )
        return [Finding("unsupported", f"not built on {host.platform}: {why}")]
    if build.variant == "cpu":
        gpu_note = " (does not use the GPU)" if host.gpus else ""
        return [Finding("runs", f"CPU-only build: runs on any {host.cpu.machine} host{gpu_note}")]
    if not host.gpus:
        why = "no NVIDIA GPU"
        if host.driver:
            why = f"NVIDIA driver {host.driver} present but no GPU could be listed"
        return [Finding("cpu-only", f"{why}: would run its CPU paths only")]
    return [judge_device(spec.name, build, gpu, host, facts) for gpu in host.gpus]


def suggest(
    env: str,
    finding: Finding,
    builds: dict[str, Build],
    verdicts: dict[str, list[Finding]],
    host: HostFacts,
    facts: knowledge.Knowledge,
) -> str | None:
    """Name the envs that do run on this device, then the build that would."""
    if finding.verdict not in ("will-not-run", "unknown") or finding.gpu is None:
        return None
    good = [
        name
        for name, found in verdicts.items()
        if name != env
        and any(f.gpu == finding.gpu and f.verdict in ("runs", "runs-ptx") for f in found)
    ]
    gpu = next(g for g in host.gpus if g.index == finding.gpu)
    if finding.verdict == "unknown":
        return f"use {' or '.join(good)} (known to run here)" if good else None
    parts = [f"use {' or '.join(good)}"] if good else []
    build = builds[env]
    if finding.cause == "driver" and build.cuda:
        row = facts.toolkit_driver(build.cuda)
        if row and row.minimum(_os(host)):
            parts.append(f"update the driver to >= {row.minimum(_os(host))}")
    elif gpu.compute_capability:
        cap = Capability.parse(gpu.compute_capability)
        toolkit = facts.toolkit_archs(build.cuda) if build.cuda else None
        if toolkit and toolkit.compiles_for(cap):
            parts.append(
                f"a source build with TORCH_CUDA_ARCH_LIST={cap} "
                f"(CUDA {build.cuda} compiles for {cap.sm})"
            )
        elif (last := facts.last_cuda_for(cap)) and (first := facts.first_cuda_for(cap)):
            newest = (
                f"CUDA {first.cuda}+"
                if build.cuda and knowledge.cuda_key(first.cuda) > knowledge.cuda_key(build.cuda)
                else f"CUDA <= {last.cuda}"
            )
            parts.append(f"a build against {newest} with TORCH_CUDA_ARCH_LIST={cap}")
    return ", or ".join(parts) if parts else None
