"""Command line: ``envlab <command>``. nox sessions call these; user errors print one line."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from envlab import pipeline
from envlab.build.conda import Engine
from envlab.errors import UserError
from envlab.log import log
from envlab.outcome import Outcome
from envlab.project import Project
from envlab.report import judge
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
        reason = r.reason or ""
        reason = reason if len(reason) <= 90 else reason[:87] + "..."
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
    for name in names:
        start = time.monotonic()
        result = pipeline.run_env(project, matrix, name, run_id, host, options)
        pipeline.write(project, result)
        elapsed[name] = time.monotonic() - start
        results.append(result)
    for name in others or []:
        start = time.monotonic()
        result = pipeline.availability(project, matrix, name, run_id, host)
        if result is None:
            log(f"{name}: reachable but opt-in: not run (nox -s test-{name}, or matrix -- --all)")
            continue
        pipeline.write(project, result)
        elapsed[name] = time.monotonic() - start
        results.append(result)
    print(f"\nrun {run_id} on {host.id}:", file=sys.stderr)
    print(_table(results, elapsed), file=sys.stderr)
    return results


def _options(args: argparse.Namespace) -> pipeline.Options:
    return pipeline.Options(
        force=getattr(args, "force", False),
        compat=not getattr(args, "no_compat", False),
        bench=getattr(args, "bench", None),
        relock=getattr(args, "relock", False),
        compat_args=shlex.split(getattr(args, "pytest_args", "") or ""),
        conda_engine=getattr(args, "conda_engine", Engine.RATTLER),
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
                    }
                    for s in specs
                ],
                indent=2,
            )
        )
        return 0
    for s in specs:
        flag = "default" if s.default else "opt-in "
        print(
            f"{s.name:14} {flag} py{s.python:5} {','.join(s.platforms):22} "
            f"[{', '.join(s.tags)}] {s.description}"
        )
    return 0


def cmd_test(project: Project, args: argparse.Namespace) -> int:
    """Build, verify and run the compat suite for named envs; non-zero unless all are healthy."""
    matrix = Matrix(project.envspecs)
    for name in args.envs:
        matrix.get(name)  # unknown names fail before anything is built
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
        force=args.force, compat=False, bench=BenchMode(args.mode), conda_engine=args.conda_engine
    )
    result = pipeline.run_env(project, matrix, args.env, _run_id(), _host(project, matrix), options)
    pipeline.write(project, result)
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
    result = pipeline.test_host(
        project,
        python,
        _run_id(),
        _host(project, matrix),
        name,
        spec,
        shlex.split(args.pytest_args),
    )
    pipeline.write(project, result)
    print(_table([result], {}), file=sys.stderr)
    return 1 if result.outcome.failed or pipeline.compat_failed(result.compat) else 0


def cmd_report(project: Project, args: argparse.Namespace) -> int:
    from envlab.report import render

    return render.main(
        project.runs, Path(args.out) if args.out else project.reports / "latest", project.history_db
    )


def cmd_regress(project: Project, args: argparse.Namespace) -> int:
    from envlab.report import regress

    return regress.main(
        project.runs,
        project.history_db,
        options=regress.options_from_args(args),
        baseline=args.baseline,
        out_md=project.reports / "latest" / "regressions.md",
    )


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


def _conda_engine(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--conda-engine",
        choices=list(Engine),
        type=Engine,
        default=Engine.RATTLER,
        help="what locks and installs conda bases: rattler (built in, the default) or conda-lock "
        "(needs a conda/mamba/micromamba executable)",
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
    _conda_engine(p)
    p.set_defaults(func=cmd_matrix)

    p = sub.add_parser("bench", help="run the benchmarks in an env")
    p.add_argument("env", metavar="ENV")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick")
    mode.add_argument("--full", dest="mode", action="store_const", const="full")
    p.set_defaults(mode="default")
    p.add_argument("--force", action="store_true")
    _conda_engine(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("test-host", help="run the compat suite in an existing interpreter")
    p.add_argument("--python", required=True, help="path of the interpreter to check")
    p.add_argument("--expect", metavar="ENV", help="check that env's expectations too")
    p.add_argument("--name", help="env name in the result (default host-<python>)")
    p.add_argument("--pytest-args", default="", help="extra pytest arguments for the compat suite")
    p.set_defaults(func=cmd_test_host)

    p = sub.add_parser("report", help="HTML + Markdown + PNG report from reports/runs")
    p.add_argument("--out", help="output directory (default reports/latest)")
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
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        project = Project.discover(args.root)
        return int(args.func(project, args) or 0)
    except UserError as exc:
        print(f"envlab: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("envlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
