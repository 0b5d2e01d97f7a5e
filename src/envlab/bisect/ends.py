"""The two ends of a package bisect: results named by run id (and host) or by file; dates."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from envlab.errors import UserError
from envlab.project import Project
from envlab.results.schema import Result, default_host_id, load
from envlab.results.store import safe_name

_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")


def parse_date(text: str) -> date | None:
    """``2026-11-25`` or ``20261125`` as a date; None for anything else (a run id)."""
    match = _DATE.match(text)
    if not match:
        return None
    try:
        return date(*map(int, match.groups()))
    except ValueError:
        return None


def load_end(project: Project, env: str, ref: str, host: str | None) -> Result:
    """The result ``ref`` names: a result file, or env ``env``'s result in run ``ref``."""
    path = Path(ref)
    if ref.endswith(".json"):
        if not path.is_file():
            raise UserError(f"bisect: expected a result file, found nothing at {ref}")
        return load(path)
    run_dir = project.runs / safe_name(ref)
    found = sorted(run_dir.glob(f"*/{safe_name(env)}.json"))
    if not found:
        raise UserError(
            f"bisect: expected a result of env {env!r} in run {ref!r} under {project.runs}, "
            "found none (give a run id or a result file)"
        )
    hosts = {p.parent.name: p for p in found}
    wanted = safe_name(host or default_host_id())
    if wanted in hosts:
        return load(hosts[wanted])
    if host is None and len(found) == 1:
        return load(found[0])
    raise UserError(
        f"bisect: run {ref!r} has env {env!r} on {', '.join(sorted(hosts))}, not on {wanted}: "
        "pass --host"
    )
