"""Seed category 12: CUDA memory — a 1 GiB allocate/free cycle and the memory query."""

from __future__ import annotations

import pytest
from compat_support import need

CATEGORY = "cuda-memory"

GIB = 1 << 30


@pytest.mark.gpu
def test_alloc_free_1gib() -> None:
    """Allocate, fill and free 1 GiB on the GPU; the allocator returns to its starting point.

    Fix: OOM on a card with enough memory means other processes hold it (nvidia-smi);
    memory not returning means a leak in the allocator config (PYTORCH_CUDA_ALLOC_CONF).
    """
    torch = need("torch")
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    block = torch.empty(GIB // 4, dtype=torch.float32, device="cuda")
    block.fill_(1.0)
    assert float(block.sum()) == GIB // 4, "1 GiB block did not hold its values"
    assert torch.cuda.memory_allocated() >= base + GIB
    del block
    torch.cuda.empty_cache()
    assert torch.cuda.memory_allocated() == base, "1 GiB was not freed"
    assert torch.cuda.memory_reserved() < GIB, (
        "the caching allocator kept the 1 GiB after empty_cache()"
    )


@pytest.mark.gpu
def test_mem_get_info() -> None:
    """cudaMemGetInfo reports free <= total and total equals the device's memory.

    Fix: an error here means the CUDA runtime cannot talk to the driver (driver too old for
    this CUDA, or a container without the GPU's device files).
    """
    torch = need("torch")
    free, total = torch.cuda.mem_get_info()
    props = torch.cuda.get_device_properties(0)
    assert 0 < free <= total, f"free {free} / total {total}"
    assert abs(total - props.total_memory) <= 64 << 20, (
        f"mem_get_info total {total} vs device {props.total_memory}"
    )
