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


# --------------------------------------------------------------------------- the seeds' cases


def test_rtx_5070_ti_stable_runs_legacy_does_not(matrix: Matrix) -> None:
    """Seeds 001/004: sm_120 needs cu128; legacy's cu118 has no Blackwell kernels."""
    doc = doctor.doctor_json(matrix, host_from_smi("smi/rtx5070ti.csv"))
    assert verdicts(doc, "stable", "nightly", "legacy", "cpu") == {
        "stable": "runs",
        "nightly": "runs",
        "legacy": "will-not-run",
        "cpu": "runs",
    }
    legacy = envs(doc)["legacy"]
    assert legacy["reason"].startswith(
        "sm_120 needs a cu128+ build; legacy's cu118 wheel does not cover it"
    )
    assert "nightly" in legacy["suggestion"] and "stable" in legacy["suggestion"]


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
        "use legacy, or a source build with TORCH_CUDA_ARCH_LIST=5.2"
    )
    assert envs(doc)["legacy"]["reason"] == "sm_50 kernels run natively on sm_52"
    # CUDA 13.0 cannot compile for Maxwell at all: the suggestion names an older toolkit.
    assert "CUDA <= 12.9" in envs(doc)["nightly"]["suggestion"]


def test_gtx_1080_ti_is_served_by_legacy_only(matrix: Matrix) -> None:
    doc = doctor.doctor_json(matrix, host_from_smi("smi/gtx1080ti.csv"))
    assert verdicts(doc, "stable", "nightly", "legacy") == {
        "stable": "will-not-run",
        "nightly": "will-not-run",
        "legacy": "runs",
    }


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
    assert verdicts(doc, "stable", "legacy", "nightly") == {
        "stable": "will-not-run",
        "legacy": "runs",
        "nightly": "will-not-run",
    }
    stable = envs(doc)["stable"]
    assert stable["reason"] == (
        "driver 470.256.02 supports CUDA <= 11.4; stable's cu128 build needs >= 525.60.13 "
        "(570.26 for full CUDA 12.8 support)"
    )
    assert stable["suggestion"] == "use legacy, or update the driver to >= 570.26"
    assert any("minor-version compatibility" in n for n in envs(doc)["legacy"]["notes"])


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
    assert (
        "GPU"
        in text.splitlines()[
            next(i for i, l in enumerate(text.splitlines()) if l.startswith("ENV"))
        ]
    )
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
