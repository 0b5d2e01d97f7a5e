"""Command line: ``envlab <command>``. nox sessions call these; user errors print one line."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from envlab import pipeline
from envlab.build.conda import Engine
from envlab.errors import UserError
from envlab.log import log, set_verbose
from envlab.outcome import Outcome
from envlab.project import Project
from envlab.report import judge, site
from envlab.results.schema import Host, Result, new_run_id
from envlab.run.bench import BenchMode
from envlab.spec.envspec import Matrix


def _host(project: Project, matrix: Matrix) -> Host:
    """This machine's identity for results, with the doctor's verdicts attached."""
    from envlab.hardware import doctor

    return doctor.host_identity(matrix, arch_flags=_built_arch_flags(project))


def _built_arch_flags(project: Project) -> dict[str, list[str]]:
    """Compiled arch lists of the envs already built here (real data beats the knowledge table)."""
    found: dict[str, list[str]] = {}
    for env_dir in sorted(project.envs.glob("*")) if project.envs.is_dir() else []:
        facts = pipeline.cached_facts(env_dir)
        if facts and facts.torch.version:
            found[env_dir.name] = list(facts.torch.arch_flags)
    return found


def _run_id() -> str:
    return os.environ.get("ENVLAB_RUN_ID") or new_run_id()


def _table(results: list[Result], elapsed: dict[str, float]) -> str:
    rows = [("env", "outcome", "torch", "compat p/f/s", "time", "reason")]
    for r in results:
        counts = r.compat.counts() if r.compat else None
        compat = f"{counts['passed']}/{counts['failed']}/{counts['skipped']}" if counts else "-"
        if r.compat and r.compat.error:
            compat = "error"
        torch = r.facts.torch.version or "-"
        crashed = f"compat suite: {r.compat.error}" if r.compat and r.compat.error else ""
        reason = r.reason or crashed  # in full: its end is often the fix
        rows.append((r.env, r.outcome, torch, compat, f"{elapsed.get(r.env, 0):.0f}s", reason))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        # every row has the header's columns, so the last cell aside they pair up one to one
        cells = zip(row[:-1], widths, strict=True)
        lines.append("  ".join(cell.ljust(w) for cell, w in cells) + "  " + row[-1])
    return "\n".join(lines)


def _run_envs(
    project: Project,
    matrix: Matrix,
    names: list[str],
    options: pipeline.Options,
    run_id: str,
    host: Host,
    others: list[str] | None = None,
) -> list[Result]:
    results: list[Result] = []
    elapsed: dict[str, float] = {}
    unsaved: list[pipeline.Saved] = []
    for name in names:
        start = time.monotonic()
        result = pipeline.run_env(project, matrix, name, run_id, host, options)
        unsaved += [s for s in [pipeline.write(project, result)] if s.failed]
        elapsed[name] = time.monotonic() - start
        results.append(result)
    for name in others or []:
        start = time.monotonic()
        result = pipeline.availability(project, matrix, name, run_id, host)
        if result is None:
            log(f"{name}: reachable but opt-in: not run (nox -s test-{name}, or matrix -- --all)")
            continue
        unsaved += [s for s in [pipeline.write(project, result)] if s.failed]
        elapsed[name] = time.monotonic() - start
        results.append(result)
    print(f"\nrun {run_id} on {host.id}:", file=sys.stderr)
    print(_table(results, elapsed), file=sys.stderr)
    _check_saved(unsaved)
    print(f"results: {project.runs / run_id}", file=sys.stderr)
    return results


def _check_outputs(project: Project, report: bool = False) -> None:
    """Fail before building anything when the results (or the report) cannot be written."""
    problem = pipeline.unwritable_outputs(project, report)
    if problem:
        raise UserError(problem)


def _check_saved(unsaved: list[pipeline.Saved]) -> None:
    """One line (and a failing exit) when results had to go elsewhere than reports/runs."""
    if unsaved:
        where = ", ".join(str(s.path) if s.path else "stderr (above)" for s in unsaved)
        raise UserError(
            f"{len(unsaved)} result(s) could not be written ({unsaved[0].failed}); saved to "
            f"{where}: copy them into the runs directory when it is writable"
        )


def _options(args: argparse.Namespace) -> pipeline.Options:
    return pipeline.Options(
        force=getattr(args, "force", False),
        compat=not getattr(args, "no_compat", False),
        bench=getattr(args, "bench", None),
        relock=getattr(args, "relock", False),
        compat_args=shlex.split(getattr(args, "pytest_args", "") or ""),
        conda_engine=getattr(args, "conda_engine", Engine.RATTLER),
        wait=not getattr(args, "no_wait", False),
        refresh=not getattr(args, "no_refresh", False),
        deep=getattr(args, "deep", False),
    )


def cmd_list(project: Project, args: argparse.Namespace) -> int:
    matrix = Matrix(project.envspecs)
    specs = matrix.all()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "default": s.default,
                        "tags": s.tags,
                        "python": s.python,
                        "platforms": s.platforms,
                        "description": s.description,
                        "matrix": s.cell.matrix if s.cell else None,
                        "factors": s.cell.factors if s.cell else {},
                        "no_such_build": s.cell.no_such_build if s.cell else None,
                    }
                    for s in specs
                ],
                indent=2,
            )
        )
        return 0
    for s in specs:
        flag = "default" if s.default else "opt-in "
        why = s.cell.no_such_build if s.cell else None
        known = f" (no such build: {why})" if why else ""
        print(
            f"{s.name:14} {flag} py{s.python:5} {','.join(s.platforms):22} "
            f"[{', '.join(s.tags)}] {s.description}{known}"
        )
    return 0


def cmd_test(project: Project, args: argparse.Namespace) -> int:
    """Build, verify and run the compat suite for named envs; non-zero unless all are healthy."""
    matrix = Matrix(project.envspecs)
    for name in args.envs:
        matrix.get(name)  # unknown names fail before anything is built
    _check_outputs(project)
    results = _run_envs(
        project, matrix, args.envs, _options(args), _run_id(), _host(project, matrix)
    )
    bad = [r for r in results if r.outcome is not Outcome.BUILT or pipeline.compat_failed(r.compat)]
    if len(results) == 1 and not results[0].outcome.has_env:
        raise UserError(f"{results[0].env}: {results[0].outcome}: {results[0].reason}")
    return 1 if bad else 0


def cmd_matrix(project: Project, args: argparse.Namespace) -> int:
    """The default envs (or named ones, or --all) end to end, the rest checked for availability,
    then the report."""
    matrix = Matrix(project.envspecs)
    for name in args.envs:
        matrix.get(name)  # an env named on the command line must exist and be valid
    selected = matrix.names if args.all else args.envs or matrix.default_names()
    others = [] if args.envs else [n for n in matrix.names if n not in selected]
    _check_outputs(project, report=not args.no_report)
    results = _run_envs(
        project, matrix, selected, _options(args), _run_id(), _host(project, matrix), others
    )
    if not args.no_report:
        from envlab.report import render

        code = render.main(project.runs, project.reports / "latest", project.history_db)
        if code:
            return code
    if args.strict and any(r.outcome is not Outcome.BUILT for r in results):
        return 1
    return 0


def cmd_bench(project: Project, args: argparse.Namespace) -> int:
    matrix = Matrix(project.envspecs)
    matrix.get(args.env)  # unknown or malformed: fail before anything is built
    options = pipeline.Options(
        force=args.force,
        compat=False,
        bench=BenchMode(args.mode),
        conda_engine=args.conda_engine,
        wait=not args.no_wait,
        refresh=not args.no_refresh,
    )
    _check_outputs(project)
    result = pipeline.run_env(project, matrix, args.env, _run_id(), _host(project, matrix), options)
    _check_saved([s for s in [pipeline.write(project, result)] if s.failed])
    if not result.outcome.has_env:
        raise UserError(f"{result.env}: {result.outcome}: {result.reason}")
    for b in result.benchmarks:
        peak = (
            f"  {100 * b.fraction_of_peak:.1f}% of peak" if b.fraction_of_peak is not None else ""
        )
        noisy = "  NOISY" if b.noisy else ""
        err = f"  ERROR: {b.error}" if b.error else ""
        print(
            f"{b.name:32} {b.median:12.4g} {b.unit:9} IQR {b.iqr:.3g}  CV {100 * b.cv:.1f}%"
            f"{peak}{noisy}{err}"
        )
    return 1 if any(b.error for b in result.benchmarks) else 0


def cmd_test_host(project: Project, args: argparse.Namespace) -> int:
    matrix = Matrix(project.envspecs)
    spec = matrix.get(args.expect) if args.expect else None
    python = Path(args.python)
    name = args.name or f"host-{python.name}"
    _check_outputs(project)
    result = pipeline.test_host(
        project,
        python,
        _run_id(),
        _host(project, matrix),
        name,
        spec,
        shlex.split(args.pytest_args),
        deep=args.deep,
    )
    saved = pipeline.write(project, result)
    print(_table([result], {}), file=sys.stderr)
    _check_saved([saved] if saved.failed else [])
    return 1 if result.outcome.failed or pipeline.compat_failed(result.compat) else 0


def cmd_report(project: Project, args: argparse.Namespace) -> int:
    from envlab.report import render

    out = Path(args.out) if args.out else project.reports / "latest"
    _check_dirs(out, project.history_db.parent)
    return render.main(project.runs, out, project.history_db, args.factor_bench)


def _check_dirs(*places: Path) -> None:
    """A one-line error, before any work, when a directory to write into is not writable."""
    from envlab.fsutil import unwritable

    for place in places:
        if problem := unwritable(place):
            raise UserError(f"cannot write {place}: {problem}; expected a writable directory")


def cmd_regress(project: Project, args: argparse.Namespace) -> int:
    from envlab.report import regress

    _check_dirs(project.reports / "latest", project.history_db.parent)
    return regress.main(
        project.runs,
        project.history_db,
        options=regress.options_from_args(args),
        baseline=args.baseline,
        out_md=project.reports / "latest" / "regressions.md",
    )


def cmd_results(project: Project, args: argparse.Namespace) -> int:
    """The results store on its git branch: pull, push, or publish the report site."""
    from envlab.results import gitstore

    if args.action == "publish":
        remote = gitstore.resolve_remote(project.root, args.remote, args.branch or site.branch())
        checkout = Path(args.checkout) if args.checkout else site.default_checkout(project.root)
        run_id = args.run or os.environ.get("ENVLAB_RUN_ID") or ""
        report = Path(args.report) if args.report else project.reports / "latest"
        store = gitstore.GitBranch(remote, checkout)
        site.publish(store, report, run_id, keep=args.keep_nights, attempts=args.attempts)
        return 0
    remote = gitstore.resolve_remote(project.root, args.remote, args.branch)
    checkout = Path(args.checkout) if args.checkout else gitstore.default_checkout(project.root)
    store = gitstore.GitBranch(remote, checkout)
    if args.action == "pull":
        gitstore.pull(store, project.runs)
    else:
        gitstore.push(store, project.runs, attempts=args.attempts)
    return 0


def cmd_bisect(project: Project, args: argparse.Namespace) -> int:
    """Name the package change (or nightly) that broke one item; 1 when none could be named."""
    from envlab.bisect import commands
    from envlab.bisect.target import Kind, Target
    from envlab.report import bisects, regress

    kind = next((k for k in Kind if getattr(args, k.value)), None)
    options = commands.Options(
        target=Target(kind, getattr(args, kind.value)) if kind else None,
        host=args.host,
        max_steps=args.max_steps,
        keep=args.keep,
        bench_mode=args.bench_mode,
    )
    matrix = Matrix(project.envspecs)
    if args.auto:
        if args.env or args.good or args.bad or kind:
            raise UserError("bisect: --auto takes no ENV, --good, --bad or target")
        done = commands.auto(project, matrix, options, _host(project, matrix))
    else:
        if not (args.env and args.good and args.bad):
            raise UserError("bisect: expected ENV --good RUN --bad RUN (or dates), or --auto")
        matrix.get(args.env)  # an unknown env fails before anything is read
        host = _host(project, matrix)
        done = [commands.run(project, matrix, args.env, args.good, args.bad, options, host)]
    for b in done:
        print(f"{b.verdict} ({b.builds} env(s) built in {b.duration_s:.0f} s)")
    regress.write_step_summary("".join(bisects.render_markdown(b, heading_level=2) for b in done))
    return 0 if all(b.status == "found" for b in done) else commands.EXIT_INCONCLUSIVE


def cmd_doctor(project: Project, args: argparse.Namespace) -> int:
    from envlab.hardware import doctor

    return doctor.main(
        Matrix(project.envspecs), as_json=args.json, arch_flags=_built_arch_flags(project)
    )


def cmd_lock(project: Project, args: argparse.Namespace) -> int:
    from envlab.build import lock
    from envlab.hardware import builds

    return lock.main(
        project,
        Matrix(project.envspecs),
        envs=args.envs,
        check=args.check,
        diff=args.diff,
        verify_urls=args.verify,
        platforms=args.platform,
        conda_engine=args.conda_engine,
        advise=builds.variant_warnings,
    )


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}")
    return int(text)


def _conda_engine(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--conda-engine",
        choices=list(Engine),
        type=Engine,
        default=Engine.RATTLER,
        help="what locks and installs conda bases: rattler (built in, the default) or conda-lock "
        "(needs a conda/mamba/micromamba executable)",
    )


def _results_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "results",
        help="the results store on a git branch: pull it into reports/runs, push new results, "
        "publish the report site",
    )
    p.add_argument(
        "action",
        choices=["pull", "push", "publish"],
        help="pull: the store's results into reports/runs; push: local results the store lacks; "
        "publish: reports/latest as the site's latest report and this night's page",
    )
    p.add_argument(
        "--remote",
        help="git URL or path of the store (default $ENVLAB_RESULTS_REMOTE, else this project's "
        "'origin')",
    )
    p.add_argument(
        "--branch",
        help="branch (default $ENVLAB_RESULTS_BRANCH or envlab-results; for publish "
        "$ENVLAB_SITE_BRANCH or envlab-site)",
    )
    p.add_argument(
        "--checkout",
        help="local checkout of the branch (default $ENVLAB_RESULTS_CHECKOUT or "
        ".envlab/results-store; for publish $ENVLAB_SITE_CHECKOUT or .envlab/site)",
    )
    p.add_argument(
        "--attempts",
        type=int,
        default=5,
        help="pushes to try when others land first, rebasing between them (default 5)",
    )
    p.add_argument("--run", help="publish: the night's run id (default $ENVLAB_RUN_ID)")
    p.add_argument("--report", help="publish: the report directory (default reports/latest)")
    p.add_argument(
        "--keep-nights",
        type=int,
        default=site.DEFAULT_KEEP,
        help="publish: nights whose full report stays on the site; older ones keep their summary "
        f"(default {site.DEFAULT_KEEP})",
    )
    p.set_defaults(func=cmd_results)


def _no_wait(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="when another envlab is building or testing the env, exit 75 instead of waiting",
    )
    p.add_argument(
        "--no-refresh",
        action="store_true",
        help="reuse an env whose unlocked or nightly layers' index moved since its build "
        "(default: ask the index and rebuild onto the newer versions)",
    )


def _deep(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--deep",
        action="store_true",
        help="compare every installed file's hash with its RECORD, not only its size (slower)",
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="envlab",
        description=(
            "Environment matrix lab for PyTorch/CUDA stacks: "
            "lock, build, verify, test, benchmark, report."
        ),
    )
    top.add_argument(
        "--root", type=Path, help="project directory (default: nearest with envspecs/)"
    )
    top.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show details: each command, uv's per-package lines, the compat suite's output",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list the envs of the matrix")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("test", help="build, verify and run the compat suite in envs")
    p.add_argument("envs", nargs="+", metavar="ENV")
    p.add_argument("--force", action="store_true", help="rebuild even if the inputs are unchanged")
    p.add_argument(
        "--bench",
        choices=list(BenchMode),
        type=BenchMode,
        help="also run the benchmarks in this mode",
    )
    p.add_argument("--no-compat", action="store_true", help="build and verify only")
    p.add_argument(
        "--relock", action="store_true", help="relock a stale (or missing) lock before building"
    )
    p.add_argument(
        "--pytest-args",
        default="",
        help="extra pytest arguments for the compat suite, e.g. '-k blas'",
    )
    _no_wait(p)
    _deep(p)
    _conda_engine(p)
    p.set_defaults(func=cmd_test)

    p = sub.add_parser(
        "matrix",
        help="default envs end to end, the others checked for availability, then the report",
    )
    p.add_argument("envs", nargs="*", metavar="ENV")
    p.add_argument("--all", action="store_true", help="build every env, not only the defaults")
    p.add_argument("--force", action="store_true")
    p.add_argument("--bench", choices=list(BenchMode), type=BenchMode)
    p.add_argument("--no-report", action="store_true")
    p.add_argument(
        "--strict", action="store_true", help="exit 1 unless every env built and verified"
    )
    _no_wait(p)
    _deep(p)
    _conda_engine(p)
    p.set_defaults(func=cmd_matrix)

    p = sub.add_parser("bench", help="run the benchmarks in an env")
    p.add_argument("env", metavar="ENV")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick")
    mode.add_argument("--full", dest="mode", action="store_const", const="full")
    p.set_defaults(mode="default")
    p.add_argument("--force", action="store_true")
    _no_wait(p)
    _conda_engine(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("test-host", help="run the compat suite in an existing interpreter")
    p.add_argument("--python", required=True, help="path of the interpreter to check")
    p.add_argument(
        "--expect",
        metavar="ENV",
        help="run every check of that env too: its expectations, integrity, its lock here",
    )
    p.add_argument("--name", help="env name in the result (default host-<python>)")
    p.add_argument("--pytest-args", default="", help="extra pytest arguments for the compat suite")
    _deep(p)
    p.set_defaults(func=cmd_test_host)

    p = sub.add_parser("report", help="HTML + Markdown + PNG report from reports/runs")
    p.add_argument("--out", help="output directory (default reports/latest)")
    p.add_argument(
        "--factor-bench",
        metavar="TEXT",
        help="the benchmark of the factor views' heat-maps: part of its key, e.g. gemm "
        "(default: the one most cells recorded)",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "regress", help="judge the newest run against earlier ones; exit 1 on a regression"
    )
    p.add_argument(
        "--baseline", help="judge against the results up to this run id (default: all earlier)"
    )
    p.add_argument(
        "--window",
        type=int,
        default=judge.DEFAULT_WINDOW,
        help="earlier comparable run medians a benchmark is judged against "
        f"(default {judge.DEFAULT_WINDOW})",
    )
    p.add_argument(
        "--min-history",
        type=int,
        default=judge.DEFAULT_MIN_HISTORY,
        help="fewer earlier runs than this: speed is reported as insufficient history "
        f"(default {judge.DEFAULT_MIN_HISTORY})",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=judge.DEFAULT_THRESHOLD,
        help=f"smallest slowdown factor that counts (default {judge.DEFAULT_THRESHOLD:.2f})",
    )
    p.add_argument(
        "--sigmas",
        type=float,
        default=judge.DEFAULT_SIGMAS,
        help="spreads between runs (and within a run) a slowdown must exceed "
        f"(default {judge.DEFAULT_SIGMAS:g})",
    )
    p.add_argument(
        "--persist",
        type=int,
        default=judge.DEFAULT_PERSIST,
        help="flag a slowdown only when each of the last N comparable runs shows it "
        f"(default {judge.DEFAULT_PERSIST})",
    )
    p.set_defaults(func=cmd_regress)

    _results_parser(sub)

    p = sub.add_parser(
        "bisect", help="name the package change (or nightly) that broke a check, test or benchmark"
    )
    p.add_argument("env", nargs="?", metavar="ENV")
    p.add_argument(
        "--good",
        metavar="RUN",
        help="run id or result file where it was fine (nightly env: a date)",
    )
    p.add_argument(
        "--bad", metavar="RUN", help="run id or result file where it broke (nightly env: a date)"
    )
    item = p.add_mutually_exclusive_group()
    item.add_argument("--check", metavar="NAME", help="watch this expectation check")
    item.add_argument("--test", metavar="NODEID", help="watch this compat test (file.py::test)")
    item.add_argument("--bench", metavar="NAME", help="watch this benchmark (judged against good)")
    p.add_argument("--host", help="whose results the ends are (default: this host's)")
    p.add_argument(
        "--max-steps", metavar="N", type=_positive, help="build at most N candidate envs"
    )
    p.add_argument("--keep", action="store_true", help="keep the candidate envs afterwards")
    p.add_argument(
        "--bench-mode",
        choices=list(BenchMode),
        type=BenchMode,
        default=BenchMode.QUICK,
        help="how long a watched benchmark runs in each candidate (default quick)",
    )
    p.add_argument(
        "--auto", action="store_true", help="bisect each new hard break of the newest run here"
    )
    p.set_defaults(func=cmd_bisect)

    p = sub.add_parser("doctor", help="this machine's GPU/driver/CPU and which envs run on it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("lock", help="write per-platform lockfiles; --check, --diff, --verify")
    p.add_argument("envs", nargs="*", metavar="ENV")
    p.add_argument("--check", action="store_true", help="exit 1 naming envs whose locks are stale")
    p.add_argument("--diff", action="store_true", help="show what a relock would change")
    p.add_argument(
        "--verify", action="store_true", help="check every locked file is still downloadable"
    )
    p.add_argument("--platform", action="append", help="only this platform (repeatable)")
    _conda_engine(p)
    p.set_defaults(func=cmd_lock)
    for command in sub.choices.values():  # `nox -s test-stable -- -v` puts it after the command
        if "-v" in command._option_string_actions:
            continue
        command.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="as envlab -v"
        )
    return top


def _terminate_as_interrupt() -> object:
    """SIGTERM (a CI job cancelled, ``timeout``) ends envlab as Ctrl-C does: the commands it runs
    live in process groups of their own, and are killed on the way out, not left behind.
    Returns the handler it replaced (None: none replaced)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        return None
    return signal.signal(signal.SIGTERM, signal.default_int_handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    set_verbose(args.verbose)
    previous = _terminate_as_interrupt()
    try:
        project = Project.discover(args.root)
        return int(args.func(project, args) or 0)
    except UserError as exc:
        print(f"envlab: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("envlab: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
