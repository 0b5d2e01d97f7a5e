"""envlab's side of the benchmarks: statistics and peaks on raw records, running the program."""

from __future__ import annotations

import ast
import math
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from envlab.errors import UserError
from envlab.results.schema import BuildRecord
from envlab.run import bench
from envlab.run.peaks import CpuInfo, read_cpu_info

ROOT = Path(__file__).resolve().parents[1]

CPU = CpuInfo(
    model="Test CPU",
    flags=frozenset({"avx2", "fma", "avx512f"}),
    logical_cpus=2,
    physical_cores=2,
    mhz=2000.0,
    mhz_source="max",
)  # fp32 peak 256 GFLOP/s


def raw(
    name: str = "gemm_fp32_cpu", samples: list[float] | None = None, **changes: Any
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "name": name,
        "version": 1,
        "params": {"device": "cpu", "dtype": "fp32", "threads": 2, "n": 1024},
        "unit": "GFLOP/s",
        "higher_is_better": True,
        "device": "cpu",
        "error": None,
        "samples": [100.0, 104.0, 96.0, 101.0, 99.0] if samples is None else samples,
    }
    record.update(changes)
    return record


def test_summary_adds_statistics_and_fraction_of_peak() -> None:
    b = bench.summarize(raw(), cpu=CPU)
    assert b.samples == [100.0, 104.0, 96.0, 101.0, 99.0]
    assert (b.median, b.iqr) == (100.0, 2.0)
    assert b.cv == pytest.approx(0.0292, abs=1e-3)
    assert not b.noisy and b.error is None
    assert b.peak == pytest.approx(256.0) and b.peak_source and "CPU estimate" in b.peak_source
    assert b.fraction_of_peak == pytest.approx(100 / 256)


def test_planted_median_above_peak_is_an_error_not_clamped() -> None:
    b = bench.summarize(raw(samples=[300.0, 310.0, 305.0]), cpu=CPU)
    assert b.median == 305.0
    assert b.fraction_of_peak == pytest.approx(305 / 256)
    assert b.error is not None and "above 100%" in b.error and "119%" in b.error


def test_noisy_error_and_gpu_records() -> None:
    noisy = bench.summarize(raw(samples=[50.0, 100.0, 150.0, 80.0]), cpu=CPU)
    assert noisy.noisy
    failed = bench.summarize(raw(samples=[], error="RuntimeError: boom"), cpu=CPU)
    assert failed.error == "RuntimeError: boom" and failed.samples == [] and failed.peak is None
    empty = bench.summarize(raw(samples=[]), cpu=CPU)
    assert empty.error == "no samples"
    gpu = bench.summarize(
        raw(
            "gemm_bf16_cuda",
            samples=[700e3, 710e3, 720e3],
            device="cuda:0",
            params={"device": "cuda:0", "dtype": "bf16", "n": 8192},
        ),
        device_name="NVIDIA H100 80GB HBM3",
    )
    assert gpu.fraction_of_peak == pytest.approx(710e3 / 989.5e3)
    assert gpu.error is None
    unknown = bench.summarize(
        raw("gemm_bf16_cuda", device="cuda:0", params={"dtype": "bf16"}),
        device_name="Some Future GPU",
    )
    assert (
        unknown.params["device"] == "cuda:0"
        and unknown.peak is None
        and unknown.fraction_of_peak is None
    )


def test_malformed_record_is_refused_with_the_field() -> None:
    with pytest.raises(bench.BenchmarkError, match="unit"):
        bench.summarize(raw(unit=None))


def test_build_record_gives_size_and_build_time(tmp_path: Path) -> None:
    made = bench.build_benchmarks(BuildRecord(size_bytes=7_800_000_000, duration_s=93.5))
    assert [(b.name, b.unit, b.median, b.higher_is_better) for b in made] == [
        ("env_size", "GB", 7.8, False),
        ("env_build_time", "s", 93.5, False),
    ]
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "x.so").write_bytes(b"\0" * 100_000)
    reused = bench.build_benchmarks(BuildRecord(reused=True, env_dir=str(tmp_path), duration_s=0.2))
    assert [b.name for b in reused] == ["env_size"] and reused[0].median >= 100_000 / 1e9


def test_benchmark_programs_do_not_import_envlab() -> None:
    for path in (ROOT / "benchmarks").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.split(".")[0] == "envlab" for n in names), path


def _fake_repo(tmp_path: Path, body: str) -> Path:
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    (repo / "benchmarks" / "run.py").write_text(textwrap.dedent(body))
    return repo


def test_program_crash_keeps_partial_records_and_says_where(tmp_path: Path) -> None:
    repo = _fake_repo(
        tmp_path,
        f"""
        import json, sys
        out = sys.argv[sys.argv.index("--out") + 1]
        doc = {{"benchmarks": [{raw()!r}],
               "context": {{"complete": False, "running": "conv2d_fp32_cpu",
                            "argv": sys.argv[1:]}}}}
        json.dump(doc, open(out, "w"))
        sys.exit(3)
        """,
    )
    run = bench.run_benchmark_program(
        Path(sys.executable),
        repo,
        "quick",
        tmp_path / "out",
        CPU,
        threads=1,
        only=["gemm_fp32_cpu"],
    )
    assert [b.name for b in run.benchmarks] == ["gemm_fp32_cpu", "benchmark_run"]
    assert run.context["argv"][:2] == ["--mode", "quick"]
    assert run.context["argv"][-4:] == ["--threads", "1", "--only", "gemm_fp32_cpu"]
    failure = run.benchmarks[-1].error or ""
    assert "exited with code 3" in failure and "conv2d_fp32_cpu" in failure


def test_program_without_output_is_an_error(tmp_path: Path) -> None:
    repo = _fake_repo(tmp_path, "print('nothing')\n")
    with pytest.raises(bench.BenchmarkError, match="wrote no"):
        bench.run_benchmark_program(Path(sys.executable), repo, "quick", tmp_path / "out", CPU)
    with pytest.raises(UserError, match="mode"):
        bench.run_benchmark_program(Path(sys.executable), repo, "fast", tmp_path / "out", CPU)


def test_env_without_torch_reports_instead_of_crashing(tmp_path: Path) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("envlab's own interpreter has torch; this test needs one without")
    out = bench.run_benchmark_program(Path(sys.executable), ROOT, "quick", tmp_path, CPU).benchmarks
    assert [b.name for b in out] == ["benchmark_run"]
    assert "import torch failed" in (out[0].error or "")


@pytest.mark.e2e
@pytest.mark.network
def test_quick_set_in_a_real_env(stable_env: dict[str, str], tmp_path: Path) -> None:
    python = Path(stable_env["PYTHON"])
    cpu = read_cpu_info()
    start = time.monotonic()
    run = bench.run_benchmark_program(
        python,
        ROOT,
        "quick",
        tmp_path,
        cpu,
        BuildRecord(env_dir=str(python.parents[1]), duration_s=120.0),
    )
    elapsed = time.monotonic() - start
    assert run.context["complete"] and run.context["threads"] >= 1
    names = {b.name for b in run.benchmarks}
    assert {
        "gemm_fp32_cpu",
        "gemm_fp64_cpu",
        "gemm_bf16_cpu",
        "import_torch",
        "env_size",
        "env_build_time",
    } <= names
    assert "benchmark_run" not in names
    for b in run.benchmarks:
        assert b.error is None, (b.name, b.error)
        assert b.samples and b.unit
        assert all(math.isfinite(x) and x > 0 for x in b.samples), b.name
        assert b.median > 0 and b.iqr >= 0 and b.cv >= 0 and math.isfinite(b.cv)
    gemm = next(b for b in run.benchmarks if b.name == "gemm_fp32_cpu")
    assert gemm.unit == "GFLOP/s" and gemm.params["threads"] == run.context["threads"]
    if cpu is not None:
        assert gemm.peak is not None and 0 < gemm.median < gemm.peak
        assert gemm.fraction_of_peak is not None and 0 < gemm.fraction_of_peak < 1
    # The quick budget is 30 s on a 2-core machine; allow for other load on a shared CI box.
    assert elapsed < 90, f"quick benchmarks took {elapsed:.0f} s"
