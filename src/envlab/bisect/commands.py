"""``envlab bisect``'s entry points: one bisect between two ends, or each new hard break."""

from __future__ import annotations

from dataclasses import replace

from envlab.bisect import index, nightly, packages
from envlab.bisect.ends import parse_date
from envlab.bisect.session import Options
from envlab.bisect.target import Kind, Target
from envlab.build.uv import Uv
from envlab.errors import UserError
from envlab.log import log
from envlab.project import Project
from envlab.results.bisects import Bisect
from envlab.results.schema import Host, default_host_id
from envlab.spec.envspec import Matrix

EXIT_INCONCLUSIVE = 1


def run(
    project: Project,
    matrix: Matrix,
    env: str,
    good: str,
    bad: str,
    options: Options,
    host: Host,
    uv: Uv | None = None,
    reader: index.IndexReader | None = None,
) -> Bisect:
    """A nightly bisect when both ends are dates, else a package bisect between two results."""
    good_date, bad_date = parse_date(good), parse_date(bad)
    if good_date and bad_date:
        return nightly.bisect(project, matrix, env, good_date, bad_date, options, host, uv, reader)
    if good_date or bad_date:
        raise UserError(
            f"bisect: expected two dates (a nightly bisect) or two runs, found {good!r} and {bad!r}"
        )
    return packages.bisect(project, matrix, env, good, bad, options, host, uv, reader)


def auto(
    project: Project,
    matrix: Matrix,
    options: Options,
    host: Host,
    uv: Uv | None = None,
) -> list[Bisect]:
    """Bisect the first new hard break of each env of the newest run on this host."""
    from envlab.report import regress
    from envlab.results.history import open_history

    history, _ = open_history(project.history_db, project.runs)
    with history:
        report = regress.compare(history)
    wanted = options.host or default_host_id()
    done = []
    for pair in report.regressions:
        breaks = [f for f in pair.findings if f.kind in regress.HARD_BREAKS and f.baseline_run]
        item = regress.bisect_item(breaks[0]) if breaks and pair.host == wanted else None
        if item is None:
            continue
        chosen = replace(options, target=Target(Kind(item[0]), item[1]), host=pair.host)
        good, bad = breaks[0].baseline_run or "", pair.newest.run_id
        log(f"bisect: {pair.env} on {pair.host}: {chosen.target} broke from {good} to {bad}")
        try:
            done.append(packages.bisect(project, matrix, pair.env, good, bad, chosen, host, uv))
        except UserError as exc:
            log(f"bisect: {pair.env}: not bisected: {exc}")
    if not done:
        log(f"bisect: no new hard break on {wanted} in run {report.newest_run}: nothing to bisect")
    return done
