"""Doctor verdicts on recorded GPUs, checked against the seeds; knowledge table validation."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from envlab.hardware import detect, doctor, knowledge
from envlab.results.schema import Host
from envlab.spec.envspec import Matrix

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "doctor"


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    return Matrix(ROOT / "envspecs")


def recorded(path: str) -> str:
    return (DATA / path).read_text(encoding="utf-8")


def host_from_smi(
    path: str,
    *,
    os_family: str = "linux",
    platform: str = "linux-64",
    cpu: str = "cpuinfo/x86_sapphire_rapids.txt",
) -> detect.HostFacts:
    machine = "aarch64" if "aarch64" in cpu else "x86_64"
    facts = detect.HostFacts(
        hostname="rec",
        os="recorded",
        os_family=os_family,
        platform=platform,
        libc=None,
        cpu=detect.parse_cpuinfo(recorded(cpu), machine),
    )
    scan = detect.parse_smi_csv(recorded(path)) if path else detect.GpuScan()
    return detect.with_gpus(facts, scan, "nvidia-smi" if path else "none", knowledge.load())


def envs(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["env"]: e for e in doc["envs"]}


def verdicts(doc: dict[str, Any], *names: str) -> dict[str, str]:
    found = envs(doc)
    return {n: found[n]["verdict"] for n in names}


def the_pick(doc: dict[str, Any]) -> dict[str, Any]:
    """The pick for the only GPU of a one-GPU host."""
    (device,) = doc["pick"]["devices"]
    return device


# --------------------------------------------------------------------------- the seeds' cases


def test_rtx_5070_ti_stable_runs_legacy_does_not(matrix: Matrix) -> None:
    """sm_120 needs cu128+; the legacy builds (cu126, cu118) have no Blackwell kernels."""
    doc = doctor.doctor_json(matrix, host_from_smi("smi/rtx5070ti.csv"))
    assert verdicts(doc, "stable", "nightly", "legacy", "legacy-cu118", "cpu") == {
        "stable": "runs",
        "nightly": "runs",
        "legacy": "will-not-run",
        "legacy-cu118": "will-not-run",
        "cpu": "runs",
    }
    legacy = envs(doc)["legacy"]
    assert legacy["reason"].startswith(
        "sm_120 needs a cu128+ build; legacy's cu126 wheel does not cover it"
    )
    assert "nightly" in legacy["suggestion"] and "stable" in legacy["suggestion"]
    device = the_pick(doc)
    assert device["env"] == "stable" and device["command"] == "nox -s test-stable"
    # never a build without sm_120 kernels
    assert {"legacy", "legacy-cu118"} <= {r["env"] for r in device["does_not_run"]}


def test_gtx_970_legacy_runs_stable_does_not(matrix: Matrix) -> None:
    """Seed 002: sm_52 is not in cu128 wheels; cu118 carries sm_50 SASS, which runs on 5.2."""
    doc = doctor.doctor_json(matrix, host_from_smi("smi/gtx970.csv"))
    assert verdicts(doc, "stable", "nightly", "legacy") == {
        "stable": "will-not-run",
        "nightly": "will-not-run",
        "legacy": "runs",
    }
    stable = envs(doc)["stable"]
    assert stable["reason"].startswith("sm_52 is not covered by any cu128 wheel")
    assert stable["suggestion"].startswith(
        "use legacy or legacy-cu118, or a source build with TORCH_CUDA_ARCH_LIST=5.2"
    )
    assert envs(doc)["legacy"]["reason"] == "sm_50 kernels run natively on sm_52"
    # CUDA 13.0 cannot compile for Maxwell at all: the suggestion names an older toolkit.
    assert "CUDA <= 12.9" in envs(doc)["nightly"]["suggestion"]


def test_gtx_1080_ti_is_served_by_the_legacy_envs_only(matrix: Matrix) -> None:
    doc = doctor.doctor_json(matrix, host_from_smi("smi/gtx1080ti.csv"))
    assert verdicts(doc, "stable", "nightly", "legacy", "legacy-cu118") == {
        "stable": "will-not-run",
        "nightly": "will-not-run",
        "legacy": "runs",
        "legacy-cu118": "runs",
    }
    assert the_pick(doc)["env"] == "legacy"


@pytest.mark.parametrize(
    ("path", "stable", "legacy", "nightly"),
    [
        ("smi/t4.csv", "runs", "runs", "will-not-run"),  # driver 535: CUDA 12.2, too old for 13.0
        ("smi/a100.csv", "runs", "runs", "will-not-run"),  # driver 570: CUDA 12.8
        ("smi/h100.csv", "runs", "runs", "will-not-run"),  # cu118 2.7 carries sm_90
    ],
)
def test_datacenter_gpus(matrix: Matrix, path: str, stable: str, legacy: str, nightly: str) -> None:
    doc = doctor.doctor_json(matrix, host_from_smi(path))
    assert verdicts(doc, "stable", "legacy", "nightly") == {
        "stable": stable,
        "legacy": legacy,
        "nightly": nightly,
    }
    reason = envs(doc)["nightly"]["reason"]
    assert "nightly's cu130 build needs >= 580.65.06" in reason and "supports CUDA <= 12." in reason
    assert "update the driver to >= 580.65.06" in envs(doc)["nightly"]["suggestion"]


def test_driver_too_old_for_cuda_12(matrix: Matrix) -> None:
    calls = iter(
        [(6, recorded("smi/t4_driver470_query.txt")), (0, recorded("smi/t4_driver470_nocc.csv"))]
    )
    scan = detect.scan_smi(lambda argv: next(calls))
    base = host_from_smi("")
    doc = doctor.doctor_json(matrix, detect.with_gpus(base, scan, "nvidia-smi", knowledge.load()))
    assert verdicts(doc, "stable", "legacy", "legacy-cu118", "nightly") == {
        "stable": "will-not-run",
        "legacy": "will-not-run",
        "legacy-cu118": "runs",
        "nightly": "will-not-run",
    }
    stable = envs(doc)["stable"]
    assert stable["reason"] == (
        "driver 470.256.02 supports CUDA <= 11.4; stable's cu128 build needs >= 525.60.13 "
        "(570.26 for full CUDA 12.8 support)"
    )
    assert stable["suggestion"] == "use legacy-cu118, or update the driver to >= 570.26"
    assert envs(doc)["legacy"]["reason"] == (
        "driver 470.256.02 supports CUDA <= 11.4; legacy's cu126 build needs >= 525.60.13 "
        "(560.28.03 for full CUDA 12.6 support)"
    )
    assert any("minor-version compatibility" in n for n in envs(doc)["legacy-cu118"]["notes"])
    assert the_pick(doc)["env"] == "legacy-cu118"


def test_driver_525_runs_cu128_only_under_minor_version_compatibility(matrix: Matrix) -> None:
    doc = doctor.doctor_json(matrix, host_from_smi("smi/a100_driver525.csv"))
    stable = envs(doc)["stable"]
    assert stable["verdict"] == "runs"
    assert any(
        n.startswith(
            "driver 525.147.05 supports CUDA <= 12.0: stable's cu128 build runs under CUDA "
            "minor-version compatibility"
        )
        for n in stable["notes"]
    )
    # PTX JIT needs the full 12.8 driver: a build that only has PTX for this device does not run.
    doc = doctor.doctor_json(
        matrix,
        host_from_smi("smi/a100_driver525.csv"),
        arch_flags={"stable": ["sm_70", "compute_70"]},
    )
    assert envs(doc)["stable"]["verdict"] == "will-not-run"
    assert "needs PTX JIT here, which needs >= 570.26" in envs(doc)["stable"]["reason"]


def test_multi_gpu_box_judges_every_device(matrix: Matrix) -> None:
    doc = doctor.doctor_json(matrix, host_from_smi("smi/multi.csv"))
    stable, legacy = envs(doc)["stable"], envs(doc)["legacy"]
    assert [d["verdict"] for d in stable["devices"]] == ["runs", "will-not-run", "will-not-run"]
    assert stable["verdict"] == "will-not-run"  # the worst device decides
    assert [d["verdict"] for d in legacy["devices"]] == ["runs", "runs", "runs"]
    text = doctor.render(doc)
    header = next(line for line in text.splitlines() if line.startswith("ENV"))
    assert "GPU" in header
    assert "stable on GPU 2: use legacy" in text


def test_no_gpu_every_cuda_env_is_cpu_only(matrix: Matrix) -> None:
    doc = doctor.doctor_json(matrix, host_from_smi(""))
    for spec in matrix.all():
        expected = "runs" if spec.expect.cpu_only else "cpu-only"
        assert envs(doc)[spec.name]["verdict"] == expected, spec.name
    assert envs(doc)["stable"]["reason"] == "no NVIDIA GPU: would run its CPU paths only"


def test_windows_rtx_5070_ti_from_nvml(matrix: Matrix) -> None:
    """Seed 004: RTX 5070 Ti, Windows 11, driver 581.57 reporting CUDA 13.0."""
    recording = json.loads(recorded("nvml/rtx5070ti_windows.json"))
    devices = [
        {"index": i, "driver": recording["driver"], **d} for i, d in enumerate(recording["devices"])
    ]
    scan = detect.parse_nvml_records(devices)
    scan = dataclasses.replace(
        scan, cuda_driver=detect.cuda_from_int(recording["cuda_driver_version"])
    )
    base = host_from_smi("", os_family="windows", platform="win-64")
    doc = doctor.doctor_json(matrix, detect.with_gpus(base, scan, "nvml", knowledge.load()))
    assert verdicts(doc, "stable", "nightly", "legacy") == {
        "stable": "runs",
        "nightly": "runs",
        "legacy": "will-not-run",
    }
    # On Windows stable takes torch from the cu128 index, never PyPI's CPU build.
    assert envs(doc)["stable"]["build"]["index"] == "pytorch-cu128"
    assert envs(doc)["latest"]["verdict"] == "unsupported"


def test_platform_without_cuda_builds_is_unsupported(matrix: Matrix) -> None:
    doc = doctor.doctor_json(matrix, host_from_smi("", platform="osx-arm64"))
    assert envs(doc)["stable"]["verdict"] == "unsupported"
    assert "PyTorch publishes no CUDA build for macOS" in envs(doc)["stable"]["reason"]


# --------------------------------------------------------------------------- the pick


def smi_line(name: str, cc: str, driver: str) -> detect.HostFacts:
    """A host from one nvidia-smi CSV line (a recorded GPU at another driver version)."""
    facts = host_from_smi("")
    scan = detect.parse_smi_csv(f"0, {name}, {cc}, {driver}, 11264 MiB\n")
    return detect.with_gpus(facts, scan, "nvidia-smi", knowledge.load())


def not_running(device: dict[str, Any]) -> dict[str, str]:
    return {r["env"]: r["reason"] for r in device["does_not_run"]}


def test_gtx_970_driver_580_picks_legacy_and_says_why_not_stable_or_nightly(
    matrix: Matrix,
) -> None:
    doc = doctor.doctor_json(matrix, host_from_smi("smi/gtx970_driver580.csv"))
    assert verdicts(doc, "stable", "nightly", "legacy", "legacy-cu118") == {
        "stable": "will-not-run",
        "nightly": "will-not-run",
        "legacy": "runs",
        "legacy-cu118": "runs",
    }
    assert envs(doc)["legacy"]["notes"] == []  # 580 >= 560.28.03: full CUDA 12.6 support
    device = the_pick(doc)
    assert device["env"] == "legacy" and device["build"] == "torch 2.10.0 cu126"
    assert device["reason"] == (
        "sm_50 kernels run natively on sm_52; the newest torch that runs natively here"
    )
    assert device["command"] == "nox -s test-legacy"
    assert device["index_url"] == "https://download.pytorch.org/whl/cu126"
    assert device["install"] == (
        "pip install torch==2.10.0 torchvision==0.25.0 torchaudio==2.10.0 "
        "--index-url https://download.pytorch.org/whl/cu126"
    )
    assert device["runs"] == ["legacy", "legacy-cu118"]  # same hardware, older torch second
    why_not = not_running(device)
    assert "no sm_5x kernels" in why_not["stable"]
    assert why_not["nightly"].startswith("CUDA 13 builds start at sm_75")
    text = doctor.render(doc)
    assert "GPU 0 (NVIDIA GeForce GTX 970, sm_52): legacy  (torch 2.10.0 cu126)" in text
    assert "  run: nox -s test-legacy" in text
    assert "--index-url https://download.pytorch.org/whl/cu126" in text
    assert "not stable: sm_52 is not covered by any cu128 wheel" in text
    assert "not nightly: CUDA 13 builds start at sm_75" in text


def test_gtx_1080_ti_driver_535_runs_legacy_under_minor_version_compatibility(
    matrix: Matrix,
) -> None:
    doc = doctor.doctor_json(matrix, host_from_smi("smi/gtx1080ti_driver535.csv"))
    assert verdicts(doc, "stable", "nightly", "legacy", "legacy-cu118") == {
        "stable": "will-not-run",
        "nightly": "will-not-run",
        "legacy": "runs",
        "legacy-cu118": "runs",
    }
    (note,) = envs(doc)["legacy"]["notes"]
    assert note.startswith(
        "driver 535.274.02 supports CUDA <= 12.2: legacy's cu126 build runs under CUDA "
        "minor-version compatibility"
    )
    assert the_pick(doc)["env"] == "legacy"


def _gtx_1080_ti_470_smi() -> detect.HostFacts:
    calls = iter(
        [
            (6, recorded("smi/gtx1080ti_driver470_query.txt")),
            (0, recorded("smi/gtx1080ti_driver470_nocc.csv")),
        ]
    )
    scan = detect.scan_smi(lambda argv: next(calls))
    return detect.with_gpus(host_from_smi(""), scan, "nvidia-smi", knowledge.load())


def _gtx_1080_ti_470_nvml() -> detect.HostFacts:
    recording = json.loads(recorded("nvml/gtx1080ti_driver470.json"))
    devices = [
        {"index": i, "driver": recording["driver"], **d} for i, d in enumerate(recording["devices"])
    ]
    scan = dataclasses.replace(
        detect.parse_nvml_records(devices),
        cuda_driver=detect.cuda_from_int(recording["cuda_driver_version"]),
    )
    return detect.with_gpus(host_from_smi(""), scan, "nvml", knowledge.load())


@pytest.mark.parametrize("host", [_gtx_1080_ti_470_smi, _gtx_1080_ti_470_nvml])
def test_gtx_1080_ti_driver_470_picks_legacy_cu118(matrix: Matrix, host: Any) -> None:
    doc = doctor.doctor_json(matrix, host())
    assert verdicts(doc, "stable", "nightly", "legacy", "legacy-cu118") == {
        "stable": "will-not-run",
        "nightly": "will-not-run",
        "legacy": "will-not-run",
        "legacy-cu118": "runs",
    }
    legacy = envs(doc)["legacy"]
    assert "legacy's cu126 build needs >= 525.60.13" in legacy["reason"]
    assert legacy["suggestion"] == "use legacy-cu118, or update the driver to >= 560.28.03"
    assert any(
        "runs under CUDA minor-version compatibility" in n
        for n in envs(doc)["legacy-cu118"]["notes"]
    )
    device = the_pick(doc)
    assert device["env"] == "legacy-cu118"
    assert device["index_url"] == "https://download.pytorch.org/whl/cu118"
    assert device["command"] == "nox -s test-legacy-cu118"
    assert device["reason"].endswith("the only env that runs natively here")


@pytest.mark.parametrize(
    ("path", "legacy", "legacy_cu118", "nightly"),
    [
        ("smi/t4.csv", "runs", "runs", "will-not-run"),  # driver 535
        ("smi/a100.csv", "runs", "runs", "will-not-run"),  # driver 570
        ("smi/h100.csv", "runs", "runs", "will-not-run"),  # cu118 and cu126 carry sm_90
        ("smi/rtx5070ti.csv", "will-not-run", "will-not-run", "runs"),  # driver 580
    ],
)
def test_newer_gpus_pick_stable(
    matrix: Matrix, path: str, legacy: str, legacy_cu118: str, nightly: str
) -> None:
    doc = doctor.doctor_json(matrix, host_from_smi(path))
    assert verdicts(doc, "stable", "legacy", "legacy-cu118", "nightly") == {
        "stable": "runs",
        "legacy": legacy,
        "legacy-cu118": legacy_cu118,
        "nightly": nightly,
    }
    device = the_pick(doc)
    assert device["env"] == "stable" and device["verdict"] == "runs"
    # PyPI's Linux torch 2.10.0 is the cu128 build: a plain `pip install` needs no index URL
    assert device["install"] == "pip install torch==2.10.0 torchvision==0.25.0 torchaudio==2.10.0"
    assert device["index_url"] == "https://pypi.org/simple"
    if legacy == "runs":  # same torch release: the newer CUDA build wins the tie
        assert device["reason"].endswith("in its newest CUDA build")


def test_an_unpinned_nightly_is_not_called_the_newest_torch(matrix: Matrix) -> None:
    device = the_pick(doctor.doctor_json(matrix, host_from_smi("smi/rtx5070ti.csv")))
    assert device["env"] == "stable"
    assert "nightly" in device["runs"] and device["runs"].index("nightly") > 0


def test_native_kernels_rank_above_ptx_jit(matrix: Matrix) -> None:
    """The cu128 envs reduced to PTX for the H100: legacy (sm_90 SASS) wins despite its older
    CUDA build and the same torch release."""
    ptx = ["sm_80", "compute_80"]
    cu128 = ["stable", "stable-conda", "brain-encoders", *matrix.cells_of("stable-pythons")]
    doc = doctor.doctor_json(
        matrix, host_from_smi("smi/h100.csv"), arch_flags=dict.fromkeys(cu128, ptx)
    )
    device = the_pick(doc)
    assert envs(doc)["stable"]["verdict"] == "runs-ptx"
    assert device["env"] == "legacy"
    assert device["runs"].index("stable") > device["runs"].index("legacy-cu118")


def test_windows_rtx_5070_ti_pick_names_the_cu128_index(matrix: Matrix) -> None:
    recording = json.loads(recorded("nvml/rtx5070ti_windows.json"))
    devices = [
        {"index": i, "driver": recording["driver"], **d} for i, d in enumerate(recording["devices"])
    ]
    scan = detect.parse_nvml_records(devices)
    base = host_from_smi("", os_family="windows", platform="win-64")
    doc = doctor.doctor_json(matrix, detect.with_gpus(base, scan, "nvml", knowledge.load()))
    device = the_pick(doc)
    assert device["env"] == "stable"
    assert device["index_url"] == "https://download.pytorch.org/whl/cu128"
    assert device["install"].endswith("--index-url https://download.pytorch.org/whl/cu128")


def test_mixed_box_one_env_serves_every_gpu(matrix: Matrix) -> None:
    """A100 + GTX 1080 Ti + GTX 970: stable is best on the A100, legacy runs on all three."""
    doc = doctor.doctor_json(matrix, host_from_smi("smi/multi.csv"))
    picks = doc["pick"]
    assert [d["env"] for d in picks["devices"]] == ["stable", "legacy", "legacy"]
    box = picks["box"]
    assert box["env"] == "legacy" and box["gpus"] == [0, 1, 2]
    assert box["reason"] == "runs on every GPU (0, 1, 2) natively; the newest torch that does"
    assert box["serves"] == [{"env": "stable", "gpus": [0]}, {"env": "legacy", "gpus": [1, 2]}]
    text = doctor.render(doc)
    assert "this box: legacy  (torch 2.10.0 cu126)" in text
    assert "per GPU: stable for GPU 0; legacy for GPU 1, 2" in text


def test_mixed_box_without_a_common_env_says_which_env_serves_which_gpu(matrix: Matrix) -> None:
    """RTX 5070 Ti + GTX 1080 Ti: no build carries both sm_120 and Pascal kernels."""
    doc = doctor.doctor_json(matrix, host_from_smi("smi/mixed_blackwell_pascal.csv"))
    assert [d["env"] for d in doc["pick"]["devices"]] == ["stable", "legacy"]
    box = doc["pick"]["box"]
    assert box["env"] is None
    assert box["serves"] == [{"env": "stable", "gpus": [0]}, {"env": "legacy", "gpus": [1]}]
    assert box["reason"] == (
        "no env of the matrix runs on every GPU: stable for GPU 0; legacy for GPU 1 "
        "(select the devices of each run with CUDA_VISIBLE_DEVICES)"
    )
    assert "this box: none" in doctor.render(doc)


def test_no_gpu_box_picks_the_cpu_env(matrix: Matrix) -> None:
    doc = doctor.doctor_json(matrix, host_from_smi(""))
    box = doc["pick"]["box"]
    assert doc["pick"]["devices"] == []
    assert box["env"] == "cpu" and box["command"] == "nox -s test-cpu"
    assert box["index_url"] == "https://download.pytorch.org/whl/cpu"


@pytest.mark.parametrize(
    ("name", "cc", "driver", "env", "verdict"),
    [
        # CUDA 11.x under minor-version compatibility: >= 450.80.02
        ("NVIDIA GeForce GTX 1080 Ti", "6.1", "450.80.01", "legacy-cu118", "will-not-run"),
        ("NVIDIA GeForce GTX 1080 Ti", "6.1", "450.80.02", "legacy-cu118", "runs"),
        # CUDA 12.x: >= 525.60.13
        ("NVIDIA GeForce GTX 1080 Ti", "6.1", "525.60.12", "legacy", "will-not-run"),
        ("NVIDIA GeForce GTX 1080 Ti", "6.1", "525.60.13", "legacy", "runs"),
        ("NVIDIA H100 80GB HBM3", "9.0", "525.60.12", "stable", "will-not-run"),
        ("NVIDIA H100 80GB HBM3", "9.0", "525.60.13", "stable", "runs"),
        # CUDA 13.x: >= 580
        ("NVIDIA H100 80GB HBM3", "9.0", "575.57.08", "nightly", "will-not-run"),
        ("NVIDIA H100 80GB HBM3", "9.0", "580.65.06", "nightly", "runs"),
    ],
)
def test_driver_floors(
    matrix: Matrix, name: str, cc: str, driver: str, env: str, verdict: str
) -> None:
    doc = doctor.doctor_json(matrix, smi_line(name, cc, driver))
    assert envs(doc)[env]["verdict"] == verdict, envs(doc)[env]["reason"]


@pytest.mark.parametrize(
    ("driver", "pick"),
    [("450.80.02", "legacy-cu118"), ("525.60.12", "legacy-cu118"), ("525.60.13", "legacy")],
)
def test_pascal_pick_follows_the_driver(matrix: Matrix, driver: str, pick: str) -> None:
    doc = doctor.doctor_json(matrix, smi_line("NVIDIA GeForce GTX 1080 Ti", "6.1", driver))
    assert the_pick(doc)["env"] == pick


def test_doctor_warns_about_a_variant_no_longer_published(tmp_path: Path) -> None:
    specs = tmp_path / "envspecs"
    specs.mkdir()
    shutil.copy(ROOT / "envspecs" / "indexes.toml", specs / "indexes.toml")
    (specs / "late.toml").write_text(
        'description = "cu128 past its last release"\npython = "3.11"\nplatforms = ["linux-64"]\n'
        '[torch]\npackages = ["torch==2.12.0"]\nindex = "pytorch-cu128"\n'
    )
    doc = doctor.doctor_json(Matrix(specs), host_from_smi("smi/h100.csv"))
    published = envs(doc)["late"]["published"]
    assert published["state"] == "not-published" and "RFC" in published["source"]
    assert "(nearest: cu126)" in published["text"]
    assert "late: warning: torch 2.12 is not published as cu128" in doctor.render(doc)
    # the shipped envs ask only for published builds
    shipped = doctor.doctor_json(Matrix(ROOT / "envspecs"), host_from_smi("smi/h100.csv"))
    assert all(e["published"] is None for e in shipped["envs"])


# --------------------------------------------------------------------------- arch list sources


def test_probed_arch_flags_replace_the_table(matrix: Matrix) -> None:
    host = host_from_smi("smi/gtx970.csv")
    assert envs(doctor.doctor_json(matrix, host))["legacy"]["verdict"] == "runs"
    doc = doctor.doctor_json(matrix, host, arch_flags={"legacy": ["sm_60", "sm_70", "sm_75"]})
    legacy = envs(doc)["legacy"]
    assert legacy["verdict"] == "will-not-run"
    assert legacy["build"]["confidence"] == "probe"
    assert "sm_60 sm_70 sm_75" in legacy["reason"]


def test_ptx_only_coverage_is_runs_ptx(matrix: Matrix) -> None:
    doc = doctor.doctor_json(
        matrix, host_from_smi("smi/h100.csv"), arch_flags={"stable": ["sm_80", "compute_80"]}
    )
    stable = envs(doc)["stable"]
    assert stable["verdict"] == "runs-ptx"
    assert "JIT" in stable["reason"]


def test_unknown_wheel_and_unpinned_pypi_are_unknown(tmp_path: Path) -> None:
    specs = tmp_path / "envspecs"
    specs.mkdir()
    shutil.copy(ROOT / "envspecs" / "indexes.toml", specs / "indexes.toml")
    (specs / "old.toml").write_text(
        'description = "an old pin"\npython = "3.11"\nplatforms = ["linux-64"]\n'
        '[torch]\npackages = ["torch==2.1.2"]\nindex = "pytorch-cu118"\n'
    )
    (specs / "loose.toml").write_text(
        'description = "unpinned from PyPI"\npython = "3.11"\nplatforms = ["linux-64"]\n'
        '[torch]\npackages = ["torch"]\nindex = "pypi"\n'
    )
    doc = doctor.doctor_json(Matrix(specs), host_from_smi("smi/t4.csv"))
    old, loose = envs(doc)["old"], envs(doc)["loose"]
    assert (
        old["verdict"] == "unknown" and "no known arch list for torch 2.1.2 cu118" in old["reason"]
    )
    assert loose["verdict"] == "unknown" and "known only after a build" in loose["reason"]


# --------------------------------------------------------------------------- output


def test_json_output_is_storable_in_the_result_host(
    matrix: Matrix, capsys: pytest.CaptureFixture[str]
) -> None:
    host = host_from_smi("smi/h100.csv")
    assert doctor.main(matrix, as_json=True, host=host) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == doctor.SCHEMA
    assert [e["env"] for e in doc["envs"]] == matrix.names
    assert doc["pick"]["devices"][0]["env"] == "stable"
    assert doc["pick"]["devices"][0]["command"] == "nox -s test-stable"
    stored = detect.result_host(host, doc)
    assert Host.model_validate_json(stored.model_dump_json()).doctor == doc


def test_table_columns_are_aligned(matrix: Matrix) -> None:
    text = doctor.render(doctor.doctor_json(matrix, host_from_smi("smi/rtx5070ti.csv")))
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ENV"))
    table = lines[start : start + 1 + len(matrix.names)]
    column = table[0].index("VERDICT")
    assert all(line[column - 2 : column] == "  " for line in table)
    assert "gpu 0    NVIDIA GeForce RTX 5070 Ti  sm_120 (compute 12.0)" in text
    assert "driver   580.95.05  (supports CUDA <= 13.0)" in text


@pytest.mark.parametrize(
    ("cpu", "fragment"),
    [
        ("cpuinfo/x86_sandy_bridge.txt", "no AVX2: FBGEMM, oneDNN (MKLDNN) and NNPACK"),
        ("cpuinfo/x86_sapphire_rapids.txt", "AVX-512 BF16 / AMX-BF16 present"),
        ("cpuinfo/aarch64_grace.txt", "SVE/SVE2 present"),
        ("cpuinfo/aarch64_graviton2.txt", "no SVE: ARMv8.2-class CPU"),
    ],
)
def test_cpu_isa_notes_are_sourced(matrix: Matrix, cpu: str, fragment: str) -> None:
    doc = doctor.doctor_json(matrix, host_from_smi("", cpu=cpu))
    notes = doc["cpu_notes"]
    assert any(fragment in n["text"] for n in notes), notes
    assert all(n["source"] for n in notes)
    if "sandy" in cpu:
        assert not any("AVX-512" in n["text"] for n in notes)


def _gpu_present() -> bool:
    return bool(shutil.which("nvidia-smi")) or Path("/proc/driver/nvidia/version").exists()


@pytest.mark.skipif(_gpu_present(), reason="this machine has an NVIDIA GPU/driver")
def test_this_machine_without_gpu(matrix: Matrix, capsys: pytest.CaptureFixture[str]) -> None:
    assert doctor.main(matrix, as_json=False) == 0
    out = capsys.readouterr().out
    cpu = detect.detect_cpu()
    assert f"cpu      {cpu.model}" in out
    assert "gpu      no NVIDIA GPU" in out
    for spec in matrix.all():
        row = next(line for line in out.splitlines() if line.startswith(spec.name + " "))
        if (
            spec.platforms
            and not spec.expect.cpu_only
            and detect.platforms.current() in spec.platforms
        ):
            assert "cpu-only" in row and "would run its CPU paths only" in row


@pytest.mark.gpu
def test_this_machine_with_gpu(matrix: Matrix) -> None:
    host = detect.detect_host()
    assert host.gpus, host.problems
    assert host.driver and host.max_cuda
    assert all(g.compute_capability for g in host.gpus)
    doc = doctor.doctor_json(matrix, host)
    assert all(e["verdict"] != "cpu-only" for e in doc["envs"])


# --------------------------------------------------------------------------- knowledge


def test_knowledge_loads_and_every_entry_has_a_source() -> None:
    facts = knowledge.load()
    for table in (
        facts.driver,
        facts.minor_compat,
        facts.cuda_arch,
        facts.wheel,
        facts.variant,
        facts.gpu,
        facts.isa_note,
    ):
        assert table and all(entry.source.strip() for entry in table)


@pytest.mark.parametrize(
    ("name", "cc"),
    [
        ("NVIDIA GeForce GTX 970", "5.2"),
        ("NVIDIA GeForce GTX 1080 Ti", "6.1"),
        ("Tesla V100-SXM2-16GB", "7.0"),
        ("Tesla T4", "7.5"),
        ("NVIDIA A100-SXM4-80GB", "8.0"),
        ("NVIDIA GeForce RTX 3090", "8.6"),
        ("NVIDIA L4", "8.9"),
        ("NVIDIA GeForce RTX 4090", "8.9"),
        ("NVIDIA H100 80GB HBM3", "9.0"),
        ("NVIDIA H200", "9.0"),
        ("NVIDIA B200", "10.0"),
        ("NVIDIA GeForce RTX 5070 Ti", "12.0"),
        ("NVIDIA GeForce RTX 5090", "12.0"),
        ("NVIDIA A10", "8.6"),
        ("NVIDIA L40S", "8.9"),
    ],
)
def test_gpu_table(name: str, cc: str) -> None:
    entry = knowledge.load().gpu_cc(name)
    assert entry is not None and entry.cc == cc


def test_gpu_table_unknown_name() -> None:
    assert knowledge.load().gpu_cc("NVIDIA Mystery 9000") is None


@pytest.mark.parametrize(
    ("driver", "os", "cuda"),
    [
        ("520.61.05", "linux", "11.8"),
        ("525.147.05", "linux", "12.0"),
        ("570.26", "linux", "12.8"),
        ("575.57.08", "linux", "12.9"),
        ("580.95.05", "linux", "13.0"),
        ("570.65", "windows", "12.8"),
        ("570.64", "windows", "12.6"),
    ],
)
def test_driver_to_max_cuda(driver: str, os: knowledge.OsFamily, cuda: str) -> None:
    row = knowledge.load().max_cuda(driver, os)
    assert row is not None and row.cuda == cuda


def test_wheel_lookup() -> None:
    facts = knowledge.load()
    cu128 = facts.wheel_for("cu128", "2.10.0")
    assert cu128 is not None and cu128.confidence == "measured"
    assert cu128.arch_flags == ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
    assert facts.wheel_for("cu118", "2.7.1") is not None
    assert facts.wheel_for("cu118", "2.1.2") is None
    nightly = facts.wheel_for("cu130", None)
    assert nightly is not None and nightly.unpinned and "sm_75" in nightly.arch_flags
    assert "sm_70" not in nightly.arch_flags  # CUDA 13.0 dropped Volta


def test_toolkit_arch_ranges() -> None:
    facts = knowledge.load()
    from envlab.verify.archcompat import Capability

    assert facts.first_cuda_for(Capability(12, 0)).cuda == "12.8"  # type: ignore[union-attr]
    assert facts.last_cuda_for(Capability(5, 2)).cuda == "12.9"  # type: ignore[union-attr]
    assert not facts.toolkit_archs("13.0").compiles_for(Capability(7, 0))  # type: ignore[union-attr]
    assert facts.toolkit_archs("12.6").cuda == "12.0"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.replace(
                'cuda = "12.8"\nlinux = "570.26"', 'cuda = "12.8"\nlinux = "570.26"\nbogus = 1'
            ),
            "unknown key 'driver.",
        ),
        (
            lambda t: t.replace(
                '"sm_86", "sm_90", "sm_100", "sm_120"]\nconfidence = "measured"',
                '"sm_86", "xx_90"]\nconfidence = "measured"',
                1,
            ),
            "expected an arch flag like 'sm_90'",
        ),
        (
            lambda t: t.replace('linux = "570.26"', 'linux = "five-seventy"'),
            "a driver version like '570.26'",
        ),
        (lambda t: t.replace('confidence = "inferred"', 'confidence = "guessed"'), "confidence"),
        (lambda t: t + '\n[[gpu]]\nnames = ["X"]\ncc = "8.0"\n', "source"),
        # the published-variants table lives in spec/releases.toml (tests/test_factors.py)
    ],
)
def test_knowledge_is_validated_strictly(tmp_path: Path, edit: Any, message: str) -> None:
    text = (ROOT / "src" / "envlab" / "hardware" / "knowledge.toml").read_text()
    changed = edit(text)
    assert changed != text
    path = tmp_path / "knowledge.toml"
    path.write_text(changed)
    with pytest.raises(knowledge.KnowledgeError) as info:
        knowledge.load(path)
    assert message in str(info.value)
    assert str(info.value).startswith(f"{path}: ")
    if "bogus" in changed:
        assert str(info.value).endswith(".bogus'")
