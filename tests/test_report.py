"""The report: self-contained HTML, a step-summary Markdown, PNG plots, a real browser render."""

from __future__ import annotations

import base64
import io
import random
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import factories as f
import matplotlib.image
import pytest

from envlab.outcome import Outcome
from envlab.report import render
from envlab.report.judge import Verdict
from envlab.report.regress import compare
from envlab.report.render import ProblemView, ReportView, build_report, render_markdown
from envlab.results.history import History, RunInfo
from envlab.results.schema import Check, Result

BROKEN = "compat_tests/test_torchaudio.py::test_1"
HOSTS = (
    f.host("cpu-runner"),
    f.host("gpu-5090", gpu="NVIDIA RTX 5090", cc="12.0", driver="580.95"),
)


def multi_host_history(runs_dir: Path, runs: int = 6) -> None:
    """Two hosts merged into one tree; the last run slows matmul and breaks torchaudio in latest."""
    rng = random.Random(11)
    results = []
    last = runs - 1
    for run in range(runs):
        for h in HOSTS:
            for env in ("stable", "latest"):
                broken = run == last and env == "latest"
                results.append(
                    f.result(
                        run=run,
                        env=env,
                        host_=h,
                        benchmarks=f.default_benchmarks(
                            rng, env, slow={"matmul": 1.5} if broken else None
                        ),
                        failing={BROKEN: "compiled with different CUDA versions (13.2 vs 13.0)"}
                        if broken
                        else None,
                        dists={"torchaudio": "2.11.1"} if broken else None,
                    )
                )
            results.append(f.unavailable(run, "cpu", h))
    f.write(runs_dir, results)


def images(html: str) -> list[bytes]:
    return [
        base64.b64decode(m)
        for m in re.findall(r'<img[^>]*src="data:image/png;base64,([^"]+)"', html)
    ]


def assert_self_contained(html: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert not re.search(r"<link\b|<script\b|@import|url\(", html, re.IGNORECASE)
    srcs = re.findall(r'<img[^>]*\bsrc="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)


def view_of(tmp_path: Path, results: list[Result], **kw: object) -> tuple[ReportView, str, str]:
    """Build the report over ``results``: (its view model, HTML, Markdown)."""
    f.write(tmp_path / "runs", results)
    paths = build_report(tmp_path / "runs", tmp_path / "out", tmp_path / "h.sqlite", **kw)  # type: ignore[arg-type]
    assert paths.view is not None
    html = paths.html.read_text(encoding="utf-8")
    return paths.view, html, paths.markdown.read_text(encoding="utf-8")


def test_first_report_two_built_three_unavailable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f.write(tmp_path / "runs", f.first_run())
    assert render.main(tmp_path / "runs", tmp_path / "out", tmp_path / "h.sqlite") == 0
    out = tmp_path / "out"
    html = (out / "report.html").read_text(encoding="utf-8")
    md = (out / "report.md").read_text(encoding="utf-8")
    assert_self_contained(html)
    assert {p.name for p in (out / "plots").iterdir()} == {"compat.png", "packages.png"}
    for png in images(html):
        assert matplotlib.image.imread(io.BytesIO(png)).shape[1] > 600  # decodes, is wide enough
    for env in ("stable", "latest", "nightly", "cpu", "legacy"):
        assert f"<b>{env}</b>" in html and f"| **{env}** |" in md
    for reason in f.UNREACHABLE.values():
        assert reason in md
        assert reason.replace("'", "&#39;") in html
    header = "| env | outcome | run | age | torch | CUDA | pass | fail | skip | build | reason |"
    assert header in md
    run0 = f.run_id(0)[0]
    row = rf"\| \*\*stable\*\* \| ✅ built \| `{run0}` \| \d+ d \| 2.10.0\+cu128 \| 12.8 \|"
    assert re.search(row + r" 30 \| 0 \| 6 \|", md)
    assert "**2 built**, **3 unavailable**, no regression" in md
    assert "No env has recorded benchmarks yet" in html
    assert "| `torch` | 2.15.0 | 2.10.0+cu128 |" in md  # package differences between the two envs
    assert "None" not in md
    err = capsys.readouterr().err
    assert str(out / "report.html") in err and str(out / "plots" / "compat.png") in err


def test_sessions_one_env_per_run_show_the_state_of_every_env(tmp_path: Path) -> None:
    """`bench-stable`, `test-latest`, `report`: two runs, one env each; both at the top."""
    rng = random.Random(4)
    bench_stable = f.result(run=0, env="stable", benchmarks=f.drifting_benchmarks(rng, drift=1.0))
    latest = f.result(
        run=1, env="latest", outcome="verify-failed", reason="torchaudio built for CUDA 13.0"
    )
    unavailable = [f.unavailable(1, env) for env in ("nightly", "cpu", "legacy")]
    now = f.START + timedelta(days=1, hours=3)
    view, html, md = view_of(tmp_path, [bench_stable, latest, *unavailable], now=now)
    assert [(e.env, e.outcome, e.run_id, e.age) for e in view.envs[:2]] == [
        ("latest", Outcome.VERIFY_FAILED, f.run_id(1)[0], "3 h"),
        ("stable", Outcome.BUILT, f.run_id(0)[0], "27 h"),
    ]
    assert [e.outcome for e in view.envs[2:]] == [Outcome.UNAVAILABLE] * 3
    assert view.outcome_counts == {
        Outcome.VERIFY_FAILED: 1,
        Outcome.BUILT: 1,
        Outcome.UNAVAILABLE: 3,
    }
    assert "**1 verify-failed**, **1 built**, **3 unavailable**" in md
    assert {(b.env, b.run_id, b.age) for b in view.benches} == {("stable", f.run_id(0)[0], "27 h")}
    assert all(b.verdict is Verdict.INSUFFICIENT for b in view.benches)
    assert "⏳ insufficient history: 0 of 5 earlier runs" in md
    assert "No env has recorded benchmarks" not in html and "not judged yet" in md
    # the runs table lists each run's outcomes, most severe first
    assert re.findall(
        r'<span class="badge o-\w+">(\d+ [\w-]+)</span>', html.split('id="runs-table"')[1]
    ) == [
        "1 verify-failed",
        "3 unavailable",
        "1 built",
    ]


def test_identical_runs_draw_no_marks_and_a_slowdown_exactly_the_judges(tmp_path: Path) -> None:
    view, html, md = view_of(
        tmp_path / "aa", [r for n in f.nights(30, ("stable", "latest"), seed=4) for r in n]
    )
    assert view.history_points == 30 * 2 * len(f.QUICK_FIGURES) and view.marked == []
    assert "0 regression point(s) marked" in html and "no regression" in md
    slow = f.nights(30, ("stable", "latest"), seed=4, slow=("conv2d", 1.35, 24))
    view, html, md = view_of(tmp_path / "slow", [r for n in slow for r in n])
    expected = []
    with History(tmp_path / "slow" / "h.sqlite") as h:
        for run in h.runs():
            for p in compare(h, newest_run=run.run_id).pairs:
                expected += [(x.subject, p.env, p.host, run.run_id) for x in p.findings]
    assert expected and sorted(view.marked) == sorted(expected)
    assert f"{len(expected)} regression point(s) marked" in html
    # the latest night's verdicts are the ones shown per benchmark, and in the summary
    flagged = {(b.env, b.key) for b in view.benches if b.verdict is Verdict.REGRESSION}
    latest = f.run_id(29)[0]
    assert flagged == {(env, key) for key, env, _h, run in expected if run == latest}


def test_multi_host_history_report(tmp_path: Path) -> None:
    multi_host_history(tmp_path / "runs")
    (tmp_path / "out" / "plots").mkdir(parents=True)
    stale = tmp_path / "out" / "plots" / "benchmarks.png"
    stale.write_bytes(b"an older report's plot")
    paths = build_report(tmp_path / "runs", tmp_path / "out", tmp_path / "h.sqlite", options=None)
    names = sorted(p.name for p in paths.plots)
    bench = [n for n in names if n.startswith("bench-")]
    assert sorted(set(names) - set(bench)) == ["compat.png", "history.png", "packages.png"]
    # one plot per benchmark across envs and hosts; nothing left from an older report
    assert len(bench) == 3 and {n.split("-v1-")[0] for n in bench} == {
        "bench-conv2d",
        "bench-matmul",
        "bench-matmul-throughput",
    }
    assert not stale.exists()
    assert sorted(p.name for p in (tmp_path / "out" / "plots").iterdir()) == names
    html = paths.html.read_text(encoding="utf-8")
    md = paths.markdown.read_text(encoding="utf-8")
    assert_self_contained(html)
    assert len(images(html)) == 6
    assert "| env | host | outcome |" in md
    for h in HOSTS:
        for env in ("stable", "latest", "cpu"):
            assert re.search(rf"\| \*\*{env}\*\* \| {h.id} \|", md)
    # the planted breaks of the last run, with what changed underneath
    assert 'id="regression-table"' in html and BROKEN in html
    assert "## Regressions in each env's latest result" in md and BROKEN in md
    assert "torchaudio 2.11.0 → 2.11.1" in md
    assert "the 5 result(s) before" not in md and "run None" not in md


def test_failed_expectations_and_escaping(tmp_path: Path) -> None:
    bad = Check(
        name="torch.version.cuda",
        ok=False,
        expected="12.8",
        found="None",
        layer="stack",
        message="stack package <b>timm</b> pulled torch 2.10.0+cpu",
    )
    f.write(
        tmp_path / "runs",
        [f.result(env="stable", outcome="verify-failed", checks=[bad], torch="2.10.0+cpu")],
    )
    paths = build_report(tmp_path / "runs", tmp_path / "out", tmp_path / "h.sqlite")
    html = paths.html.read_text(encoding="utf-8")
    md = paths.markdown.read_text(encoding="utf-8")
    assert (
        'id="failed-checks"' in html
        and "&lt;b&gt;timm&lt;/b&gt;" in html
        and "<b>timm</b>" not in html
    )
    assert "| stable | `torch.version.cuda` | `12.8` | `None` | stack |" in md
    assert "❌ verify-failed" in md


def test_skipped_files_are_listed_and_report_survives(tmp_path: Path) -> None:
    f.write(tmp_path / "runs", f.first_run())
    bad = tmp_path / "runs" / "r" / "h" / "broken.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json", encoding="utf-8")
    paths = build_report(tmp_path / "runs", tmp_path / "out", tmp_path / "h.sqlite")
    html = paths.html.read_text(encoding="utf-8")
    assert 'id="skipped-table"' in html and "broken.json" in html and "invalid JSON" in html
    assert "broken.json" in paths.markdown.read_text(encoding="utf-8")


def test_empty_history(tmp_path: Path) -> None:
    paths = build_report(tmp_path / "runs", tmp_path / "out", tmp_path / "h.sqlite")
    assert "No results yet" in paths.html.read_text(encoding="utf-8")
    assert "No results yet" in paths.markdown.read_text(encoding="utf-8")


def test_markdown_fits_a_step_summary() -> None:
    view = ReportView(generated="now", newest=None, total_runs=0, total_results=0, multi_host=False)
    view.newest = RunInfo("r1", "2026-11-01", 1, 1)
    from envlab.report.judge import JudgeOptions
    from envlab.report.regress import RegressReport

    view.regress = RegressReport("r1", JudgeOptions(), current_state=True)
    view.failed_tests = [
        ProblemView("stable", "h", f"compat_tests/test_x.py::test_{i}", None, "failed", "x" * 2000)
        for i in range(5000)
    ]
    md = render_markdown(view)
    assert len(md.encode("utf-8")) < render.MD_LIMIT
    assert "more in the HTML report" in md


def test_age_in_the_largest_unit_that_fits() -> None:
    now = f.START + timedelta(days=3)
    assert [
        render.age((now - d).isoformat(), now)
        for d in (timedelta(minutes=7), timedelta(hours=5), timedelta(days=3))
    ] == [
        "7 min",
        "5 h",
        "3 d",
    ]
    assert render.age((now + timedelta(hours=1)).isoformat(), now) == "0 min"


@pytest.mark.browser
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    multi_host_history(tmp_path / "runs", runs=3)
    paths = build_report(tmp_path / "runs", tmp_path / "out", tmp_path / "h.sqlite")
    exe = next(
        shutil.which(e)
        for e in ("chromium", "chromium-browser", "google-chrome")
        if shutil.which(e)
    )
    common = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1400,2000",
    ]
    url = paths.html.resolve().as_uri()
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*common, f"--screenshot={shot}", url], check=True, capture_output=True, timeout=120
    )
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2000, 1400)
    assert pixels[..., :3].std() > 0.05  # rendered content, not a blank page
    dom = subprocess.run(
        [*common, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    for element in (
        'id="env-table"',
        'id="fig-compat"',
        'id="fig-benchmarks"',
        'id="fig-bench-1"',
        'id="fig-history"',
        'id="fig-packages"',
        'id="regression-table"',
        'id="newest-run"',
    ):
        assert element in dom
    assert dom.count("<tr>") > 10


def test_csv_tables_for_notebooks(tmp_path: Path) -> None:
    """report also writes flat results/benchmarks tables (pandas) that match the history."""
    import pandas as pd

    runs, rng = tmp_path / "runs", random.Random(3)
    f.write(
        runs,
        [
            f.result(run=i, env=env, benchmarks=f.default_benchmarks(rng, env))
            for i in range(3)
            for env in ("stable", "latest")
        ]
        + [f.unavailable(2, "cpu")],
    )
    paths = render.build_report(runs, tmp_path / "out", tmp_path / "h.sqlite")
    assert [p.name for p in paths.tables] == ["results.csv", "benchmarks.csv"]
    results = pd.read_csv(paths.tables[0])
    assert len(results) == 7 and set(results["env"]) == {"stable", "latest", "cpu"}
    built = results[results["outcome"] == "built"]
    assert (built["compat_passed"] > 0).all()
    assert results.loc[results["env"] == "cpu", "compat_passed"].isna().all()
    benches = pd.read_csv(paths.tables[1])
    assert len(benches) == 6 * 3 and (benches["median"] > 0).all()
