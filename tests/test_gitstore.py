"""The results store on a git branch, against local bare repositories: pull, push, concurrent
pushes rebased and both kept, re-runs replacing rather than duplicating, and the failures that
must stop a push (a declined push, an unreachable remote, a checkout envlab did not make)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import factories as f
import pytest
from helpers import envlab, make_project

from envlab.outcome import Outcome
from envlab.results import gitstore
from envlab.results.gitstore import GitBranch, Remote, StoreError
from envlab.results.history import open_history
from envlab.results.store import Store


def git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    path = tmp_path / "remote.git"
    git("init", "--quiet", "--bare", str(path))
    return path


def branch_files(bare: Path, branch: str = gitstore.DEFAULT_BRANCH) -> list[str]:
    return sorted(git("--git-dir", str(bare), "ls-tree", "-r", "--name-only", branch).split())


def write_results(runs: Path, host: str, nights: range, envs: tuple[str, ...] = ("stable",)) -> int:
    results = [f.result(run=n, env=e, host_=f.host(host)) for n in nights for e in envs]
    f.write(runs, results)
    return len(results)


def store(bare: Path, checkout: Path) -> GitBranch:
    return GitBranch(Remote(str(bare)), checkout)


def test_push_creates_the_branch_and_pull_brings_every_result_back(
    bare: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "a" / "runs"
    write_results(runs, "h1", range(3), ("stable", "latest"))
    pushed = gitstore.push(store(bare, tmp_path / "a" / "ck"), runs)
    assert len(pushed.new) == 6 and not pushed.updated
    files = branch_files(bare)
    assert "README.md" in files
    assert sorted(p for p in files if p.startswith("runs/")) == sorted(
        "runs/" + p.relative_to(runs).as_posix() for p in Store(runs).files()
    )
    fresh = tmp_path / "b" / "runs"
    pulled = gitstore.pull(store(bare, tmp_path / "b" / "ck"), fresh)
    assert len(pulled.new) == 6
    assert [p.read_bytes() for p in Store(fresh).files()] == [
        p.read_bytes() for p in Store(runs).files()
    ]
    again = gitstore.push(store(bare, tmp_path / "a" / "ck"), runs)
    assert again.changed == 0 and again.unchanged == 6
    assert git("--git-dir", str(bare), "rev-list", "--count", gitstore.DEFAULT_BRANCH) == "1\n"


def test_a_rerun_replaces_the_result_at_its_path_never_duplicates(
    bare: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    first = f.result(
        run=0, env="stable", outcome=Outcome.UNAVAILABLE, reason=f.UNREACHABLE["legacy"]
    )
    path = f.write(runs, [first])[0]
    gitstore.push(store(bare, tmp_path / "ck"), runs)
    # the re-run of the same job: same run, host and env; created later
    rerun = f.result(run=0, env="stable")
    rerun.created = "2026-11-01T05:00:00+00:00"
    f.write(runs, [rerun])
    pushed = gitstore.push(store(bare, tmp_path / "ck"), runs)
    assert pushed.updated == [path.relative_to(runs).as_posix()] and not pushed.new
    assert [p for p in branch_files(bare) if p.startswith("runs/")] == [
        "runs/" + path.relative_to(runs).as_posix()
    ]
    stored = git(
        "--git-dir", str(bare), "show", f"{gitstore.DEFAULT_BRANCH}:runs/" + pushed.updated[0]
    )
    assert json.loads(stored)["outcome"] == Outcome.BUILT
    # an older copy elsewhere does not win back: pull keeps the newer, push does not regress it
    other = tmp_path / "other"
    f.write(other, [first])
    pulled = gitstore.pull(store(bare, tmp_path / "ck2"), other)
    assert pulled.updated and json.loads((other / pulled.updated[0]).read_text())["outcome"] == (
        Outcome.BUILT
    )


def test_pull_keeps_a_local_result_newer_than_the_stores(bare: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    f.write(runs, [f.result(run=0)])
    gitstore.push(store(bare, tmp_path / "ck"), runs)
    newer = f.result(run=0, failing={"compat_tests/test_blas.py::test_0": "boom"})
    newer.created = "2026-12-01T00:00:00+00:00"
    path = f.write(runs, [newer])[0]
    pulled = gitstore.pull(store(bare, tmp_path / "ck"), runs)
    assert pulled.kept == [path.relative_to(runs).as_posix()]
    assert json.loads(path.read_text())["created"] == newer.created


def test_push_skips_what_is_not_a_result_at_its_own_path(
    bare: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    good = f.write(runs, [f.result(run=0)])[0]
    corrupt = runs / "r1" / "h1" / "stable.json"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text("{not json", encoding="utf-8")
    misplaced = runs / "r2" / "h1" / "stable.json"
    misplaced.parent.mkdir(parents=True)
    misplaced.write_bytes(good.read_bytes())
    pushed = gitstore.push(store(bare, tmp_path / "ck"), runs)
    assert pushed.new == [good.relative_to(runs).as_posix()]
    reasons = dict(pushed.skipped)
    assert set(reasons) == {"r1/h1/stable.json", "r2/h1/stable.json"}
    assert "expected it at " + good.relative_to(runs).as_posix() in reasons["r2/h1/stable.json"]
    assert [p for p in branch_files(bare) if p.startswith("runs/")] == [
        "runs/" + good.relative_to(runs).as_posix()
    ]
    assert "skipped" in capsys.readouterr().err


def test_concurrent_pushes_are_rebased_and_both_kept(
    bare: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Job A fetched the tip; job B pushes before A does (from A's pre-push hook, so the race
    happens every time): A's push is rejected, A rebases on B's commit and pushes again."""
    seed = tmp_path / "seed"
    write_results(seed, "seed", range(1))
    gitstore.push(store(bare, tmp_path / "ck-seed"), seed)
    runs_a, runs_b = tmp_path / "a", tmp_path / "b"
    n_a = write_results(runs_a, "host-a", range(1, 3))
    n_b = write_results(runs_b, "host-b", range(1, 3), ("stable", "latest"))
    root = make_project(tmp_path / "proj")
    a = store(bare, tmp_path / "ck-a")
    a.sync()
    hook = a.path / ".git" / "hooks" / "pre-push"
    marker = tmp_path / "b-pushed"
    monkeypatch.setenv("ENVLAB_RUNS_DIR", str(runs_b))
    monkeypatch.setenv("ENVLAB_RESULTS_REMOTE", str(bare))
    monkeypatch.setenv("ENVLAB_RESULTS_CHECKOUT", str(tmp_path / "ck-b"))
    command = [sys.executable, "-m", "envlab.cli", "--root", str(root), "results", "push"]
    hook.write_text(
        "#!/bin/sh\n"
        f"[ -e '{marker}' ] && exit 0\n"
        f"touch '{marker}'\n"
        f"{' '.join(command)} >'{tmp_path / 'b.log'}' 2>&1\n",
        encoding="utf-8",
    )
    hook.chmod(0o755)
    gitstore.push(a, runs_a, backoff_s=0.0)
    assert marker.exists(), "job B's push ran inside job A's"
    assert "push rejected, another push landed first" in capsys.readouterr().err
    runs = [p for p in branch_files(bare) if p.startswith("runs/")]
    assert len(runs) == 1 + n_a + n_b
    assert {p.split("/")[2] for p in runs} == {"seed", "host-a", "host-b"}
    log = git("--git-dir", str(bare), "log", "--format=%s", gitstore.DEFAULT_BRANCH).splitlines()
    assert len(log) == 3
    # what B pushed meanwhile is now in A's runs too: a report made next forgets nothing
    assert len(Store(runs_a).files()) == 1 + n_a + n_b


def test_a_push_declined_by_the_remote_is_not_retried(bare: Path, tmp_path: Path) -> None:
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected branch' >&2\nexit 1\n", encoding="utf-8")
    hook.chmod(0o755)
    runs = tmp_path / "runs"
    write_results(runs, "h1", range(1))
    with pytest.raises(StoreError) as exc:
        gitstore.push(store(bare, tmp_path / "ck"), runs, backoff_s=0.0)
    message = str(exc.value)
    assert "git push failed" in message and "\n" not in message
    assert "attempt" not in message


def test_a_remote_that_keeps_moving_exhausts_the_attempts(bare: Path, tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    write_results(seed, "seed", range(1))
    gitstore.push(store(bare, tmp_path / "ck-seed"), seed)
    a = store(bare, tmp_path / "ck-a")
    a.sync()
    # every push of A finds that someone else advanced the branch just before it
    branch = f"refs/heads/{gitstore.DEFAULT_BRANCH}"
    hook = a.path / ".git" / "hooks" / "pre-push"
    hook.write_text(
        "#!/bin/sh\n"
        f"export GIT_DIR='{bare}'\n"
        f"tip=$(git rev-parse {branch})\n"
        'new=$(git -c user.name=x -c user.email=x@x commit-tree "$tip^{tree}" -p "$tip" -m x)\n'
        f'git update-ref {branch} "$new"\n',
        encoding="utf-8",
    )
    hook.chmod(0o755)
    runs = tmp_path / "runs"
    write_results(runs, "h1", range(1))
    with pytest.raises(StoreError, match="expected the push to land within 2 attempts"):
        gitstore.push(a, runs, attempts=2, backoff_s=0.0)


def test_an_unreachable_remote_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as exc:
        gitstore.pull(store(tmp_path / "missing.git", tmp_path / "ck"), tmp_path / "runs")
    assert "git ls-remote failed" in str(exc.value) and "reachable" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_credentials_in_a_remote_url_are_never_logged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("envlab.log._VERBOSE", True)  # envlab -v: every git command line
    remote = Remote("http://user:s3cret@127.0.0.1:9/store.git")
    with pytest.raises(StoreError) as exc:
        gitstore.pull(GitBranch(remote, tmp_path / "ck"), tmp_path / "runs")
    err = capsys.readouterr().err
    assert "s3cret" not in str(exc.value) + err
    assert "***@127.0.0.1" in str(exc.value) and "$ git" in err and "***@127.0.0.1" in err


def test_a_checkout_envlab_did_not_make_is_never_reset(bare: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "project"
    foreign.mkdir()
    git("init", "--quiet", str(foreign))
    (foreign / "work.txt").write_text("precious", encoding="utf-8")
    with pytest.raises(StoreError, match="found another git repository"):
        gitstore.pull(store(bare, foreign), tmp_path / "runs")
    assert (foreign / "work.txt").read_text(encoding="utf-8") == "precious"
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x", encoding="utf-8")
    with pytest.raises(StoreError, match="expected an empty directory"):
        gitstore.pull(store(bare, full), tmp_path / "runs")


def test_push_without_results_is_an_error(bare: Path, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="expected results under"):
        gitstore.push(store(bare, tmp_path / "ck"), tmp_path / "runs")


def test_the_remote_comes_from_options_then_environment_then_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    monkeypatch.delenv(gitstore.REMOTE_VAR, raising=False)
    monkeypatch.delenv(gitstore.BRANCH_VAR, raising=False)
    with pytest.raises(StoreError, match="expected --remote URL, \\$ENVLAB_RESULTS_REMOTE"):
        gitstore.resolve_remote(root)
    git("init", "--quiet", str(root))
    git("remote", "add", "origin", "https://example.com/lab.git", cwd=root)
    assert gitstore.resolve_remote(root) == Remote("https://example.com/lab.git", "envlab-results")
    monkeypatch.setenv(gitstore.REMOTE_VAR, "ssh://git@example.com/results.git")
    monkeypatch.setenv(gitstore.BRANCH_VAR, "lab/results")
    assert gitstore.resolve_remote(root) == Remote(
        "ssh://git@example.com/results.git", "lab/results"
    )
    assert gitstore.resolve_remote(root, "https://x/y.git", "b").url == "https://x/y.git"
    with pytest.raises(StoreError, match="expected a plain branch name, found '--upload-pack=x'"):
        gitstore.resolve_remote(root, branch="--upload-pack=x")


def test_the_history_is_rebuilt_from_the_store_with_every_night(bare: Path, tmp_path: Path) -> None:
    """The day the local index and results are gone, a pull brings every night back."""
    runs = tmp_path / "ci" / "runs"
    n = write_results(runs, "h1", range(4), ("stable", "latest"))
    gitstore.push(store(bare, tmp_path / "ci" / "ck"), runs)
    fresh_runs, db = tmp_path / "new" / "runs", tmp_path / "new" / "history.sqlite"
    gitstore.pull(store(bare, tmp_path / "new" / "ck"), fresh_runs)
    history, _ = open_history(db, fresh_runs)
    with history:
        assert history.count_results() == n
        assert [r.run_id for r in history.runs()] == [f.run_id(i)[0] for i in range(4)]


def test_cli_pull_and_push(bare: Path, tmp_path: Path) -> None:
    root = make_project(tmp_path)
    env = {"ENVLAB_RESULTS_REMOTE": str(bare), "ENVLAB_RUNS_DIR": str(tmp_path / "runs")}
    write_results(tmp_path / "runs", "h1", range(2))
    done = envlab("--root", str(root), "results", "push", env=env)
    assert done.returncode == 0, done.stderr
    assert "results push to" in done.stderr and "2 new" in done.stderr
    env["ENVLAB_RUNS_DIR"] = str(tmp_path / "runs2")
    done = envlab(
        "--root", str(root), "results", "pull", "--checkout", str(tmp_path / "c2"), env=env
    )
    assert done.returncode == 0, done.stderr
    assert len(Store(tmp_path / "runs2").files()) == 2
    done = envlab("--root", str(root), "results", "pull", "--branch", "a..b", env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "envlab: error: results branch: expected a plain branch name, found 'a..b'"
    )
