"""The outcome vocabulary: defined once, used everywhere, and never derived from message text.

Also the commands that must keep working when an unrelated envspec is malformed, and the
report/regress path over results of interpreters envlab did not build (``external``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import factories as f
import pytest
from helpers import envlab, make_project
from localindex import LocalIndexes, serve
from test_layers_localindex import DEMO, PY, populate

from envlab.errors import (
    BuildFailed,
    CondaUnavailable,
    IndexUnavailable,
    InterpreterNotFound,
    LockError,
    LockUnavailable,
    SpecError,
    Unavailable,
    UnsupportedPlatform,
    UserError,
    stopped,
)
from envlab.outcome import LayerStatus, Outcome

SRC = Path(__file__).resolve().parents[1] / "src" / "envlab"
MALFORMED = 'description = "broken"\npython = 3.12\n'  # python must be a string


def test_every_outcome_has_a_rank_a_severity_and_a_tone() -> None:
    for outcome in Outcome:
        assert isinstance(outcome.rank, int) and isinstance(outcome.severity, int)
        assert outcome.tone in {"ok", "fail", "muted"}
    assert Outcome.BUILT.rank < Outcome.VERIFY_FAILED.rank < Outcome.BUILD_FAILED.rank
    assert Outcome.EXTERNAL.rank == Outcome.BUILT.rank
    order = Outcome.by_severity()
    assert order.index(Outcome.VERIFY_FAILED) < order.index(Outcome.BUILT)
    assert order.index(Outcome.BUILT) < order.index(Outcome.UNAVAILABLE)
    assert {o for o in Outcome if o.has_env} == {
        Outcome.BUILT,
        Outcome.EXTERNAL,
        Outcome.VERIFY_FAILED,
    }


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (IndexUnavailable("pypi", "http://x", "refused", "set a mirror"), Outcome.UNAVAILABLE),
        (InterpreterNotFound("no 3.9"), Outcome.UNAVAILABLE),
        (UnsupportedPlatform("no win-64"), Outcome.UNAVAILABLE),
        (CondaUnavailable("no conda"), Outcome.UNAVAILABLE),
        (LockUnavailable("conda base not locked"), Outcome.UNAVAILABLE),
        (LockError("stale"), Outcome.BUILD_FAILED),
        (SpecError("bad"), Outcome.INVALID_SPEC),
        (UserError("a command-line mistake"), None),
    ],
)
def test_errors_carry_their_outcome(error: UserError, outcome: Outcome | None) -> None:
    assert error.outcome is outcome


def test_stopped_maps_an_explained_failure_to_its_error_family() -> None:
    assert isinstance(stopped(Outcome.UNAVAILABLE, "index down"), Unavailable)
    assert isinstance(stopped(Outcome.BUILD_FAILED, "conflict"), BuildFailed)
    assert LayerStatus.for_outcome(Outcome.UNAVAILABLE) is LayerStatus.UNAVAILABLE
    assert LayerStatus.for_outcome(Outcome.BUILD_FAILED) is LayerStatus.FAILED


def test_no_outcome_string_literal_outside_the_enum() -> None:
    """Outcomes are compared, ranked and coloured through the enum, never by spelling them."""
    words = "|".join(re.escape(o.value) for o in Outcome)
    literal = re.compile(rf"""(["'])({words})\1""")
    offenders = []
    for path in sorted(SRC.rglob("*")):
        if path.suffix not in {".py", ".j2"} or path.name == "outcome.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if literal.search(line):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_no_outcome_read_from_message_text() -> None:
    """An outcome is carried by the error's type, never parsed out of its message."""
    words = "|".join(re.escape(o.value) for o in Outcome)
    parsing = re.compile(rf"""(startswith|removeprefix)\(\s*f?["']({words})""")
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if parsing.search(path.read_text(encoding="utf-8"))
    ]
    assert not offenders


# --------------------------------------------------------------------------- external results


def test_regress_and_report_survive_two_external_results(tmp_path: Path) -> None:
    """Two ``test-host`` results for one name and host used to crash both with KeyError."""
    root = make_project(tmp_path, envs={})
    runs = root / "reports" / "runs"
    results = [f.result(run=i, env="host-python3") for i in range(2)]
    f.write(runs, [r.model_copy(update={"outcome": Outcome.EXTERNAL}) for r in results])
    regress = envlab("--root", str(root), "regress")
    assert regress.returncode == 0, regress.stderr
    assert "Traceback" not in regress.stderr
    report = envlab("--root", str(root), "report")
    assert report.returncode == 0, report.stderr
    html = (root / "reports" / "latest" / "report.html").read_text(encoding="utf-8")
    assert "host-python3" in html and "external" in html


# --------------------------------------------------------------------------- malformed envspecs


@pytest.fixture
def indexes(tmp_path: Path):
    with serve(tmp_path / "index") as idx:
        populate(idx)
        yield idx


def _project_with_a_broken_env(tmp_path: Path, idx: LocalIndexes) -> tuple[Path, dict[str, str]]:
    demo = DEMO.format(python=PY, stack='"filelock"').replace(
        "description", "default = true\ndescription", 1
    )
    root = make_project(
        tmp_path,
        indexes={
            "pypi": "https://pypi.org/simple",
            "torchidx": "https://download.pytorch.org/whl/cpu",
        },
        envs={"demo": demo, "legacy": MALFORMED},
        stack=[],
    )
    env = {
        **idx.mirrors("pypi", "torchidx"),
        "ENVLAB_HOST_ID": "testhost",
        "ENVLAB_RUN_ID": "run1",
    }
    return root, env


def test_one_env_command_ignores_an_unrelated_malformed_envspec(
    indexes: LocalIndexes, tmp_path: Path
) -> None:
    root, env = _project_with_a_broken_env(tmp_path, indexes)
    done = envlab("--root", str(root), "test", "demo", "--no-compat", env=env)
    assert done.returncode == 0, done.stderr
    warnings = [ln for ln in done.stderr.splitlines() if "warning: env 'legacy'" in ln]
    assert len(warnings) == 1, done.stderr
    assert "legacy.toml" in warnings[0] and "python" in warnings[0]
    doctor = envlab("--root", str(root), "doctor", "--json", env=env)
    assert doctor.returncode == 0, doctor.stderr
    assert {e["env"] for e in json.loads(doctor.stdout)["envs"]} == {"demo"}


def test_a_malformed_env_is_named_when_asked_for(indexes: LocalIndexes, tmp_path: Path) -> None:
    root, env = _project_with_a_broken_env(tmp_path, indexes)
    done = envlab("--root", str(root), "test", "legacy", env=env)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("envlab: error: ") and "legacy.toml" in last and "python" in last
    assert not (root / "reports" / "runs").exists(), "nothing is recorded for a refused command"


def test_matrix_records_a_malformed_env_and_runs_the_rest(
    indexes: LocalIndexes, tmp_path: Path
) -> None:
    root, env = _project_with_a_broken_env(tmp_path, indexes)
    done = envlab("--root", str(root), "matrix", "--no-report", env=env)
    assert done.returncode == 0, done.stderr
    run = root / "reports" / "runs" / "run1" / "testhost"
    demo = json.loads((run / "demo.json").read_text(encoding="utf-8"))
    legacy = json.loads((run / "legacy.json").read_text(encoding="utf-8"))
    assert demo["outcome"] == Outcome.BUILT
    assert legacy["outcome"] == Outcome.INVALID_SPEC
    assert "legacy.toml" in legacy["reason"] and "\n" not in legacy["reason"]
    strict = envlab("--root", str(root), "matrix", "--no-report", "--strict", env=env)
    assert strict.returncode == 1, "an invalid env fails a strict matrix"
