"""A local rehearsal of the scheduled workflow, driven by the workflow file itself.

Three nights of `.github/workflows/scheduled.yml`, played by tests/rehearsal.py: the plan job asks
the noxfile for the matrix, the env jobs build small envs from a local index on three simulated
hosts (a hosted CPU runner and two self-hosted GPU runners, each with its own `ENVLAB_HOST_ID`),
the report job pulls the results store from a bare git repository (the "GitHub" remote), merges
the night's artifacts, pushes, reports, regresses and publishes the site, and the Pages job
deploys it. Every job starts on a fresh runner: whatever the report job knows of earlier nights
comes from the store. Night 2's report runner has no history database (gone, as an evicted cache
would be) and must rebuild it with every earlier night; night 3's has the one night 2 left (as a
persistent runner would), which is brought up to date. Night 2 also has a lab machine pushing to
the store at the same moment as the report job (both kept); night 3 has a planted break (a new
release of a stack package drags NVIDIA wheels into a CPU-only env), which regress must flag.
Then a night whose env jobs all fail, and its re-run.

The env jobs build with `--no-compat` and no benchmarks (tests/rehearsal_nox.py says why), and
each night builds its envs from scratch as fresh runners would; one small env takes a few seconds.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import factories as f
import pytest
from helpers import make_project
from localindex import LocalIndexes, serve
from rehearsal import BeforeStep, JobRun, Rehearsal

from envlab.outcome import Outcome
from envlab.results.history import open_history

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "scheduled.yml"
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
BRANCH = "envlab-results"
SPEC = """
description = "rehearsal env {name}"
python = "{python}"
platforms = ["linux-64"]
tags = {tags}
[torch]
packages = ["torch==2.10.0"]
index = "torchidx"
[stack]
add = [{stack}]
[expect]
torch-version = "2.10.0"
torch-local = "cpu"
cpu-only = true
"""
ENVS = {
    "alpha": (["cuda"], '"timmish"'),
    "beta": (["cuda"], '"timmish", "betapkg"'),
    "gamma": ([], '"timmish"'),
}
# Self-hosted GPU runners: which one picks up each env's GPU job (the same every night).
GPU_RUNNERS = {"alpha": "gpu-a", "beta": "gpu-b"}
HOSTS = {"linux-cpu", "gpu-a", "gpu-b"}
JOBS_PER_NIGHT = 5  # three envs on the CPU runner, the two cuda-tagged ones on a GPU runner


def populate(idx: LocalIndexes) -> None:
    idx.add("torchidx", "torch", "2.10.0+cpu", ["filelock"])
    idx.add("torchidx", "filelock", "3.0")
    idx.add("pypi", "filelock", "3.0")
    idx.add("pypi", "timmish", "1.0", ["torch>=2"])
    idx.add("pypi", "betapkg", "1.0")
    idx.add("pypi", "nvidia-cublas-cu12", "12.8.4.1")


class Lab:
    """The repository, its "GitHub" remote (a bare repository), the runners' environment."""

    def __init__(self, tmp: Path, idx: LocalIndexes) -> None:
        self.tmp = tmp
        self.idx = idx
        envs = {
            name: SPEC.format(name=name, python=PY, tags=json.dumps(tags), stack=stack)
            for name, (tags, stack) in ENVS.items()
        }
        self.repo = make_project(
            tmp / "repo",
            indexes={
                "pypi": "https://pypi.org/simple",
                "torchidx": "https://download.pytorch.org/whl/cpu",
            },
            envs=envs,
            stack=[],
        )
        shutil.copy(ROOT / "noxfile.py", self.repo / "noxfile.py")
        (self.repo / ".github" / "workflows").mkdir(parents=True)
        shutil.copy(WORKFLOW, self.repo / ".github" / "workflows" / "scheduled.yml")
        self.server = tmp / "github"
        self.remote = self.server / "lab" / "envlab.git"
        subprocess.run(["git", "init", "--quiet", "--bare", str(self.remote)], check=True)

    def machine_env(self, night: int, torch_index: str | None = None) -> dict[str, str]:
        """The runners' environment: index mirrors (as an org sets them on its runners), a uv
        cache per night (tonight's index, never yesterday's cached page), nothing of envlab's."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ENVLAB_", "GIT_"))}
        env.update(
            ENVLAB_INDEX_PYPI=self.idx.url("pypi"),
            ENVLAB_INDEX_TORCHIDX=torch_index or self.idx.url("torchidx"),
            UV_CACHE_DIR=str(self.tmp / "uv-cache" / str(night)),
        )
        return env

    def rehearsal(
        self,
        run_id: int,
        night: int,
        *,
        attempt: int = 1,
        torch_index: str | None = None,
        before_step: BeforeStep | None = None,
    ) -> Rehearsal:
        def runner(job: str, runs_on: object, matrix: dict[str, object]) -> str:
            if matrix.get("self_hosted"):
                assert runs_on == ["self-hosted", "gpu"], runs_on
                return GPU_RUNNERS[str(matrix["env"])]
            return f"hosted-{job}"

        return Rehearsal(
            workflow=self.repo / ".github" / "workflows" / "scheduled.yml",
            repo=self.repo,
            work=self.tmp / "nights" / f"{run_id}",
            run_id=run_id,
            attempt=attempt,
            server_url=self.server.as_uri(),
            repository="lab/envlab",
            machine_env=self.machine_env(night, torch_index),
            runner_name=runner,
            before_step=before_step,
        )

    def store_files(self, branch: str = BRANCH) -> list[str]:
        done = subprocess.run(
            ["git", "--git-dir", str(self.remote), "ls-tree", "-r", "--name-only", branch],
            check=True,
            capture_output=True,
            text=True,
        )
        return sorted(p for p in done.stdout.split() if p.startswith("runs/"))

    def stored(self, path: str) -> dict:
        done = subprocess.run(
            ["git", "--git-dir", str(self.remote), "show", f"{BRANCH}:{path}"],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(done.stdout)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with serve(tmp_path / "index") as idx:
        populate(idx)
        yield Lab(tmp_path, idx)


def logs(job: JobRun) -> str:
    return "\n".join(s.log for s in job.steps)


def check_night_jobs(jobs: dict[str, list[JobRun]], run_id: int) -> list[JobRun]:
    (plan,) = jobs["plan"]
    assert plan.result == "success", logs(plan)
    envs = jobs["env"]
    assert len(envs) == JOBS_PER_NIGHT
    assert {j.matrix["session"] for j in envs} == {f"test-{e}" for e in ENVS}
    for job in envs:
        assert job.workspace is not None
        host = job.runner if job.matrix["self_hosted"] else job.matrix["host"]
        result = (
            job.workspace / "reports" / "runs" / f"gh-{run_id}" / host / f"{job.matrix['env']}.json"
        )
        assert result.is_file(), logs(job)
    return envs


def history_runs(report: JobRun) -> tuple[int, list[str]]:
    assert report.workspace is not None
    history, _ = open_history(report.workspace / "reports" / "history.sqlite")
    with history:
        return history.count_results(), [r.run_id for r in history.runs()]


class Concurrent:
    """A lab machine pushing its own result to the store while the report job pushes tonight's.

    The lab's push runs from the report job's pre-push hook: after the report job fetched the
    store's tip and committed on it, before its push lands. So the report job's push is rejected
    and must rebase on the lab's commit, every time (no timing involved)."""

    STEP = "Push tonight's results to the store"

    def __init__(self, lab: Lab) -> None:
        base = lab.tmp / "labws"
        self.runs = base / "runs"
        result = f.result(run=0, env="alpha", host_=f.host("lab-ws"))
        # made on the lab machine this evening, after last night's jobs, before tonight's
        result.created = datetime.now(UTC).isoformat()
        result.run_id = "lab-evening"
        self.path = f.write(self.runs, [result])[0]
        self.log = base / "push.log"
        self.rc = base / "push.rc"
        self.env = {
            "ENVLAB_RUNS_DIR": str(self.runs),
            "ENVLAB_RESULTS_REMOTE": lab.remote.as_uri(),
            "ENVLAB_RESULTS_CHECKOUT": str(base / "store"),
        }
        self.root = make_project(base)

    def __call__(self, job: JobRun, step: str, workspace: Path) -> None:
        if job.job != "report" or step != self.STEP:
            return
        checkout = workspace / ".envlab" / "results-store"
        assert (checkout / ".git").is_dir(), "the pull step made the store's checkout"
        hook = checkout / ".git" / "hooks" / "pre-push"
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env.items())
        push = [sys.executable, "-m", "envlab.cli", "--root", str(self.root), "results", "push"]
        hook.write_text(
            "#!/bin/sh\n"
            f"[ -e '{hook}.done' ] && exit 0\n"
            f"touch '{hook}.done'\n"
            f"{exports}"
            f"{shlex.join(push)} >'{self.log}' 2>&1\n"
            f"echo $? >'{self.rc}'\n",
            encoding="utf-8",
        )
        hook.chmod(0o755)

    def check(self) -> str:
        assert self.rc.is_file(), "the report job never pushed"
        out = self.log.read_text(encoding="utf-8")
        assert self.rc.read_text(encoding="utf-8").strip() == "0", out
        return out


PULL = "Pull the results store (every earlier night)"


class Index:
    """What the report job's workspace holds when it pulls the store. Night 2: no history
    database (a hosted runner keeps none; the cache it used to come from was evicted). Night 3:
    the one night 2 left (a persistent runner, or a restored cache): an index is welcome, never
    needed, and a stale one is brought up to date."""

    def __init__(self, night: int, previous: Path | None) -> None:
        self.night, self.previous = night, previous
        self.had: tuple[bool, bool] | None = None

    def __call__(self, job: JobRun, step: str, workspace: Path) -> None:
        if job.job != "report" or step != PULL:
            return
        db = workspace / "reports" / "history.sqlite"
        if self.night == 3:
            assert self.previous is not None and self.previous.is_file()
            db.parent.mkdir(parents=True)
            shutil.copy(self.previous, db)
        self.had = (db.exists(), (workspace / "reports" / "runs").exists())


def chain(*hooks: BeforeStep | None) -> BeforeStep:
    def before(job: JobRun, step: str, workspace: Path) -> None:
        for hook in hooks:
            if hook is not None:
                hook(job, step, workspace)

    return before


def test_three_nights_on_three_hosts(lab: Lab) -> None:
    all_paths: set[str] = set()
    previous_db: Path | None = None
    for night in (1, 2, 3):
        run_id = 7000 + night
        concurrent = Concurrent(lab) if night == 2 else None
        index = Index(night, previous_db)
        if night == 3:
            # the planted break: a new release of a stack package pulls NVIDIA wheels into beta
            lab.idx.add("pypi", "betapkg", "1.1", ["nvidia-cublas-cu12"])

        before = chain(index, concurrent)
        rehearsal = lab.rehearsal(run_id, night, before_step=before)
        jobs = rehearsal.run()
        envs = check_night_jobs(jobs, run_id)
        (report,) = jobs["report"]
        assert report.workspace is not None
        tonight = {p for p in lab.store_files() if p.startswith(f"runs/gh-{run_id}/")}
        assert {p.split("/")[2] for p in tonight} == HOSTS
        assert len(tonight) == JOBS_PER_NIGHT, logs(report)
        all_paths |= tonight

        # no results on the report runner before the pull; a database only on night 3
        assert index.had == (night == 3, False)
        assert report.step(PULL).outcome == "success", report.step(PULL).log
        expected_runs = [f"gh-{7000 + n}" for n in range(1, night + 1)]
        if concurrent is not None:
            lab_log = concurrent.check()
            assert "results push to" in lab_log and "1 new" in lab_log
            push = report.step(Concurrent.STEP)
            assert push.outcome == "success", push.log
            assert "push rejected, another push landed first; rebasing" in push.log
            all_paths.add("runs/" + concurrent.path.relative_to(concurrent.runs).as_posix())
        if night >= 2:
            expected_runs.insert(1, "lab-evening")  # pushed during night 2, older than its jobs
        # nothing forgotten: the index rebuilt from the store holds every earlier night
        count, runs = history_runs(report)
        assert runs == expected_runs
        assert count == len(all_paths) == len(lab.store_files())
        previous_db = report.workspace / "reports" / "history.sqlite"

        regress = report.step("nox -s regress")
        fail = report.step("Fail on regression")
        if night < 3:
            assert regress.outcome == "success", regress.log
            assert report.result == "success", logs(report)
            assert fail.outcome == "skipped"
        else:
            assert regress.outcome == "failure" and regress.conclusion == "success"
            assert "envlab failed with exit code 1" in regress.log  # a regression, not an error
            assert fail.outcome == "failure" and report.result == "failure"
            markdown = (report.workspace / "reports" / "latest" / "regressions.md").read_text()
            assert "beta" in markdown and "no-nvidia-dists" in markdown
            assert "betapkg" in markdown and "nvidia-cublas-cu12" in markdown
            assert "REGRESSION beta on linux-cpu" in regress.log
            assert "REGRESSION beta on gpu-b" in regress.log
            assert "REGRESSION alpha" not in regress.log and "REGRESSION gamma" not in regress.log
            broken = lab.stored(f"runs/gh-{run_id}/linux-cpu/beta.json")
            assert broken["outcome"] == Outcome.VERIFY_FAILED
        assert all(j.result == "success" for j in envs)

        (pages,) = jobs["pages"]
        assert pages.result == "success", logs(pages)
        site = rehearsal.pages
        assert (site / "latest" / "index.html").is_file()
        for n in range(1, night + 1):
            assert (site / "nights" / f"gh-{7000 + n}" / "index.html").is_file()
        assert f"nights/gh-{run_id}/" in (site / "index.html").read_text(encoding="utf-8")
        assert f"{site.as_uri()}/nights/gh-{run_id}/" in pages.summary
        assert f"{site.as_uri()}/latest/" in pages.summary
        report_md = report.workspace / "reports" / "latest" / "report.md"
        assert report_md.read_text(encoding="utf-8") in report.summary


def test_a_night_whose_jobs_all_failed_is_recorded_and_a_rerun_replaces_it(lab: Lab) -> None:
    """The torch index is down for the whole night: every env job fails, the report job still
    records their outcomes. Re-running the workflow (attempt 2, index back) writes the same paths:
    the store holds one result per job, the newer one, and one page for the night."""
    down = lab.rehearsal(8001, 1, torch_index="http://127.0.0.1:9/simple")
    jobs = down.run()
    for job in jobs["env"]:
        step = job.step(f"nox -s {job.matrix['session']}")
        assert step.outcome == "failure" and Outcome.UNAVAILABLE in step.log, step.log
        assert job.result == "success"  # continue-on-error: the results are still uploaded
    (report,) = jobs["report"]
    assert report.result == "success", logs(report)
    paths = lab.store_files()
    assert len(paths) == JOBS_PER_NIGHT
    assert {lab.stored(p)["outcome"] for p in paths} == {Outcome.UNAVAILABLE}

    again = lab.rehearsal(8001, 1, attempt=2)
    jobs = again.run()
    check_night_jobs(jobs, 8001)
    (report,) = jobs["report"]
    assert report.result == "success", logs(report)
    assert "5 updated" in report.step("Push tonight's results to the store").log
    assert lab.store_files() == paths  # same paths: replaced, not duplicated
    assert {lab.stored(p)["outcome"] for p in paths} == {Outcome.BUILT}
    count, runs = history_runs(report)
    assert (count, runs) == (JOBS_PER_NIGHT, ["gh-8001"])
    manifest = json.loads((again.pages / "nights.json").read_text(encoding="utf-8"))
    assert list(manifest) == ["gh-8001"]


def test_the_rehearsal_catches_a_workflow_that_drifts_from_the_code(lab: Lab) -> None:
    """A workflow naming a session the noxfile lacks fails its step in the rehearsal."""
    path = lab.repo / ".github" / "workflows" / "scheduled.yml"
    path.write_text(
        path.read_text(encoding="utf-8").replace("nox -s results -- pull", "nox -s store -- pull"),
        encoding="utf-8",
    )
    # the torch index is down: the env jobs fail fast, the report job is what is played here
    jobs = lab.rehearsal(9001, 1, torch_index="http://127.0.0.1:9/simple").run()
    (report,) = jobs["report"]
    pull = report.step("Pull the results store (every earlier night)")
    assert pull.outcome == "failure" and "Sessions not found: store" in pull.log
    assert report.result == "failure" and jobs["pages"][0].result == "skipped"
