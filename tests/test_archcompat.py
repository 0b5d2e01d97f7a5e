"""The SASS/PTX rule (design rule 6) and the arch-list helpers."""

from __future__ import annotations

import pytest

from envlab.verify.archcompat import (
    Arch,
    Capability,
    coverage,
    covers,
    describe,
    parse_arch_list,
    sorted_flags,
)

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
        (CU118_27, "5.2", "sass"),  # sm_50 SASS runs on 5.2 (seed 002's GTX 970)
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
