"""The compat suite (compat_tests/) run as envlab runs it:
in a real env and with planted failures."""

from __future__ import annotations

import ast
import configparser
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers import known_stable_failures

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "compat_tests"
STABLE_EXPECT: dict[str, Any] = {
    "env": "stable",
    "torch_version": "2.10.0",
    "torch_local": "cu128",
    "cuda": "12.8",
    "cpu_only": False,
    "arch_covers": ["sm_120"],
    "torch_family_match": True,
    "nightly_max_age_days": None,
    "blas": "openblas",
    "numpy_major": 2,
}
OUTCOMES = {"passed", "failed", "skipped", "error", "xfailed", "xpassed"}
SEED_CATEGORIES = {
    "core-imports",
    "cuda",
    "torchvision",
    "torchaudio",
    "timm",
    "blas",
    "numpy-interop",
    "openmp",
    "pillow-origin",
    "ecosystem",
    "compile",
    "cuda-memory",
}


def run_compat_suite(
    python: Path,
    out: Path,
    expect: dict[str, Any] | None,
    *targets: str,
    pythonpath: Path | None = None,
    timeout: float = 900,
) -> dict[str, Any]:
    """Run the suite as envlab does (cwd a temp dir);
    return its JSON plus ``returncode``/``output``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        str(python),
        "-m",
        "pytest",
        *(targets or (str(SUITE),)),
        "-q",
        "-p",
        "no:cacheprovider",
        f"--compat-json={out}",
    ]
    if expect is not None:
        expect_file = out.with_suffix(".expect.json")
        expect_file.write_text(json.dumps(expect), encoding="utf-8")
        argv.append(f"--compat-expect={expect_file}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    done = subprocess.run(
        argv, cwd=out.parent, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert out.exists(), (
        f"the suite wrote no JSON (exit {done.returncode}):\n"
        f"{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
    )
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    data["returncode"] = done.returncode
    data["output"] = done.stdout[-5000:]
    return data


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Map 'test_x' / 'test_x[param]' (the part after the module) to its record."""
    return {test["id"].split("::", 1)[1]: test for test in data["tests"]}


def host_has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia/version").exists()


@pytest.fixture(scope="module")
def stable_python(stable_env: dict[str, str]) -> Path:
    """The real stable env's interpreter (built by envlab once per test session)."""
    return Path(stable_env["PYTHON"])


@pytest.fixture(scope="module")
def stable_run(stable_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_compat_suite(
        stable_python, tmp_path_factory.mktemp("stable") / "compat.json", STABLE_EXPECT
    )


# --- the suite in the real stable env ----------------------------------------------------------


@pytest.mark.e2e
def test_stable_json_schema(stable_run: dict[str, Any]) -> None:
    assert isinstance(stable_run["duration_s"], float) and stable_run["duration_s"] > 0
    ids = [test["id"] for test in stable_run["tests"]]
    assert len(ids) == len(set(ids)), "duplicate test ids"
    for test in stable_run["tests"]:
        assert set(test) == {
            "id",
            "category",
            "outcome",
            "duration_s",
            "message",
            "skip_reason",
            "gpu",
        }, test
        assert test["outcome"] in OUTCOMES, test
        assert isinstance(test["category"], str) and test["category"] not in (
            "",
            "unknown",
            "collection",
        ), test
        assert isinstance(test["duration_s"], float) and test["duration_s"] >= 0, test
        assert isinstance(test["gpu"], bool), test
        if test["outcome"] == "passed":
            assert test["message"] is None and test["skip_reason"] is None, test
        if test["outcome"] == "skipped":
            assert test["skip_reason"], test
        if test["outcome"] in ("failed", "error"):
            assert test["message"] and "Traceback" not in test["message"], test


@pytest.mark.e2e
def test_stable_covers_the_seed_script(stable_run: dict[str, Any]) -> None:
    assert len(stable_run["tests"]) >= 61, f"only {len(stable_run['tests'])} checks"
    categories = Counter(test["category"] for test in stable_run["tests"])
    assert SEED_CATEGORIES <= set(categories), (
        f"missing seed categories: {SEED_CATEGORIES - set(categories)}"
    )
    assert {"conv", "linalg", "build-versions", "arch", "locale", "nvml"} <= set(categories)


@pytest.mark.e2e
def test_stable_non_gpu_checks_pass(stable_run: dict[str, Any]) -> None:
    """Every non-GPU check passes in stable, but those it is known to fail on this host, which
    must fail giving their reason."""
    known = known_stable_failures()
    tests = by_name(stable_run)
    for name, fragment in known.items():
        assert tests[name]["outcome"] == "failed" and fragment in tests[name]["message"], tests[
            name
        ]
    bad = [
        f"{t['id']}: {t['outcome']}: {t['message'] or t['skip_reason']}"
        for name, t in tests.items()
        if not t["gpu"] and t["outcome"] != "passed" and name not in known
    ]
    assert not bad, "non-GPU checks that did not pass in stable:\n" + "\n".join(bad)


@pytest.mark.e2e
def test_stable_gpu_checks_follow_the_device(stable_run: dict[str, Any]) -> None:
    gpu_tests = [t for t in stable_run["tests"] if t["gpu"]]
    assert len(gpu_tests) >= 12
    if host_has_gpu():
        bad = [t["id"] for t in gpu_tests if t["outcome"] != "passed"]
        assert not bad, f"GPU checks that did not pass on a GPU host: {bad}"
        return
    for test in gpu_tests:
        assert test["outcome"] == "skipped", test
        reason = test["skip_reason"] or ""
        assert reason.startswith("no CUDA device: torch.cuda.is_available() is False"), reason
        assert "torch 2.10.0+cu128, built for CUDA 12.8" in reason, reason


# --- planted failures --------------------------------------------------------------------------


@pytest.mark.e2e
def test_planted_cpu_only_expectation_fails_on_cuda_env(
    stable_python: Path, tmp_path: Path
) -> None:
    """A CPU-only expectation against the CUDA stable env: the CUDA-absence checks fail."""
    expect = {
        **STABLE_EXPECT,
        "env": "cpu",
        "cpu_only": True,
        "cuda": None,
        "torch_local": "cpu",
        "arch_covers": [],
    }
    data = run_compat_suite(
        stable_python,
        tmp_path / "compat.json",
        expect,
        str(SUITE / "test_cuda.py"),
        str(SUITE / "test_cuda_memory.py"),
    )
    assert data["returncode"] == 1, data["output"]
    tests = by_name(data)
    gpu_tests = [t for t in data["tests"] if t["gpu"]]
    assert gpu_tests and all(t["outcome"] == "failed" for t in gpu_tests), gpu_tests
    for test in gpu_tests:
        assert "expected a CPU-only env (cpu_only: true) but found CUDA" in test["message"], test
        assert (
            "torch.version.cuda is '12.8'" in test["message"]
            and "nvidia-* CUDA wheels" in test["message"]
        )
        assert "Fix: install torch from the CPU index" in test["message"]
    version = tests["test_cuda_version_matches_expectation"]
    assert version["outcome"] == "failed" and "expected a CPU-only build" in version["message"], (
        version
    )
    wheels = tests["test_nvidia_wheels_match_build"]
    assert wheels["outcome"] == "failed" and "nvidia-cublas-cu12" in wheels["message"], wheels
    assert tests["test_cuda_build_consistent"]["outcome"] == "passed"


@pytest.mark.e2e
def test_planted_cuda_118_expectation_names_expected_and_found(
    stable_python: Path, tmp_path: Path
) -> None:
    data = run_compat_suite(
        stable_python,
        tmp_path / "compat.json",
        {**STABLE_EXPECT, "cuda": "11.8"},
        str(SUITE / "test_cuda.py"),
    )
    test = by_name(data)["test_cuda_version_matches_expectation"]
    assert test["outcome"] == "failed", test
    assert "expected CUDA 11.8, found torch.version.cuda = '12.8'" in test["message"], test
    assert "cu118" in test["message"], test
    assert all(t["outcome"] != "failed" for t in data["tests"] if t is not test), data["tests"]


FAKE_OLD_TORCH = '''
"""Stands in for torch 2.3 next to NumPy 2: the real warning at import, the real error at use."""
import warnings

__version__ = "2.3.1+cu121"


class version:
    cuda = "12.1"


warnings.warn("Failed to initialize NumPy: _ARRAY_API not found (Triggered internally at "
              "../torch/csrc/utils/tensor_numpy.cpp:84.)", UserWarning)


def from_numpy(array):
    raise RuntimeError("Numpy is not available")
'''


def test_planted_numpy2_abi_break_is_named(tmp_path: Path) -> None:
    """torch < 2.4 with NumPy 2 (a planted fake torch):
    the interop checks name the break and the fix."""
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text(FAKE_OLD_TORCH, encoding="utf-8")
    data = run_compat_suite(
        Path(sys.executable),
        tmp_path / "run" / "compat.json",
        None,
        str(SUITE / "test_numpy_interop.py"),
        pythonpath=fake,
        timeout=300,
    )
    tests = by_name(data)
    # The static check knows the versions; the round trip only sees the runtime error text.
    for name in (
        "test_numpy_abi_compatible",
        "test_from_numpy_shares_memory",
        "test_dtype_roundtrip[float32]",
    ):
        test = tests[name]
        assert test["outcome"] == "failed", test
        assert test["message"].startswith("NumPy ABI break: torch 2.3.1+cu121 cannot use numpy"), (
            test
        )
        assert "Fix: install torch>=2.4" in test["message"] and "numpy<2" in test["message"], test
    assert "(Numpy is not available)" in tests["test_from_numpy_shares_memory"]["message"]
    assert tests["test_numpy_major_matches_expectation"]["skip_reason"].startswith(
        "no expectation declared"
    )


SITE_WITHOUT_HEADERS = """
import sysconfig

_get_path = sysconfig.get_path


def get_path(name, *args, **kwargs):
    return {empty!r} if name == "include" else _get_path(name, *args, **kwargs)


sysconfig.get_path = get_path
"""


@pytest.mark.skipif(
    sys.platform != "linux" or not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
    reason="the Python.h check runs on Linux with a C++ compiler on PATH",
)
def test_planted_missing_python_headers_are_named(tmp_path: Path) -> None:
    """An interpreter without its C headers (a planted empty include dir): the inductor check
    names the missing Python.h instead of a bare compile error."""
    empty, fake = tmp_path / "include", tmp_path / "fake"
    empty.mkdir()
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(
        SITE_WITHOUT_HEADERS.format(empty=str(empty)), encoding="utf-8"
    )
    data = run_compat_suite(
        Path(sys.executable),
        tmp_path / "run" / "compat.json",
        None,
        f"{SUITE / 'test_compile.py'}::test_inductor_cpu",
        pythonpath=fake,
        timeout=300,
    )
    test = by_name(data)["test_inductor_cpu"]
    assert test["outcome"] == "failed", test
    assert test["message"].startswith(
        f"{empty / 'Python.h'} does not exist: this interpreter has no C headers"
    ), test
    assert "Fix: install the interpreter's headers" in test["message"], test


def test_missing_packages_fail_per_check_not_the_run(tmp_path: Path) -> None:
    """With torch missing (a planted import failure) every check still reports;
    none is a collection error."""
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named \'torch\'", name="torch")\n', encoding="utf-8"
    )
    data = run_compat_suite(
        Path(sys.executable), tmp_path / "run" / "compat.json", None, pythonpath=fake, timeout=300
    )
    assert data["returncode"] == 1, data["output"]
    assert len(data["tests"]) >= 61
    outcomes = Counter(t["outcome"] for t in data["tests"])
    assert outcomes["error"] == 0 and not [
        t for t in data["tests"] if t["category"] == "collection"
    ], outcomes
    tests = by_name(data)
    for name in (
        "test_core_import[torch]",
        "test_from_numpy_shares_memory",
        "test_cuda_build_consistent",
    ):
        assert tests[name]["outcome"] == "failed", tests[name]
        assert tests[name]["message"].startswith("torch is not installed in "), tests[name]
    gate = tests["test_gpu_matmul[float16]"]
    assert gate["outcome"] == "failed" and "torch is not installed" in gate["message"], gate
    for name in ("test_torch_version_matches_expectation", "test_blas_matches_expectation"):
        assert tests[name]["outcome"] == "skipped", tests[name]
        assert tests[name]["skip_reason"].startswith("no expectation declared"), tests[name]


# --- the catalogue and the arch rule -----------------------------------------------------------


def test_catalogue_is_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, str(SUITE / "catalogue.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_catalogue_lists_every_check_with_a_fix() -> None:
    catalogue = load("compat_catalogue", SUITE / "catalogue.py")
    checks, problems = catalogue.collect()
    assert not problems
    assert sum(check.items for check in checks) >= 61
    assert all(check.what and check.fix for check in checks)


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def support() -> ModuleType:
    return load("compat_support_under_test", SUITE / "compat_support.py")


STABLE_FLAGS = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]


@pytest.mark.parametrize(
    ("flags", "device", "verdict"),
    [
        (STABLE_FLAGS, "12.0", "sass"),
        (STABLE_FLAGS, "8.9", "sass"),  # sm_86 SASS runs on 8.9
        (STABLE_FLAGS, "5.2", ""),  # Maxwell: removed from cu128 wheels
        (STABLE_FLAGS, "6.1", ""),
        (["sm_86"], "9.0", ""),  # SASS never crosses a major version
        (["sm_90a"], "9.0", "sass"),
        (["sm_90a"], "10.0", ""),  # arch-specific: exactly 9.0 only
        (["sm_80", "compute_80"], "12.0", "ptx"),  # PTX JITs forward
        (["compute_90"], "8.6", ""),  # ... but not backward
        (["sm_50", "sm_52", "compute_52"], "sm_52", "sass"),
        ([], "8.6", ""),
    ],
)
def test_arch_rule(support: ModuleType, flags: list[str], device: str, verdict: str) -> None:
    found, why = support.coverage(flags, support.parse_capability(device))
    assert found == verdict, why


def test_capability_parsing(support: ModuleType) -> None:
    assert support.parse_capability("sm_120") == (12, 0)
    assert support.parse_capability("8.6") == (8, 6)
    assert support.parse_capability("compute_90a") == (9, 0)
    with pytest.raises(ValueError, match="compute capability"):
        support.parse_capability("gtx970")


def test_version_helpers(support: ModuleType) -> None:
    assert support.release("2.10.0+cu128") == (2, 10, 0)
    assert support.release("2.12.0.dev20260301+cu130") == (2, 12, 0)
    assert support.dev_date("2.12.0.dev20260301+cu130") == "20260301"
    assert support.version_matches("2.12.0.dev20260301+cu130", "2.12.*")
    assert not support.version_matches("2.10.1+cu128", "2.10.0")
    assert support.cuda_int_to_str(12080) == "12.8" and support.cuda_int_to_str(11080) == "11.8"


def test_suite_is_standalone() -> None:
    """Module-level imports in compat_tests/ are stdlib, pytest or the suite's own helper only."""
    allowed = set(sys.stdlib_module_names) | {"pytest", "compat_support", "__future__"}
    for path in SUITE.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name} at module level"
    ini = configparser.ConfigParser()
    ini.read(SUITE / "pytest.ini", encoding="utf-8")
    assert ini.has_section("pytest"), "compat_tests/pytest.ini must have a [pytest] section"
    assert not {"testpaths", "filterwarnings"} & set(ini["pytest"]), (
        "the suite must not inherit envlab's settings"
    )
    assert "gpu" in ini["pytest"]["markers"] and "category" in ini["pytest"]["markers"]
