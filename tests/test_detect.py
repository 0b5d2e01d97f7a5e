"""Detection parsers on recorded nvidia-smi / nvidia-ml-py / /proc outputs; their composition."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from envlab.hardware import detect, knowledge
from envlab.results.schema import Host
from envlab.spec import platforms

DATA = Path(__file__).parent / "data" / "doctor"


def recorded(path: str) -> str:
    return (DATA / path).read_text(encoding="utf-8")


def base_host(os_family: str = "linux", platform: str = "linux-64") -> detect.HostFacts:
    cpu = detect.parse_cpuinfo(recorded("cpuinfo/x86_sapphire_rapids.txt"), "x86_64")
    return detect.HostFacts(
        hostname="rec", os="recorded", os_family=os_family, platform=platform, libc=None, cpu=cpu
    )


# --------------------------------------------------------------------------- nvidia-smi


@pytest.mark.parametrize(
    ("path", "name", "cc", "driver", "mib"),
    [
        ("smi/gtx970.csv", "NVIDIA GeForce GTX 970", "5.2", "535.183.01", 4096),
        ("smi/gtx1080ti.csv", "NVIDIA GeForce GTX 1080 Ti", "6.1", "550.120", 11264),
        ("smi/t4.csv", "Tesla T4", "7.5", "535.216.01", 15360),
        ("smi/a100.csv", "NVIDIA A100-SXM4-80GB", "8.0", "570.86.15", 81920),
        ("smi/h100.csv", "NVIDIA H100 80GB HBM3", "9.0", "570.124.06", 81559),
        ("smi/rtx5070ti.csv", "NVIDIA GeForce RTX 5070 Ti", "12.0", "580.95.05", 16303),
        ("smi/gtx970_driver580.csv", "NVIDIA GeForce GTX 970", "5.2", "580.95.05", 4096),
        ("smi/gtx1080ti_driver535.csv", "NVIDIA GeForce GTX 1080 Ti", "6.1", "535.274.02", 11264),
    ],
)
def test_smi_single_gpu(path: str, name: str, cc: str, driver: str, mib: int) -> None:
    scan = detect.parse_smi_csv(recorded(path))
    assert scan.problems == ()
    assert scan.gpus == (detect.GpuFacts(0, name, cc, driver, mib, "driver"),)
    assert scan.driver == driver


def test_smi_multi_gpu_keeps_every_device_in_order() -> None:
    scan = detect.parse_smi_csv(recorded("smi/multi.csv"))
    assert [(g.index, g.compute_capability) for g in scan.gpus] == [
        (0, "8.0"),
        (1, "6.1"),
        (2, "5.2"),
    ]
    assert scan.driver == "570.133.20"


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("smi/failed.txt", "couldn't communicate with the NVIDIA driver"),
        ("smi/mismatch.txt", "Driver/library version mismatch"),
        ("smi/no_devices.txt", "No devices were found"),
    ],
)
def test_smi_failures_are_problems_not_devices(path: str, fragment: str) -> None:
    scan = detect.parse_smi_csv(recorded(path))
    assert scan.gpus == ()
    assert any(fragment in p for p in scan.problems), scan.problems


def test_smi_partial_output_na_cells_and_truncated_line() -> None:
    scan = detect.parse_smi_csv(recorded("smi/partial.csv"))
    (gpu,) = scan.gpus
    assert gpu.compute_capability is None and gpu.memory_mib is None and gpu.driver == "570.124.06"
    assert any("expected 5 columns" in p for p in scan.problems)
    host = detect.with_gpus(base_host(), scan, "nvidia-smi", knowledge.load())
    assert host.gpus[0].compute_capability == "9.0"
    assert host.gpus[0].cc_source is not None and host.gpus[0].cc_source.startswith(
        "inferred from the name"
    )


def test_old_driver_without_compute_cap_queries_again_and_infers_from_name() -> None:
    calls: list[list[str]] = []
    answers = [
        (6, recorded("smi/t4_driver470_query.txt")),
        (0, recorded("smi/t4_driver470_nocc.csv")),
    ]

    def run(argv: list[str]) -> tuple[int, str]:
        calls.append(argv)
        return answers[len(calls) - 1]

    scan = detect.scan_smi(run)
    assert "compute_cap" in calls[0][-1] and "compute_cap" not in calls[1][-1]
    assert any("does not report compute_cap" in p for p in scan.problems)
    host = detect.with_gpus(base_host(), scan, "nvidia-smi", knowledge.load())
    assert (host.gpus[0].name, host.gpus[0].compute_capability) == ("Tesla T4", "7.5")
    assert (host.driver, host.max_cuda) == ("470.256.02", "11.4")


def test_gtx_1080_ti_on_driver_470_is_read_without_compute_cap() -> None:
    """An R470 driver's nvidia-smi has no compute_cap: the name gives 6.1, the table CUDA 11.4."""
    answers = iter(
        [
            (6, recorded("smi/gtx1080ti_driver470_query.txt")),
            (0, recorded("smi/gtx1080ti_driver470_nocc.csv")),
        ]
    )
    scan = detect.scan_smi(lambda argv: next(answers))
    host = detect.with_gpus(base_host(), scan, "nvidia-smi", knowledge.load())
    (gpu,) = host.gpus
    assert (gpu.name, gpu.compute_capability, gpu.memory_mib) == (
        "NVIDIA GeForce GTX 1080 Ti",
        "6.1",
        11178,
    )
    assert gpu.cc_source is not None and gpu.cc_source.startswith("inferred from the name")
    assert (host.driver, host.max_cuda) == ("470.256.02", "11.4")


def test_smi_mixed_blackwell_and_pascal_box() -> None:
    scan = detect.parse_smi_csv(recorded("smi/mixed_blackwell_pascal.csv"))
    assert [(g.index, g.name, g.compute_capability) for g in scan.gpus] == [
        (0, "NVIDIA GeForce RTX 5070 Ti", "12.0"),
        (1, "NVIDIA GeForce GTX 1080 Ti", "6.1"),
    ]
    assert scan.driver == "580.95.05" and scan.problems == ()


def test_smi_missing_and_failing_exit_codes() -> None:
    assert detect.scan_smi(lambda argv: (127, "executable not found")).problems == (
        "nvidia-smi not found",
    )
    scan = detect.scan_smi(lambda argv: (9, recorded("smi/failed.txt")))
    assert scan.gpus == () and "NVIDIA-SMI has failed" in scan.problems[0]
    odd = detect.scan_smi(lambda argv: (3, "something unexpected\n"))
    assert odd.problems == ("nvidia-smi exited with 3: something unexpected",)


def test_the_real_runner_reports_a_missing_executable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert detect.scan_smi().problems == ("nvidia-smi not found",)


# --------------------------------------------------------------------------- /proc


@pytest.mark.parametrize(
    ("path", "version"),
    [
        ("proc/version_570_open.txt", "570.124.06"),
        ("proc/version_470.txt", "470.256.02"),
        ("proc/version_580_aarch64.txt", "580.65.06"),
    ],
)
def test_proc_driver_version(path: str, version: str) -> None:
    assert detect.parse_proc_driver_version(recorded(path)) == version


def test_proc_driver_version_garbage() -> None:
    assert detect.parse_proc_driver_version("NVRM: something else\n") is None


def test_scan_proc_tree_gives_driver_and_names(tmp_path: Path) -> None:
    (tmp_path / "gpus" / "0000:18:00.0").mkdir(parents=True)
    (tmp_path / "version").write_text(recorded("proc/version_570_open.txt"))
    (tmp_path / "gpus" / "0000:18:00.0" / "information").write_text(
        recorded("proc/information_h100.txt")
    )
    scan, source = detect.scan_gpus(None, lambda argv: (127, ""), tmp_path)
    assert source == "proc"
    assert scan.driver == "570.124.06"
    assert [(g.index, g.name, g.compute_capability) for g in scan.gpus] == [
        (0, "NVIDIA H100 80GB HBM3", None)
    ]
    assert "nvidia-smi not found" in scan.problems
    host = detect.with_gpus(base_host(), scan, source, knowledge.load())
    assert host.gpus[0].compute_capability == "9.0"
    assert host.max_cuda == "12.8"


def test_no_gpu_anywhere_is_a_normal_answer(tmp_path: Path) -> None:
    scan, source = detect.scan_gpus(None, lambda argv: (127, ""), tmp_path / "absent")
    assert (scan.gpus, scan.driver, source) == ((), None, "none")


def test_unreadable_proc_version_is_reported(tmp_path: Path) -> None:
    (tmp_path / "version").write_text("garbage\n")
    assert detect.scan_proc(tmp_path).problems == (
        f"{tmp_path / 'version'}: no driver version found in it",
    )


# --------------------------------------------------------------------------- nvidia-ml-py


class FakeNvml:
    """Enough of the ``pynvml`` API, driven by a recorded JSON document."""

    class NVMLError(Exception):
        pass

    def __init__(self, doc: dict[str, Any], init_error: str | None = None) -> None:
        self.doc, self.init_error, self.shutdown = doc, init_error, False

    def nvmlInit(self) -> None:
        if self.init_error:
            raise self.NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return self.doc["driver"].encode()  # old bindings return bytes

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return int(self.doc["cuda_driver_version"])

    def nvmlDeviceGetCount(self) -> int:
        return len(self.doc["devices"])

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        device = self.doc["devices"][index]
        if "error" in device:
            raise self.NVMLError(device["error"])
        return dict(device)

    def nvmlDeviceGetName(self, handle: dict[str, Any]) -> str:
        return str(handle["name"])

    def nvmlDeviceGetCudaComputeCapability(self, handle: dict[str, Any]) -> tuple[int, int]:
        major, minor = handle["compute_capability"]
        return major, minor

    def nvmlDeviceGetMemoryInfo(self, handle: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(total=handle["memory_total"])


def fake_nvml(name: str, init_error: str | None = None) -> Any:
    return FakeNvml(json.loads(recorded(f"nvml/{name}")), init_error)


def test_nvml_h100() -> None:
    module = fake_nvml("h100.json")
    scan = detect.scan_nvml(module)
    assert scan.gpus == (
        detect.GpuFacts(0, "NVIDIA H100 80GB HBM3", "9.0", "570.124.06", 81559, "driver"),
    )
    assert (scan.driver, scan.cuda_driver, scan.problems) == ("570.124.06", "12.8", ())
    assert module.shutdown


def test_nvml_gtx_1080_ti_on_driver_470() -> None:
    scan = detect.scan_nvml(fake_nvml("gtx1080ti_driver470.json"))
    assert scan.gpus == (
        detect.GpuFacts(0, "NVIDIA GeForce GTX 1080 Ti", "6.1", "470.256.02", 11178, "driver"),
    )
    host = detect.with_gpus(base_host(), scan, "nvml", knowledge.load())
    assert (host.driver, host.max_cuda) == ("470.256.02", "11.4")


def test_nvml_lost_gpu_keeps_the_others() -> None:
    scan = detect.scan_nvml(fake_nvml("one_lost.json"))
    assert [g.name for g in scan.gpus] == ["NVIDIA A100-SXM4-80GB"]
    assert scan.problems == ("nvidia-ml-py: GPU 1: GPU is lost",)


def test_nvml_init_failure_falls_back_to_nvidia_smi() -> None:
    module = fake_nvml("h100.json", init_error="Driver Not Loaded")
    scan, source = detect.scan_gpus(
        module, lambda argv: (0, recorded("smi/h100.csv")), Path("/nonexistent")
    )
    assert source == "nvidia-smi"
    assert scan.gpus[0].compute_capability == "9.0"
    assert scan.problems == ("nvidia-ml-py: nvmlInit failed: Driver Not Loaded",)


def test_nvml_reported_cuda_wins_over_the_driver_table() -> None:
    scan = detect.scan_nvml(fake_nvml("rtx5070ti_windows.json"))
    host = detect.with_gpus(base_host("windows", "win-64"), scan, "nvml", knowledge.load())
    assert (host.driver, host.max_cuda, host.max_cuda_source) == (
        "581.57",
        "13.0",
        "reported by the driver (NVML)",
    )


def test_nvml_records_accept_strings_and_unknown_capability() -> None:
    scan = detect.parse_nvml_records(
        [
            {
                "index": 0,
                "name": b"Tesla T4",
                "compute_capability": "7.5",
                "driver": "535.216.01",
                "memory_total": None,
            },
            {"index": 1, "name": "Mystery GPU", "compute_capability": None, "driver": "535.216.01"},
        ]
    )
    assert [(g.name, g.compute_capability, g.memory_mib) for g in scan.gpus] == [
        ("Tesla T4", "7.5", None),
        ("Mystery GPU", None, None),
    ]
    host = detect.with_gpus(base_host(), scan, "nvml", knowledge.load())
    assert any("GPU 1 (Mystery GPU): compute capability unknown" in p for p in host.problems)


def test_cuda_from_int() -> None:
    assert [detect.cuda_from_int(v) for v in (11080, 12080, 13000)] == ["11.8", "12.8", "13.0"]


# --------------------------------------------------------------------------- CPU, OS


def test_cpuinfo_sapphire_rapids() -> None:
    cpu = detect.parse_cpuinfo(recorded("cpuinfo/x86_sapphire_rapids.txt"), "x86_64")
    assert (cpu.model, cpu.count, cpu.machine) == ("Intel(R) Xeon(R) Platinum 8480+", 2, "x86_64")
    assert {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8"} <= set(
        cpu.flags
    )
    assert "vaes" not in cpu.flags  # only flags that matter to torch's kernels are kept


def test_cpuinfo_sandy_bridge_has_avx_without_avx2() -> None:
    cpu = detect.parse_cpuinfo(recorded("cpuinfo/x86_sandy_bridge.txt"), "x86_64")
    assert "avx" in cpu.flags and "avx2" not in cpu.flags and cpu.count == 1


@pytest.mark.parametrize(
    ("path", "sve"), [("cpuinfo/aarch64_grace.txt", True), ("cpuinfo/aarch64_graviton2.txt", False)]
)
def test_cpuinfo_arm(path: str, sve: bool) -> None:
    cpu = detect.parse_cpuinfo(recorded(path), "aarch64")
    assert cpu.machine == "aarch64" and "asimd" in cpu.flags
    assert ("sve2" in cpu.flags) is sve
    assert cpu.model.startswith("ARM CPU (implementer 0x41, part 0xd")


def test_os_release() -> None:
    text = 'NAME="Ubuntu"\nPRETTY_NAME="Ubuntu 24.04.1 LTS"\nID=ubuntu\n'
    assert detect.parse_os_release(text) == "Ubuntu 24.04.1 LTS"


# --------------------------------------------------------------------------- composition


def test_detect_host_on_this_machine_without_gpu_sources(tmp_path: Path) -> None:
    host = detect.detect_host(nvml=False, run=lambda argv: (127, ""), proc_root=tmp_path)
    assert host.gpus == () and host.driver is None and host.gpu_source == "none"
    assert host.hostname == socket.gethostname() and host.platform == platforms.current()
    assert host.cpu.count >= 1 and host.cpu.model


def test_result_host_carries_gpus_and_doctor_json() -> None:
    scan = detect.parse_smi_csv(recorded("smi/multi.csv"))
    facts = detect.with_gpus(base_host(), scan, "nvidia-smi", knowledge.load())
    host = detect.result_host(facts, {"schema": 1, "envs": []})
    assert isinstance(host, Host)
    assert [g.compute_capability for g in host.gpus] == ["8.0", "6.1", "5.2"]
    assert (host.driver, host.max_cuda, host.cpu_count, host.doctor) == (
        "570.133.20",
        "12.8",
        2,
        {"schema": 1, "envs": []},
    )
    assert Host.model_validate_json(host.model_dump_json()) == host


@pytest.mark.parametrize("raw", ["550.54.15-beta", "-", "550..1", "N/A-ish"])
def test_a_driver_version_that_is_no_version_is_unknown_with_its_text(raw: str) -> None:
    driver, problem = detect.check_driver(raw, "nvidia-smi")
    assert driver is None and problem == (
        f"nvidia-smi: driver version unknown: reported {raw!r}, which is no version"
    )
    assert detect.check_driver(" 550.54.15 ", "nvidia-smi") == ("550.54.15", None)
    assert detect.check_driver(None, "nvidia-smi") == (None, None)
