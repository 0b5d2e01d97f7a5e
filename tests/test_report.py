"""The report: self-contained HTML, a step-summary-sized Markdown, PNG plots, a real browser render."""

from __future__ import annotations

import base64
import io
import random
import re
import shutil
import subprocess
from pathlib import Path

import factories as f
import matplotlib.image
import pytest

from envlab.report import render
from envlab.report.render import ProblemView, ReportView, build_report, render_markdown
from envlab.results.schema import Check

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
                            rng, env, slow={"matmul": 1.2} if broken else None
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
    assert "| env | outcome | torch | CUDA | pass | fail | skip | build | reason |" in md
    assert "| **stable** | ✅ built | 2.10.0+cu128 | 12.8 | 30 | 0 | 6 |" in md
    assert "first run in the history" in html and "No benchmarks ran" in html
    assert "| `torch` | 2.15.0 | 2.10.0+cu128 |" in md  # package differences between the two envs
    err = capsys.readouterr().err
    assert str(out / "report.html") in err and str(out / "plots" / "compat.png") in err


def test_multi_host_history_report(tmp_path: Path) -> None:
    multi_host_history(tmp_path / "runs")
    paths = build_report(tmp_path / "runs", tmp_path / "out", tmp_path / "h.sqlite")
    assert sorted(p.name for p in paths.plots) == [
        "benchmarks.png",
        "compat.png",
        "history.png",
        "packages.png",
    ]
    html = paths.html.read_text(encoding="utf-8")
    md = paths.markdown.read_text(encoding="utf-8")
    assert_self_contained(html)
    assert len(images(html)) == 4
    # Host dimension: every (env, host) of the merged tree has its row.
    assert "| env | host | outcome |" in md
    for h in HOSTS:
        for env in ("stable", "latest", "cpu"):
            assert re.search(rf"\| \*\*{env}\*\* \| {h.id} \|", md)
    # The planted regressions are in both outputs, with what changed underneath.
    assert 'id="regression-table"' in html and BROKEN in html
    assert "## Regressions vs the 5 result(s) before" in md and "matmul@v1" in md and BROKEN in md
    assert "torchaudio 2.11.0 → 2.11.1" in md
    assert "regression point(s) marked" in html


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
    from envlab.results.history import RunInfo

    view.newest = RunInfo("r1", "2026-11-01", 1, 1)
    view.failed_tests = [
        ProblemView("stable", "h", f"compat_tests/test_x.py::test_{i}", None, "failed", "x" * 2000)
        for i in range(5000)
    ]
    md = render_markdown(view)
    assert len(md.encode("utf-8")) < render.MD_LIMIT
    assert "more in the HTML report" in md


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
        'id="fig-history"',
        'id="fig-packages"',
        'id="regression-table"',
        'id="newest-run"',
    ):
        assert element in dom
    assert dom.count("<tr>") > 10


def test_csv_tables_for_notebooks(tmp_path: Path) -> None:
    """report also writes flat results/benchmarks tables (pandas) that match the history."""
    import random

    import factories
    import pandas as pd

    from envlab.report import render

    runs, rng = tmp_path / "runs", random.Random(3)
    factories.write(
        runs,
        [
            factories.result(run=i, env=env, benchmarks=factories.default_benchmarks(rng, env))
            for i in range(3)
            for env in ("stable", "latest")
        ]
        + [factories.unavailable(2, "cpu")],
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
