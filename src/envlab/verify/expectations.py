"""Verification after every build: is what got installed the build that was asked for?

Each check says what was expected, what was found and, where it can tell, which layer caused a
mismatch. Facts come from :mod:`envlab.verify.probe` run inside the env, typed by
:class:`envlab.results.facts.Facts`. Each check is a small function of one :class:`Context`;
:func:`check` runs the gates, then every other check, in order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from envlab.results.facts import Facts, ModuleFacts
from envlab.results.schema import Check, Host
from envlab.spec.envspec import EnvSpec, Expectations
from envlab.verify import archcompat, buildinfo, integrity

# torchvision 0.(N+15) is built for torch 2.N (0.25 <-> 2.10); torchaudio X.Y for torch X.Y.
_TORCHVISION_OFFSET = 15


def _version(text: str | None) -> Version | None:
    try:
        return Version(text) if text else None
    except InvalidVersion:
        return None


def _local(text: str | None) -> str | None:
    version = _version(text)
    return version.local if version else None


def _release(text: str | None) -> str:
    version = _version(text)
    return version.base_version if version else str(text)


def expected_family(torch_version: str) -> dict[str, str]:
    """torchvision/torchaudio release series built for ``torch_version`` (2.10 -> 0.25, 2.10)."""
    v = Version(torch_version)
    return {
        "torchvision": f"0.{v.minor + _TORCHVISION_OFFSET}",
        "torchaudio": f"{v.major}.{v.minor}",
    }


def nightly_date(version: str | None) -> date | None:
    match = re.search(r"dev(\d{8})", version or "")
    if not match:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=UTC).date()
    except ValueError:
        return None


def _version_matches(expected: str, found: str) -> bool:
    """``expected`` is an exact public version ('2.10.0') or a specifier ('>=2.11')."""
    public = _release(found)
    if expected[:1] in "<>=!~":
        try:
            return SpecifierSet(expected).contains(public, prereleases=True)
        except InvalidSpecifier:
            return False
    return public == _release(expected)


def _owner(layer_packages: Mapping[str, Mapping[str, str]], name: str) -> str:
    """The last layer that installed ``name`` (the torch layer when unknown)."""
    layers = _changed_by(layer_packages, name)
    return layers[-1] if layers else "torch"


def _changed_by(layer_packages: Mapping[str, Mapping[str, str]], name: str) -> list[str]:
    return [layer for layer, pkgs in layer_packages.items() if name in pkgs]


@dataclass(frozen=True)
class Context:
    """What every check looks at: the spec's expectations, the probe's facts, the build."""

    expect: Expectations
    facts: Facts
    # layer name -> {distribution: version} that layer installed
    layer_packages: Mapping[str, Mapping[str, str]]
    today: date
    # the machine it runs on (its GPUs and driver, as the doctor detected them), when known
    host: Host | None = None
    env: str = ""  # the env's name (the doctor's verdicts are per env)
    # the nightly layer's packages, and the newest version of each the index serves now
    nightly_packages: tuple[str, ...] = ()
    index_now: Mapping[str, str] = field(default_factory=dict)

    @property
    def torch_version(self) -> str:
        return self.facts.torch.version or ""

    @property
    def dists(self) -> dict[str, str | None]:
        return self.facts.versions()


CheckFn = Callable[[Context], list[Check]]


def _blame(ok: bool, layer: str | None) -> str | None:
    return None if ok else layer


def probe_ran(ctx: Context) -> list[Check]:
    """A probe that crashed leaves no facts: report that, not a cascade of missing facts."""
    error = ctx.facts.probe_error
    if not error:
        return []
    return [
        Check(
            name="probe",
            ok=False,
            expected="the probe to run",
            found="it crashed",
            message=error.splitlines()[-1],
        )
    ]


def torch_imports(ctx: Context) -> list[Check]:
    """An env whose torch does not import is broken, whatever else is installed."""
    torch = ctx.facts.torch
    if torch.error or not torch.version:
        return [
            Check(
                name="torch-import",
                ok=False,
                expected="import torch to succeed",
                found=torch.error or "no version",
                layer="torch",
                message="torch cannot be imported in this env",
            )
        ]
    return [
        Check(name="torch-import", ok=True, expected="import torch to succeed", found=torch.version)
    ]


def torch_layer_intact(ctx: Context) -> list[Check]:
    """A later layer's resolver silently replacing the torch the torch layer installed."""
    layers = ctx.layer_packages
    owner = "nightly" if "nightly" in layers else "torch"
    layer_torch = (layers.get(owner) or {}).get("torch") or (layers.get("torch") or {}).get("torch")
    if not layer_torch:
        return []
    now = ctx.dists.get("torch")
    expected = f"torch {layer_torch} (from the {owner} layer)"
    if now == layer_torch:
        return [Check(name="torch-layer-intact", ok=True, expected=expected, found=f"torch {now}")]
    later = [name for name in _changed_by(layers, "torch") if name not in ("torch", "nightly")]
    culprit = f"layer {later[0]!r}" if later else "something installed after the build"
    return [
        Check(
            name="torch-layer-intact",
            ok=False,
            expected=expected,
            found=f"torch {now}",
            layer=later[0] if later else None,
            message=f"torch was replaced by {culprit}",
        )
    ]


def torch_version(ctx: Context) -> list[Check]:
    """An index or resolver serving another torch release than the one pinned."""
    wanted = ctx.expect.torch_version
    if not wanted:
        return []
    ok = _version_matches(wanted, ctx.torch_version)
    return [
        Check(
            name="torch-version",
            ok=ok,
            expected=wanted,
            found=ctx.torch_version,
            layer=_blame(ok, "torch"),
            message="" if ok else "the installed torch is not the requested release",
        )
    ]


def torch_local_tag(ctx: Context) -> list[Check]:
    """The right release in the wrong build variant (+cpu where +cu128 was asked for)."""
    wanted = ctx.expect.torch_local
    if not wanted:
        return []
    found = _local(ctx.torch_version) or "(none)"
    ok = found == wanted
    return [
        Check(
            name="torch-local-tag",
            ok=ok,
            expected=f"+{wanted}",
            found=f"+{found}" if found != "(none)" else found,
            layer=_blame(ok, "torch"),
            message="" if ok else "the torch build variant differs from the one asked for",
        )
    ]


def cpu_only_torch(ctx: Context) -> list[Check]:
    """A CUDA build of torch landing in an env meant to be CPU-only."""
    if not ctx.expect.cpu_only:
        return []
    cuda = ctx.facts.torch.cuda
    ok = cuda is None
    return [
        Check(
            name="cpu-only-torch",
            ok=ok,
            expected="torch.version.cuda is None",
            found=f"torch.version.cuda = {cuda!r}",
            layer=_blame(ok, "torch"),
            message="" if ok else "a CUDA build of torch in a CPU-only env",
        )
    ]


def no_nvidia_dists(ctx: Context) -> list[Check]:
    """Gigabytes of CUDA library wheels dragged into a CPU-only env by some dependency."""
    if not ctx.expect.cpu_only:
        return []
    # nvidia-ml-py is the NVML binding, not a CUDA library: it belongs in every env.
    nvidia = sorted(n for n in ctx.dists if n.startswith("nvidia-") and n != "nvidia-ml-py")
    culprits = sorted({layer for n in nvidia for layer in _changed_by(ctx.layer_packages, n)})
    found = ", ".join(nvidia[:6]) + (" ..." if len(nvidia) > 6 else "") if nvidia else "none"
    return [
        Check(
            name="no-nvidia-dists",
            ok=not nvidia,
            expected="no nvidia-* CUDA library distributions",
            found=found,
            layer=culprits[0] if culprits else None,
            message="" if not nvidia else "CUDA wheels were installed into a CPU-only env",
        )
    ]


def torch_cuda(ctx: Context) -> list[Check]:
    """A torch built for another CUDA than the env's (or a CPU build where CUDA was expected)."""
    wanted = ctx.expect.cuda
    if ctx.expect.cpu_only or not wanted:
        return []
    cuda = ctx.facts.torch.cuda
    ok = cuda == wanted
    return [
        Check(
            name="torch-cuda",
            ok=ok,
            expected=f"CUDA {wanted}",
            found=f"CUDA {cuda}" if cuda else "a CPU-only torch (cuda None)",
            layer=_blame(ok, "torch"),
            message="" if ok else "torch.version.cuda differs from the expected CUDA version",
        )
    ]


def arch_covers(ctx: Context) -> list[Check]:
    """A torch that imports but has no kernels for the GPUs this env is meant for."""
    flags = ctx.facts.torch.arch_flags
    checks = []
    for target in ctx.expect.arch_covers:
        verdict, why = archcompat.coverage(flags, target)
        checks.append(
            Check(
                name=f"arch-covers-{target}",
                ok=verdict != "none",
                expected=f"{target} covered by the compiled arch list",
                found=" ".join(flags) or "(empty arch list)",
                layer=_blame(verdict != "none", "torch"),
                message=why,
            )
        )
    return checks


def arch_exact(ctx: Context) -> list[Check]:
    """A custom build compiled for other GPUs than declared (one arch too few, or too many)."""
    wanted = ctx.expect.arch_exact
    if not wanted:
        return []
    flags = ctx.facts.torch.arch_flags
    missing = [a for a in wanted if a not in flags]
    extra = [a for a in flags if a not in wanted]
    ok = not missing and not extra
    diff = "; ".join(
        part
        for part in (
            f"missing {', '.join(missing)}" if missing else "",
            f"not declared {', '.join(extra)}" if extra else "",
        )
        if part
    )
    return [
        Check(
            name="arch-exact",
            ok=ok,
            expected=f"exactly {' '.join(wanted)}",
            found=(" ".join(flags) or "(empty arch list)") + (f" ({diff})" if diff else ""),
            layer=_blame(ok, "torch"),
            message="" if ok else "the compiled arch list differs from the declared one",
        )
    ]


def family_matches(ctx: Context) -> list[Check]:
    """torchvision/torchaudio built for another torch release or CUDA variant than torch."""
    if not ctx.expect.torch_family_match:
        return []
    want = expected_family(_release(ctx.torch_version))
    modules = {"torchvision": ctx.facts.torchvision, "torchaudio": ctx.facts.torchaudio}
    found = (_family_member(ctx, name, mod, want[name]) for name, mod in modules.items())
    return [c for c in found if c is not None]


def _family_member(ctx: Context, name: str, mod: ModuleFacts, series: str) -> Check | None:
    """One of torchvision/torchaudio against torch; None when it is not installed."""
    tv = ctx.torch_version
    dist = ctx.dists.get(name)
    if dist is None and not mod.version:
        return None
    owner = _owner(ctx.layer_packages, name)
    if mod.error:
        return Check(
            name=f"{name}-matches-torch",
            ok=False,
            expected=f"{name} {series}.x importable beside torch {tv}",
            found=mod.error,
            layer=owner,
            message=f"{name} does not load with this torch. Fix: install the {name} {series}.x "
            f"released with torch {_release(tv)}, from torch's index, in the same command",
        )
    found = mod.version or dist or "?"
    torch_local, local = _local(tv), _local(found)
    ok = ".".join(_release(found).split(".")[:2]) == series and (
        local is None or torch_local is None or local == torch_local
    )
    return Check(
        name=f"{name}-matches-torch",
        ok=ok,
        expected=f"{name} {series}.x" + (f"+{torch_local}" if torch_local else ""),
        found=f"{name} {found}",
        layer=_blame(ok, owner),
        message=""
        if ok
        else f"{name} {found} is built for another torch release or CUDA variant than torch {tv}. "
        f"Fix: install {name}=={series}.* from torch's index, in the same command as torch",
    )


def nightly_fresh(ctx: Context) -> list[Check]:
    """Each nightly-layer package a fresh .devYYYYMMDD build; stale ones name what the index has."""
    max_age = ctx.expect.nightly_max_age_days
    if max_age is None:
        return []
    names = ctx.nightly_packages or ("torch",)
    return [
        _nightly_check(ctx, name, max_age) for name in names if name == "torch" or name in ctx.dists
    ]


def _nightly_check(ctx: Context, name: str, max_age: int) -> Check:
    """One nightly package: a dev build, at most ``max_age`` days old."""
    version = ctx.torch_version if name == "torch" else str(ctx.dists.get(name) or "")
    check_name = "nightly-fresh" if name == "torch" else f"nightly-fresh-{name}"
    built = nightly_date(version)
    if built is None:
        return Check(
            name=check_name,
            ok=False,
            expected=f"a .devYYYYMMDD nightly build of {name}",
            found=version,
            layer="nightly",
            message="not a nightly build: "
            "the forced reinstall from the nightly index did not take effect",
        )
    age = (ctx.today - built).days
    ok = age <= max_age
    return Check(
        name=check_name,
        ok=ok,
        expected=f"a {name} nightly at most {max_age} days old",
        found=f"{name} {version}: {built.isoformat()} ({age} days old)",
        layer=_blame(ok, "nightly"),
        message="" if ok else _stale_nightly(ctx, name, built),
    )


def _stale_nightly(ctx: Context, name: str, built: date) -> str:
    """Why a nightly is old: the env kept an old build, or the index has nothing newer."""
    newest = ctx.index_now.get(name)
    served = nightly_date(newest)
    if newest is None or served is None:
        return (
            "the index serves stale nightlies (upstream may have stopped publishing this "
            "variant); what it serves now is unknown here"
        )
    age = (ctx.today - served).days
    if served > built:
        return (
            f"the env holds an old build: the index now serves {name} {newest} ({age} days "
            "old). Fix: run again without --no-refresh to rebuild onto it"
        )
    return (
        f"the index serves stale nightlies: its newest {name} is {newest} ({age} days old); "
        "upstream may have stopped publishing this variant. Fix: move the nightly lane to a "
        "CUDA variant upstream still builds"
    )


def numpy_major(ctx: Context) -> list[Check]:
    """A NumPy major version the env's compiled extensions were not built against."""
    wanted = ctx.expect.numpy_major
    if wanted is None:
        return []
    numpy = ctx.facts.numpy.version or ctx.dists.get("numpy")
    version = _version(numpy)
    ok = version is not None and version.major == wanted
    return [
        Check(
            name="numpy-major",
            ok=ok,
            expected=f"NumPy {wanted}.x",
            found=f"NumPy {numpy}",
            layer=_blame(ok, "stack"),
            message=""
            if ok
            else f"extensions built for NumPy {wanted} (pandas, opencv, torch's interop) break on "
            f"another major. Fix: install numpy=={wanted}.* (the lock's version), or rebuild",
        )
    ]


def numpy_blas(ctx: Context) -> list[Check]:
    """numpy/scipy linked against another BLAS than the env promises (speed, OpenMP clashes)."""
    wanted = ctx.expect.blas
    if wanted == "any":
        return []
    libraries = ctx.facts.blas.libraries
    apis = sorted({str(lib.internal_api) for lib in libraries if lib.user_api == "blas"})
    ok = wanted in apis
    return [
        Check(
            name="numpy-blas",
            ok=ok,
            expected=f"numpy/scipy BLAS {wanted}",
            found=", ".join(apis) or "unknown (threadpoolctl found none)",
            layer=_blame(ok, "stack"),
            message=f"torch's own BLAS is {ctx.facts.torch.blas} (reported separately)",
        )
    ]


def pillow_from_pip(ctx: Context) -> list[Check]:
    """conda's Pillow under pip's torchvision, which is built and tested against PyPI's Pillow."""
    pillow = ctx.facts.distributions.get("pillow")
    if pillow is None:
        return []
    installer = pillow.installer or "unknown"
    ok = installer in ("pip", "uv")
    return [
        Check(
            name="pillow-from-pip",
            ok=ok,
            expected="Pillow installed by pip/uv",
            found=f"installer {installer}",
            layer=_blame(ok, "base"),
            message=""
            if ok
            else "conda's Pillow conflicts with pip's torchvision (its DLLs break it on Windows)",
        )
    ]


# A failed gate makes every later check meaningless (there is no torch to judge), so check() stops.
GATES: tuple[CheckFn, ...] = (probe_ran, torch_imports)
CHECKS: tuple[CheckFn, ...] = (
    torch_layer_intact,
    torch_version,
    torch_local_tag,
    cpu_only_torch,
    no_nvidia_dists,
    torch_cuda,
    arch_covers,
    arch_exact,
    family_matches,
    nightly_fresh,
    numpy_major,
    numpy_blas,
    pillow_from_pip,
    # what is installed intact and consistent, the build's features, the host's GPU
    *integrity.CHECKS,
    *buildinfo.CHECKS,
)


def check(
    spec: EnvSpec,
    facts: Facts,
    layer_packages: Mapping[str, Mapping[str, str]] | None = None,
    today: date | None = None,
    *,
    host: Host | None = None,
    index_now: Mapping[str, str] | None = None,
) -> list[Check]:
    """Every applicable expectation of ``spec`` against probe ``facts``, gates first.

    ``host``: where the env runs (GPU checks need it); ``index_now``: the newest version of each
    nightly package its index serves now (a stale-nightly verdict names it).
    """
    ctx = Context(
        expect=spec.expect,
        facts=facts,
        layer_packages=layer_packages or {},
        today=today or datetime.now(UTC).date(),
        host=host,
        env=spec.name,
        nightly_packages=tuple(
            Requirement(r).name for r in (spec.nightly.packages if spec.nightly else ())
        ),
        index_now=index_now or {},
    )
    checks: list[Check] = []
    for gate in GATES:
        checks += gate(ctx)
        if failures(checks):
            return checks
    for fn in CHECKS:
        checks += fn(ctx)
    return checks


def matches_lock(facts: Facts, locked: Mapping[str, str]) -> Check:
    """The installed distributions are exactly the locked set (names and versions)."""
    installed = facts.versions()
    extra = sorted(set(installed) - set(locked))
    missing = sorted(set(locked) - set(installed))
    moved = sorted(
        n
        for n in set(locked) & set(installed)
        if _release(installed[n]) != _release(locked[n]) and installed[n] != locked[n]
    )
    problems = []
    if extra:
        problems.append(f"not locked: {', '.join(extra[:5])}")
    if missing:
        problems.append(f"missing: {', '.join(missing[:5])}")
    if moved:
        listed = ", ".join(f"{n} {installed[n]} (locked {locked[n]})" for n in moved[:5])
        problems.append(f"other version: {listed}")
    return Check(
        name="matches-lock",
        ok=not problems,
        expected=f"exactly the {len(locked)} locked distributions",
        found="; ".join(problems) or f"{len(installed)} installed, all locked",
        layer=None if not problems else "stack",
        message=""
        if not problems
        else "the env differs from its lock. Fix: rebuild it from the lock (--force)",
    )


def failures(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]


def summary(checks: list[Check]) -> str:
    """One line naming every failed check with expected vs found."""
    return "; ".join(
        f"{c.name}: expected {c.expected}, found {c.found}"
        + (f" (layer {c.layer})" if c.layer else "")
        for c in failures(checks)
    )
