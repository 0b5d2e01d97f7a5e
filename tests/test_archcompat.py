"""The SASS/PTX rule, its generated copy in the compat suite, and the arch-list helpers."""

from __future__ import annotations

import importlib.util
import itertools
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from envlab.verify.archcompat import (
    Arch,
    Capability,
    coverage,
    covers,
    describe,
    parse_arch_list,
    runs_on,
    sorted_flags,
)

ROOT = Path(__file__).resolve().parents[1]
SYNC = ROOT / "tools" / "sync_archrule.py"
SOURCE = Path("src/envlab/verify/archrule.py")
COPY = Path("compat_tests/_archrule.py")

CU118_27 = "sm_50 sm_60 sm_70 sm_75 sm_80 sm_86 sm_37 sm_90"
CU128_210 = "sm_70 sm_75 sm_80 sm_86 sm_90 sm_100 sm_120"


@pytest.mark.parametrize(
    ("text", "cap"),
    [
        ("8.6", Capability(8, 6)),
        ("86", Capability(8, 6)),
        ("sm_120", Capability(12, 0)),
        ("compute_90", Capability(9, 0)),
        ("sm_90a", Capability(9, 0)),
        ("12.1", Capability(12, 1)),
    ],
)
def test_capability_parse(text: str, cap: Capability) -> None:
    assert Capability.parse(text) == cap


def test_capability_parse_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="compute capability"):
        Capability.parse("x")


@pytest.mark.parametrize(
    ("flags", "device", "verdict"),
    [
        (CU118_27, "5.2", "sass"),  # sm_50 SASS runs on 5.2 (a GTX 970)
        (CU118_27, "6.1", "sass"),
        (CU118_27, "9.0", "sass"),
        (CU118_27, "12.0", "none"),  # no Blackwell kernels, no PTX
        (CU128_210, "5.2", "none"),  # Maxwell/Pascal dropped from cu128
        (CU128_210, "12.0", "sass"),
        (CU128_210, "8.9", "sass"),  # sm_86 runs on 8.9
        ("sm_86", "9.0", "none"),  # SASS does not cross a major version
        ("sm_80 compute_80", "9.0", "ptx"),
        ("sm_90a", "9.0", "sass"),
        ("sm_90a", "10.0", "none"),  # arch-specific SASS runs on exactly that device
        ("compute_90a", "9.0", "ptx"),
        ("compute_90a", "10.0", "none"),  # arch-specific PTX does not JIT forward either
        ("compute_100a", "10.3", "none"),
        ("sm_100f", "10.3", "sass"),  # family SASS: same major, minor >= 0
        ("sm_103f", "10.0", "none"),  # ... never a lower minor
        ("sm_100f", "11.0", "none"),
        ("compute_100f", "10.3", "ptx"),  # family PTX JITs within the family
        ("compute_100f", "12.0", "none"),  # ... and not to another major
        ("compute_120f", "12.1", "ptx"),
        ("compute_120", "10.0", "none"),  # PTX only JITs forward
        ("", "8.0", "none"),
    ],
)
def test_coverage(flags: str, device: str, verdict: str) -> None:
    assert coverage(flags, device)[0] == verdict
    assert covers(flags, device) is (verdict != "none")


def test_coverage_reasons_name_the_archs() -> None:
    assert coverage(CU118_27, "5.2")[1] == "sm_50 kernels run natively on sm_52"
    assert "sm_120 is not covered" in coverage(CU118_27, Capability(12, 0))[1]
    assert "empty arch list" in coverage([], "8.0")[1]


def test_parse_arch_list_ignores_unknown_tokens() -> None:
    assert [str(a) for a in parse_arch_list(["sm_80", "gfx90a", "compute_90"])] == [
        "sm_80",
        "compute_90",
    ]
    assert Arch.parse("sm_100a").suffix == "a"


def test_sorted_flags_and_describe() -> None:
    assert sorted_flags(CU118_27 + " sm_90") == [
        "sm_37",
        "sm_50",
        "sm_60",
        "sm_70",
        "sm_75",
        "sm_80",
        "sm_86",
        "sm_90",
    ]
    assert sorted_flags(["compute_120", "sm_120", "sm_100"]) == ["sm_100", "sm_120", "compute_120"]
    assert describe("sm_90 sm_80") == "sm_80 sm_90"
    assert describe([]) == "no CUDA kernels"


# --- one rule, two copies: envlab's module and the compat suite's generated copy ---------------


def sync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SYNC), *args], capture_output=True, text=True, check=False, timeout=60
    )


def test_generated_copy_is_up_to_date() -> None:
    done = sync("--check")
    assert done.returncode == 0, done.stderr


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A repository root holding the real rule source and a freshly generated copy."""
    (tmp_path / SOURCE).parent.mkdir(parents=True)
    (tmp_path / COPY).parent.mkdir(parents=True)
    shutil.copy(ROOT / SOURCE, tmp_path / SOURCE)
    assert sync("--root", str(tmp_path)).returncode == 0
    return tmp_path


def test_generated_copy_is_the_source_under_a_header(tree: Path) -> None:
    copy = (tree / COPY).read_text(encoding="utf-8")
    assert copy.startswith(f"# Generated from {SOURCE.as_posix()} by tools/sync_archrule.py")
    assert "do not edit" in copy.splitlines()[0]
    assert copy.endswith((ROOT / SOURCE).read_text(encoding="utf-8"))
    assert sync("--check", "--root", str(tree)).returncode == 0


@pytest.mark.parametrize("planted", ["edit", "delete"])
def test_check_names_a_stale_copy(tree: Path, planted: str) -> None:
    copy = tree / COPY
    if planted == "edit":
        text = copy.read_text(encoding="utf-8")
        copy.write_text(text.replace("own.minor <= device.minor", "True"), encoding="utf-8")
    else:
        copy.unlink()
    done = sync("--check", "--root", str(tree))
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert str(COPY) in done.stderr and "run: python tools/sync_archrule.py" in done.stderr


def test_source_must_stay_stdlib_only(tree: Path) -> None:
    source = tree / SOURCE
    text = source.read_text(encoding="utf-8")
    source.write_text(text.replace("import re\n", "import re\n\nimport envlab.log\n"), "utf-8")
    done = sync("--root", str(tree))
    assert done.returncode == 2 and "envlab.log" in done.stderr, done.stderr


@pytest.fixture(scope="module")
def support() -> ModuleType:
    """compat_tests/compat_support.py loaded by path, as the compat suite's own checks see it."""
    path = ROOT / "compat_tests" / "compat_support.py"
    spec = importlib.util.spec_from_file_location("compat_support_for_archrule", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


CAPS = [(5, 0), (5, 2), (6, 1), (7, 5), (8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (10, 3)]
CAPS += [(11, 0), (12, 0), (12, 1)]
FLAGS = [
    f"{kind}_{major}{minor}{suffix}"
    for kind, (major, minor), suffix in itertools.product(("sm", "compute"), CAPS, ("", "a", "f"))
]


def test_compat_suite_uses_the_generated_copy(support: ModuleType) -> None:
    assert Path(support.archrule.__file__).resolve() == (ROOT / COPY).resolve()


def test_both_copies_agree_over_the_grid(support: ModuleType) -> None:
    disagreements = []
    for flag, (major, minor) in itertools.product(FLAGS, CAPS):
        ours = runs_on(Arch.parse(flag), Capability(major, minor))
        theirs = support.runs_on(support.parse_flag(flag), (major, minor))
        if (ours if ours != "none" else "") != theirs:
            disagreements.append(f"{flag} on {major}.{minor}: envlab {ours}, compat {theirs!r}")
    assert not disagreements, disagreements
    for flags, cap in itertools.product([CU118_27.split(), CU128_210.split(), FLAGS[:9]], CAPS):
        verdict, why = coverage(flags, Capability(*cap))
        assert support.coverage(flags, cap) == ("" if verdict == "none" else verdict, why)
