"""Calibrate the regression judge by simulation: false-alarm rate and detection power.

Noise model (each part an option): every run of an env draws one machine drift, uniform in
±``--drift`` and shared by all figures of that run (the run-to-run drift of a shared VM); every
sample of a figure is its true value × (1 + drift) × a log-normal factor with ``--cv`` spread;
the env's figures have the sample counts of ``--figures`` (by default those of quick mode: 7-sample
timings, a 10-sample one, a 3-sample slow one, ``import torch`` with 2 samples and the build time
with 1). Run statistics come from envlab's own ``bench.summarize``. A history adds one night at a
time and each night is judged as the newest run, by ``judge.judge_series``: the rule ``envlab
regress`` applies to the newest run and the report's history marks show.

Printed for the default options, for the scheduled workflow's options (read from
``.github/workflows/scheduled.yml``) and for any ``--options "..."`` given (regress options):

* false alarms on identical runs: per-env verdicts (one per env and night: any figure flagged),
  alarms among them, verdict counts per figure, alarms in young histories (1-4 earlier runs), and
  the share of histories with at least one alarm;
* power: a 10 %, 20 % and 35 % slowdown of each multi-sample figure, planted after a full window
  of earlier runs, flagged on the night it appears and by the second night (and a 20 % one after
  twice ``min_history`` runs); a 3x slower 1-2-sample figure, planted after ``min_history`` runs.

Usage: ``python tools/calibrate_judge.py [--histories N] [--seed S] [--options "--persist 2"]``.
"""

from __future__ import annotations

import argparse
import random
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src")]

from envlab.report.judge import JudgeOptions, Point, Verdict, judge_series
from envlab.report.regress import options_from_args
from envlab.run.bench import summarize

WORKFLOW = ROOT / ".github" / "workflows" / "scheduled.yml"
QUICK_FIGURES = (("gemm", 7), ("conv2d", 10), ("resnet18", 3), ("import_torch", 2), ("build", 1))
SLOWDOWNS = (1.10, 1.20, 1.35)
YOUNG = range(1, 5)  # earlier runs in a "young" history


@dataclass(frozen=True)
class NoiseModel:
    """How simulated runs scatter: per-sample CV, run-level drift (uniform ±), figures."""

    cv: float = 0.03
    drift: float = 0.08
    figures: tuple[tuple[str, int], ...] = QUICK_FIGURES

    def describe(self) -> str:
        figures = ", ".join(
            f"{name} ({n} sample{'s' if n > 1 else ''})" for name, n in self.figures
        )
        return (
            f"per-sample CV {self.cv:.0%}, run-level drift uniform in ±{self.drift:.0%} shared by "
            f"the run's figures; figures: {figures}"
        )


def _run_point(rng: random.Random, night: int, name: str, n: int, scale: float, cv: float) -> Point:
    raw = {
        "name": name,
        "version": 1,
        "unit": "ms",
        "higher_is_better": False,
        "samples": [scale * rng.lognormvariate(0.0, cv) for _ in range(n)],
    }
    bench = summarize(raw)
    return Point(f"night-{night:03d}", bench.median, tuple(bench.samples))


def simulate(
    rng: random.Random,
    model: NoiseModel,
    nights: int,
    slow: tuple[int, float, int] | None = None,
    only: int | None = None,
) -> list[list[Point]]:
    """One env's history: per figure, one point per night.

    ``slow``: (figure, factor, first night) of a planted slowdown; ``only``: simulate that figure
    alone (the others would not change it: each night's drift is drawn either way).
    """
    figures = list(enumerate(model.figures))
    if only is not None:
        figures = [figures[only]]
    series: list[list[Point]] = [[] for _ in figures]
    for night in range(nights):
        drift = 1.0 + rng.uniform(-model.drift, model.drift)
        for s, (f, (name, n)) in enumerate(figures):
            factor = slow[1] if slow and slow[0] == f and night >= slow[2] else 1.0
            series[s].append(_run_point(rng, night, name, n, 10.0 * drift * factor, model.cv))
    return series


@dataclass
class FalseAlarms:
    """Identical-run histories judged night by night."""

    histories: int = 0
    env_verdicts: int = 0
    env_alarms: int = 0
    young_verdicts: int = 0
    young_alarms: int = 0
    histories_alarmed: int = 0
    per_figure: list[dict[Verdict, int]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.env_alarms / max(self.env_verdicts, 1)


def false_alarms(
    model: NoiseModel, options: JudgeOptions, histories: int, nights: int, seed: int
) -> FalseAlarms:
    """Judge every night of ``histories`` identical-run histories of ``nights`` nights."""
    rng = random.Random(seed)
    out = FalseAlarms(per_figure=[dict.fromkeys(Verdict, 0) for _ in model.figures])
    for _ in range(histories):
        verdicts = [
            judge_series(s, higher_is_better=False, options=options)
            for s in simulate(rng, model, nights)
        ]
        alarmed = False
        for night in range(1, nights):  # the first night has nothing to be judged against
            flagged = False
            for f, figure in enumerate(verdicts):
                out.per_figure[f][figure[night].verdict] += 1
                flagged |= figure[night].regressed
            out.env_verdicts += 1
            out.env_alarms += flagged
            if night in YOUNG:
                out.young_verdicts += 1
                out.young_alarms += flagged
            alarmed |= flagged
        out.histories += 1
        out.histories_alarmed += alarmed
    return out


def power(
    model: NoiseModel,
    options: JudgeOptions,
    figure: int,
    factor: float,
    histories: int,
    seed: int,
    earlier: int | None = None,
) -> tuple[float, float]:
    """Share of histories whose slowed figure is flagged on its first night, and by its second.

    The slowdown appears after ``earlier`` identical nights (default: a full window).
    """
    rng = random.Random(seed)
    at = options.window if earlier is None else earlier
    first = second = 0
    for _ in range(histories):
        (series,) = simulate(rng, model, at + 2, slow=(figure, factor, at), only=figure)
        verdicts = judge_series(series, higher_is_better=False, options=options)
        first += verdicts[at].regressed
        second += verdicts[at].regressed or verdicts[at + 1].regressed
    return first / histories, second / histories


def workflow_options(path: Path = WORKFLOW) -> tuple[str, JudgeOptions]:
    """The regress options the scheduled workflow passes when no baseline run is named."""
    from envlab.cli import parser

    commands = [
        m.group(1)
        for line in path.read_text(encoding="utf-8").splitlines()
        if not re.match(r"\s*(#|-?\s*name:)", line)
        and (m := re.search(r"nox -s regress\b(.*)$", line))
    ]
    plain = [c for c in commands if "--baseline" not in c]
    if not plain:
        raise SystemExit(f"{path}: expected a `nox -s regress` command without --baseline")
    args = shlex.split(plain[0].strip().removeprefix("--"))
    return " ".join(args) or "(none)", options_from_args(parser().parse_args(["regress", *args]))


def _pct(x: float) -> str:
    return f"{100 * x:6.2f} %"


def report(
    label: str,
    options: JudgeOptions,
    model: NoiseModel,
    histories: int,
    seed: int,
) -> None:
    """Print the false-alarm and power figures of one option set."""
    t = time.perf_counter()
    nights = options.window + 15
    fa = false_alarms(model, options, histories, nights, seed)
    print(
        f"\n== {label}: window {options.window}, min history {options.min_history}, threshold "
        f"{options.threshold:.2f} ({options.few_threshold:.2f} for 1-2 samples), sigmas "
        f"{options.sigmas:g}, persist {options.persist}"
    )
    print(
        f"false alarms on identical runs: {fa.env_alarms} of {fa.env_verdicts} per-env verdicts "
        f"({_pct(fa.rate).strip()}); {fa.histories_alarmed} of {fa.histories} histories of "
        f"{nights} nights with at least one; young histories (1-4 earlier runs): "
        f"{fa.young_alarms} of {fa.young_verdicts}"
    )
    print(f"  {'figure':16} {'regression':>12} {'ok':>8} {'insufficient':>13} {'alarm rate':>11}")
    for (name, n), counts in zip(model.figures, fa.per_figure, strict=True):
        total = sum(counts.values())
        rate = counts[Verdict.REGRESSION] / max(total, 1)
        print(
            f"  {f'{name} (n={n})':16} {counts[Verdict.REGRESSION]:12} {counts[Verdict.OK]:8} "
            f"{counts[Verdict.INSUFFICIENT]:13} {_pct(rate):>11}"
        )
    print(f"power, slowdown after {options.window} earlier runs (first night / by the second):")
    for f, (name, n) in enumerate(model.figures):
        factors = SLOWDOWNS if n >= 3 else (3.0,)
        earlier = None if n >= 3 else options.min_history
        cells = []
        for factor in factors:
            first, second = power(model, options, f, factor, histories, seed + f, earlier)
            cells.append(f"{factor - 1:.0%} slower: {_pct(first)} / {_pct(second)}")
        where = "" if n >= 3 else f" (after {options.min_history} runs)"
        print(f"  {f'{name} (n={n})':16} " + "   ".join(cells) + where)
    young = 2 * options.min_history
    cells = [
        f"{name} {_pct(power(model, options, f, 1.20, histories, seed + f, young)[0]).strip()}"
        for f, (name, n) in enumerate(model.figures)
        if n >= 3
    ]
    print(f"  20% slower after only {young} earlier runs, first night: " + ", ".join(cells))
    print(f"  ({time.perf_counter() - t:.1f} s)")


def main() -> int:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--histories", type=int, default=1000, help="histories per figure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cv", type=float, default=0.03, help="per-sample CV (default 0.03)")
    parser.add_argument("--drift", type=float, default=0.08, help="run drift bound (0.08 = ±8 %%)")
    parser.add_argument(
        "--options", action="append", default=[], help="extra regress options to calibrate"
    )
    args = parser.parse_args()
    from envlab.cli import parser as cli_parser

    model = NoiseModel(cv=args.cv, drift=args.drift)
    print(f"noise model: {model.describe()}; {args.histories} histories, seed {args.seed}")
    sets = [("default options", JudgeOptions())]
    flags, wf = workflow_options()
    if wf == sets[0][1]:
        print(f"\nthe scheduled workflow's regress options ({flags}) are the default options")
    else:
        sets.append((f"scheduled workflow's options ({flags})", wf))
    for extra in args.options:
        parsed = cli_parser().parse_args(["regress", *shlex.split(extra)])
        sets.append((f"--options {extra!r}", options_from_args(parsed)))
    for label, options in sets:
        report(label, options, model, args.histories, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
