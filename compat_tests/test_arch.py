"""Arch-list coverage computed from the compiled arch flags — no GPU needed.

The SASS/PTX rule is envlab's own, copied into ``_archrule.py`` by tools/sync_archrule.py.
"""

from __future__ import annotations

import pytest
from compat_support import Expect, arch_flags, coverage, need, parse_capability, parse_flag

CATEGORY = "arch"


def test_compiled_arch_flags_readable() -> None:
    """The build's compiled arch list is readable without a GPU and every entry parses.

    Fix: an empty list on a CUDA build means a broken/partial install (reinstall torch); a CPU
    build correctly has none. Note torch.cuda.get_arch_list() is [] without a GPU — that is
    why this reads torch._C._cuda_getArchFlags().
    """
    torch = need("torch")
    flags = arch_flags(torch)
    if torch.version.cuda is None:
        assert not flags, f"CPU build but it lists CUDA archs: {flags}"
        return
    assert flags, (
        f"torch {torch.__version__} is built for CUDA {torch.version.cuda} but its compiled arch "
        "list is empty. Fix: reinstall torch."
    )
    unknown = [flag for flag in flags if parse_flag(flag) is None]
    assert not unknown, f"unrecognised arch flags {unknown} in {flags}"


def test_arch_covers_declared_targets(expect: Expect) -> None:
    """Every declared target GPU (arch_covers, e.g. sm_120, sm_52) runs this build: SASS or PTX.

    Fix: sm_120 (Blackwell) needs cu128+; sm_52/sm_61 need cu118 (torch 2.4-2.7) or a source
    build with TORCH_CUDA_ARCH_LIST; pick the torch index from the target GPUs.
    """
    targets = expect.get("arch_covers")
    if not targets:
        pytest.skip(f"no target GPUs declared for env {expect.env!r} (arch_covers is empty)")
    torch = need("torch")
    flags = arch_flags(torch)
    uncovered = []
    for target in targets:
        verdict, why = coverage(flags, parse_capability(str(target)))
        if not verdict:
            uncovered.append(f"{target} ({why})")
    assert not uncovered, (
        f"torch {torch.__version__} does not cover the declared target GPUs: "
        f"{'; '.join(uncovered)}. "
        "Fix: use a torch index whose builds include these archs (cu128+ for sm_120; cu118 or a "
        "source build for sm_52/sm_61)."
    )


@pytest.mark.gpu
def test_arch_list_matches_runtime() -> None:
    """With a GPU, torch.cuda.get_arch_list() equals the compiled flags read without one.

    Fix: a difference means two torch copies are importable (e.g. user site-packages
    shadowing the env); check torch.__file__ and remove the stray copy.
    """
    torch = need("torch")
    compiled = str(torch._C._cuda_getArchFlags()).split()
    runtime = list(torch.cuda.get_arch_list())
    assert runtime == compiled, f"runtime arch list {runtime} != compiled flags {compiled}"
