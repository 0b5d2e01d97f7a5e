"""Bisect records: ``<bisect dir>/<bisect-id>/bisect.json`` beside the results of its steps.

Every step of a bisect is a normal result (tagged ``bisect``, its own run id) stored under the
bisect's directory, not among the nightly runs: a candidate env is not the env as declared, and
must not enter that env's history. This summary names the steps in order and the verdict, for the
report's table and the scheduled workflow's step summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from envlab.fsutil import atomic_write_text
from envlab.outcome import Outcome
from envlab.results.schema import Model

BISECT_VERSION = 1
SUMMARY = "bisect.json"
TAG = "bisect"


class BisectStep(Model):
    """One candidate env: what it held, how its build ended, whether the target broke."""

    run_id: str
    candidate: str  # "good + 4 of 8 changes", "nightly 2026-11-25"
    applied: list[str] = Field(default_factory=list)  # the changes (or build) it was given
    outcome: Outcome
    broke: bool | None = None  # None: the target did not run (the build failed)
    detail: str = ""
    duration_s: float = 0.0


class Bisect(Model):
    """One bisect from its two ends to its verdict."""

    bisect_version: int = BISECT_VERSION
    bisect_id: str
    created: str
    env: str
    host: str
    kind: Literal["packages", "nightly"]
    good: str  # a run id, a result file, or a date
    bad: str
    target: str
    candidates: list[str] = Field(default_factory=list)  # the groups (or nightlies) bisected
    status: str
    culprit: list[str] = Field(default_factory=list)
    verdict: str
    builds: int = 0
    duration_s: float = 0.0
    steps: list[BisectStep] = Field(default_factory=list)


def write(directory: Path, bisect: Bisect) -> Path:
    """Write ``bisect`` as ``directory/<bisect-id>/bisect.json`` (atomically)."""
    path = directory / bisect.bisect_id / SUMMARY
    atomic_write_text(path, bisect.model_dump_json(indent=2) + "\n")
    return path


def read_all(directory: Path) -> tuple[list[Bisect], list[tuple[Path, str]]]:
    """Every bisect under ``directory``, newest first, and the files that could not be read."""
    found, skipped = [], []
    for path in sorted(directory.glob(f"*/{SUMMARY}")) if directory.is_dir() else []:
        try:
            found.append(Bisect.model_validate(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, ValidationError) as exc:
            skipped.append((path, f"expected a bisect record ({type(exc).__name__})"))
    found.sort(key=lambda b: (b.created, b.bisect_id), reverse=True)
    return found, skipped
