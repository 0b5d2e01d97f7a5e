"""End to end on a real PyTorch env from PyPI: build `stable` from its lock, verify, run the compat
suite and the quick benchmarks, reuse it, test it as an existing interpreter, and report."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import ROOT, envlab, known_stable_failures

from envlab.results.schema import load

pytestmark = [pytest.mark.e2e, pytest.mark.network]


@pytest.fixture(scope="module")
def work(stable_env: dict[str, str]) -> dict[str, str]:
    """The session's stable env (built from its lock by the `stable_env` fixture)
    and its directories."""
    return {k: v for k, v in stable_env.items() if k != "ENVLAB_RUN_ID"}


def result(work: dict[str, str], run: str, env: str = "stable"):
    return load(Path(work["ENVLAB_RUNS_DIR"]) / run / "e2e" / f"{env}.json")


def test_stable_end_to_end(work: dict[str, str]) -> None:
    """Verify, compat suite and quick benchmarks in the real env;
    the build itself is the fixture's."""
    done = envlab(
        "--root",
        str(ROOT),
        "test",
        "stable",
        "--bench",
        "quick",
        env={**work, "ENVLAB_RUN_ID": "e1"},
    )
    known = known_stable_failures()  # compat checks stable fails here, with their reasons
    assert done.returncode == (1 if known else 0), done.stderr[-4000:]
    r = result(work, "e1")
    assert r.outcome == "built", r.reason
    assert all(c.ok for c in r.checks), [c for c in r.checks if not c.ok]
    names = {c.name for c in r.checks}
    assert {
        "torch-version",
        "torch-cuda",
        "arch-covers-sm_120",
        "matches-lock",
        "torchaudio-matches-torch",
        "installed-files-intact",
        "pip-check",
        "torch-pins",
        "cudnn-matches-build",
        "torch-build-features",
        "cuda-toolkit",
    } <= names
    assert r.facts.toolchain.cxx and r.facts.torch.mkl and r.facts.integrity.files
    assert r.facts.torch.version == "2.10.0+cu128" and r.facts.torch.cuda == "12.8"
    assert [layer.name for layer in r.build.layers] == ["base", "torch", "stack"]
    built = result(work, "build")  # the fixture's run built it from the committed lock
    assert (
        not built.build.reused
        and built.build.lock
        and "pylock.linux-64-torch.toml" in built.build.lock
    )
    assert r.compat is not None and r.compat.error is None
    failed = {t.id.split("::", 1)[1]: t for t in r.compat.tests if t.outcome == "failed"}
    assert len(r.compat.tests) >= 61 and set(failed) == set(known), failed
    assert all(fragment in (failed[name].message or "") for name, fragment in known.items())
    if not r.facts.torch.cuda_available:
        skipped = [t for t in r.compat.tests if t.outcome == "skipped"]
        assert skipped and all(
            t.gpu and t.skip_reason and "no CUDA device" in t.skip_reason for t in skipped
        )
    gemm = next(b for b in r.benchmarks if b.name == "gemm_fp32_cpu")
    assert gemm.samples and gemm.unit == "GFLOP/s" and gemm.median > 0
    assert gemm.fraction_of_peak is not None and 0 < gemm.fraction_of_peak < 1


def test_second_run_reuses_the_env(work: dict[str, str]) -> None:
    done = envlab(
        "--root", str(ROOT), "test", "stable", "--no-compat", env={**work, "ENVLAB_RUN_ID": "e2"}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reusing" in done.stderr and "layer torch" not in done.stderr
    ready = re.search(r"ready after ([0-9.]+)s", done.stderr)
    assert ready, done.stderr
    print(
        f"reused env ready after {ready.group(1)} s"
    )  # measured, reported in the notes; not asserted
    assert result(work, "e2").build.reused


def test_the_built_env_as_an_existing_interpreter(work: dict[str, str]) -> None:
    python = Path(work["ENVLAB_ENVS_DIR"]) / "stable" / "bin" / "python"
    done = envlab(
        "--root",
        str(ROOT),
        "test-host",
        "--python",
        str(python),
        "--expect",
        "stable",
        "--name",
        "existing",
        "--pytest-args",
        "-k 'core_imports or blas or numpy'",
        env={**work, "ENVLAB_RUN_ID": "e3"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r = result(work, "e3", "existing")
    assert r.outcome == "external" and r.compat and r.compat.counts()["passed"] > 10


def test_report_over_the_runs(work: dict[str, str]) -> None:
    out = Path(work["BASE"]) / "report"
    done = envlab("--root", str(ROOT), "report", "--out", str(out), env=work)
    assert done.returncode == 0, done.stderr[-3000:]
    md = (out / "report.md").read_text()
    assert "stable" in md and "built" in md
    html = (out / "report.html").read_text()
    assert "<img" in html and "data:image/png;base64," in html
