"""Bisect the nightly builds an index still serves between two dates: the first that broke it."""

from __future__ import annotations

from datetime import date

from envlab.bisect import index, search, session
from envlab.bisect.candidate import family_names
from envlab.bisect.search import Found, Status
from envlab.bisect.session import Bisector, Options
from envlab.bisect.target import Kind
from envlab.build.uv import Uv
from envlab.errors import UserError
from envlab.log import log
from envlab.project import Project
from envlab.results.bisects import Bisect
from envlab.results.schema import Host
from envlab.spec.envspec import EnvSpec, Matrix


def _nightly_builds(
    b: Bisector, matrix: Matrix, good: date, bad: date
) -> list[tuple[date, dict[str, str]]]:
    """Each date from ``good`` to ``bad`` whose nightlies the index still serves for the whole
    family, with the family's versions."""
    spec = b.spec
    assert spec.nightly is not None
    nidx = matrix.indexes[spec.nightly.index]
    names = family_names(spec)
    per_name = {n: index.nightlies(b.reader, nidx, n, good, bad, None) for n in names}
    dates = sorted(set.intersection(*(set(v) for v in per_name.values())))
    for d in sorted(set(per_name[names[0]]) - set(dates)):
        log(f"bisect: nightly {d} left out: not every one of {', '.join(names)} was published")
    if bad not in dates:
        served = ", ".join(map(str, dates)) or "none"
        raise UserError(
            f"bisect: index {nidx.name!r} ({nidx.url}) serves no {names[0]} nightly of {bad} "
            f"(between the dates it serves: {served})"
        )
    return [(d, {n: str(per_name[n][d]) for n in names}) for d in dates]


def _check_nightly(spec: EnvSpec, good: date, bad: date, options: Options) -> None:
    if spec.nightly is None:
        raise UserError(f"bisect: dates need a nightly env; {spec.name} has no [nightly] layer")
    if good >= bad:
        raise UserError(f"bisect: expected --good before --bad, found {good} and {bad}")
    if options.target is None:
        raise UserError(
            "bisect: a nightly bisect needs the item to watch: --check, --test or --bench"
        )


def bisect(
    project: Project,
    matrix: Matrix,
    env: str,
    good: date,
    bad: date,
    options: Options,
    host: Host,
    uv: Uv | None = None,
    reader: index.IndexReader | None = None,
) -> Bisect:
    """The first nightly from ``good`` to ``bad`` (dates) that breaks the target."""
    spec = matrix.get(env)
    _check_nightly(spec, good, bad, options)
    assert options.target is not None
    b = Bisector(project, matrix, spec, options.target, options, host, uv, reader)
    builds = _nightly_builds(b, matrix, good, bad)
    measure = options.target.kind is Kind.BENCH
    if builds[0][0] != good:
        if measure:
            raise UserError(
                f"bisect: the index no longer serves the good nightly {good} to measure"
            )
        builds.insert(0, (good, {}))  # no longer served: taken as good, never built
    labels = [f"nightly {d}: " + ", ".join(f"{n} {v}" for n, v in vs.items()) for d, vs in builds]
    log(f"bisect: {len(builds)} nightlies from {good} to {bad}; watching {options.target}")

    def breaks(position: tuple[int, ...]) -> bool:
        when, versions = builds[position[0]]
        if not versions:
            log(f"bisect: nightly {when} is no longer served: taken as good")
            return False
        if measure and b.reference is not None and position == (0,):
            return False  # the good nightly measured the reference
        applied = [f"{n}=={v}" for n, v in versions.items()]
        return b.step(f"nightly {when}", applied, lambda k: b.candidates.nightly(k, versions))

    with b.cleanup():
        try:
            if measure:  # a benchmark is judged against the good nightly: measure it first
                breaks((0,))
            steps = options.max_steps - len(b.steps) if options.max_steps else None
            found = search.first_bad(len(builds), breaks, steps)
            verdict = _nightly_verdict(b, builds, found)
        except session.Unbuildable as exc:
            found, verdict = (
                Found(Status.UNBUILDABLE),
                f"stopped: a candidate could not be built: {exc}",
            )
        return b.finish("nightly", str(good), str(bad), labels, found, verdict)


def _nightly_verdict(b: Bisector, builds: list[tuple[date, dict[str, str]]], found: Found) -> str:
    if found.status is not Status.FOUND:
        dates = [str(builds[i][0]) for i in found.remaining]
        return b.failure(
            found.status,
            f"inconclusive after {len(b.steps)} builds (--max-steps): the first bad nightly is "
            f"one of {', '.join(dates)}",
        )
    first = found.culprit[0]
    when, versions = builds[first]
    step = next(s for s in b.steps if s.candidate == f"nightly {when}")
    result = next(r for r in b.results if r.run_id == step.run_id)
    torch = versions.get("torch") or next(iter(versions.values()))
    git = result.facts.torch.git_version or "unknown"
    return (
        f"nightly {when} (torch {torch}, git {git}) breaks {b.target}; "
        f"{builds[first - 1][0]} was the last good nightly"
    )
