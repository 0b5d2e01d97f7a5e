"""``envlab regress`` end to end: histories written as result documents, judged through the history.

The judge's rules and calibration are in test_judge.py; here the history, the choice of comparable
baselines, what changed underneath, the Markdown and the exit code.
"""

from __future__ import annotations

import random
from pathlib import Path

import factories as f
import pytest

from envlab.cli import parser
from envlab.errors import UserError
from envlab.report import regress
from envlab.report.judge import JudgeOptions, Point, judge_series
from envlab.report.regress import compare, main, render_markdown
from envlab.results.history import History
from envlab.results.schema import Check, Result

ENVS = ("stable", "latest")
HOSTS = (f.host("cpu-a"), f.host("gpu-b", gpu="NVIDIA RTX 5090", cc="12.0", driver="580.95"))
OK_CHECK = Check(name="torch.version.cuda", ok=True, expected="12.8", found="12.8", layer="torch")
BAD_CHECK = Check(
    name="torch.version.cuda",
    ok=False,
    expected="12.8",
    found="None",
    layer="stack",
    message="stack package 'timm' pulled torch 2.10.0+cpu",
)


def run_regress(tmp_path: Path, runs_dir: Path, *args: str) -> tuple[int, str]:
    """``envlab regress ARGS`` on ``runs_dir``: (exit code, Markdown)."""
    out = tmp_path / "regress.md"
    ns = parser().parse_args(["regress", *args])
    code = main(
        runs_dir,
        tmp_path / "h.sqlite",
        options=regress.options_from_args(ns),
        baseline=ns.baseline,
        out_md=out,
    )
    return code, out.read_text(encoding="utf-8")


def clean(nights: int, env: str = "stable", seed: int = 3) -> list[Result]:
    """``nights`` clean nights of one env with a check and benchmarks."""
    rng = random.Random(seed)
    return [
        f.result(
            run=i,
            env=env,
            checks=[OK_CHECK],
            benchmarks=f.drifting_benchmarks(rng, drift=1 + rng.uniform(-0.03, 0.03)),
        )
        for i in range(nights)
    ]


def findings(tmp_path: Path) -> dict[str, list[tuple[str, str]]]:
    with History(tmp_path / "h.sqlite") as h:
        return {p.env: [(x.kind, x.subject) for x in p.findings] for p in compare(h).pairs}


def night_by_night(
    tmp_path: Path, history: list[list[Result]]
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]], int]:
    """Add the nights one at a time and regress after each: (its findings as (env, subject,
    run)), the judge_series marks over the whole history, and the per-env verdicts."""
    runs_dir = tmp_path / "runs"
    alarms, verdicts = [], 0
    with History(tmp_path / "h.sqlite") as h:
        for night in history:
            f.write(runs_dir, night)
            h.ingest_dir(runs_dir)
            report = compare(h)
            verdicts += len(report.pairs)
            alarms += [
                (p.env, x.subject, p.newest.run_id) for p in report.pairs for x in p.findings
            ]
        marks = []
        for (key, env, _host), series in h.benchmark_series().items():
            verdict = judge_series(
                [Point(p.run_id, p.median, p.samples) for p in series], higher_is_better=False
            )
            marks += [
                (env, key, p.run_id) for p, v in zip(series, verdict, strict=True) if v.regressed
            ]
    return sorted(alarms), sorted(marks), verdicts


def test_night_by_night_regress_gives_the_calibrated_judges_verdicts(tmp_path: Path) -> None:
    alarms, marks, verdicts = night_by_night(tmp_path / "aa", f.nights(30, ENVS, seed=4))
    assert alarms == marks and verdicts == 60
    assert len(alarms) <= 1  # 0.5 % of 60 per-env verdicts: none, or one by bad luck
    history = f.nights(30, ENVS, seed=4, slow=("conv2d", 1.35, 20))
    alarms, marks, _ = night_by_night(tmp_path / "slow", history)
    assert alarms == marks
    assert {(env, run) for env, _s, run in alarms} >= {(env, f.run_id(20)[0]) for env in ENVS}
    code, md = run_regress(tmp_path / "slow", tmp_path / "slow" / "runs")
    assert code == (1 if any(run == f.run_id(29)[0] for *_x, run in alarms) else 0)
    assert "judged against each env's earlier comparable results" in md


def test_planted_slowdown_is_flagged_with_its_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = f.nights(12, ENVS, seed=5, slow=("gemm", 1.35, 11))
    f.write(tmp_path / "runs", [r for night in history for r in night])
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code, md = run_regress(tmp_path, tmp_path / "runs")
    assert code == 1
    assert findings(tmp_path) == {
        env: [("performance", "gemm@v1[device=cpu] (ms)")] for env in ENVS
    }
    first, last = f.run_id(0)[0], f.run_id(10)[0]
    assert "vs the centre of 11 earlier runs" in md and f"{first} … {last}" in md
    assert summary.read_text(encoding="utf-8") == md


def test_young_history_is_insufficient_not_no_regression(tmp_path: Path) -> None:
    history = f.nights(4, ("stable",), seed=6, slow=("gemm", 3.0, 3))
    f.write(tmp_path / "runs", [r for night in history for r in night])
    code, md = run_regress(tmp_path, tmp_path / "runs")
    assert code == 0
    assert "Speed of 5 benchmark(s) not judged yet: insufficient history" in md
    assert "5 not judged: insufficient history (3 of 5 earlier runs)" in md
    code, md = run_regress(tmp_path, tmp_path / "runs", "--min-history", "3")
    assert code == 1 and "gemm@v1" in md


def test_compat_suite_crash_after_clean_runs(tmp_path: Path) -> None:
    crashed = clean(11)
    crashed[-1].compat = f.crashed_compat()
    f.write(tmp_path / "runs", crashed)
    code, md = run_regress(tmp_path, tmp_path / "runs")
    assert code == 1 and f.SEGFAULT in md
    assert findings(tmp_path) == {"stable": [("compat-suite", "compat suite")]}


def test_breaks_after_an_outage_are_judged_against_the_last_night_that_built(
    tmp_path: Path,
) -> None:
    results = clean(8)
    results[6] = f.result(run=6, outcome="unavailable", reason="index 'pypi' unreachable")
    rng = random.Random(9)
    results[7] = f.result(
        run=7,
        checks=[BAD_CHECK],
        benchmarks=f.drifting_benchmarks(rng, drift=1.0, slow={"conv2d": 1.35}),
        failing={"compat_tests/test_blas.py::test_0": "openblas not loaded"},
    )
    f.write(tmp_path / "runs", results)
    code, md = run_regress(tmp_path, tmp_path / "runs")
    assert code == 1
    assert sorted(findings(tmp_path)["stable"]) == [
        ("check", "torch.version.cuda"),
        ("compat", "compat_tests/test_blas.py::test_0"),
        ("performance", "conv2d@v1[device=cpu] (ms)"),
    ]
    assert f"compared with `{f.run_id(5)[0]}`" in md


def test_outage_then_build_failure_and_no_package_rows(tmp_path: Path) -> None:
    results = [
        *clean(3),
        f.result(run=3, outcome="unavailable", reason="index 'pypi' unreachable"),
        f.result(run=4, outcome="build-failed", reason="resolution conflict: timm needs torch<2.9"),
    ]
    f.write(tmp_path / "runs", results)
    code, md = run_regress(tmp_path, tmp_path / "runs")
    assert code == 1 and "resolution conflict" in md
    with History(tmp_path / "h.sqlite") as h:
        (pair,) = compare(h).pairs
    assert [(x.kind, x.before, x.after) for x in pair.findings] == [
        ("outcome", "built", "build-failed")
    ]
    assert pair.baseline is not None and pair.baseline.run_id == f.run_id(2)[0]
    assert pair.changes == []  # nothing recorded underneath a failed build is a change


def test_benchmark_errors_after_an_outage(tmp_path: Path) -> None:
    results = clean(4)
    results.append(f.result(run=4, outcome="unavailable", reason="machine offline"))
    rng = random.Random(2)
    benches = f.drifting_benchmarks(rng, drift=1.0)
    benches[0] = benches[0].model_copy(update={"error": "CUDA error: no kernel image"})
    results.append(f.result(run=5, checks=[OK_CHECK], benchmarks=benches))
    f.write(tmp_path / "runs", results)
    code, md = run_regress(tmp_path, tmp_path / "runs")
    assert code == 1 and "no kernel image" in md
    assert findings(tmp_path)["stable"] == [("benchmark-error", "gemm@v1[device=cpu] (ms)")]


def test_three_times_slower_few_sample_figures(tmp_path: Path) -> None:
    history = f.nights(8, ("stable",), seed=8, slow=("env_build_time", 3.0, 7))
    history[-1][0].benchmarks[3] = f.summarized(random.Random(1), "import_torch", 30.0, 2)
    f.write(tmp_path / "runs", [r for night in history for r in night])
    code, _md = run_regress(tmp_path, tmp_path / "runs")
    assert code == 1
    assert sorted(s.split("@")[0] for _k, s in findings(tmp_path)["stable"]) == [
        "env_build_time",
        "import_torch",
    ]


def test_persist_requires_the_slowdown_in_each_recent_run(tmp_path: Path) -> None:
    for slow_from, expected in ((11, 0), (10, 1)):
        base = tmp_path / str(slow_from)
        history = f.nights(12, ("stable",), seed=10, slow=("conv2d", 1.5, slow_from))
        f.write(base / "runs", [r for night in history for r in night])
        code, md = run_regress(base, base / "runs", "--persist", "2")
        assert code == expected, md
    assert "in each of the last 2 runs" in md
    assert run_regress(tmp_path / "11", tmp_path / "11" / "runs")[0] == 1


def test_compat_break_names_the_test_and_changed_packages(tmp_path: Path) -> None:
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
        (pair,) = compare(h).regressions
    assert pair.env == "latest" and [(x.kind, x.subject) for x in pair.findings] == [
        ("compat", broken)
    ]
    assert {(c.name, c.before, c.after) for c in pair.changes} == {
        ("torchaudio", "2.11.0", "2.11.1"),
        ("numpy", "2.3.4", "2.4.0"),
    }
    assert broken in md and message in md and "torchaudio" in md and "2.4.0" in md


def test_env_that_no_longer_builds_and_failed_expectation(tmp_path: Path) -> None:
    f.write(
        tmp_path / "runs",
        [
            f.result(run=0, env="stable", checks=[OK_CHECK]),
            f.result(run=0, env="cpu"),
            f.result(
                run=1, env="stable", outcome="verify-failed", checks=[BAD_CHECK], torch="2.10.0+cpu"
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
    assert pairs["cpu"].changes == []  # an unavailable env has no packages to list as removed


def test_named_baseline_and_unknown_baseline(tmp_path: Path) -> None:
    history = f.nights(10, ("stable",), seed=12, slow=("gemm", 1.4, 7))
    f.write(tmp_path / "runs", [r for night in history for r in night])
    with History(tmp_path / "h.sqlite") as h:
        h.ingest_dir(tmp_path / "runs")
        runs = [r.run_id for r in h.runs()]
        # the slowdown is three nights old: the window has it, so nothing stands out today ...
        assert compare(h).regressions == []
        # ... but against the results up to the night before it, today is slower
        named = compare(h, baseline=runs[6])
        (pair,) = named.regressions
        assert pair.perf["gemm@v1[device=cpu] (ms)"].window == (runs[0], runs[6])
        assert "up to run" in named.baseline_label
        with pytest.raises(UserError, match="not in the history"):
            compare(h, baseline="no-such-run")
        with pytest.raises(UserError, match="--window"):
            compare(h, options=JudgeOptions(window=0))


def test_first_run_and_empty_history(tmp_path: Path) -> None:
    f.write(tmp_path / "runs", f.first_run(with_benchmarks=True))
    code, md = run_regress(tmp_path, tmp_path / "runs")
    assert code == 0 and "nothing to compare with" in md and "insufficient history" in md
    code, md = run_regress(tmp_path / "empty", tmp_path / "empty" / "runs")
    assert code == 0 and "No results" in md and "None" not in md


def test_markdown_names_each_pairs_baseline(tmp_path: Path) -> None:
    f.write(tmp_path / "runs", clean(7))
    with History(tmp_path / "h.sqlite") as h:
        h.ingest_dir(tmp_path / "runs")
        md = render_markdown(compare(h))
    assert f"| stable | ci-cpu-1 | `{f.run_id(6)[0]}` | built | `{f.run_id(5)[0]}` |" in md
    assert "5 judged against up to 6 runs" in md
