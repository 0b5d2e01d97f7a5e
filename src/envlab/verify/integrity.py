"""Integrity: is what is installed intact and consistent, whatever the lock or the spec said?

Gathered at every verification, never cached (a file can vanish without any reinstall): the
installed files against their RECORD (:mod:`envlab.verify.installed_files`, run inside the env)
and ``uv pip check``. The checks here read those, and the probe's facts: torch's own pins on its
``nvidia-*``/triton wheels, cuDNN and NCCL loaded against the ones torch was built with, and every
error the probe recorded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.markers import InvalidMarker, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from pydantic import ValidationError

from envlab.errors import UserError
from envlab.proc import run
from envlab.results.facts import IntegrityFacts
from envlab.results.schema import Check
from envlab.verify import installed_files

if TYPE_CHECKING:
    from envlab.verify.expectations import Context

SCAN = Path(installed_files.__file__)
PipCheck = Callable[[Path], list[str]]
# Distributions torch pins exactly because its build links them: CUDA libraries and triton.
_PINNED = re.compile(r"^(nvidia-.*|cuda-.*|triton|pytorch-triton.*)$")
_PIP_CHECK_PACKAGE = re.compile(r"[Pp]ackage `([^`]+)`")


def scan_files(python: Path, deep: bool = False, timeout: float = 1800) -> IntegrityFacts:
    """Run the RECORD scan with the env's interpreter; a crash is a fact (``error``)."""
    argv = [str(python), str(SCAN), *(["--deep"] if deep else [])]
    done = run(argv, quiet=True, check=False, timeout=timeout)
    lines = [ln for ln in done.output.splitlines() if ln.startswith("{")]
    if not lines:
        tail = done.output.strip()[-300:]
        return IntegrityFacts(
            error=f"the file scan printed nothing (exit {done.returncode}): {tail}"
        )
    try:
        return IntegrityFacts.model_validate_json(lines[-1])
    except ValidationError as exc:
        return IntegrityFacts(error=f"the file scan printed unreadable output: {exc.errors()[0]}")


def gather(python: Path, pip_check: PipCheck | None, deep: bool = False) -> IntegrityFacts:
    """The RECORD scan plus ``pip_check(python)`` (``uv pip check``'s findings, one per line)."""
    found = scan_files(python, deep)
    if pip_check is None:
        return found
    try:
        return found.model_copy(update={"pip_check": pip_check(python)})
    except UserError as exc:  # CommandError included: uv failed or is missing
        return found.model_copy(update={"pip_check_error": str(exc).splitlines()[0]})


def _layer_of(ctx: Context, name: str) -> str | None:
    """The last layer that installed ``name``, if a layer did."""
    key = canonicalize_name(name)
    layers = [layer for layer, pkgs in ctx.layer_packages.items() if key in pkgs]
    return layers[-1] if layers else None


def _listed(items: list[str], limit: int = 4) -> str:
    more = len(items) - limit
    return "; ".join(items[:limit]) + (f" (and {more} more)" if more > 0 else "")


def pip_check(ctx: Context) -> list[Check]:
    """Every installed distribution's requirements met (``uv pip check``), as pip would judge."""
    found = ctx.facts.integrity
    expected = "every installed distribution's requirements satisfied (uv pip check)"
    if found.pip_check_error:
        return [
            Check(
                name="pip-check",
                ok=False,
                expected=expected,
                found=f"uv pip check did not run: {found.pip_check_error}",
                message="Fix: make uv runnable (pip install uv) and run again",
            )
        ]
    if found.pip_check is None:
        return []
    lines = found.pip_check
    first = _PIP_CHECK_PACKAGE.search(lines[0]) if lines else None
    return [
        Check(
            name="pip-check",
            ok=not lines,
            expected=expected,
            found=_listed(lines) if lines else "all compatible",
            layer=_layer_of(ctx, first.group(1)) if first else None,
            message=""
            if not lines
            else "Fix: rebuild the env (--force) to restore what was resolved together, or "
            "install versions of the named packages that satisfy these requirements",
        )
    ]


def installed_files_intact(ctx: Context) -> list[Check]:
    """Every file in each distribution's RECORD present, with its recorded size (hash: --deep)."""
    found = ctx.facts.integrity
    if found.error:
        return [
            Check(
                name="installed-files-intact",
                ok=False,
                expected="the installed files readable against their RECORD",
                found=found.error,
                message="Fix: the env's interpreter cannot list its distributions; rebuild it",
            )
        ]
    if found.files is None:
        return []
    what = "size and sha256" if found.deep else "size"
    expected = (
        f"the {found.files} files listed in the RECORD of {found.distributions} distributions, "
        f"present with their recorded {what}"
    )
    problems = [f"{p.dist}: {p.path} {p.problem}" for p in found.problems]
    total = found.problems_total or len(problems)
    dists = list(dict.fromkeys(p.dist for p in found.problems))
    unchecked = f"; no RECORD to check: {', '.join(found.no_record)}" if found.no_record else ""
    if not problems:
        return [
            Check(
                name="installed-files-intact",
                ok=True,
                expected=expected,
                found="all present" + unchecked,
            )
        ]
    reinstall = " ".join(f"--reinstall-package {canonicalize_name(d)}" for d in dists[:3])
    return [
        Check(
            name="installed-files-intact",
            ok=False,
            expected=expected,
            found=f"{total} damaged: {_listed(problems, 3)}",
            layer=_layer_of(ctx, dists[0]),
            message=f"files of {', '.join(dists)} are missing or altered. Fix: reinstall them "
            f"(uv pip install {reinstall} ..., from the env's lock) or rebuild the env (--force)",
        )
    ]


def _torch_pins(ctx: Context) -> list[Requirement]:
    """torch's Requires-Dist on CUDA libraries and triton that apply on this platform."""
    environment = {**ctx.facts.python.markers, "extra": ""}
    pins = []
    for line in ctx.facts.torch.requires:
        try:
            requirement = Requirement(line)
            applies = requirement.marker is None or requirement.marker.evaluate(environment)
        except (InvalidRequirement, InvalidMarker, UndefinedEnvironmentName):
            continue  # a marker this env cannot evaluate is not a pin it must meet
        if applies and _PINNED.match(canonicalize_name(requirement.name)):
            pins.append(requirement)
    return pins


def _meets(requirement: Requirement, version: str | None) -> bool:
    try:
        return version is not None and requirement.specifier.contains(
            Version(version), prereleases=True
        )
    except InvalidVersion:
        return False


def torch_pins(ctx: Context) -> list[Check]:
    """The nvidia-*/triton wheels torch's metadata pins, at exactly the pinned versions."""
    pins = _torch_pins(ctx)
    if not pins or not ctx.facts.python.markers:
        return []
    dists = ctx.dists
    wrong = []
    for pin in pins:
        version = dists.get(canonicalize_name(pin.name))
        if not _meets(pin, version):
            wrong.append((pin, version))
    expected = f"the {len(pins)} CUDA/triton wheels at torch's pins{_pin_example(pins)}"
    if not wrong:
        return [Check(name="torch-pins", ok=True, expected=expected, found="all as pinned")]
    found = [f"{p.name} {v or 'not installed'} (torch requires {p.specifier})" for p, v in wrong]
    fix = " ".join(f"'{p.name}{p.specifier}'" for p, _ in wrong[:3])
    return [
        Check(
            name="torch-pins",
            ok=False,
            expected=expected,
            found=_listed(found, 3),
            layer=_layer_of(ctx, wrong[0][0].name) or "torch",
            message="torch's CUDA libraries are not the ones it was built and tested with. "
            f"Fix: uv pip install {fix} (or rebuild the env: --force)",
        )
    ]


def _pin_example(pins: list[Requirement]) -> str:
    example = next((p for p in pins if p.name.startswith("nvidia-cudnn")), pins[0])
    return f" (e.g. {example.name}{example.specifier})"


def _major_minor(text: str | None) -> tuple[int, ...]:
    parts = re.findall(r"\d+", text or "")[:2]
    return tuple(int(p) for p in parts)


def _pinned_version(ctx: Context, prefix: str) -> tuple[str, str] | None:
    """(name, version) of torch's ``==`` pin on the wheel named ``prefix``[-cuNN]."""
    for pin in _torch_pins(ctx):
        name = canonicalize_name(pin.name)
        if re.fullmatch(rf"{prefix}(-cu\d+)?", name):
            exact = [s.version for s in pin.specifier if s.operator == "=="]
            if exact:
                return name, exact[0]
    return None


def cudnn_matches_build(ctx: Context) -> list[Check]:
    """The cuDNN torch loads is the release torch was compiled against (same major.minor)."""
    torch = ctx.facts.torch
    if torch.cuda is None or (torch.cudnn_compiled is None and torch.cudnn_error is None):
        return []
    compiled, loaded = torch.cudnn_compiled, torch.cudnn_runtime
    ok = torch.cudnn_error is None and _major_minor(compiled) == _major_minor(loaded)
    pin = _pinned_version(ctx, "nvidia-cudnn")
    wheel = f"{pin[0]}=={pin[1]}" if pin else "the cuDNN torch's release notes name"
    found = f"cuDNN {loaded or 'none'} loaded"
    if torch.cudnn_error:
        found += f" ({torch.cudnn_error})"
    return [
        Check(
            name="cudnn-matches-build",
            ok=ok,
            expected=f"cuDNN {compiled} (the one torch was compiled against)",
            found=found,
            layer=None if ok else (_layer_of(ctx, pin[0]) if pin else None) or "torch",
            message=""
            if ok
            else f"cuDNN calls (convolutions, RNNs) fail or misbehave. Fix: uv pip install "
            f"'{wheel}', and make sure no other libcudnn (LD_LIBRARY_PATH, a conda cudnn) "
            "shadows it",
        )
    ]


def nccl_matches_build(ctx: Context) -> list[Check]:
    """The NCCL torch loads is the release torch pins (multi-GPU breaks on another one)."""
    torch = ctx.facts.torch
    if torch.cuda is None or (torch.nccl is None and torch.nccl_error is None):
        return []
    pin = _pinned_version(ctx, "nvidia-nccl")
    if pin is None:
        return []  # NCCL linked into torch or from the system: nothing pinned to compare with
    name, version = pin
    wanted = re.findall(r"\d+", version)[:3]
    ok = torch.nccl_error is None and re.findall(r"\d+", torch.nccl or "")[:3] == wanted
    return [
        Check(
            name="nccl-matches-build",
            ok=ok,
            expected=f"NCCL {'.'.join(wanted)} ({name}=={version}, torch's pin)",
            found=f"NCCL {torch.nccl}" if torch.nccl else str(torch.nccl_error),
            layer=None if ok else _layer_of(ctx, name) or "torch",
            message=""
            if ok
            else "distributed (DDP) jobs fail with symbol or protocol errors. "
            f"Fix: uv pip install '{name}=={version}'",
        )
    ]


def _probe_errors(ctx: Context) -> list[str]:
    """Errors the probe recorded that no more specific check reports."""
    facts = ctx.facts
    found = [
        ("torch compiled arch list", facts.torch.arch_flags_error),
        ("torch.cuda", facts.torch.cuda_error),
        ("torch.__config__", facts.torch.config_error),
        ("torch.get_num_threads", facts.torch.num_threads_error),
        ("numpy", facts.numpy.error),
        ("BLAS/OpenMP runtimes (threadpoolctl)", facts.blas.error),
    ]
    if not ctx.expect.torch_family_match:  # otherwise the family checks report these
        found += [("torchvision", facts.torchvision.error), ("torchaudio", facts.torchaudio.error)]
    return [f"{what}: {error}" for what, error in found if error]


def probe_errors(ctx: Context) -> list[Check]:
    """Every error the probe met is a failure: nothing it could not read is taken as fine."""
    errors = _probe_errors(ctx)
    return [
        Check(
            name="probe-errors",
            ok=not errors,
            expected="every fact readable (no errors while probing)",
            found=_listed(errors, 3) if errors else "none",
            message=""
            if not errors
            else "Fix: see each error; a broken import means a "
            "reinstall of that package (or a rebuild of the env: --force)",
        )
    ]


CHECKS = (
    probe_errors,
    installed_files_intact,
    pip_check,
    torch_pins,
    cudnn_matches_build,
    nccl_matches_build,
)
