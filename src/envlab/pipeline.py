"""One env through the lab: build -> verify -> compat suite -> [benchmarks] -> result document."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from envlab.build import conda, freshness, layers, lock
from envlab.build.uv import Uv
from envlab.errors import CommandError, LockError, LockUnavailable, UserError
from envlab.fsutil import stable_hash, unwritable
from envlab.log import log
from envlab.outcome import Outcome
from envlab.proc import run
from envlab.project import Project
from envlab.results.facts import Facts
from envlab.results.schema import BuildRecord, Check, CompatRun, Host, Result, now_iso
from envlab.results.store import Saved, Store
from envlab.run import bench, compat
from envlab.run.bench import BenchMode
from envlab.spec import platforms
from envlab.spec.envspec import EnvSpec, Matrix
from envlab.spec.indexes import probe as probe_index
from envlab.verify import advisory, expectations, integrity, probe

PROBE = Path(probe.__file__)
# cached facts are only as good as the probe that gathered them: a changed probe reads again
PROBE_VERSION = stable_hash(PROBE.read_text(encoding="utf-8"))


@dataclass
class Options:
    force: bool = False
    compat: bool = True
    bench: BenchMode | None = None
    compat_args: list[str] = field(default_factory=list)
    relock: bool = False
    conda_engine: conda.Engine = conda.Engine.RATTLER
    wait: bool = True  # another envlab building or testing the env: wait for it (else refuse)
    refresh: bool = True  # rebuild a reused env whose build-time layers' index moved
    deep: bool = False  # compare installed files' hashes with their RECORD, not only sizes


def probe_env(python: Path, own: bool = False) -> Facts:
    """Facts from inside the env (stdlib-only probe, run by the env's interpreter).

    A probe that printed no facts, or something that is not a facts document, yields
    ``Facts(probe_error=...)`` rather than an exception: verification then reports the probe.
    ``own``: an env envlab built, whose bytecode caches it keeps (PYTHONDONTWRITEBYTECODE unset).
    """
    unset = compat.KEEP_CACHES if own else ()
    done = run([str(python), str(PROBE)], quiet=True, check=False, timeout=600, unset=unset)
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


def cached_facts(env_dir: Path, current: bool = False) -> Facts | None:
    """The facts saved at the env's last verification, if still current and still readable
    (``current``: and gathered by this version of the probe)."""
    saved = layers.cached_facts(env_dir, PROBE_VERSION if current else None)
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
        matrix=spec.cell.matrix if spec and spec.cell else None,
        factors=dict(spec.cell.factors) if spec and spec.cell else {},
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
    result = _result(name, spec, run_id, host, exc.outcome, str(exc))
    if spec is None and (cell := matrix.cell_of(name)):  # an invalid cell keeps its place
        result.matrix, result.factors = cell
    return result


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

    ``uv`` runs every uv command of the build (default: the real uv). One process at a time
    builds or uses an env: another one waits (or, without ``options.wait``, is refused).
    """
    try:
        spec = matrix.get(name)
        with layers.hold(project.envs, name, wait=options.wait):
            return _run_env(project, matrix, spec, run_id, host, options, uv)
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
    layers.check_published(spec)  # before anything about locks: there is nothing to lock
    locks = _locks_for(project, matrix, spec, options, uv)
    p = layers.plan(
        matrix,
        spec,
        project.envs,
        locks={layer: lk.path for layer, lk in (locks or {}).items()},
        conda_base=_conda_base(project, spec, options.conda_engine),
        uv=uv,
    )
    fresh = freshness.before_reuse(p, refresh=options.refresh)
    built = layers.build(p, force=options.force or fresh.rebuild, uv=uv)
    if built.outcome is not Outcome.BUILT or built.python is None:
        return _result(spec.name, spec, run_id, host, built.outcome, built.reason, built.record)
    if not built.record.reused:
        freshness.save_snapshot(p.env_dir, fresh)
    python = built.python
    facts = _with_integrity(
        lambda: _probed(p, python, built.record.reused), python, uv, options.deep
    )
    checks = expectations.check(
        spec, facts, built.layer_packages, host=host, index_now=fresh.newest
    )
    if locks:
        locked = {name: version for lk in locks.values() for name, version in lk.packages.items()}
        if p.conda:  # the conda base's Python packages are locked in its conda-lock.yml
            locked |= layers.conda_distributions(p.env_dir)
        checks.append(expectations.matches_lock(facts, locked))
    checks += _freshness_checks(fresh, built.record.reused)
    for note in advisory.warnings(checks):
        log(f"{spec.name}: {note.name}: {note.message}")
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
            compat.expectations_json(spec.name, spec.expect, host),
            extra_args=options.compat_args,
            caches=p.env_dir / compat.CACHES,
        )
    if options.bench:
        result.benchmarks = bench.run_benchmarks(
            built.python, project.root, options.bench, project.work, build_record=built.record
        )
    return result


def _probed(p: layers.BuildPlan, python: Path, reused: bool) -> Facts:
    """The probe's facts, saved in the env until something is installed in it."""
    facts = cached_facts(p.env_dir, current=True) if reused else None
    if facts is None:
        if reused:
            log(f"{p.spec.name}: packages changed since the last verification: probing again")
        log(f"{p.spec.name}: probing the env")
        facts = probe_env(python, own=True)
        layers.save_facts(p.env_dir, facts.model_dump(mode="json"), PROBE_VERSION)
    return facts


def _with_integrity(probed: Callable[[], Facts], python: Path, uv: Uv | None, deep: bool) -> Facts:
    """``probed()`` with this moment's installed-files scan and ``uv pip check`` (never cached).

    The scan runs beside the probe: both mostly wait on the disk or on a subprocess, and the
    probe (importing the whole stack) is the longest step of a verification.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        scan = pool.submit(integrity.gather, python, (uv or Uv()).check, deep)
        facts = probed()
        return facts.model_copy(update={"integrity": scan.result()})


def _freshness_checks(fresh: freshness.Freshness, reused: bool) -> list[Check]:
    """What the indexes of build-time layers serve now against the env (none: all locked)."""
    if not fresh.newest and not fresh.unknown:
        return []
    expected = "the newest versions the indexes serve for the layers resolved at build time"
    if fresh.unknown:
        found, message = "unknown", advisory.warn("; ".join(fresh.unknown))
    elif fresh.moved and reused:
        found = "older: " + "; ".join(str(m) for m in fresh.moved)
        message = advisory.warn("kept by --no-refresh; run without it to rebuild onto them")
    else:
        found = "rebuilt onto them" if fresh.moved else "up to date"
        message = ""
    return [Check(name="index-fresh", ok=True, expected=expected, found=found, message=message)]


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
    deep: bool = False,
) -> Result:
    """Probe and test an interpreter envlab did not build (checks the environment someone has);
    with ``spec``, every check of that env applies, its lock for this platform included."""
    check_interpreter(python)
    facts = _with_integrity(lambda: probe_env(python), python, None, deep)
    checks = expectations.check(spec, facts, host=host) if spec else []
    if spec:
        checks += _host_lock_check(project, spec, facts)
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
    expect = compat.expectations_json(spec.name, spec.expect, host) if spec else None
    result.compat = compat.run_suite(python, project.compat_tests, expect, extra_args=compat_args)
    return result


def _host_lock_check(project: Project, spec: EnvSpec, facts: Facts) -> list[Check]:
    """The interpreter's packages against the env's committed lock for this platform, if any."""
    platform = platforms.current()
    found = lock.env_locks(project, spec, platform) if spec.locked else None
    if found is None:
        log(f"{spec.name}: no lock for {platform}: lock conformance not checked")
        return []
    locked = {name: version for lk in found.values() for name, version in lk.packages.items()}
    return [expectations.matches_lock(facts, locked)]


def check_interpreter(python: Path) -> None:
    """Raise a one-line UserError unless ``python`` runs as a Python >= 3.8 (the probe's need)."""
    what = "--python: expected a Python 3 interpreter"
    if not python.exists():
        raise UserError(f"{what}, found nothing at {python}")
    if python.is_dir() or not os.access(python, os.X_OK):
        kind = "a directory" if python.is_dir() else "a file that is not executable"
        raise UserError(f"{what}, found {kind}: {python}")
    ask = "import sys; sys.stdout.write('python %d.%d' % sys.version_info[:2])"
    try:
        done = run([str(python), "-c", ask], check=False, quiet=True, timeout=60)
    except CommandError as exc:
        raise UserError(f"{what}, found {python}, which does not run ({exc})") from None
    found = re.fullmatch(r"python (\d+)\.(\d+)", done.output.strip())
    if done.returncode != 0 or found is None:
        said = done.output.strip().splitlines()[-1:] or ["no output"]
        raise UserError(
            f"{what}, found {python}, which answers {said[0][:120]!r} (exit {done.returncode})"
        )
    if (int(found[1]), int(found[2])) < (3, 8):
        raise UserError(
            f"--python: expected Python >= 3.8 (the probe and compat suite need it), "
            f"found Python {found[1]}.{found[2]} at {python}"
        )


def unwritable_outputs(project: Project, report: bool = False) -> str | None:
    """Why results and envs (and with ``report``, the history and report) cannot be written."""
    places = [project.runs, project.envs]
    if report:
        places += [project.history_db.parent, project.reports / "latest"]
    for place in places:
        problem = unwritable(place)
        if problem:
            return (
                f"cannot write {place}: {problem}; expected a writable directory (make it "
                "writable, or point ENVLAB_RUNS_DIR, ENVLAB_ENVS_DIR, ENVLAB_HISTORY_DB elsewhere)"
            )
    return None


def write(project: Project, result: Result) -> Saved:
    """Write the result into the project's store; when that fails, into a fallback directory
    (printed), so that a built and tested env's result is never lost."""
    saved = Store(project.runs).save(result)
    if saved.failed is None:
        log(f"{result.env}: result written to {saved.path}")
    elif saved.path is not None:
        log(f"{result.env}: could not write the result ({saved.failed}); saved it to {saved.path}")
    else:
        log(f"{result.env}: could not write the result anywhere ({saved.failed}); here it is:")
        sys.stderr.write(result.to_json() + "\n")
    return saved


def compat_failed(run_: CompatRun | None) -> bool:
    return bool(run_ and (run_.error or run_.counts()["failed"]))
