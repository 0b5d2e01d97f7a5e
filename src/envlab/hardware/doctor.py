"""``envlab doctor``: which envs will run on this machine, and why.

Chosen by compute capability *and* driver (uv's ``--torch-backend=auto`` looks at the driver only):
for every env, the build's compiled arch list (probed from a built env, else the knowledge table)
is checked against each GPU's compute capability (SASS/PTX rule, :mod:`envlab.verify.archcompat`) and the
build's CUDA version against the driver (toolkit driver, then minor-version compatibility).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from packaging.requirements import Requirement

from envlab.hardware import detect, knowledge
from envlab.hardware.detect import GpuFacts, HostFacts
from envlab.results.schema import Host
from envlab.spec.envspec import EnvSpec, Matrix
from envlab.verify import archcompat
from envlab.verify.archcompat import Capability

SCHEMA = 1
Verdict = Literal["runs", "runs-ptx", "will-not-run", "cpu-only", "unknown", "unsupported"]
# Worst first: an env's verdict on a multi-GPU host is its worst device verdict.
_SEVERITY: dict[str, int] = {"will-not-run": 0, "unknown": 1, "runs-ptx": 2, "runs": 3}
_VARIANT = re.compile(r"^(cu\d{3}|cpu)$")


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


@dataclass
class Finding:
    verdict: Verdict
    reason: str
    suggestion: str | None = None
    gpu: int | None = None
    notes: list[str] = field(default_factory=list)
    cause: Literal["arch", "driver"] | None = None


# --------------------------------------------------------------------------- what the build is


def _pinned_torch(spec: EnvSpec) -> tuple[str | None, str | None]:
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


def infer_build(
    spec: EnvSpec,
    platform: str,
    facts: knowledge.Knowledge,
    arch_flags: dict[str, list[str]] | None = None,
) -> Build:
    """The env's build: torch pin + variant (local tag, expect.cuda, index name) + arch list."""
    version, local = _pinned_torch(spec)
    index = spec.torch.index_for(platform)
    variant = local or spec.expect.torch_local
    if not (variant and _VARIANT.match(variant)):
        variant = None
        if spec.expect.cpu_only:
            variant = "cpu"
        elif spec.expect.cuda:
            variant = "cu" + spec.expect.cuda.replace(".", "")
        elif match := re.fullmatch(r"pytorch-(?:nightly-)?(cu\d{3}|cpu)", index):
            variant = match.group(1)
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


# --------------------------------------------------------------------------- judging one device


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
    if compat and have >= knowledge.driver_key(compat):
        if needs_jit:
            return (
                False,
                f"{supports}; {what} needs PTX JIT here, which needs >= {full} (CUDA {build.cuda})",
            )
        return True, (
            f"{supports}: {what} runs under CUDA minor-version compatibility "
            f"(no PTX JIT; >= {full} for full CUDA {build.cuda} support)"
        )
    need = compat or full
    extra = f" ({full} for full CUDA {build.cuda} support)" if full and need != full else ""
    return False, f"{supports}; {what} needs >= {need}{extra}"


def _arch_reason(env: str, build: Build, cap: Capability, facts: knowledge.Knowledge) -> str:
    assert build.flags is not None
    listed = archcompat.describe(build.flags)
    first = facts.first_cuda_for(cap)
    if first and build.cuda and knowledge.cuda_key(first.cuda) > knowledge.cuda_key(build.cuda):
        return (
            f"{cap.sm} needs a cu{first.cuda.replace('.', '')}+ build; {env}'s {build.variant} "
            f"wheel does not cover it ({listed})"
        )
    siblings = [w for w in facts.wheel if w.variant == build.variant]
    if (
        build.variant
        and siblings
        and not any(archcompat.covers(w.arch_flags, cap) for w in siblings)
    ):
        return f"{cap.sm} is not covered by any {build.variant} wheel ({env}'s: {listed})"
    return f"{env}'s {build.label} has no kernels for {cap.sm} ({listed})"


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


def _env_findings(
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


def _suggest(
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


def doctor_json(
    matrix: Matrix, host: HostFacts | None = None, arch_flags: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """The doctor's findings as JSON: the host, one entry per env, CPU notes."""
    host = host or detect.detect_host()
    facts = knowledge.load()
    specs = matrix.valid()
    builds = {s.name: infer_build(s, host.platform, facts, arch_flags) for s in specs}
    verdicts = {s.name: _env_findings(s, builds[s.name], host, facts) for s in specs}
    envs = []
    for spec in specs:
        build, found = builds[spec.name], verdicts[spec.name]
        for finding in found:
            finding.suggestion = _suggest(spec.name, finding, builds, verdicts, host, facts)
        worst = min(found, key=lambda f: _SEVERITY.get(f.verdict, -1))
        envs.append(
            {
                "env": spec.name,
                "build": {
                    "torch": build.torch,
                    "variant": build.variant,
                    "cuda": build.cuda,
                    "index": build.index,
                    "arch_flags": build.flags,
                    "arch_source": build.flags_source,
                    "confidence": build.confidence,
                },
                "verdict": worst.verdict,
                "reason": worst.reason,
                "suggestion": worst.suggestion,
                "devices": [
                    {
                        "gpu": f.gpu,
                        "verdict": f.verdict,
                        "reason": f.reason,
                        "suggestion": f.suggestion,
                        "notes": f.notes,
                    }
                    for f in found
                    if f.gpu is not None
                ],
                "notes": worst.notes,
            }
        )
    flags = set(host.cpu.flags)
    notes = facts.isa_notes(host.cpu.machine, flags) if host.cpu.flags_known else []
    return {
        "schema": SCHEMA,
        "host": host.to_dict(),
        "envs": envs,
        "cpu_notes": [{"text": n.text, "source": n.source} for n in notes],
    }


def host_identity(
    matrix: Matrix, arch_flags: dict[str, list[str]] | None = None, host: HostFacts | None = None
) -> Host:
    """The result's host identity with the doctor JSON attached (what a matrix run stores)."""
    host = host or detect.detect_host()
    return detect.result_host(host, doctor_json(matrix, host, arch_flags))


# --------------------------------------------------------------------------- rendering


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows
    ]


def render(doc: dict[str, Any]) -> str:
    """The doctor JSON as plain text: host block, aligned verdict table, suggestions, CPU notes."""
    host = doc["host"]
    cpu = host["cpu"]
    lines = [
        f"host     {host['hostname']}  {host['os']}  {host['platform']}"
        + (f"  {host['libc']}" if host["libc"] else ""),
        f"cpu      {cpu['model']}  ({cpu['count']} logical CPUs, {cpu['machine']})",
        f"isa      {' '.join(cpu['flags']) if cpu['flags_known'] else 'not read on this OS'}",
    ]
    if host["gpus"]:
        for gpu in host["gpus"]:
            cc = gpu["compute_capability"]
            cc_text = (
                f"sm_{cc.replace('.', '')} (compute {cc}"
                + (", inferred from name)" if gpu["cc_source"] != "driver" else ")")
                if cc
                else "compute capability unknown"
            )
            mem = f"  {gpu['memory_mib']} MiB" if gpu["memory_mib"] else ""
            lines.append(f"gpu {gpu['index']:<4} {gpu['name']}  {cc_text}{mem}")
    else:
        lines.append("gpu      no NVIDIA GPU")
    if host["driver"]:
        max_cuda = f"  (supports CUDA <= {host['max_cuda']})" if host["max_cuda"] else ""
        lines.append(f"driver   {host['driver']}{max_cuda}  [via {host['gpu_source']}]")
    for problem in host["problems"]:
        lines.append(f"note     {problem}")
    multi = len(host["gpus"]) > 1
    rows = [["ENV", "BUILD", *(["GPU"] if multi else []), "VERDICT", "REASON"]]
    follow: list[str] = []
    for env in doc["envs"]:
        build = env["build"]
        label = f"torch {build['torch'] or '(unpinned)'} {build['variant'] or '?'}"
        items = env["devices"] if multi and env["devices"] else [env | {"gpu": None}]
        for item in items:
            gpu = [str(item["gpu"]) if item["gpu"] is not None else "-"] if multi else []
            rows.append([env["env"], label, *gpu, item["verdict"], item["reason"]])
            target = f"{env['env']}" + (
                f" on GPU {item['gpu']}" if multi and item["gpu"] is not None else ""
            )
            if item.get("suggestion"):
                follow.append(f"  {target}: {item['suggestion']}")
            for note in item.get("notes", []):
                if (line := f"  {env['env']}: note: {note}") not in follow:
                    follow.append(line)
    lines += ["", *_table(rows)]
    if follow:
        lines += ["", "suggestions and notes:", *follow]
    if doc["cpu_notes"]:
        lines += ["", "cpu:"] + [f"  {n['text']}  [{n['source']}]" for n in doc["cpu_notes"]]
    return "\n".join(lines)


def main(
    matrix: Matrix,
    *,
    as_json: bool,
    arch_flags: dict[str, list[str]] | None = None,
    host: HostFacts | None = None,
) -> int:
    """Print the doctor's report (table or JSON) to stdout."""
    doc = doctor_json(matrix, host, arch_flags)
    print(json.dumps(doc, indent=2) if as_json else render(doc))
    return 0
