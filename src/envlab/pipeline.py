"""One env through the lab: build -> verify -> compat suite -> [benchmarks] -> result document."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from envlab.build import conda, layers, lock
from envlab.build.uv import Uv
from envlab.errors import LockError, LockUnavailable, UserError
from envlab.log import log
from envlab.outcome import Outcome
from envlab.proc import run
from envlab.project import Project
from envlab.results.facts import Facts
from envlab.results.schema import BuildRecord, CompatRun, Host, Result, now_iso
from envlab.results.store import Store
from envlab.run import bench, compat
from envlab.run.bench import BenchMode
from envlab.spec import platforms
from envlab.spec.envspec import EnvSpec, Matrix
from envlab.spec.indexes import probe as probe_index
from envlab.verify import expectations, probe

PROBE = Path(probe.__file__)


@dataclass
class Options:
    force: bool = False
    compat: bool = True
    bench: BenchMode | None = None
    compat_args: list[str] = field(default_factory=list)
    relock: bool = False
    conda_engine: conda.Engine = conda.Engine.RATTLER


def probe_env(python: Path) -> Facts:
    """Facts from inside the env (stdlib-only probe, run by the env's interpreter).

    A probe that printed no facts, or something that is not a facts document, yields
    ``Facts(probe_error=...)`` rather than an exception: verification then reports the probe.
    """
    done = run([str(python), str(PROBE)], quiet=True, check=False, timeout=600)
    lines = [ln for ln in done.output.splitlines() if ln.startswith("{")]
    if not lines:
        tail = done.output.strip()[-300:]
        return Facts(probe_error=f"probe printed no facts (exit {done.returncode}): {tail}")
    try:
        return Facts.model_validate_json(lines[-1])
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(map(str, err["loc"])) or "the document"
        return Facts(
            probe_error=f"probe printed unreadable facts (exit {done.returncode}): "
            f"{where}: {err['msg']}"
        )


def cached_facts(env_dir: Path) -> Facts | None:
    """The facts saved at the env's last verification, if still current and still readable."""
    saved = layers.cached_facts(env_dir)
    if saved is None:
        return None
    try:
        return Facts.model_validate(saved)
    except ValidationError:
        return None  # saved by an envlab with other facts models: probe again


def _result(
    env: str,
    spec: EnvSpec | None,
    run_id: str,
    host: Host,
    outcome: Outcome,
    reason: str | None,
    record: BuildRecord | None = None,
) -> Result:
    return Result(
        run_id=run_id,
        created=now_iso(),
        env=env,
        spec_hash=spec.spec_hash if spec else "",
        description=spec.description if spec else "",
        tags=list(spec.tags) if spec else [],
        host=host,
        outcome=outcome,
        reason=reason,
        build=record or BuildRecord(),
    )


def _stopped(matrix: Matrix, name: str, run_id: str, host: Host, exc: UserError) -> Result:
    """The result of an env stopped by an error that carries its outcome (the one mapping)."""
    if exc.outcome is None:
        raise exc  # not an env-level failure: the command fails
    log(f"{name}: {exc.outcome}: {exc}")
    spec = None if exc.outcome is Outcome.INVALID_SPEC else matrix.get(name)
    return _result(name, spec, run_id, host, exc.outcome, str(exc))


def availability(
    project: Project,
    matrix: Matrix,
    name: str,
    run_id: str,
    host: Host,
    uv: Uv | None = None,
) -> Result | None:
    """For an env that is not selected: why it cannot be built here (as a result), or None."""
    try:
        spec = matrix.get(name)
        conda_base = _conda_base(project, spec, stale_ok=True)
        p = layers.plan(matrix, spec, project.envs, conda_base=conda_base, uv=uv)
        for index, package in p.indexes():
            probe_index(index, package, attempts=1)
    except UserError as exc:
        return _stopped(matrix, name, run_id, host, exc)
    return None


def run_env(
    project: Project,
    matrix: Matrix,
    name: str,
    run_id: str,
    host: Host,
    options: Options,
    uv: Uv | None = None,
) -> Result:
    """Build, verify, test (and benchmark) one env; the outcome is in the result, never raised.

    ``uv`` runs every uv command of the build (default: the real uv).
    """
    try:
        return _run_env(project, matrix, matrix.get(name), run_id, host, options, uv)
    except UserError as exc:
        return _stopped(matrix, name, run_id, host, exc)


def _run_env(
    project: Project,
    matrix: Matrix,
    spec: EnvSpec,
    run_id: str,
    host: Host,
    options: Options,
    uv: Uv | None = None,
) -> Result:
    started = time.monotonic()
    log(f"== {spec.name}: {spec.description}")
    locks = _locks_for(project, matrix, spec, options, uv)
    p = layers.plan(
        matrix,
        spec,
        project.envs,
        locks={layer: lk.path for layer, lk in (locks or {}).items()},
        conda_base=_conda_base(project, spec, options.conda_engine),
        uv=uv,
    )
    built = layers.build(p, force=options.force, uv=uv)
    if built.outcome is not Outcome.BUILT or built.python is None:
        return _result(spec.name, spec, run_id, host, built.outcome, built.reason, built.record)
    facts = cached_facts(p.env_dir) if built.record.reused else None
    if facts is None:
        if built.record.reused:
            log(f"{spec.name}: packages changed since the last verification: probing again")
        log(f"{spec.name}: probing the env")
        facts = probe_env(built.python)
        layers.save_facts(p.env_dir, facts.model_dump(mode="json"))
    checks = expectations.check(spec, facts, built.layer_packages)
    if locks:
        locked = {name: version for lk in locks.values() for name, version in lk.packages.items()}
        if p.conda:  # the conda base's Python packages are locked in its conda-lock.yml
            locked |= layers.conda_distributions(p.env_dir)
        checks.append(expectations.matches_lock(facts, locked))
    failed = expectations.failures(checks)
    outcome = Outcome.VERIFY_FAILED if failed else Outcome.BUILT
    reason = expectations.summary(checks) if failed else None
    log(
        f"{spec.name}: verify: {len(checks) - len(failed)}/{len(checks)} expectations hold"
        + (f"; FAILED: {reason}" if failed else "")
        + f" (ready after {time.monotonic() - started:.1f}s)"
    )
    result = _result(spec.name, spec, run_id, host, outcome, reason, built.record)
    result.checks = checks
    result.facts = facts
    if options.compat:
        result.compat = compat.run_suite(
            built.python,
            project.compat_tests,
            compat.expectations_json(spec.name, spec.expect),
            extra_args=options.compat_args,
        )
    if options.bench:
        result.benchmarks = bench.run_benchmarks(
            built.python, project.root, options.bench, project.work, build_record=built.record
        )
    return result


def _locks_for(
    project: Project, matrix: Matrix, spec: EnvSpec, options: Options, uv: Uv | None = None
) -> dict[str, lock.LayerLock] | None:
    """The env's committed locks for this platform (relocked first if asked); stale locks refuse."""
    if not spec.locked:
        return None
    platform = platforms.current()
    if platform not in spec.platforms:
        return None
    if options.relock:
        lock.relock(project, matrix, spec, platform, uv, options.conda_engine)
    found = lock.env_locks(project, spec, platform)
    if found is None:
        log(f"{spec.name}: no lock for {platform}: resolving at build time (`nox -s lock` pins it)")
        return None
    stale = lock.staleness(matrix, spec, found, platform)
    if stale:
        raise LockError(stale + f", or pass --relock to `test {spec.name}`")
    return found


def _conda_base(
    project: Project,
    spec: EnvSpec,
    engine: conda.Engine = conda.Engine.RATTLER,
    stale_ok: bool = False,
) -> layers.CondaBase | None:
    """The env's conda base, if it declares one; raises when it cannot be built here (its channel
    unreachable, no conda executable for the conda-lock engine, not locked, or a stale lock)."""
    environment = conda.environment_file(project.envspecs, spec)
    if environment is None:
        return None
    if engine is conda.Engine.CONDA_LOCK:
        conda.find_executable()  # which fetches through its own channel settings (.condarc)
    else:
        conda.check_channels(spec, environment)
    lockfile = lock.conda_lock_path(project, spec.name)
    if not lockfile.exists():
        raise LockUnavailable(
            f"{spec.name}'s conda base is not locked ({lockfile.relative_to(project.root)} "
            f"is missing): run `nox -s lock -- {spec.name}`"
        )
    stale = None if stale_ok else conda.staleness(spec, environment, lockfile)
    if stale:
        raise LockError(stale + f", or pass --relock to `test {spec.name}`")
    return layers.CondaBase(environment, lockfile, engine)


def test_host(
    project: Project,
    python: Path,
    run_id: str,
    host: Host,
    name: str,
    spec: EnvSpec | None,
    compat_args: list[str] | None = None,
) -> Result:
    """Probe and test an interpreter envlab did not build (checks the environment someone has)."""
    if not python.exists():
        raise UserError(f"--python: expected an existing interpreter, found nothing at {python}")
    facts = probe_env(python)
    checks = expectations.check(spec, facts) if spec else []
    failed = expectations.failures(checks)
    result = Result(
        run_id=run_id,
        created=now_iso(),
        env=name,
        spec_hash=spec.spec_hash if spec else "",
        description=f"existing interpreter {python}",
        tags=["test-host"],
        host=host,
        outcome=Outcome.VERIFY_FAILED if failed else Outcome.EXTERNAL,
        reason=expectations.summary(checks) if failed else None,
        build=BuildRecord(interpreter=str(python)),
        checks=checks,
        facts=facts,
    )
    expect = compat.expectations_json(spec.name, spec.expect) if spec else None
    result.compat = compat.run_suite(python, project.compat_tests, expect, extra_args=compat_args)
    return result


def write(project: Project, result: Result) -> Path:
    path = Store(project.runs).write(result)
    log(f"{result.env}: result written to {path}")
    return path


def compat_failed(run_: CompatRun | None) -> bool:
    return bool(run_ and (run_.error or run_.counts()["failed"]))
