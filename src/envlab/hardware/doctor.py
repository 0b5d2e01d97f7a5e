"""``envlab doctor``: which envs will run on this machine, why, and which one to use.

Every env's build (:mod:`envlab.hardware.builds`) is judged on every GPU by compute capability
*and* driver (:mod:`envlab.hardware.verdicts`; uv's ``--torch-backend=auto`` looks at the driver
only), then the envs are ranked per GPU and for the box (:mod:`envlab.hardware.pick`).
"""

from __future__ import annotations

import json
from typing import Any

from envlab.hardware import detect, knowledge, pick, verdicts
from envlab.hardware.builds import Build, availability, infer_build
from envlab.hardware.detect import HostFacts
from envlab.results.schema import Host
from envlab.spec.envspec import Matrix

# 2: adds "pick" (per GPU and for the box) and each env's "published" check.
SCHEMA = 2


def _build_json(build: Build) -> dict[str, Any]:
    return {
        "torch": build.torch,
        "variant": build.variant,
        "cuda": build.cuda,
        "index": build.index,
        "arch_flags": build.flags,
        "arch_source": build.flags_source,
        "confidence": build.confidence,
    }


def _published_json(build: Build, facts: knowledge.Knowledge) -> dict[str, Any] | None:
    found = availability(build, facts)
    if found is None:
        return None
    state, text, source = found
    return {"state": state, "text": text, "source": source}


def _env_json(
    name: str, build: Build, found: list[verdicts.Finding], facts: knowledge.Knowledge
) -> dict[str, Any]:
    worst = min(found, key=lambda f: verdicts.SEVERITY.get(f.verdict, -1))
    published = _published_json(build, facts)
    return {
        "env": name,
        "build": _build_json(build),
        "published": published,
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


def doctor_json(
    matrix: Matrix,
    host: HostFacts | None = None,
    arch_flags: dict[str, list[str]] | None = None,
    facts: knowledge.Knowledge | None = None,
) -> dict[str, Any]:
    """The doctor's findings as JSON: the host, one entry per env, the pick, CPU notes."""
    host = host or detect.detect_host()
    facts = facts or knowledge.load()
    # a matrix cell whose build is known not to exist is no candidate on any machine
    specs = [s for s in matrix.valid() if not (s.cell and s.cell.no_such_build)]
    builds = {s.name: infer_build(s, host.platform, facts, arch_flags) for s in specs}
    judged = {s.name: verdicts.env_findings(s, builds[s.name], host, facts) for s in specs}
    for name, found in judged.items():
        for finding in found:
            finding.suggestion = verdicts.suggest(name, finding, builds, judged, host, facts)
    flags = set(host.cpu.flags)
    notes = facts.isa_notes(host.cpu.machine, flags) if host.cpu.flags_known else []
    return {
        "schema": SCHEMA,
        "host": host.to_dict(),
        "envs": [_env_json(s.name, builds[s.name], judged[s.name], facts) for s in specs],
        "pick": pick.choose(specs, builds, judged, host, matrix),
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


def _gpu_line(gpu: dict[str, Any]) -> str:
    cc = gpu["compute_capability"]
    cc_text = (
        f"sm_{cc.replace('.', '')} (compute {cc}"
        + (", inferred from name)" if gpu["cc_source"] != "driver" else ")")
        if cc
        else "compute capability unknown"
    )
    mem = f"  {gpu['memory_mib']} MiB" if gpu["memory_mib"] else ""
    return f"gpu {gpu['index']:<4} {gpu['name']}  {cc_text}{mem}"


def _host_lines(host: dict[str, Any]) -> list[str]:
    """The host block: machine, CPU, ISA, one line per GPU, driver, detection problems."""
    cpu = host["cpu"]
    lines = [
        f"host     {host['hostname']}  {host['os']}  {host['platform']}"
        + (f"  {host['libc']}" if host["libc"] else ""),
        f"cpu      {cpu['model']}  ({cpu['count']} logical CPUs, {cpu['machine']})",
        f"isa      {' '.join(cpu['flags']) if cpu['flags_known'] else 'not read on this OS'}",
    ]
    lines += [_gpu_line(gpu) for gpu in host["gpus"]] or ["gpu      no NVIDIA GPU"]
    if host["driver"]:
        max_cuda = f"  (supports CUDA <= {host['max_cuda']})" if host["max_cuda"] else ""
        lines.append(f"driver   {host['driver']}{max_cuda}  [via {host['gpu_source']}]")
    lines += [f"note     {problem}" for problem in host["problems"]]
    return lines


def _verdicts(envs: list[dict[str, Any]], multi: bool) -> tuple[list[list[str]], list[str]]:
    """The verdict table's rows (a GPU column only with several GPUs) and the follow-up lines:
    each suggestion, and each note once per env."""
    rows = [["ENV", "BUILD", *(["GPU"] if multi else []), "VERDICT", "REASON"]]
    follow: list[str] = []
    for env in envs:
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
        if published := env.get("published"):
            kind = "warning" if published["state"] == "not-published" else "note"
            follow.append(f"  {env['env']}: {kind}: {published['text']}")
    return rows, follow


def _pick_block(entry: dict[str, Any], title: str) -> list[str]:
    """One pick: the env and its build, why, the envs that do not run, the commands."""
    if not entry["env"]:
        return [f"{title}: none", f"  why: {entry['reason']}"]
    lines = [f"{title}: {entry['env']}  ({entry['build']})", f"  why: {entry['reason']}"]
    for rejected in entry.get("does_not_run", []):
        lines.append(f"  not {rejected['env']}: {rejected['reason']}")
    lines += [f"  run: {entry['command']}", f"  pip: {entry['install']}"]
    return lines


def _pick_lines(pick_doc: dict[str, Any]) -> list[str]:
    """The pick per GPU, then for the box when it has several GPUs (or none)."""
    lines = ["pick:"]
    for device in pick_doc["devices"]:
        cc = device["compute_capability"]
        where = f"GPU {device['gpu']} ({device['name']}" + (
            f", sm_{cc.replace('.', '')})" if cc else ")"
        )
        lines += ["  " + line for line in _pick_block(device, where)]
    box = pick_doc["box"]
    if len(pick_doc["devices"]) != 1:
        title = "this box" if box["gpus"] else "this box (no NVIDIA GPU)"
        lines += ["  " + line for line in _pick_block(box, title)]
        if len(box["serves"]) > 1 and box["env"]:
            each = "; ".join(
                f"{s['env']} for GPU {', '.join(map(str, s['gpus']))}" for s in box["serves"]
            )
            lines.append(f"    per GPU: {each}")
    return lines


def render(doc: dict[str, Any]) -> str:
    """The doctor JSON as plain text: host block, verdict table, suggestions, pick, CPU notes."""
    host = doc["host"]
    lines = _host_lines(host)
    rows, follow = _verdicts(doc["envs"], multi=len(host["gpus"]) > 1)
    lines += ["", *_table(rows)]
    if follow:
        lines += ["", "suggestions and notes:", *follow]
    lines += ["", *_pick_lines(doc["pick"])]
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
