"""Bisect the package changes between two results: which change (or group, or pair) broke it."""

from __future__ import annotations

from packaging.requirements import Requirement

from envlab.bisect import changes, index, search, session, target
from envlab.bisect.changes import Group
from envlab.bisect.ends import load_end
from envlab.bisect.search import Found, Status
from envlab.bisect.session import Bisector, Options
from envlab.bisect.target import Kind
from envlab.build import conda
from envlab.build.uv import Uv
from envlab.errors import UserError
from envlab.log import log
from envlab.project import Project
from envlab.results.bisects import Bisect
from envlab.results.schema import Host
from envlab.spec.envspec import Matrix


def _package_verdict(b: Bisector, groups: list[Group], found: Found) -> str:
    if found.status is Status.FOUND:
        culprit = [groups[i] for i in found.culprit]
        if len(culprit) == 1:
            return f"{culprit[0].label()} breaks {b.target}"
        names = " and ".join(g.label() for g in culprit)
        alone = "neither alone" if len(culprit) == 2 else "none of them alone"
        return f"{names} break {b.target} together ({alone})"
    suspects = [groups[i].label() for i in (*found.culprit, *found.remaining)]
    return b.failure(
        found.status,
        f"inconclusive after {len(b.steps)} builds (--max-steps): {b.target} breaks with "
        f"one of {len(suspects)} group(s): {'; '.join(suspects)}",
    )


def _groups(b: Bisector, good: dict[str, str], bad: dict[str, str]) -> list[Group]:
    found = changes.diff(good, bad)
    if not found:
        raise UserError(
            "bisect: the two ends have the same packages: nothing to bisect (what changed is not "
            "a package: compare them with `nox -s regress`)"
        )

    def requires(name: str, version: str) -> list[Requirement]:
        _, files = b.candidates.files(name, version)
        return b.reader.requirements(index.preferred(files, b.environment["python_version"]))

    groups = changes.group(found, requires, b.environment)
    log(f"bisect: {len(found)} package change(s) in {len(groups)} group(s):")
    for i, g in enumerate(groups, 1):
        log(f"  {i}. {g.label()}" + (f"  [{g.why()}]" if g.reasons else ""))
    return groups


def bisect(
    project: Project,
    matrix: Matrix,
    env: str,
    good_ref: str,
    bad_ref: str,
    options: Options,
    host: Host,
    uv: Uv | None = None,
    reader: index.IndexReader | None = None,
) -> Bisect:
    """Bisect the package changes between two results of ``env`` (or of another env: ``good``)."""
    spec = matrix.get(env)
    if conda.environment_file(project.envspecs, spec) is not None:
        raise UserError(f"bisect: {env} has a conda base; only pip-built envs can be bisected")
    good = load_end(project, env, good_ref, options.host)
    bad = load_end(project, env, bad_ref, options.host)
    for end, name in ((good, "good"), (bad, "bad")):
        if not end.outcome.has_env or not end.facts.distributions:
            raise UserError(f"bisect: the {name} end {end.run_id} recorded no installed packages")
    chosen = options.target or target.first_regression(good, bad)
    b = Bisector(project, matrix, spec, chosen, options, host, uv, reader)
    if chosen.kind is Kind.BENCH:
        b.reference, b.reference_run = target.reference_benchmark(good, chosen.name), good.run_id
    good_set, bad_set = changes.package_set(good), changes.package_set(bad)
    groups = _groups(b, good_set, bad_set)
    log(f"bisect: watching {chosen}; good {good.run_id}, bad {bad.run_id}")

    def breaks(subset: tuple[int, ...]) -> bool:
        pins = changes.apply(good_set, [groups[i] for i in subset])
        label = f"good + {len(subset)} of {len(groups)} group(s)" + (
            f": {', '.join(str(i + 1) for i in subset)}" if subset else ""
        )
        applied = [groups[i].label() for i in subset]
        return b.step(label, applied, lambda k: b.candidates.pinned(k, pins), pins)

    labels = [g.label() for g in groups]
    with b.cleanup():
        try:
            found = search.minimal_culprit(len(groups), breaks, options.max_steps)
            verdict = _package_verdict(b, groups, found)
        except session.Unbuildable as exc:
            found, verdict = (
                Found(Status.UNBUILDABLE),
                f"stopped: a candidate could not be built: {exc}",
            )
        return b.finish("packages", good_ref, bad_ref, labels, found, verdict)
