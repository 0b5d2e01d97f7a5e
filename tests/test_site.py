"""The published report site on its own branch: a page per night at a stable path, the latest
report, an index of every night; a re-published night replaces its page."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import envlab, make_project

from envlab.report import site
from envlab.results.gitstore import GitBranch, Remote, StoreError


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    path = tmp_path / "remote.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(path)], check=True)
    return path


def report(tmp_path: Path, marker: str) -> Path:
    """A stand-in for `envlab report`'s output directory."""
    out = tmp_path / f"latest-{marker}"
    (out / "plots").mkdir(parents=True)
    (out / "report.html").write_text(f"<html>{marker}</html>", encoding="utf-8")
    (out / "report.md").write_text(f"# {marker}", encoding="utf-8")
    (out / "regressions.md").write_text(f"regressions {marker}", encoding="utf-8")
    (out / "plots" / "a.png").write_bytes(b"png")
    return out


def tree(bare: Path, branch: str = site.DEFAULT_BRANCH) -> list[str]:
    done = subprocess.run(
        ["git", "--git-dir", str(bare), "ls-tree", "-r", "--name-only", branch],
        check=True,
        capture_output=True,
        text=True,
    )
    return sorted(done.stdout.split())


def test_each_night_keeps_its_page_and_the_latest_moves_on(bare: Path, tmp_path: Path) -> None:
    branch = GitBranch(Remote(str(bare), site.DEFAULT_BRANCH), tmp_path / "site")
    out = site.publish(branch, report(tmp_path, "one"), "gh-1", backoff_s=0.0)
    site.publish(branch, report(tmp_path, "two"), "gh-2", backoff_s=0.0)
    assert out == tmp_path / "site"
    assert tree(bare) == [
        "index.html",
        "latest/index.html",
        "latest/plots/a.png",
        "latest/regressions.md",
        "latest/report.html",
        "latest/report.md",
        "nights.json",
        "nights/gh-1/index.html",
        "nights/gh-1/regressions.md",
        "nights/gh-1/report.md",
        "nights/gh-2/index.html",
        "nights/gh-2/regressions.md",
        "nights/gh-2/report.md",
    ]
    assert (out / "nights" / "gh-1" / "index.html").read_text() == "<html>one</html>"
    assert (out / "latest" / "index.html").read_text() == "<html>two</html>"
    index = (out / "index.html").read_text(encoding="utf-8")
    assert index.index('href="nights/gh-2/"') < index.index('href="nights/gh-1/"')
    assert 'href="latest/"' in index


def test_republishing_a_night_replaces_its_page(bare: Path, tmp_path: Path) -> None:
    branch = GitBranch(Remote(str(bare), site.DEFAULT_BRANCH), tmp_path / "site")
    site.publish(branch, report(tmp_path, "attempt1"), "gh-7", backoff_s=0.0)
    site.publish(branch, report(tmp_path, "attempt2"), "gh-7", backoff_s=0.0)
    nights = json.loads((branch.path / "nights.json").read_text(encoding="utf-8"))
    assert list(nights) == ["gh-7"]
    assert (branch.path / "nights" / "gh-7" / "index.html").read_text() == "<html>attempt2</html>"


def test_nothing_to_publish_is_one_line(bare: Path, tmp_path: Path) -> None:
    branch = GitBranch(Remote(str(bare), site.DEFAULT_BRANCH), tmp_path / "site")
    with pytest.raises(StoreError, match="expected a report in .* found none"):
        site.publish(branch, tmp_path / "none", "gh-1")
    root = make_project(tmp_path)
    (root / "reports" / "latest").mkdir(parents=True)
    (root / "reports" / "latest" / "report.html").write_text("x", encoding="utf-8")
    env = {"ENVLAB_RESULTS_REMOTE": str(bare), "ENVLAB_RUN_ID": ""}
    done = envlab("--root", str(root), "results", "publish", env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "envlab: error: publish: expected the run id of the night to publish, found none"
    )
    refs = subprocess.run(
        ["git", "--git-dir", str(bare), "for-each-ref"], check=True, capture_output=True, text=True
    )
    assert refs.stdout == ""  # nothing was pushed
    done = envlab("--root", str(root), "results", "publish", "--run", "gh-3", env=env)
    assert done.returncode == 0, done.stderr
    assert "nights/gh-3/index.html" in tree(bare)


def test_past_the_newest_nights_a_page_keeps_its_summary_at_the_same_url(
    bare: Path, tmp_path: Path
) -> None:
    branch = GitBranch(Remote(str(bare), site.DEFAULT_BRANCH), tmp_path / "site")
    first = report(tmp_path, "one")
    (first / "report.md").write_text("# one <script>alert(1)</script>", encoding="utf-8")
    for n, out in enumerate([first, report(tmp_path, "two"), report(tmp_path, "three")], 1):
        site.publish(branch, out, f"gh-{n}", keep=2, backoff_s=0.0)
    nights = json.loads((branch.path / "nights.json").read_text(encoding="utf-8"))
    assert {run: "pruned" in meta for run, meta in nights.items()} == {
        "gh-1": True,
        "gh-2": False,
        "gh-3": False,
    }
    page = (branch.path / "nights" / "gh-1" / "index.html").read_text(encoding="utf-8")
    assert "<html>one</html>" not in page and "kept for 2 nights" in page
    assert "# one &lt;script&gt;alert(1)&lt;/script&gt;" in page and "regressions one" in page
    assert (branch.path / "nights" / "gh-2" / "index.html").read_text() == "<html>two</html>"
    assert "nights/gh-1/index.html" in tree(bare)
    with pytest.raises(StoreError, match="expected to keep at least 1 night's full report"):
        site.publish(branch, first, "gh-4", keep=0)
