"""Verification after every build: is what got installed the build that was asked for?

Each check says what was expected, what was found and, where it can tell, which layer caused a
mismatch. Facts come from :mod:`envlab.verify.probe` run inside the env.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from envlab.results.schema import Check
from envlab.spec.envspec import EnvSpec
from envlab.verify import archcompat

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
    """The torchvision/torchaudio release series built for ``torch_version`` (e.g. 2.10 -> 0.25, 2.10)."""
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


def _owner(layer_packages: dict[str, dict[str, str]], name: str) -> str:
    """The last layer that installed ``name`` (the torch layer when unknown)."""
    layers = _changed_by(layer_packages, name)
    return layers[-1] if layers else "torch"


def _changed_by(layer_packages: dict[str, dict[str, str]], name: str) -> list[str]:
    return [layer for layer, pkgs in layer_packages.items() if name in pkgs]


def check(
    spec: EnvSpec,
    facts: dict,
    layer_packages: dict[str, dict[str, str]] | None = None,
    today: date | None = None,
) -> list[Check]:
    """Every applicable expectation of ``spec`` against probe ``facts``."""
    exp = spec.expect
    layer_packages = layer_packages or {}
    torch = facts.get("torch") or {}
    dists = {n: d.get("version") for n, d in (facts.get("distributions") or {}).items()}
    checks: list[Check] = []

    def add(
        name: str, ok: bool, expected: str, found: str, layer: str | None = None, message: str = ""
    ) -> None:
        checks.append(
            Check(name=name, ok=ok, expected=expected, found=found, layer=layer, message=message)
        )

    if facts.get("probe_error"):
        add(
            "probe",
            False,
            "the probe to run",
            "it crashed",
            None,
            facts["probe_error"].splitlines()[-1],
        )
        return checks
    if torch.get("error") or not torch.get("version"):
        add(
            "torch-import",
            False,
            "import torch to succeed",
            torch.get("error", "no version"),
            "torch",
            "torch cannot be imported in this env",
        )
        return checks
    tv = torch["version"]
    add("torch-import", True, "import torch to succeed", tv)

    # Integrity: the torch layer's torch must still be the one installed (design rule 1).
    owner = "nightly" if "nightly" in layer_packages else "torch"
    layer_torch = (layer_packages.get(owner) or {}).get("torch") or (
        layer_packages.get("torch") or {}
    ).get("torch")
    if layer_torch:
        now = dists.get("torch")
        later = [
            name
            for name in _changed_by(layer_packages, "torch")
            if name not in ("torch", "nightly")
        ]
        if now != layer_torch:
            culprit = f"layer {later[0]!r}" if later else "something installed after the build"
            add(
                "torch-layer-intact",
                False,
                f"torch {layer_torch} (from the {owner} layer)",
                f"torch {now}",
                later[0] if later else None,
                f"torch was replaced by {culprit}",
            )
        else:
            add(
                "torch-layer-intact",
                True,
                f"torch {layer_torch} (from the {owner} layer)",
                f"torch {now}",
            )

    if exp.torch_version:
        ok = _version_matches(exp.torch_version, tv)
        add(
            "torch-version",
            ok,
            exp.torch_version,
            tv,
            None if ok else "torch",
            "" if ok else "the installed torch is not the requested release",
        )
    if exp.torch_local:
        found = _local(tv) or "(none)"
        ok = found == exp.torch_local
        add(
            "torch-local-tag",
            ok,
            f"+{exp.torch_local}",
            f"+{found}" if found != "(none)" else found,
            None if ok else "torch",
            "" if ok else "the torch build variant differs from the one asked for",
        )

    cuda = torch.get("cuda")
    if exp.cpu_only:
        add(
            "cpu-only-torch",
            cuda is None,
            "torch.version.cuda is None",
            f"torch.version.cuda = {cuda!r}",
            None if cuda is None else "torch",
            "" if cuda is None else "a CUDA build of torch in a CPU-only env",
        )
        nvidia = sorted(n for n in dists if n.startswith("nvidia-") and n != "nvidia-ml-py")
        culprits = sorted({layer for n in nvidia for layer in _changed_by(layer_packages, n)})
        add(
            "no-nvidia-dists",
            not nvidia,
            "no nvidia-* CUDA library distributions",
            ", ".join(nvidia[:6]) + (" ..." if len(nvidia) > 6 else "") if nvidia else "none",
            culprits[0] if culprits else None,
            "" if not nvidia else "CUDA wheels were installed into a CPU-only env",
        )
    elif exp.cuda:
        ok = cuda == exp.cuda
        add(
            "torch-cuda",
            ok,
            f"CUDA {exp.cuda}",
            f"CUDA {cuda}" if cuda else "a CPU-only torch (cuda None)",
            None if ok else "torch",
            "" if ok else "torch.version.cuda differs from the expected CUDA version",
        )

    if exp.arch_covers:
        flags = torch.get("arch_flags") or []
        for target in exp.arch_covers:
            verdict, why = archcompat.coverage(flags, target)
            add(
                f"arch-covers-{target}",
                verdict != "none",
                f"{target} covered by the compiled arch list",
                " ".join(flags) or "(empty arch list)",
                None if verdict != "none" else "torch",
                why,
            )

    if exp.torch_family_match:
        want = expected_family(_release(tv))
        torch_local = _local(tv)
        for name in ("torchvision", "torchaudio"):
            mod = facts.get(name) or {}
            dist = dists.get(name)
            if dist is None and not mod.get("version"):
                continue
            if mod.get("error"):
                add(
                    f"{name}-matches-torch",
                    False,
                    f"{name} {want[name]}.x importable beside torch {tv}",
                    mod["error"],
                    _owner(layer_packages, name),
                    f"{name} does not load with this torch",
                )
                continue
            found = mod.get("version") or dist or "?"
            series = ".".join(_release(found).split(".")[:2])
            local = _local(found)
            ok = series == want[name] and (
                local is None or torch_local is None or local == torch_local
            )
            add(
                f"{name}-matches-torch",
                ok,
                f"{name} {want[name]}.x" + (f"+{torch_local}" if torch_local else ""),
                f"{name} {found}",
                None if ok else _owner(layer_packages, name),
                ""
                if ok
                else f"{name} {found} is built for another torch release or CUDA variant than torch {tv}",
            )

    if exp.nightly_max_age_days is not None:
        built = nightly_date(tv)
        today = today or datetime.now(UTC).date()
        if built is None:
            add(
                "nightly-fresh",
                False,
                "a .devYYYYMMDD nightly build",
                tv,
                "nightly",
                "not a nightly build: the forced reinstall from the nightly index did not take effect",
            )
        else:
            age = (today - built).days
            ok = age <= exp.nightly_max_age_days
            add(
                "nightly-fresh",
                ok,
                f"a nightly at most {exp.nightly_max_age_days} days old",
                f"{built.isoformat()} ({age} days old)",
                None if ok else "nightly",
                ""
                if ok
                else "the index serves stale nightlies (upstream may have stopped publishing this variant)",
            )

    if exp.numpy_major is not None:
        numpy = (facts.get("numpy") or {}).get("version") or dists.get("numpy")
        major = _version(numpy).major if _version(numpy) else None
        add(
            "numpy-major",
            major == exp.numpy_major,
            f"NumPy {exp.numpy_major}.x",
            f"NumPy {numpy}",
            None if major == exp.numpy_major else "stack",
        )

    if exp.blas != "any":
        libs = (facts.get("blas") or {}).get("libraries") or []
        apis = sorted(
            {str(lib.get("internal_api")) for lib in libs if lib.get("user_api") == "blas"}
        )
        ok = exp.blas in apis
        add(
            "numpy-blas",
            ok,
            f"numpy/scipy BLAS {exp.blas}",
            ", ".join(apis) or "unknown (threadpoolctl found none)",
            None if ok else "stack",
            f"torch's own BLAS is {torch.get('blas')} (reported separately)",
        )

    pillow = (facts.get("distributions") or {}).get("pillow")
    if pillow:
        installer = pillow.get("installer") or "unknown"
        ok = installer in ("pip", "uv")
        add(
            "pillow-from-pip",
            ok,
            "Pillow installed by pip/uv",
            f"installer {installer}",
            None if ok else "base",
            "" if ok else "conda's Pillow conflicts with pip's torchvision (seed 000)",
        )
    return checks


def matches_lock(facts: dict, locked: dict[str, str]) -> Check:
    """The installed distributions are exactly the locked set (names and versions)."""
    installed = {n: d.get("version") for n, d in (facts.get("distributions") or {}).items()}
    extra = sorted(set(installed) - set(locked))
    missing = sorted(set(locked) - set(installed))
    moved = sorted(
        n
        for n in set(locked) & set(installed)
        if _release(installed[n]) != _release(locked[n]) and installed[n] != locked[n]
    )
    problems = (
        ([f"not locked: {', '.join(extra[:5])}"] if extra else [])
        + ([f"missing: {', '.join(missing[:5])}"] if missing else [])
        + (
            [
                f"other version: {', '.join(f'{n} {installed[n]} (locked {locked[n]})' for n in moved[:5])}"
            ]
            if moved
            else []
        )
    )
    return Check(
        name="matches-lock",
        ok=not problems,
        expected=f"exactly the {len(locked)} locked distributions",
        found="; ".join(problems) or f"{len(installed)} installed, all locked",
        layer=None if not problems else "stack",
        message="" if not problems else "the env differs from its lock",
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
