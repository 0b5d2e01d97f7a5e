"""Peak table and lookup: GPUs by name, the CPU estimate from /proc/cpuinfo."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from envlab.run import peaks
from envlab.run.peaks import CpuInfo, peak_for, read_cpu_info

GPU = {"device": "cuda:0"}


@pytest.mark.parametrize(
    ("device_name", "entry"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", "H100 NVL"),
        ("NVIDIA H200", "H200 SXM"),
        ("NVIDIA H200 NVL", "H200 NVL"),
        ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM"),
        ("NVIDIA A100-SXM4-40GB", "A100 40GB SXM"),
        ("NVIDIA A100-PCIE-40GB", "A100 40GB PCIe"),
        ("NVIDIA A100 80GB PCIe", "A100 80GB PCIe"),
        ("NVIDIA L4", "L4"),
        ("Tesla T4", "T4"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA GeForce RTX 5070 Ti", "RTX 5070 Ti"),
        ("Tesla V100-SXM2-16GB", "V100 SXM2"),
        ("Tesla V100-PCIE-32GB", "V100 PCIe"),
    ],
)
def test_device_names_as_torch_reports_them(device_name: str, entry: str) -> None:
    found = peaks.gpu_peak(device_name)
    assert found is not None and found.name == entry


@pytest.mark.parametrize(
    "device_name", ["NVIDIA L40S", "NVIDIA GeForce RTX 5070", "AMD Instinct MI300X", ""]
)
def test_unknown_or_lookalike_gpus_have_no_peak(device_name: str) -> None:
    assert peaks.gpu_peak(device_name) is None
    assert peak_for("gemm_bf16_cuda", {**GPU, "dtype": "bf16"}, device_name) is None


def test_every_entry_is_reachable_and_sourced() -> None:
    table = peaks.table()
    assert len(table.gpus) >= 10
    for gpu in table.gpus:
        # An earlier, broader pattern must not shadow a later entry.
        assert peaks.gpu_peak(f"NVIDIA {gpu.name}") is gpu
        assert gpu.source.strip()
        assert all(v > 0 for v in gpu.figures.values())
        assert gpu.figures["fp32_tflops"] <= gpu.figures.get(
            "tf32_tflops", gpu.figures["fp32_tflops"]
        )
        assert gpu.figures["fp32_tflops"] <= gpu.figures["fp16_tflops"]


def test_gpu_lookup_gives_figure_in_record_unit_with_source() -> None:
    value, source = peak_for(
        "gemm_bf16_cuda", {**GPU, "dtype": "bf16"}, "NVIDIA H100 80GB HBM3"
    ) or (0, "")
    assert value == pytest.approx(989.5e3)  # GFLOP/s
    assert "H100" in source and "datasheet" in source
    fp32 = peak_for("conv2d_fp32_cuda", {**GPU, "dtype": "fp32"}, "NVIDIA A100-SXM4-80GB")
    assert fp32 is not None and fp32[0] == pytest.approx(19.5e3)
    mem = peak_for("copy_d2d_cuda", GPU, "NVIDIA A100-SXM4-80GB")
    assert mem is not None and mem[0] == 2039 and "memory bandwidth" in mem[1]
    link = peak_for("copy_h2d_pinned_cuda", GPU, "NVIDIA H200")
    assert link is not None and link[0] == 63 and "host link" in link[1]


def test_missing_figures_and_unrelated_benchmarks_have_no_peak() -> None:
    assert (
        peak_for("gemm_bf16_cuda", {**GPU, "dtype": "bf16"}, "Tesla T4") is None
    )  # no bf16 tensor cores
    assert peak_for("resnet18_infer_cuda", GPU, "NVIDIA H100 PCIe") is None
    assert peak_for("import_torch", {"device": "cpu"}, None, _cpu()) is None
    assert peak_for("gemm_fp32_cuda", {**GPU, "dtype": "fp32"}, None) is None


def _cpu(**changes: Any) -> CpuInfo:
    base = CpuInfo(
        model="Test CPU",
        flags=frozenset({"fma", "avx2", "avx512f", "avx512_bf16"}),
        logical_cpus=4,
        physical_cores=2,
        mhz=2000.0,
        mhz_source="max",
    )
    return dataclasses.replace(base, **changes)


def test_cpu_estimate_is_cores_fma_lanes_frequency() -> None:
    # 2 cores x 2 FMA units x 16 fp32 lanes x 2 FLOP x 2.0 GHz = 256 GFLOP/s.
    fp32 = peak_for("gemm_fp32_cpu", {"device": "cpu", "dtype": "fp32", "threads": 2}, None, _cpu())
    assert fp32 is not None and fp32[0] == pytest.approx(256.0)
    assert "2 cores" in fp32[1] and "cpuinfo_max_freq" in fp32[1]
    one = peak_for("gemm_fp32_cpu", {"device": "cpu", "dtype": "fp32", "threads": 1}, None, _cpu())
    assert one is not None and one[0] == pytest.approx(128.0)
    many = peak_for(
        "gemm_fp32_cpu", {"device": "cpu", "dtype": "fp32", "threads": 64}, None, _cpu()
    )
    assert many is not None and many[0] == pytest.approx(256.0)  # capped at physical cores
    fp64 = peak_for("gemm_fp64_cpu", {"device": "cpu", "dtype": "fp64", "threads": 2}, None, _cpu())
    assert fp64 is not None and fp64[0] == pytest.approx(128.0)
    bf16 = peak_for("gemm_bf16_cpu", {"device": "cpu", "dtype": "bf16", "threads": 2}, None, _cpu())
    assert bf16 is not None and bf16[0] == pytest.approx(512.0) and "avx512_bf16" in bf16[1]
    avx2 = peaks.cpu_peak_gflops(_cpu(flags=frozenset({"avx2", "fma"})), "bf16", 2)
    assert avx2 is not None and avx2[0] == pytest.approx(128.0)  # 8 lanes, no bf16 speed-up
    nominal = peaks.cpu_peak_gflops(_cpu(mhz_source="nominal"), "fp32", 2)
    assert nominal is not None and nominal[0] == pytest.approx(
        256.0 * peaks.table().cpu.boost_headroom
    )
    assert peaks.cpu_peak_gflops(_cpu(mhz=None, mhz_source=None), "fp32", 2) is None


CPUINFO = """\
processor\t: {n}
vendor_id\t: GenuineIntel
model name\t: Example Xeon
physical id\t: 0
core id\t: {core}
cpu MHz\t\t: 2100.000
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512_bf16 amx_bf16

"""


def _cpuinfo(tmp_path: Path, cores: list[int]) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text("".join(CPUINFO.format(n=i, core=c) for i, c in enumerate(cores)))
    return path


def test_read_cpu_info_counts_physical_cores_and_prefers_max_frequency(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    info = read_cpu_info(_cpuinfo(tmp_path, [0, 1, 0, 1]), sysfs)  # SMT: 4 threads on 2 cores
    assert info is not None
    assert (info.logical_cpus, info.physical_cores) == (4, 2)
    assert (info.mhz, info.mhz_source) == (2100.0, "nominal")
    assert info.model == "Example Xeon" and info.vector_bits() == 512
    (sysfs / "cpu0" / "cpufreq").mkdir(parents=True)
    (sysfs / "cpu0" / "cpufreq" / "cpuinfo_max_freq").write_text("3500000\n")
    info = read_cpu_info(_cpuinfo(tmp_path, [0, 1]), sysfs)
    assert info is not None and (info.mhz, info.mhz_source) == (3500.0, "max")
    amx = peaks.cpu_peak_gflops(info, "bf16", 2)
    assert (
        amx is not None
        and amx[0] == pytest.approx(2 * 2 * 16 * 2 * 3.5 * 32)
        and "amx_bf16" in amx[1]
    )
    assert read_cpu_info(tmp_path / "absent", sysfs) is None


def test_this_host_has_a_positive_cpu_estimate() -> None:
    info = read_cpu_info()
    if info is None:
        pytest.skip("no /proc/cpuinfo on this platform")
    found = peaks.cpu_peak_gflops(info, "fp32")
    assert found is not None and found[0] > 0
