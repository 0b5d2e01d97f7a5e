"""Expectation checks: each failure says expected vs found and the layer that caused it."""

from __future__ import annotations

import copy
import platform
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT

from envlab import pipeline
from envlab.results.facts import Facts
from envlab.results.schema import Check
from envlab.spec.envspec import EnvSpec, Matrix
from envlab.verify import expectations
from envlab.verify.expectations import (
    expected_family,
    failures,
    matches_lock,
    nightly_date,
    summary,
)

MATRIX = Matrix(ROOT / "envspecs")
ARCH_CU128 = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
FACTS = {
    "torch": {"version": "2.10.0+cu128", "cuda": "12.8", "arch_flags": ARCH_CU128, "blas": "mkl"},
    "torchvision": {"version": "0.25.0+cu128"},
    "torchaudio": {"version": "2.10.0+cu128"},
    "numpy": {"version": "2.3.5"},
    "blas": {"libraries": [{"user_api": "blas", "internal_api": "openblas"}], "openmp": []},
    "distributions": {
        "torch": {"version": "2.10.0", "installer": "uv"},
        "torchvision": {"version": "0.25.0", "installer": "uv"},
        "torchaudio": {"version": "2.10.0", "installer": "uv"},
        "nvidia-cublas-cu12": {"version": "12.8.4.1", "installer": "uv"},
        "nvidia-ml-py": {"version": "13.580.82", "installer": "uv"},
        "pillow": {"version": "12.0.0", "installer": "uv"},
        "numpy": {"version": "2.3.5", "installer": "uv"},
    },
}
LAYERS = {
    "torch": {"torch": "2.10.0", "nvidia-cublas-cu12": "12.8.4.1"},
    "stack": {"numpy": "2.3.5"},
}


def check(
    spec: EnvSpec,
    facts: dict[str, Any],
    layer_packages: dict[str, dict[str, str]] | None = None,
    today: date | None = None,
) -> list[Check]:
    """Verify facts written as the probe prints them (validated as pipeline.probe_env does)."""
    return expectations.check(spec, Facts.model_validate(facts), layer_packages, today)


def names(checks: list) -> dict[str, bool]:
    return {c.name: c.ok for c in checks}


def test_stable_facts_pass_stable() -> None:
    checks = check(MATRIX.get("stable"), FACTS, LAYERS)
    assert not failures(checks), summary(checks)
    assert {
        "torch-version",
        "torch-local-tag",
        "torch-cuda",
        "arch-covers-sm_120",
        "torchvision-matches-torch",
        "torchaudio-matches-torch",
        "torch-layer-intact",
        "pillow-from-pip",
    } <= set(names(checks))


def test_cpu_env_with_a_cuda_torch_fails_naming_the_layer() -> None:
    checks = check(MATRIX.get("cpu"), FACTS, LAYERS)
    failed = {c.name: c for c in failures(checks)}
    assert set(failed) == {"cpu-only-torch", "no-nvidia-dists"}
    assert (
        failed["no-nvidia-dists"].found == "nvidia-cublas-cu12"
    )  # nvidia-ml-py is not a CUDA library
    assert failed["no-nvidia-dists"].layer == "torch"
    assert failed["cpu-only-torch"].found == "torch.version.cuda = '12.8'"


@pytest.mark.parametrize(("env", "cuda"), [("legacy", "12.6"), ("legacy-cu118", "11.8")])
def test_legacy_expectations_on_a_cu128_build(env: str, cuda: str) -> None:
    failed = {c.name: c for c in failures(check(MATRIX.get(env), FACTS, LAYERS))}
    assert (
        failed["torch-cuda"].expected == f"CUDA {cuda}"
        and failed["torch-cuda"].found == "CUDA 12.8"
    )
    assert "sm_52 is not covered" in failed["arch-covers-sm_52"].message
    assert "sm_61 is not covered" in failed["arch-covers-sm_61"].message


def test_clobbered_torch_names_the_layer() -> None:
    facts = copy.deepcopy(FACTS)
    facts["distributions"]["torch"]["version"] = "2.11.0"
    layers = {**LAYERS, "stack": {"numpy": "2.3.5", "torch": "2.11.0"}}
    failed = {c.name: c for c in failures(check(MATRIX.get("stable"), facts, layers))}
    assert failed["torch-layer-intact"].layer == "stack"
    assert failed["torch-layer-intact"].found == "torch 2.11.0"
    # replaced after the build (nothing in the layers installed it): said so
    failed = {c.name: c for c in failures(check(MATRIX.get("stable"), facts, LAYERS))}
    assert (
        failed["torch-layer-intact"].message
        == "torch was replaced by something installed after the build"
    )


def test_mismatched_torchaudio_is_caught() -> None:
    facts = copy.deepcopy(FACTS)
    facts["torch"]["version"] = "2.15.0+cu130"
    facts["torchvision"] = {"version": "0.30.0+cu130"}
    facts["torchaudio"] = {
        "error": "RuntimeError: PyTorch and TorchAudio were compiled with different CUDA versions "
        "(13.2 vs 13.0)"
    }
    failed = {c.name: c for c in failures(check(MATRIX.get("latest"), facts, {}))}
    assert list(failed) == ["torchaudio-matches-torch"]
    assert "different CUDA versions" in failed["torchaudio-matches-torch"].found
    facts["torchaudio"] = {"version": "2.11.0"}
    failed = {c.name: c for c in failures(check(MATRIX.get("latest"), facts, {}))}
    assert failed["torchaudio-matches-torch"].expected == "torchaudio 2.15.x+cu130"


def test_nightly_freshness() -> None:
    facts = copy.deepcopy(FACTS)
    facts["torch"] = {**facts["torch"], "version": "2.13.0.dev20261119+cu130", "cuda": "13.0"}
    facts["torchvision"] = {"version": "0.28.0.dev20261119+cu130"}
    facts["torchaudio"] = {"version": "2.13.0.dev20261119+cu130"}
    spec = MATRIX.get("nightly")
    assert names(check(spec, facts, {}, today=date(2026, 11, 22)))["nightly-fresh"]
    stale = {c.name: c for c in check(spec, facts, {}, today=date(2026, 11, 30))}["nightly-fresh"]
    assert not stale.ok and "11 days old" in stale.found
    assert nightly_date("2.13.0.dev20261119+cu130") == date(2026, 11, 19)
    assert nightly_date("2.10.0") is None


def test_probe_errors_are_failures() -> None:
    checks = check(
        MATRIX.get("stable"), {"torch": {"error": "ImportError: libcudnn.so.9: cannot open"}}
    )
    assert [(c.name, c.ok) for c in checks] == [("torch-import", False)]
    assert "libcudnn" in checks[0].found


def test_family_table() -> None:
    assert expected_family("2.10.0") == {"torchvision": "0.25", "torchaudio": "2.10"}
    assert expected_family("2.7.1") == {"torchvision": "0.22", "torchaudio": "2.7"}


@pytest.mark.parametrize("pillow_installer", ["conda"])
def test_pillow_from_conda_fails(pillow_installer: str) -> None:
    facts = copy.deepcopy(FACTS)
    facts["distributions"]["pillow"]["installer"] = pillow_installer
    failed = {c.name: c for c in failures(check(MATRIX.get("stable"), facts, LAYERS))}
    assert failed["pillow-from-pip"].found == "installer conda"


def test_a_crashed_probe_is_the_only_check() -> None:
    crashed = {"probe_error": "Traceback (most recent call last):\n  ...\nMemoryError: boom"}
    checks = check(MATRIX.get("stable"), crashed, LAYERS)
    assert [(c.name, c.ok, c.message) for c in checks] == [("probe", False, "MemoryError: boom")]


def test_every_check_is_a_small_documented_function() -> None:
    for fn in expectations.GATES + expectations.CHECKS:
        doc = fn.__doc__ or ""
        assert doc and "\n" not in doc.strip(), f"{fn.__name__}: one-line docstring"


def test_matches_lock_names_extra_missing_and_moved() -> None:
    facts = Facts.model_validate(FACTS)
    locked = {n: d["version"] for n, d in FACTS["distributions"].items()}
    assert matches_lock(facts, locked).ok
    locked.pop("pillow")
    locked["numpy"] = "2.2.0"
    locked["scipy"] = "1.16.0"
    lock = matches_lock(facts, locked)
    assert not lock.ok and lock.layer == "stack"
    assert lock.found == (
        "not locked: pillow; missing: scipy; other version: numpy 2.3.5 (locked 2.2.0)"
    )


@pytest.mark.parametrize(
    ("script", "found"),
    [
        (
            "print('{not json')",
            "probe printed unreadable facts (exit 0): the document: Invalid JSON",
        ),
        (
            "import json; print(json.dumps({'torch': {'version': 3}}))",
            "probe printed unreadable facts (exit 0): torch.version: Input should be a valid str",
        ),
        (
            "import sys; print('Fatal Python error: init', file=sys.stderr); sys.exit(3)",
            "probe printed no facts (exit 3): Fatal Python error: init",
        ),
    ],
)
def test_a_probe_printing_garbage_yields_a_probe_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, found: str
) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(script + "\n", encoding="utf-8")
    monkeypatch.setattr(pipeline, "PROBE", probe)
    facts = pipeline.probe_env(Path(sys.executable))
    assert facts.probe_error and facts.probe_error.startswith(found)
    assert facts.model_dump(mode="json") == {"probe_error": facts.probe_error}
    checks = expectations.check(MATRIX.get("stable"), facts)
    assert [(c.name, c.ok) for c in checks] == [("probe", False)]


def test_the_real_probe_output_validates() -> None:
    """The probe run by this interpreter: whatever it finds (torch or not) fits the model."""
    facts = pipeline.probe_env(Path(sys.executable))
    assert facts.probe_error is None
    assert facts.python.version == platform.python_version()
    assert facts.torch.version or facts.torch.error
    assert "pytest" in facts.distributions
