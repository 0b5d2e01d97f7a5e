"""Synthesise valid result documents (and whole run trees) for history/report/regress tests."""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from envlab.outcome import Outcome
from envlab.results.facts import Distribution, Facts, PythonFacts, TorchFacts
from envlab.results.schema import (
    GPU,
    SCHEMA_VERSION,
    Benchmark,
    BuildRecord,
    Check,
    CompatRun,
    CompatTest,
    Host,
    LayerRecord,
    Result,
)
from envlab.results.store import Store

CATEGORIES = (
    "imports",
    "cuda",
    "torchvision",
    "torchaudio",
    "timm",
    "blas",
    "numpy-interop",
    "openmp",
    "pillow",
    "ecosystem",
    "compile",
    "cuda-memory",
)
GPU_CATEGORIES = {"cuda", "cuda-memory"}
START = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)

BASE_DISTS: dict[str, str] = {
    "numpy": "2.3.4",
    "scipy": "1.16.3",
    "pandas": "2.3.3",
    "scikit-learn": "1.7.2",
    "matplotlib": "3.10.7",
    "timm": "1.0.22",
    "transformers": "4.57.1",
    "accelerate": "1.11.0",
    "safetensors": "0.6.2",
    "huggingface-hub": "0.36.0",
    "h5py": "3.15.1",
    "pillow": "12.0.0",
    "pyyaml": "6.0.3",
    "pydantic": "2.12.4",
    "nvidia-ml-py": "13.580.82",
    "pytest": "9.0.1",
    "tqdm": "4.67.1",
    "rich": "14.2.0",
    "opencv-python": "4.12.0.88",
    "statsmodels": "0.14.5",
}
TORCH_BUILDS: dict[str, tuple[str, str | None, str, str]] = {
    # env -> (torch, torch.version.cuda, torchvision, torchaudio)
    "stable": ("2.10.0+cu128", "12.8", "0.25.0", "2.10.0"),
    "latest": ("2.15.0", "13.0", "0.30.0", "2.11.0"),
    "nightly": ("2.16.0.dev20261121+cu130", "13.0", "0.31.0.dev20261121", "2.16.0.dev20261121"),
    "cpu": ("2.10.0+cpu", None, "0.25.0+cpu", "2.10.0+cpu"),
    "legacy": ("2.10.0+cu126", "12.6", "0.25.0+cu126", "2.10.0+cu126"),
}
UNREACHABLE = {
    "nightly": "index 'pytorch-nightly' unreachable "
    "(https://download.pytorch.org/whl/nightly/cu130): connection refused; "
    "set ENVLAB_INDEX_PYTORCH_NIGHTLY to a reachable mirror",
    "cpu": "index 'pytorch-cpu' unreachable (https://download.pytorch.org/whl/cpu): "
    "connection refused; set ENVLAB_INDEX_PYTORCH_CPU to a reachable mirror",
    "legacy": "index 'pytorch-cu126' unreachable (https://download.pytorch.org/whl/cu126): "
    "connection refused; set ENVLAB_INDEX_PYTORCH_CU126 to a reachable mirror",
}


def run_id(i: int, start: datetime = START) -> tuple[str, str]:
    """The i-th nightly run: (sortable run id, ISO creation time)."""
    when = start + timedelta(days=i)
    return when.strftime("%Y%m%dT%H%M%SZ") + f"-{i:06x}", when.isoformat(timespec="seconds")


def host(
    host_id: str = "ci-cpu-1",
    *,
    gpu: str | None = None,
    cc: str | None = None,
    driver: str | None = None,
) -> Host:
    gpus = [GPU(name=gpu, compute_capability=cc, driver=driver, memory_mib=24576)] if gpu else []
    return Host(
        id=host_id,
        hostname=f"{host_id}.example",
        os="Linux 6.1",
        platform="linux-64",
        machine="x86_64",
        cpu="AMD EPYC 7763",
        cpu_count=2,
        gpus=gpus,
        driver=driver,
        max_cuda="13.0" if driver else None,
    )


def compat(
    *,
    failing: dict[str, str] | None = None,
    gpu: bool = False,
    categories: Sequence[str] = CATEGORIES,
    per_category: int = 3,
) -> CompatRun:
    """A compat run: every test passes except ``failing`` (test id -> message); GPU tests skip
    without a GPU."""
    failing = failing or {}
    tests = []
    for category in categories:
        for n in range(per_category):
            test_id = f"compat_tests/test_{category.replace('-', '_')}.py::test_{n}"
            if test_id in failing:
                tests.append(
                    CompatTest(
                        id=test_id,
                        category=category,
                        outcome="failed",
                        duration_s=0.05,
                        message=failing[test_id],
                    )
                )
            elif category in GPU_CATEGORIES and not gpu:
                tests.append(
                    CompatTest(
                        id=test_id,
                        category=category,
                        outcome="skipped",
                        skip_reason="no CUDA device on this host",
                        gpu=True,
                    )
                )
            else:
                tests.append(
                    CompatTest(
                        id=test_id,
                        category=category,
                        outcome="passed",
                        duration_s=0.02,
                        gpu=category in GPU_CATEGORIES,
                    )
                )
    return CompatRun(tests=tests, duration_s=4.2, returncode=1 if failing else 0)


def samples(rng: random.Random, center: float, cv: float = 0.05, n: int = 15) -> list[float]:
    """Realistic timing noise: log-normal spread around ``center`` plus a rare slow outlier."""
    out = [center * rng.lognormvariate(0.0, cv) for _ in range(n)]
    if rng.random() < 0.3:
        out[rng.randrange(n)] *= 1.0 + rng.uniform(0.15, 0.4)
    return out


def benchmark(
    name: str,
    values: list[float],
    *,
    unit: str = "ms",
    higher_is_better: bool = False,
    params: dict[str, Any] | None = None,
    peak: float | None = None,
) -> Benchmark:
    q = statistics.quantiles(values, n=4, method="inclusive")
    med = statistics.median(values)
    cv = statistics.pstdev(values) / statistics.fmean(values)
    fraction = None
    if peak is not None:
        fraction = (med / peak) if higher_is_better else None
    return Benchmark(
        name=name,
        version=1,
        params=params or {},
        unit=unit,
        higher_is_better=higher_is_better,
        samples=values,
        median=med,
        iqr=q[2] - q[0],
        cv=cv,
        noisy=cv > 0.1,
        peak=peak,
        peak_source="spec sheet" if peak else None,
        fraction_of_peak=fraction,
    )


def default_benchmarks(
    rng: random.Random, env: str, *, scale: float = 1.0, slow: dict[str, float] | None = None
) -> list[Benchmark]:
    """Three CPU benchmarks with env-dependent speeds; ``slow`` multiplies a benchmark's time."""
    slow = slow or {}
    base = {"stable": 1.0, "latest": 0.95, "nightly": 0.97, "cpu": 1.05, "legacy": 1.3}.get(
        env, 1.0
    )
    mm = 12.0 * base * scale * slow.get("matmul", 1.0)
    conv = 30.0 * base * scale * slow.get("conv2d", 1.0)
    gflops = 2 * 1024**3 / (mm / 1000) / 1e9
    return [
        benchmark("matmul", samples(rng, mm), params={"n": 1024, "dtype": "float32"}),
        benchmark("conv2d", samples(rng, conv), params={"batch": 8}),
        benchmark(
            "matmul-throughput",
            [gflops / (v / mm) for v in samples(rng, mm)],
            unit="GFLOP/s",
            higher_is_better=True,
            params={"n": 1024},
            peak=400.0,
        ),
    ]


def built_facts(torch: str, cuda: str | None, distributions: dict[str, str]) -> Facts:
    """The facts of a built env: torch's build, Python, and every distribution (installed by uv)."""
    return Facts(
        python=PythonFacts(version="3.11.7"),
        torch=TorchFacts(
            version=torch,
            cuda=cuda,
            cudnn=91002 if cuda else None,
            arch_flags=["sm_80", "sm_90", "sm_120"] if cuda else [],
        ),
        distributions={
            k: Distribution(version=v, installer="uv") for k, v in sorted(distributions.items())
        },
    )


def probe_document() -> dict[str, Any]:
    """Every key verify/probe.py prints, as it prints them (a CUDA build, one GPU, MKL + OpenMP)."""
    pool = {"prefix": None, "filepath": None, "version": None, "num_threads": 16}
    return {
        "python": {
            "version": "3.11.7",
            "implementation": "CPython",
            "executable": "/e/bin/python",
            "prefix": "/e",
        },
        "platform": {
            "system": "Linux",
            "release": "6.8.0",
            "machine": "x86_64",
            "libc": "glibc-2.39",
            "preferred_encoding": "UTF-8",
            "conda_prefix": None,
        },
        "torch": {
            "version": "2.10.0+cu128",
            "git_version": "abc123",
            "cuda": "12.8",
            "hip": None,
            "cudnn": 91002,
            "arch_flags": ["sm_80", "sm_90", "sm_120"],
            "cuda_available": True,
            "device_count": 1,
            "arch_list": ["sm_80", "sm_90", "sm_120"],
            "devices": [{"index": 0, "name": "NVIDIA H200", "compute_capability": "9.0"}],
            "blas": "MKL",
            "lapack": "mkl",
            "parallel": ["ATen/Parallel:", "\tat::get_num_threads() : 16"],
            "num_threads": 16,
        },
        "torchvision": {"version": "0.25.0+cu128"},
        "torchaudio": {"error": "OSError: libsox.so: cannot open shared object file"},
        "numpy": {"version": "2.3.5"},
        "blas": {
            "libraries": [{"user_api": "blas", "internal_api": "openblas", **pool}],
            "openmp": [{"user_api": "openmp", "internal_api": "openmp", **pool}],
        },
        "distributions": {
            "pillow": {"version": "12.0.0", "installer": "conda"},
            "torch": {"version": "2.10.0+cu128", "installer": "uv"},
        },
    }


def result(
    *,
    run: int = 0,
    env: str = "stable",
    host_: Host | None = None,
    outcome: str = "built",
    reason: str | None = None,
    failing: dict[str, str] | None = None,
    checks: list[Check] | None = None,
    benchmarks: list[Benchmark] | None = None,
    dists: dict[str, str] | None = None,
    torch: str | None = None,
    start: datetime = START,
) -> Result:
    """One valid result document for (run index, env, host)."""
    rid, created = run_id(run, start)
    host_ = host_ or host()
    built = outcome in ("built", "verify-failed")
    torch_v, cuda, tv, ta = TORCH_BUILDS.get(env, TORCH_BUILDS["stable"])
    torch_v = torch or torch_v
    distributions = {
        **BASE_DISTS,
        "torch": torch_v,
        "torchvision": tv,
        "torchaudio": ta,
        **(dists or {}),
    }
    layers = [
        LayerRecord(name="base", duration_s=2.1),
        LayerRecord(name="torch", index="pypi", duration_s=31.5),
        LayerRecord(name="stack", index="pypi", duration_s=18.2),
    ]
    if not built:
        layers = [
            LayerRecord(name="base", duration_s=2.0),
            LayerRecord(
                name="torch",
                outcome="unavailable" if outcome == "unavailable" else "failed",
                message=reason,
            ),
        ]
    facts = built_facts(torch_v, cuda, distributions) if built else Facts()
    return Result(
        schema_version=SCHEMA_VERSION,
        run_id=rid,
        created=created,
        env=env,
        spec_hash=f"{env}-spec",
        description=f"{env} env",
        host=host_,
        outcome=outcome,
        reason=reason,  # type: ignore[arg-type]
        build=BuildRecord(layers=layers, duration_s=sum(layer.duration_s for layer in layers)),
        checks=checks
        if checks is not None
        else (
            [Check(name="torch.version", ok=True, expected=torch_v, found=torch_v, layer="torch")]
            if built
            else []
        ),
        facts=facts,
        compat=compat(failing=failing, gpu=bool(host_.gpus)) if built else None,
        benchmarks=(benchmarks or []) if built else [],
    )


def unavailable(run: int, env: str, host_: Host | None = None) -> Result:
    return result(run=run, env=env, host_=host_, outcome="unavailable", reason=UNREACHABLE[env])


def first_run(rng: random.Random | None = None, *, with_benchmarks: bool = False) -> list[Result]:
    """The very first run on a PyPI-only machine: stable and latest built, three unavailable."""
    rng = rng or random.Random(1)
    out = [
        result(run=0, env=env, benchmarks=default_benchmarks(rng, env) if with_benchmarks else None)
        for env in ("stable", "latest")
    ]
    out += [unavailable(0, env) for env in ("nightly", "cpu", "legacy")]
    return out


def write(runs_dir: Path, results: Iterable[Result]) -> list[Path]:
    store = Store(runs_dir)
    return [store.write(r) for r in results]


# --------------------------------------------------------------------------- judge histories
# Nights of an env as the judge sees them: raw samples summarised by envlab's own
# bench.summarize, every figure of one run sharing that run's machine drift.

QUICK_FIGURES: dict[str, int] = {
    # figure -> samples per run, as in quick mode (a slow timing gets its floor of 3)
    "gemm": 7,
    "conv2d": 10,
    "resnet18": 3,
    "import_torch": 2,
    "env_build_time": 1,
}
SEGFAULT = "the compat suite wrote no results (exit -11): Fatal Python error: Segmentation fault"


def summarized(
    rng: random.Random,
    name: str,
    centre: float,
    n: int,
    *,
    cv: float = 0.03,
    unit: str = "ms",
    higher_is_better: bool = False,
) -> Benchmark:
    """A benchmark record of ``n`` log-normal samples around ``centre``, summarised by envlab."""
    from envlab.run.bench import summarize

    raw = {
        "name": name,
        "version": 1,
        "unit": unit,
        "higher_is_better": higher_is_better,
        "samples": [centre * rng.lognormvariate(0.0, cv) for _ in range(n)],
    }
    return summarize(raw)


def drifting_benchmarks(
    rng: random.Random,
    *,
    drift: float,
    slow: dict[str, float] | None = None,
    figures: dict[str, int] | None = None,
    cv: float = 0.03,
) -> list[Benchmark]:
    """One run's figures (default :data:`QUICK_FIGURES`), all scaled by the run's ``drift``
    factor; ``slow`` multiplies a figure's time."""
    slow = slow or {}
    figures = QUICK_FIGURES if figures is None else figures
    return [
        summarized(rng, name, 10.0 * drift * slow.get(name, 1.0), n, cv=cv)
        for name, n in figures.items()
    ]


def nights(
    count: int,
    envs: Sequence[str] = ("stable",),
    *,
    seed: int = 0,
    drift: float = 0.08,
    slow: tuple[str, float, int] | None = None,
    host_: Host | None = None,
    figures: dict[str, int] | None = None,
) -> list[list[Result]]:
    """``count`` nights of ``envs`` (one run each night), run-level drift uniform in ±``drift``
    shared by an env's figures; ``slow``: (figure, factor, first night) of a planted slowdown."""
    rng = random.Random(seed)
    out = []
    for night in range(count):
        results = []
        for env in envs:
            scale = 1.0 + rng.uniform(-drift, drift)
            factor = {slow[0]: slow[1]} if slow and night >= slow[2] else None
            benches = drifting_benchmarks(rng, drift=scale, slow=factor, figures=figures)
            results.append(result(run=night, env=env, host_=host_, benchmarks=benches))
        out.append(results)
    return out


def crashed_compat(error: str = SEGFAULT) -> CompatRun:
    """A compat run that crashed before writing any outcome."""
    return CompatRun(tests=[], duration_s=1.2, returncode=-11, error=error)


def exact(
    run_id_: str,
    env: str,
    dists: dict[str, str],
    *,
    tests: dict[str, str] | None = None,
    benchmarks: list[Benchmark] | None = None,
    host_: Host | None = None,
    created: str = "2026-11-20T02:00:00+00:00",
) -> Result:
    """A built result of ``env`` holding exactly ``dists``, with compat outcomes ``tests``
    (test id -> outcome): the two ends of a bisect."""
    torch = dists.get("torch")
    outcomes = [
        CompatTest(id=test_id, category="planted", outcome=outcome)  # type: ignore[arg-type]
        for test_id, outcome in (tests or {}).items()
    ]
    return Result(
        run_id=run_id_,
        created=created,
        env=env,
        spec_hash=f"{env}-spec",
        host=host_ or host(),
        outcome=Outcome.BUILT,
        facts=built_facts(torch or "", None, dists),
        compat=CompatRun(tests=outcomes) if tests is not None else None,
        benchmarks=benchmarks or [],
    )
