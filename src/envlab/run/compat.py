"""Run the compat suite (``compat_tests/``) inside an env and read its structured outcomes."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from pydantic import ValidationError

from envlab.errors import CommandError
from envlab.log import log
from envlab.proc import run
from envlab.results.schema import CompatRun, CompatTest
from envlab.spec.envspec import Expectations


def expectations_json(name: str, expect: Expectations | None) -> dict | None:
    if expect is None:
        return None
    return {"env": name, **expect.model_dump(mode="json")}


def run_suite(
    python: Path,
    suite: Path,
    expect: dict | None,
    *,
    timeout: float = 1800,
    extra_args: list[str] | None = None,
) -> CompatRun:
    """Run ``suite`` with ``python``; a crash of the suite is recorded, not raised."""
    with tempfile.TemporaryDirectory(prefix="envlab-compat-") as tmp:
        out = Path(tmp) / "compat.json"
        argv = [
            str(python),
            "-m",
            "pytest",
            str(suite),
            "-q",
            "-p",
            "no:cacheprovider",
            f"--compat-json={out}",
        ]
        if expect is not None:
            expect_file = Path(tmp) / "expect.json"
            expect_file.write_text(json.dumps(expect), encoding="utf-8")
            argv.append(f"--compat-expect={expect_file}")
        argv += extra_args or []
        log(f"compat suite: {suite.name} with {python}")
        try:
            done = run(argv, cwd=Path(tmp), check=False, stream=True, timeout=timeout)
        except CommandError as exc:  # e.g. interpreter missing
            return CompatRun(error=str(exc), returncode=exc.returncode)
        if not out.exists():
            tail = done.output.strip().splitlines()[-1:] or ["no output"]
            return CompatRun(
                returncode=done.returncode,
                duration_s=round(done.duration_s, 2),
                error=f"the compat suite wrote no results (exit {done.returncode}): {tail[0]}",
            )
        try:
            data = json.loads(out.read_text(encoding="utf-8"))
            tests = [CompatTest.model_validate(t) for t in data.get("tests", [])]
        except (ValueError, ValidationError) as exc:
            return CompatRun(returncode=done.returncode, error=f"unreadable compat results: {exc}")
        run_result = CompatRun(
            tests=tests, duration_s=round(done.duration_s, 2), returncode=done.returncode
        )
        counts = run_result.counts()
        log(
            f"compat suite: {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['skipped']} skipped "
            f"in {done.duration_s:.1f}s"
        )
        return run_result
