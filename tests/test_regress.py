"""Regression detection: A/A noise raises nothing; planted slowdowns and compat breaks are named."""

from __future__ import annotations

import random
from pathlib import Path

import factories as f
import pytest

from envlab.errors import UserError
from envlab.report.regress import compare, main, perf_verdict, render_markdown
from envlab.results.history import History
from envlab.results.schema import Check

ENVS = ("stable", "latest")
HOSTS = (f.host("cpu-a"), f.host("gpu-b", gpu="NVIDIA RTX 5090", cc="12.0", driver="580.95"))


def history_of(
    tmp_path: Path,
    runs: int,
    *,
    seed: int = 7,
    slow_from: int | None = None,
    slow: dict[str, float] | None = None,
) -> Path:
    """``runs`` nightly runs of 2 envs on 2 hosts with 5 % noise; optionally slower from a run on."""
    rng = random.Random(seed)
    results = []
    for run in range(runs):
        factor = slow if slow_from is not None and run >= slow_from else None
        for host in HOSTS:
            for env in ENVS:
                results.append(
                    f.result(
                        run=run,
                        env=env,
                        host_=host,
                        benchmarks=f.default_benchmarks(rng, env, slow=factor),
                    )
                )
    f.write(tmp_path / "runs", results)
    return tmp_path / "runs"


def run_regress(tmp_path: Path, runs_dir: Path, **kw: object) -> tuple[int, str]:
    out = tmp_path / "regress.md"
    args: dict[str, object] = {
        "baseline": None,
        "window": None,
        "threshold": 1.10,
        "alpha": 0.01,
        "persist": 1,
        "out_md": out,
    }
    args.update(kw)
    code = main(runs_dir, tmp_path / "h.sqlite", **args)  # type: ignore[arg-type]
    return code, out.read_text(encoding="utf-8")


def test_perf_verdict_needs_both_size_and_significance() -> None:
    rng = random.Random(1)
    base = f.samples(rng, 10.0)
    assert perf_verdict(
        base, f.samples(rng, 12.0), higher_is_better=False, threshold=1.1, alpha=0.01
    ).regressed
    # Significant but small (5 %): not a regression at a 1.10 threshold.
    tiny = perf_verdict(
        [10.0] * 5 + [10.01] * 10, [10.5] * 15, higher_is_better=False, threshold=1.1, alpha=0.01
    )
    assert 1.04 < tiny.factor < 1.06 and not tiny.regressed
    # Large but not significant (3 samples each, overlapping).
    assert not perf_verdict(
        [10, 14, 11], [12, 15, 10.5], higher_is_better=False, threshold=1.1, alpha=0.01
    ).regressed
    # Higher-is-better: a drop in throughput is the regression, a rise is not.
    assert perf_verdict(
        [100.0 + i for i in range(15)],
        [80.0 + i for i in range(15)],
        higher_is_better=True,
        threshold=1.1,
        alpha=0.01,
    ).regressed
    assert not perf_verdict(
        [80.0 + i for i in range(15)],
        [100.0 + i for i in range(15)],
        higher_is_better=True,
        threshold=1.1,
        alpha=0.01,
    ).regressed


@pytest.mark.parametrize(("window", "persist"), [(None, 1), (5, 1), (None, 3)])
def test_aa_history_raises_no_alarm(tmp_path: Path, window: int | None, persist: int) -> None:
    runs_dir = history_of(tmp_path, 20)
    with History(tmp_path / "h.sqlite") as h:
        h.ingest_dir(runs_dir)
        run_ids = [r.run_id for r in h.runs()]
        compared = 0
        for newest in run_ids[1:]:
            report = compare(h, newest_run=newest, window=window, persist=persist)
            assert report.regressions == [], render_markdown(report)
            compared += sum(p.compared_benchmarks for p in report.pairs)
        assert compared > 0
    code, md = run_regress(tmp_path, runs_dir, window=window, persist=persist)
    assert code == 0 and "No regression" in md


def test_planted_slowdown_is_flagged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs_dir = history_of(tmp_path, 10, slow_from=9, slow={"matmul": 1.2})
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code, md = run_regress(tmp_path, runs_dir)
    assert code == 1
    with History(tmp_path / "h.sqlite") as h:
        report = compare(h)
    flagged = {(p.env, p.host, x.subject) for p in report.pairs for x in p.findings}
    # matmul (time) and matmul-throughput (derived from the same timings) on every env and host.
    assert {s.split("@")[0] for _e, _h, s in flagged} == {"matmul", "matmul-throughput"}
    assert {(e, h) for e, h, _s in flagged} == {(e, h.id) for e in ENVS for h in HOSTS}
    assert all(x.kind == "performance" for p in report.pairs for x in p.findings)
    assert "matmul@v1[dtype=float32,n=1024] (ms)" in md and "Mann-Whitney" in md
    assert summary.read_text(encoding="utf-8") == md


def test_persist_requires_the_slowdown_in_each_recent_run(tmp_path: Path) -> None:
    runs_dir = history_of(tmp_path, 10, slow_from=9, slow={"conv2d": 1.3})
    assert run_regress(tmp_path, runs_dir, persist=2)[0] == 0
    assert run_regress(tmp_path, runs_dir, persist=1)[0] == 1
    runs_dir = history_of(tmp_path / "b", 10, slow_from=8, slow={"conv2d": 1.3})
    code, md = run_regress(tmp_path / "b", runs_dir, persist=2)
    assert code == 1 and "in each of the last 2 runs" in md


def test_compat_break_names_the_check_and_changed_packages(tmp_path: Path) -> None:
    broken = "compat_tests/test_torchaudio.py::test_1"
    message = "PyTorch and TorchAudio were compiled with different CUDA versions (13.2 vs 13.0)"
    before = [f.result(run=0, env=env) for env in ENVS]
    after = [
        f.result(run=1, env="stable"),
        f.result(
            run=1,
            env="latest",
            failing={broken: message},
            torch="2.15.0",
            dists={"torchaudio": "2.11.1", "numpy": "2.4.0"},
        ),
    ]
    f.write(tmp_path / "runs", before + after)
    code, md = run_regress(tmp_path, tmp_path / "runs")
    assert code == 1
    with History(tmp_path / "h.sqlite") as h:
        report = compare(h)
    (pair,) = report.regressions
    assert pair.env == "latest"
    assert [(x.kind, x.subject) for x in pair.findings] == [("compat", broken)]
    assert {(c.name, c.before, c.after) for c in pair.changes} == {
        ("torchaudio", "2.11.0", "2.11.1"),
        ("numpy", "2.3.4", "2.4.0"),
    }
    assert broken in md and message in md and "torchaudio" in md and "2.4.0" in md


def test_env_that_no_longer_builds_and_failed_expectation(tmp_path: Path) -> None:
    ok = Check(name="torch.version.cuda", ok=True, expected="12.8", found="12.8", layer="torch")
    bad = Check(
        name="torch.version.cuda",
        ok=False,
        expected="12.8",
        found="None",
        layer="stack",
        message="stack package 'timm' pulled torch 2.10.0+cpu",
    )
    f.write(
        tmp_path / "runs",
        [
            f.result(run=0, env="stable", checks=[ok]),
            f.result(run=0, env="cpu"),
            f.result(
                run=1, env="stable", outcome="verify-failed", checks=[bad], torch="2.10.0+cpu"
            ),
            f.unavailable(1, "cpu"),
        ],
    )
    code, md = run_regress(tmp_path, tmp_path / "runs")
    assert code == 1
    with History(tmp_path / "h.sqlite") as h:
        pairs = {p.env: p for p in compare(h).pairs}
    assert [(x.kind, x.after) for x in pairs["cpu"].findings] == [("outcome", "unavailable")]
    assert "ENVLAB_INDEX_PYTORCH_CPU" in pairs["cpu"].findings[0].detail
    kinds = {x.kind: x for x in pairs["stable"].findings}
    assert set(kinds) == {"outcome", "check"}
    assert "expected 12.8, found None" in kinds["check"].after and "timm" in kinds["check"].detail
    assert ("torch", "2.10.0+cu128", "2.10.0+cpu") in {
        (c.name, c.before, c.after) for c in pairs["stable"].changes
    }
    assert "ENVLAB_INDEX_PYTORCH_CPU" in md


def test_named_baseline_and_unknown_baseline(tmp_path: Path) -> None:
    runs_dir = history_of(tmp_path, 4, slow_from=2, slow={"matmul": 1.25})
    with History(tmp_path / "h.sqlite") as h:
        h.ingest_dir(runs_dir)
        first, *_rest, last = [r.run_id for r in h.runs()]
        # Against the previous run (also slow) nothing regressed; against run 0 it did.
        assert compare(h).regressions == []
        named = compare(h, baseline=first)
        assert named.regressions and all(p.baseline_runs == [first] for p in named.pairs)
        assert compare(h, baseline=last).regressions == []
        with pytest.raises(UserError, match="not in the history"):
            compare(h, baseline="no-such-run")


def test_first_run_has_nothing_to_compare(tmp_path: Path) -> None:
    f.write(tmp_path / "runs", f.first_run())
    code, md = run_regress(tmp_path, tmp_path / "runs")
    assert code == 0
    assert "nothing to compare with" in md
    code, md = run_regress(tmp_path / "empty", tmp_path / "empty" / "runs")
    assert code == 0 and "No results" in md


def machine_noise_history(
    tmp_path: Path, runs: int, *, slow_from: int | None = None, slow: float = 1.0
) -> Path:
    """Like the measured 2-core VM: each run's whole machine is 15 % faster or slower (run-level noise,
    shared by all samples of that run) on top of 5 % sample noise."""
    rng = random.Random(11)
    results = []
    for run in range(runs):
        scale = rng.uniform(0.87, 1.15)
        factor = {"matmul": slow} if slow_from is not None and run >= slow_from else None
        results.append(
            f.result(
                run=run,
                env="stable",
                host_=HOSTS[0],
                benchmarks=f.default_benchmarks(rng, "stable", scale=scale, slow=factor),
            )
        )
    f.write(tmp_path / "runs", results)
    return tmp_path / "runs"


def test_noise_floor_from_the_spread_between_baseline_runs() -> None:
    from envlab.report.regress import noise_floor

    assert noise_floor([10.0, 11.5, 10.4]) == pytest.approx(1.15)
    assert noise_floor([10.0]) == 1.0


def test_run_level_machine_noise_needs_a_window(tmp_path: Path) -> None:
    runs_dir = machine_noise_history(tmp_path, 20)
    with History(tmp_path / "h.sqlite") as h:
        h.ingest_dir(runs_dir)
        run_ids = [r.run_id for r in h.runs()]
        for newest in run_ids[6:]:
            report = compare(h, newest_run=newest, window=5)
            assert report.regressions == [], render_markdown(report)


def test_a_slowdown_beyond_the_machine_noise_is_still_flagged(tmp_path: Path) -> None:
    runs_dir = machine_noise_history(tmp_path, 12, slow_from=11, slow=1.6)
    code, md = run_regress(tmp_path, runs_dir, window=5)
    assert code == 1 and "raised from 1.10x by the spread between baseline runs" in md
    assert "matmul@v1" in md
