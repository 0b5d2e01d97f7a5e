"""Which env to use on this machine: per GPU, and for the box as a whole.

Envs are ranked by how their build runs on the device (native SASS, then PTX JIT; an env that
does not run is never picked), then by the newest pinned torch (an unpinned torch cannot be
called newest), then by the newest CUDA build, then default envs first. The pick comes with the
reason, the session that builds it (``nox -s test-<env>``) and the index a plain pip/uv user needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from packaging.version import InvalidVersion, Version

from envlab.hardware import knowledge
from envlab.hardware.builds import Build
from envlab.hardware.detect import HostFacts
from envlab.hardware.verdicts import Finding
from envlab.spec.envspec import EnvSpec, Matrix

_RANK = {"runs": 2, "runs-ptx": 1}


@dataclass(frozen=True)
class Choice:
    """One env's standing on one device (or on the whole box)."""

    env: str
    verdict: str
    reason: str


def _torch_key(build: Build) -> tuple[bool, Version]:
    try:
        return (True, Version(build.torch)) if build.torch else (False, Version("0"))
    except InvalidVersion:
        return False, Version("0")


def _order(choices: list[Choice], builds: dict[str, Build], specs: dict[str, EnvSpec]) -> None:
    """Sort in place, best first: verdict, newest pinned torch, newest CUDA, default, name.

    Stable sorts from the last criterion to the first."""

    def cuda(choice: Choice) -> tuple[int, int]:
        found = builds[choice.env].cuda
        return knowledge.cuda_key(found) if found else (0, 0)

    choices.sort(key=lambda c: c.env)
    choices.sort(key=lambda c: specs[c.env].default, reverse=True)
    choices.sort(key=cuda, reverse=True)
    choices.sort(key=lambda c: _torch_key(builds[c.env]), reverse=True)
    choices.sort(key=lambda c: _RANK.get(c.verdict, 0), reverse=True)


def install_command(spec: EnvSpec, platform: str, matrix: Matrix) -> tuple[str, str]:
    """(index URL, the pip command) that installs the env's torch family as a plain user would."""
    index = matrix.torch_index(spec, platform)
    parts = ["pip install", *spec.torch.packages]
    if spec.torch.pre:
        parts.append("--pre")
    if index.find_links:
        parts += ["--no-index", "--find-links", index.declared_url]
    elif index.name != "pypi":
        parts += ["--index-url", index.declared_url]
    return index.declared_url, " ".join(parts)


def _why(best: Choice, build: Build, ranked: list[Choice], builds: dict[str, Build]) -> str:
    how = "natively" if best.verdict == "runs" else "via PTX JIT"
    others = [c for c in ranked[1:] if c.verdict == best.verdict]
    older_cuda = [
        c
        for c in others
        if build.torch and builds[c.env].torch == build.torch and builds[c.env].cuda != build.cuda
    ]
    if not others:
        tail = f"the only env that runs {how} here"
    elif older_cuda:
        tail = f"the newest torch that runs {how} here, in its newest CUDA build"
    else:
        tail = f"the newest torch that runs {how} here"
    return f"{best.reason}; {tail}"


def _entry(
    best: Choice | None,
    ranked: list[Choice],
    ctx: _Context,
    extra: dict[str, Any],
    why: str | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {**extra, "env": None, "reason": why}
    if best is not None:
        build = ctx.builds[best.env]
        url, pip = install_command(ctx.specs[best.env], ctx.host.platform, ctx.matrix)
        entry |= {
            "env": best.env,
            "build": build.label,
            "verdict": best.verdict,
            "reason": why or _why(best, build, ranked, ctx.builds),
            "command": f"nox -s test-{best.env}",
            "index_url": url,
            "install": pip,
        }
    entry["runs"] = [c.env for c in ranked if c.verdict in _RANK]
    return entry


@dataclass(frozen=True)
class _Context:
    specs: dict[str, EnvSpec]
    builds: dict[str, Build]
    verdicts: dict[str, list[Finding]]
    host: HostFacts
    matrix: Matrix


def _device(ctx: _Context, gpu: int) -> tuple[list[Choice], list[Choice]]:
    """(envs that run on GPU ``gpu``, best first; envs that do not, with why)."""
    found = [
        Choice(env, f.verdict, f.reason)
        for env, findings in ctx.verdicts.items()
        for f in findings
        if f.gpu == gpu
    ]
    running = [c for c in found if c.verdict in _RANK]
    _order(running, ctx.builds, ctx.specs)
    return running, [c for c in found if c.verdict == "will-not-run"]


def _box(ctx: _Context, devices: list[dict[str, Any]]) -> dict[str, Any]:
    """The env that runs on every GPU (worst device decides), and which env serves which GPU."""
    split: dict[str, list[int]] = {}
    for device in devices:
        if device["env"]:
            split.setdefault(device["env"], []).append(device["gpu"])
    head = {
        "gpus": [d["gpu"] for d in devices],
        "serves": [{"env": env, "gpus": gpus} for env, gpus in split.items()],
    }
    every: list[Choice] = []
    for env, findings in ctx.verdicts.items():
        mine = [f for f in findings if f.gpu is not None]
        if mine and all(f.verdict in _RANK for f in mine):
            worst = min(mine, key=lambda f: _RANK[f.verdict])
            every.append(Choice(env, worst.verdict, worst.reason))
    _order(every, ctx.builds, ctx.specs)
    listed = ", ".join(str(g) for g in head["gpus"])
    if every:
        how = "natively" if every[0].verdict == "runs" else "(via PTX JIT on some)"
        why = f"runs on every GPU ({listed}) {how}; the newest torch that does"
        return _entry(every[0], every, ctx, head, why)
    if not split:
        return _entry(None, [], ctx, head, "no env of the matrix runs on any GPU here")
    parts = [f"{env} for GPU {', '.join(map(str, gpus))}" for env, gpus in split.items()]
    why = (
        f"no env of the matrix runs on every GPU: {'; '.join(parts)} "
        "(select the devices of each run with CUDA_VISIBLE_DEVICES)"
    )
    return _entry(None, [], ctx, head, why)


def _no_gpu(ctx: _Context) -> dict[str, Any]:
    """Without an NVIDIA GPU: the newest CPU-only build that supports this platform."""
    cpu = [
        Choice(env, f.verdict, "no NVIDIA GPU: a CPU-only build (no CUDA libraries to download)")
        for env, findings in ctx.verdicts.items()
        for f in findings
        if ctx.builds[env].variant == "cpu" and f.verdict == "runs"
    ]
    _order(cpu, ctx.builds, ctx.specs)
    if not cpu:
        return _entry(None, [], ctx, {"gpus": [], "serves": []}, "no NVIDIA GPU and no CPU env")
    return _entry(cpu[0], cpu, ctx, {"gpus": [], "serves": []}, cpu[0].reason)


def choose(
    specs: list[EnvSpec],
    builds: dict[str, Build],
    verdicts: dict[str, list[Finding]],
    host: HostFacts,
    matrix: Matrix,
) -> dict[str, Any]:
    """The doctor's pick: one entry per GPU and one for the box, as JSON-ready dicts."""
    ctx = _Context({s.name: s for s in specs}, builds, verdicts, host, matrix)
    devices = []
    for gpu in host.gpus:
        running, rejected = _device(ctx, gpu.index)
        head = {"gpu": gpu.index, "name": gpu.name, "compute_capability": gpu.compute_capability}
        why = None if running else "no env of the matrix runs on this GPU"
        entry = _entry(running[0] if running else None, running, ctx, head, why)
        entry["does_not_run"] = [{"env": c.env, "reason": c.reason} for c in rejected]
        devices.append(entry)
    box = _box(ctx, devices) if host.gpus else _no_gpu(ctx)
    return {"devices": devices, "box": box}
