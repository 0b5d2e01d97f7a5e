"""One bisect in progress: its candidate envs, each step written as a normal result, its record.

Every step builds one candidate env, probes it, runs the target and is written as a result (tagged
``bisect``, run id ``<bisect-id>-NN``) under ``<reports>/bisect/<bisect-id>/``, beside the
bisect's record (``bisect.json``) and its table (``bisect.md``); a candidate never enters an env's
history. Candidate envs live under ``.envlab/bisect/<env>/`` and are removed after their step
unless ``keep``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from packaging.markers import default_environment

from envlab import pipeline
from envlab.bisect import index, target
from envlab.bisect.candidate import Candidates
from envlab.bisect.search import Found, Status
from envlab.bisect.target import Kind, Target
from envlab.build import interpreters
from envlab.build.layers import BuildResult
from envlab.build.uv import Uv
from envlab.fsutil import atomic_write_text
from envlab.log import log
from envlab.outcome import Outcome
from envlab.project import Project
from envlab.report import bisects as bisect_report
from envlab.results import bisects
from envlab.results.bisects import Bisect, BisectStep
from envlab.results.facts import Facts
from envlab.results.schema import Benchmark, Host, Result, new_run_id, now_iso
from envlab.results.store import Store, safe_name
from envlab.run.bench import BenchMode
from envlab.spec.envspec import EnvSpec, Matrix
from envlab.verify import expectations


@dataclass(frozen=True)
class Options:
    target: Target | None = None
    host: str | None = None  # whose results the ends are (default: this host's)
    max_steps: int | None = None
    keep: bool = False
    bench_mode: BenchMode = BenchMode.QUICK


class Unbuildable(Exception):
    """A candidate env could not be built: the bisect cannot go on."""


def bisect_dir(project: Project) -> Path:
    """Where bisect records and their step results go: beside the runs, never among them."""
    return project.runs.parent / "bisect"


def _marker_environment(interpreter: interpreters.Interpreter) -> dict[str, str]:
    """Marker values of the candidates: this platform, the env's Python."""
    env = dict(default_environment())
    env.update(python_version=interpreter.minor, python_full_version=interpreter.version)
    return env


def _deviation(expected: Mapping[str, str], facts: Facts, candidates: Candidates) -> str:
    """How the installed set differs from the candidate's (empty when it does not, or when the
    probe could not say: the result records why)."""
    if facts.probe_error:
        return ""
    installed = {n: v for n, v in facts.versions().items() if v is not None}
    skip = candidates.editable_names
    extra = sorted(set(installed) - set(expected) - skip)
    missing = sorted(set(expected) - set(installed) - skip)
    other = sorted(n for n in set(expected) & set(installed) if expected[n] != installed[n])
    parts = [f"+{n} {installed[n]}" for n in extra] + [f"-{n}" for n in missing]
    parts += [f"{n} {installed[n]} (not {expected[n]})" for n in other]
    return f" [installed differs from the candidate: {', '.join(parts[:5])}]" if parts else ""


class Bisector:
    """One bisect: its candidates, its steps as results, its record."""

    def __init__(
        self,
        project: Project,
        matrix: Matrix,
        spec: EnvSpec,
        target: Target,
        options: Options,
        host: Host,
        uv: Uv | None = None,
        reader: index.IndexReader | None = None,
    ) -> None:
        self.project = project
        self.spec = spec
        self.target = target
        self.options = options
        self.host = host
        self.id = "bisect-" + new_run_id()
        self.dir = bisect_dir(project)
        self.store = Store(self.dir / self.id)
        self.reader = reader or index.IndexReader()
        interpreter = interpreters.find(spec.python, uv)
        self.environment = _marker_environment(interpreter)
        root = project.envs.parent / "bisect" / safe_name(spec.name)
        self.candidates = Candidates(
            project, matrix, spec, root, self.reader, uv or Uv(), interpreter
        )
        self.steps: list[BisectStep] = []
        self.results: list[Result] = []
        self.reference: Benchmark | None = None
        self.reference_run = "the good run"
        self.started = time.monotonic()

    # ------------------------------------------------------------------ one step

    def step(
        self,
        candidate: str,
        applied: list[str],
        build: Callable[[str], BuildResult],
        expected: Mapping[str, str] | None = None,
    ) -> bool:
        """Build a candidate, run the target in it, record the step; whether the target broke.

        ``expected``: the package set the candidate should hold (a difference is reported).
        """
        run_id = f"{self.id}-{len(self.steps) + 1:02d}"
        t0 = time.monotonic()
        log(f"bisect step {len(self.steps) + 1}: {candidate}")
        try:
            built = build(run_id)
            result = self._result(run_id, candidate, built)
            observation = self._observe(built, result) if built.python else None
            if observation and expected is not None:
                observation.detail += _deviation(expected, result.facts, self.candidates)
        finally:
            if not self.options.keep:
                self.candidates.remove(run_id)
        self.store.write(result)
        self.results.append(result)
        step = BisectStep(
            run_id=run_id,
            candidate=candidate,
            applied=applied,
            outcome=result.outcome,
            broke=observation.broke if observation else None,
            detail=observation.detail if observation else result.reason or "",
            duration_s=round(time.monotonic() - t0, 2),
        )
        self.steps.append(step)
        if observation is None:
            raise Unbuildable(f"step {len(self.steps)} ({candidate}): {result.reason}")
        log(f"bisect step {len(self.steps)}: {'BROKE' if step.broke else 'ok'}: {step.detail}")
        return observation.broke

    def _result(self, run_id: str, candidate: str, built: BuildResult) -> Result:
        return Result(
            run_id=run_id,
            created=now_iso(),
            env=self.spec.name,
            spec_hash=self.spec.spec_hash,
            description=f"{self.id} step {len(self.steps) + 1}: {candidate}",
            tags=[*self.spec.tags, bisects.TAG],
            host=self.host,
            outcome=built.outcome,
            reason=built.reason,
            build=built.record,
        )

    def _observe(self, built: BuildResult, result: Result) -> target.Observation:
        assert built.python is not None
        facts = pipeline.probe_env(built.python)
        env = target.Env(
            self.project,
            self.spec,
            built.python,
            facts,
            built.layer_packages,
            self.project.work / "bisect" / self.id / result.run_id,
        )
        observation = target.observe(
            self.target, env, self.reference, self.reference_run, self.options.bench_mode
        )
        if self.target.kind is Kind.BENCH and self.reference is None:
            self.reference = target.reference_benchmark(
                result.model_copy(update={"benchmarks": observation.benchmarks}), self.target.name
            )
            self.reference_run = f"step {len(self.steps) + 1}"
        failed = expectations.failures(observation.checks)
        result.facts, result.checks = facts, observation.checks
        result.compat, result.benchmarks = observation.compat, observation.benchmarks
        if failed:
            result.outcome = Outcome.VERIFY_FAILED
            result.reason = expectations.summary(observation.checks)
        return observation

    # ------------------------------------------------------------------ the end

    def finish(
        self,
        kind: Literal["packages", "nightly"],
        good: str,
        bad: str,
        labels: list[str],
        found: Found,
        verdict: str,
    ) -> Bisect:
        """Write the record and its table; remove the candidates (unless kept)."""
        culprit = [labels[i] for i in found.culprit] if found.status is Status.FOUND else []
        record = Bisect(
            bisect_id=self.id,
            created=now_iso(),
            env=self.spec.name,
            host=self.host.id,
            kind=kind,
            good=good,
            bad=bad,
            target=str(self.target),
            candidates=labels,
            status=found.status,
            culprit=culprit,
            verdict=verdict,
            builds=len(self.steps),
            duration_s=round(time.monotonic() - self.started, 1),
            steps=self.steps,
        )
        path = bisects.write(self.dir, record)
        atomic_write_text(path.with_name("bisect.md"), bisect_report.render_markdown(record))
        log(f"bisect: wrote {path} and its {len(self.steps)} step result(s)")
        return record

    @contextmanager
    def cleanup(self) -> Iterator[None]:
        """Remove the candidate envs at the end, however it ends (unless ``keep``)."""
        try:
            yield
        finally:
            shutil.rmtree(self.project.work / "bisect" / self.id, ignore_errors=True)
            if not self.options.keep:
                self.candidates.remove_all()

    def failure(self, status: Status, tail: str) -> str:
        """The verdict of a search that named no culprit."""
        t = self.target
        return {
            Status.NOT_REPRODUCED: f"not reproduced: the bad end does not break {t} here "
            "(so the difference is not in what was bisected: host, driver, or a flaky item?)",
            Status.GOOD_BREAKS: f"the good end breaks {t} here too "
            "(so the break is not in what was bisected: host, driver, or a flaky item?)",
        }.get(status, tail)
