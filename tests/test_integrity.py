"""Integrity and build checks: each planted fault fails the right check with expected vs found and
a fix; a healthy env passes them; advisory checks warn without failing."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT

from envlab.errors import CommandError
from envlab.results.facts import Facts, IntegrityFacts
from envlab.results.schema import GPU, Check, Host
from envlab.spec.envspec import Matrix
from envlab.verify import advisory, expectations, installed_files, integrity

MATRIX = Matrix(ROOT / "envspecs")
MARKERS = {
    "implementation_name": "cpython",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_system": "Linux",
    "python_version": "3.11",
    "python_full_version": "3.11.7",
    "sys_platform": "linux",
}
REQUIRES = [
    "filelock",
    'setuptools; python_version >= "3.12"',
    'nvidia-cudnn-cu12==9.10.2.21; platform_system == "Linux" and platform_machine == "x86_64"',
    'nvidia-cublas-cu12==12.8.4.1; platform_system == "Linux" and platform_machine == "x86_64"',
    'nvidia-nccl-cu12==2.27.5; platform_system == "Linux" and platform_machine == "x86_64"',
    'triton==3.6.0; platform_system == "Linux" and platform_machine == "x86_64"',
    'optree>=0.13.0; extra == "optree"',
]
ARCH = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
HEALTHY: dict[str, Any] = {
    "python": {"version": "3.11.7", "markers": MARKERS},
    "torch": {
        "version": "2.10.0+cu128",
        "git_version": "449b1768410104d3ed79d3bcfe4ba1d65c7f22c0",
        "cuda": "12.8",
        "cudnn": 91002,
        "cudnn_compiled": "9.10.2",
        "cudnn_runtime": "9.10.2",
        "nccl": "2.27.5",
        "arch_flags": ARCH,
        "cuda_available": False,
        "debug": False,
        "mkl": True,
        "mkldnn": True,
        "openmp": True,
        "xnnpack": True,
        "magma": True,
        "requires": REQUIRES,
    },
    "torchvision": {"version": "0.25.0+cu128", "jpeg_version": 80, "jpeg_turbo": True},
    "torchaudio": {"version": "2.10.0+cu128"},
    "numpy": {"version": "2.4.6"},
    "toolchain": {"cxx": "/usr/bin/c++", "cxx_version": "c++ (Debian 12.2.0) 12.2.0"},
    "distributions": {
        "torch": {"version": "2.10.0", "installer": "uv"},
        "torchvision": {"version": "0.25.0", "installer": "uv"},
        "torchaudio": {"version": "2.10.0", "installer": "uv"},
        "nvidia-cudnn-cu12": {"version": "9.10.2.21", "installer": "uv"},
        "nvidia-cublas-cu12": {"version": "12.8.4.1", "installer": "uv"},
        "nvidia-nccl-cu12": {"version": "2.27.5", "installer": "uv"},
        "triton": {"version": "3.6.0", "installer": "uv"},
        "numpy": {"version": "2.4.6", "installer": "uv"},
    },
    "integrity": {"distributions": 8, "files": 900, "deep": False, "pip_check": []},
}
LAYERS = {
    "torch": {
        "torch": "2.10.0",
        "nvidia-cudnn-cu12": "9.10.2.21",
        "nvidia-cublas-cu12": "12.8.4.1",
    },
    "stack": {"numpy": "2.4.6"},
}


def run(facts: dict[str, Any], env: str = "stable", **kwargs: Any) -> dict[str, Check]:
    checks = expectations.check(
        MATRIX.get(env), Facts.model_validate(facts), LAYERS, today=date(2026, 11, 29), **kwargs
    )
    return {c.name: c for c in checks}


def planted(**changes: Any) -> dict[str, Any]:
    """HEALTHY with ``section={key: value}`` merged in (a planted fault)."""
    facts = copy.deepcopy(HEALTHY)
    for section, values in changes.items():
        facts[section] = {**facts.get(section, {}), **values}
    return facts


def failed(checks: dict[str, Check]) -> dict[str, Check]:
    return {name: c for name, c in checks.items() if not c.ok}


def test_a_healthy_env_passes_every_new_check() -> None:
    checks = run(HEALTHY)
    new = {
        "probe-errors",
        "installed-files-intact",
        "pip-check",
        "torch-pins",
        "cudnn-matches-build",
        "nccl-matches-build",
        "torch-build-features",
        "torchvision-jpeg",
        "cuda-toolkit",
        "runtime-config",
    }
    assert new <= set(checks), new - set(checks)
    assert not failed(checks), failed(checks)
    assert checks["torch-pins"].expected.startswith("the 4 CUDA/triton wheels at torch's pins")
    assert not advisory.warnings(list(checks.values()))


def test_a_deleted_file_fails_installed_files_naming_file_layer_and_fix() -> None:
    problem = {"dist": "torch", "path": "torch/lib/libtorch_cuda_linalg.so", "problem": "missing"}
    bad = failed(run(planted(integrity={"problems": [problem], "problems_total": 1})))
    assert set(bad) == {"installed-files-intact"}
    check = bad["installed-files-intact"]
    assert check.found == "1 damaged: torch: torch/lib/libtorch_cuda_linalg.so missing"
    assert check.layer == "torch"
    assert "Fix: reinstall them (uv pip install --reinstall-package torch" in check.message


def test_an_unreadable_scan_fails_instead_of_passing() -> None:
    bad = failed(run(planted(integrity={"error": "boom", "files": None})))
    assert bad["installed-files-intact"].found == "boom"


def test_pip_check_findings_fail_with_the_first_package_s_layer() -> None:
    lines = [
        "The package `numpy` requires `foo>=2`, but `1.0` is installed",
        "The package `torchvision` requires `torch==2.9.1`, but `2.10.0` is installed",
    ]
    bad = failed(run(planted(integrity={"pip_check": lines})))
    assert bad["pip-check"].found == "; ".join(lines) and bad["pip-check"].layer == "stack"
    assert bad["pip-check"].message.startswith("Fix: rebuild the env (--force)")
    broken = failed(run(planted(integrity={"pip_check": None, "pip_check_error": "uv: exit 2"})))
    assert broken["pip-check"].found == "uv pip check did not run: uv: exit 2"
    assert "pip-check" not in run(planted(integrity={"pip_check": None}))


def test_an_old_cudnn_wheel_fails_torch_pins_and_cudnn_naming_the_pin() -> None:
    error = (
        "RuntimeError: cuDNN version incompatibility: PyTorch was compiled against (9, 10, 2) "
        "but found runtime version (9, 1, 0)."
    )
    facts = planted(
        torch={"cudnn": None, "cudnn_runtime": "9.1.0", "cudnn_error": error},
    )
    facts["distributions"]["nvidia-cudnn-cu12"]["version"] = "9.1.0.70"
    bad = failed(run(facts))
    assert {"torch-pins", "cudnn-matches-build"} <= set(bad)
    assert bad["torch-pins"].found == "nvidia-cudnn-cu12 9.1.0.70 (torch requires ==9.10.2.21)"
    assert "Fix: uv pip install 'nvidia-cudnn-cu12==9.10.2.21'" in bad["torch-pins"].message
    cudnn = bad["cudnn-matches-build"]
    assert cudnn.expected == "cuDNN 9.10.2 (the one torch was compiled against)"
    assert cudnn.found.startswith("cuDNN 9.1.0 loaded (RuntimeError: cuDNN version incompat")
    assert cudnn.layer == "torch" and "nvidia-cudnn-cu12==9.10.2.21" in cudnn.message


def test_an_nvidia_wheel_of_another_minor_fails_torch_pins() -> None:
    facts = copy.deepcopy(HEALTHY)
    facts["distributions"]["nvidia-cublas-cu12"]["version"] = "12.9.1.4"
    bad = failed(run(facts))
    assert set(bad) == {"torch-pins"}
    assert bad["torch-pins"].found == "nvidia-cublas-cu12 12.9.1.4 (torch requires ==12.8.4.1)"
    assert bad["torch-pins"].layer == "torch"


def test_pins_whose_marker_does_not_apply_are_not_required() -> None:
    facts = copy.deepcopy(HEALTHY)
    facts["python"]["markers"] = {**MARKERS, "platform_machine": "aarch64"}
    del facts["distributions"]["triton"]
    assert "torch-pins" not in run(facts)  # no pin applies on aarch64 in this metadata


def test_a_missing_pinned_wheel_fails() -> None:
    facts = copy.deepcopy(HEALTHY)
    del facts["distributions"]["triton"]
    assert failed(run(facts))["torch-pins"].found == "triton not installed (torch requires ==3.6.0)"


def test_nccl_other_than_torch_s_pin_fails() -> None:
    bad = failed(run(planted(torch={"nccl": "2.26.2"})))
    assert (
        bad["nccl-matches-build"].expected == "NCCL 2.27.5 (nvidia-nccl-cu12==2.27.5, torch's pin)"
    )
    assert bad["nccl-matches-build"].found == "NCCL 2.26.2"


def test_probe_errors_are_failures() -> None:
    bad = failed(run(planted(torch={"config_error": "RuntimeError: no config"})))
    assert bad["probe-errors"].found == "torch.__config__: RuntimeError: no config"
    bad = failed(run(planted(blas={"error": "OSError: libopenblas.so: cannot open"})))
    assert "BLAS/OpenMP runtimes (threadpoolctl): OSError" in bad["probe-errors"].found


@pytest.mark.parametrize(
    ("change", "missing"),
    [
        ({"debug": True}, "a release build (not debug)"),
        ({"mkl": False}, "MKL"),
        ({"magma": False}, "MAGMA"),
        ({"openmp": False}, "OpenMP"),
        ({"git_version": "Unknown"}, "a known git version"),
    ],
)
def test_a_binary_without_release_features_fails(change: dict[str, Any], missing: str) -> None:
    bad = failed(run(planted(torch=change)))
    assert set(bad) == {"torch-build-features"}
    assert bad["torch-build-features"].message.startswith(f"missing: {missing};")


def test_macos_cpu_builds_are_not_held_to_openmp_or_mkl() -> None:
    facts = planted(torch={"cuda": None, "openmp": False, "mkl": False, "magma": None})
    facts["python"]["markers"] = {
        **MARKERS,
        "platform_system": "Darwin",
        "platform_machine": "arm64",
        "sys_platform": "darwin",
    }
    assert run(facts, env="cpu")["torch-build-features"].ok


def test_a_plain_libjpeg_torchvision_fails() -> None:
    bad = failed(run(planted(torchvision={"jpeg_turbo": False})))
    assert bad["torchvision-jpeg"].found == "plain libjpeg (not turbo) (libjpeg API 8)"


def test_nvcc_of_another_major_warns_without_failing() -> None:
    tools = {"nvcc": "/usr/local/cuda-13.0/bin/nvcc", "nvcc_version": "13.0"}
    tools |= {"cuda_home": "/usr/local/cuda-13.0", "cuda_home_source": "CUDA_HOME"}
    checks = run(planted(toolchain=tools))
    toolkit = checks["cuda-toolkit"]
    assert toolkit.ok and toolkit.message.startswith(advisory.PREFIX)
    assert "nvcc is CUDA 13.0 but torch is built for CUDA 12.8" in toolkit.message
    assert "set CUDA_HOME to a CUDA 12.x toolkit" in toolkit.message
    assert advisory.warnings(list(checks.values())) == [toolkit]
    same = run(planted(toolchain={**tools, "nvcc_version": "12.6"}))["cuda-toolkit"]
    assert same.ok and same.message == "" and same.found.startswith("nvcc 12.6 at ")


def test_runtime_settings_that_bite_warn() -> None:
    env = {"gomp_cpu_affinity": "0-1", "cuda_module_loading": "EAGER"}
    check = run(planted(runtime_env=env))["runtime-config"]
    assert check.ok and "GOMP_CPU_AFFINITY=0-1" in check.found
    assert "CUDA_MODULE_LOADING=EAGER loads every kernel" in check.message
    assert "the second to start runs 1 thread" in check.message


GTX_970 = GPU(index=0, name="NVIDIA GeForce GTX 970", compute_capability="5.2", driver="535.54")


def gpu_host(doctor: dict[str, Any] | None = None) -> Host:
    return Host(
        id="fake",
        hostname="fake",
        os="Linux",
        platform="linux-64",
        machine="x86_64",
        cpu="x",
        cpu_count=2,
        gpus=[GTX_970],
        driver="535.54",
        max_cuda="12.2",
        doctor=doctor,
    )


def test_a_gpu_the_build_lacks_fails_cuda_usable_with_the_reason() -> None:
    facts = planted(torch={"cuda_init_error": "RuntimeError: no kernel image is available"})
    doctor = {"envs": [{"env": "stable", "verdict": "will-not-run", "reason": "sm_52 needs x"}]}
    bad = failed(run(facts, host=gpu_host(doctor)))
    usable = bad["cuda-usable"]
    assert usable.expected == (
        "CUDA usable on this host's GPU 0 NVIDIA GeForce GTX 970 (sm_52), driver 535.54 "
        "by a build for CUDA 12.8"
    )
    assert usable.found.startswith("torch.cuda.is_available() is False: torch says: RuntimeError")
    assert "doctor: sm_52 needs x" in usable.found
    assert "GPU 0 NVIDIA GeForce GTX 970 (sm_52): sm_52 is not covered" in usable.found
    assert "`nox -s doctor` names it" in usable.message


def test_cuda_usable_holds_with_a_device_and_needs_no_gpu_host() -> None:
    ok = run(planted(torch={"cuda_available": True, "device_count": 1}), host=gpu_host())
    assert ok["cuda-usable"].ok and ok["cuda-usable"].found == "1 device(s) usable"
    assert "cuda-usable" not in run(HEALTHY)  # no host: nothing to require
    assert "cuda-usable" not in run(planted(torch={"cuda": None}), env="cpu", host=gpu_host())


NIGHTLY = {"torch": "2.13.0.dev20261128+cu130", "torchvision": "0.28.0.dev20261127+cu130"}


def nightly_facts(torchaudio: str = "2.13.0.dev20261101+cu130") -> dict[str, Any]:
    facts = planted(torch={"version": NIGHTLY["torch"], "cuda": "13.0"})
    facts["torchvision"] = {"version": NIGHTLY["torchvision"]}
    facts["torchaudio"] = {"version": torchaudio}
    for name, version in (*NIGHTLY.items(), ("torchaudio", torchaudio)):
        facts["distributions"][name] = {"version": version, "installer": "uv"}
    return facts


def test_nightly_age_is_checked_for_every_package_of_the_nightly_layer() -> None:
    checks = run(nightly_facts(), env="nightly")
    assert checks["nightly-fresh"].ok and checks["nightly-fresh-torchvision"].ok
    stale = checks["nightly-fresh-torchaudio"]
    assert not stale.ok and stale.found.endswith("2026-11-01 (28 days old)")
    assert "what it serves now is unknown here" in stale.message


def test_a_stale_nightly_verdict_names_what_the_index_serves_now() -> None:
    kept = run(
        nightly_facts(), env="nightly", index_now={"torchaudio": "2.13.0.dev20261128+cu130"}
    )["nightly-fresh-torchaudio"]
    assert kept.message.startswith(
        "the env holds an old build: the index now serves torchaudio 2.13.0.dev20261128+cu130 "
        "(1 days old). Fix: run again without --no-refresh"
    )
    stale = run(
        nightly_facts(), env="nightly", index_now={"torchaudio": "2.13.0.dev20261101+cu130"}
    )["nightly-fresh-torchaudio"]
    assert stale.message.startswith(
        "the index serves stale nightlies: its newest torchaudio is 2.13.0.dev20261101+cu130 "
        "(28 days old)"
    )


# --------------------------------------------------------------------------- the file scan


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}\n"


def fake_site(root: Path, installer: str = "uv") -> Path:
    """A site directory with one distribution whose RECORD lists three files."""
    site = root / "site"
    files = {"demo/__init__.py": b"x = 1\n", "demo/core.so": b"\0" * 64, "demo/data.txt": b"ab"}
    info = site / "demo-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
    (info / "INSTALLER").write_text(installer + "\n")
    record = "".join(_record_line(path, data) for path, data in files.items())
    record += "demo/__pycache__/__init__.cpython-311.pyc,,\ndemo-1.0.dist-info/RECORD,,\n"
    (info / "RECORD").write_text(record)
    for path, data in files.items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_bytes(data)
    (site / "bare-2.0.dist-info").mkdir()  # an installer that wrote no RECORD
    (site / "bare-2.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: bare\n")
    return site


@pytest.fixture
def scan_site(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    site = fake_site(tmp_path)
    distributions = installed_files.metadata.distributions
    monkeypatch.setattr(
        installed_files.metadata, "distributions", lambda: distributions(path=[str(site)])
    )
    return site


def test_the_scan_finds_missing_resized_and_rehashed_files(scan_site: Path) -> None:
    clean = installed_files.scan()
    assert clean["problems"] == [] and clean["files"] == 4 and clean["no_record"] == ["bare"]
    (scan_site / "demo" / "core.so").unlink()
    (scan_site / "demo" / "__init__.py").write_bytes(b"x = 12\n")
    (scan_site / "demo" / "data.txt").write_bytes(b"ba")  # same size, other content
    found = installed_files.scan()
    assert {(p["path"], p["problem"]) for p in found["problems"]} == {
        ("demo/core.so", "missing"),
        ("demo/__init__.py", "size 7 != recorded 6"),
    }
    deep = installed_files.scan(deep=True)
    assert ("demo/data.txt", "sha256 differs from the recorded one") in {
        (p["path"], p["problem"]) for p in deep["problems"]
    }
    assert IntegrityFacts.model_validate(deep).problems_total == 3


def test_conda_packages_are_checked_for_presence_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    site = fake_site(tmp_path, installer="conda")
    distributions = installed_files.metadata.distributions
    monkeypatch.setattr(
        installed_files.metadata, "distributions", lambda: distributions(path=[str(site)])
    )
    (site / "demo" / "__init__.py").write_bytes(b"relocated prefix\n")
    assert installed_files.scan()["problems"] == []
    (site / "demo" / "__init__.py").unlink()
    assert [p["problem"] for p in installed_files.scan()["problems"]] == ["missing"]


def test_the_scan_runs_in_an_interpreter_and_gathers_pip_check() -> None:
    def pip_check(python: Path) -> list[str]:
        return ["The package `a` requires `b`, but it's not installed"]

    found = integrity.gather(Path(sys.executable), pip_check)
    assert found.error is None and found.files and found.distributions
    assert found.pip_check == ["The package `a` requires `b`, but it's not installed"]

    def broken(python: Path) -> list[str]:
        raise CommandError(["uv", "pip", "check"], 2, "uv: boom")

    assert integrity.gather(Path(sys.executable), broken).pip_check_error


# --------------------------------------------------------------------------- shown in the report


def test_the_report_shows_warnings_and_every_check(tmp_path: Path) -> None:
    import factories as f

    from envlab.report import render

    checks = [
        Check(name="torch-pins", ok=True, expected="the pins", found="all as pinned"),
        Check(
            name="cuda-toolkit",
            ok=True,
            expected="nvcc of CUDA 12.x, if any",
            found="nvcc 13.0 at /usr/local/bin/nvcc",
            message=advisory.warn("nvcc is CUDA 13.0 but torch is built for CUDA 12.8"),
        ),
        Check(name="pip-check", ok=False, expected="compatible", found="`a` requires `b`"),
    ]
    f.write(tmp_path / "runs", [f.result(checks=checks)])
    assert render.main(tmp_path / "runs", tmp_path / "out", tmp_path / "h.sqlite") == 0
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    warned = html.split('id="warned-checks"')[1].split("</table>")[0]
    assert "cuda-toolkit" in warned and "nvcc is CUDA 13.0" in warned and "pip-check" not in warned
    every = html.split('id="all-checks"')[1].split("</table>")[0]
    assert all(c.name in every for c in checks) and every.count(">FAIL<") == 1
    assert "## Warnings" in md and "nvcc is CUDA 13.0 but torch is built for CUDA 12.8" in md


def test_new_facts_round_trip_through_a_result_document() -> None:
    import factories as f

    from envlab.results.schema import parse

    doc = f.result().model_dump(mode="json")
    doc["facts"] = copy.deepcopy(HEALTHY)
    doc["facts"]["runtime_env"] = {"cuda_module_loading": "LAZY"}
    doc["facts"]["media"] = {"ffmpeg_libraries": ["libavutil.so.57"]}
    problem = {"dist": "torch", "path": "torch/lib/x.so", "problem": "missing"}
    doc["facts"]["integrity"]["problems"] = [problem]
    parsed = parse(json.dumps(doc), "x.json")
    assert parsed.facts.integrity.problems[0].path == "torch/lib/x.so"
    assert parsed.facts.toolchain.cxx == "/usr/bin/c++" and parsed.facts.torch.magma is True
    assert json.loads(parsed.to_json())["facts"] == doc["facts"]


# --------------------------------------------------------------------------- compat caches


def test_the_compat_suite_keeps_its_caches_in_the_env_and_trusts_a_verified_isa(
    tmp_path: Path,
) -> None:
    from envlab.run import compat

    caches = tmp_path / "envlab-cache"
    found = compat.cache_variables(caches)
    assert found == {
        "TORCHINDUCTOR_CACHE_DIR": str(caches / "inductor"),
        "TRITON_CACHE_DIR": str(caches / "triton"),
    }
    verdict = caches / "inductor" / compat.ISA_VERDICT
    verdict.parent.mkdir(parents=True)
    verdict.write_text(json.dumps({"isa": "avx2", "compiler": compat.compiler_identity()}))
    assert compat.cache_variables(caches).get("TORCHINDUCTOR_VEC_ISA_OK") == "1"
    verdict.write_text(json.dumps({"isa": "avx2", "compiler": "/usr/bin/g++-9:1:2"}))
    assert "TORCHINDUCTOR_VEC_ISA_OK" not in compat.cache_variables(caches)  # another compiler


def test_the_suite_and_envlab_name_the_compiler_alike() -> None:
    from envlab.run import compat

    sys.path.insert(0, str(ROOT / "compat_tests"))
    try:
        import test_compile
    finally:
        sys.path.remove(str(ROOT / "compat_tests"))
    assert test_compile.compiler_identity() == compat.compiler_identity()
    assert test_compile.ISA_VERDICT == compat.ISA_VERDICT
