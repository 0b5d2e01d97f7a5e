"""The result document: one JSON per (run, host, env), versioned and validated on read.

Layout on disk: ``reports/runs/<run-id>/<host>/<env>.json``. Results from several machines are
merged by copying their files into one ``reports/runs``.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from envlab.errors import ResultError
from envlab.outcome import LayerStatus, Outcome
from envlab.results.facts import Facts

# Bump on an incompatible change here or to the facts models (results/facts.py), with a migration.
SCHEMA_VERSION = 1
TestOutcome = Literal["passed", "failed", "skipped", "error", "xfailed", "xpassed"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GPU(Model):
    index: int = 0
    name: str
    compute_capability: str | None = None
    driver: str | None = None
    memory_mib: int | None = None


class Host(Model):
    """Who ran it: enough to tell machines apart in a merged report."""

    id: str
    hostname: str
    os: str
    platform: str
    machine: str
    cpu: str
    cpu_count: int
    gpus: list[GPU] = Field(default_factory=list)
    driver: str | None = None
    max_cuda: str | None = None
    doctor: dict[str, Any] | None = None


class Command(Model):
    argv: list[str]
    returncode: int
    duration_s: float


class FileSource(Model):
    """Where one installed distribution's file came from."""

    name: str
    version: str | None = None
    url: str  # the file fetched (a resolved layer: the index page it was resolved from)
    sha256: str | None = None
    mirror: bool = False  # from the index's mirror (ENVLAB_INDEX_<NAME>), not its declared URL


class LayerRecord(Model):
    name: str
    index: str | None = None
    index_url: str | None = None
    requirements: list[str] = Field(default_factory=list)
    commands: list[Command] = Field(default_factory=list)
    duration_s: float = 0.0
    outcome: LayerStatus = LayerStatus.OK
    message: str | None = None
    files: list[FileSource] = Field(default_factory=list)  # optional: older results lack it


class BuildRecord(Model):
    reused: bool = False
    env_dir: str | None = None
    build_key: str | None = None
    interpreter: str | None = None
    lock: str | None = None
    layers: list[LayerRecord] = Field(default_factory=list)
    duration_s: float = 0.0
    size_bytes: int | None = None


class Check(Model):
    """One expectation checked after the build."""

    name: str
    ok: bool
    expected: str
    found: str
    layer: str | None = None
    message: str = ""


class CompatTest(Model):
    id: str
    category: str
    outcome: TestOutcome
    duration_s: float = 0.0
    message: str | None = None
    skip_reason: str | None = None
    gpu: bool = False


class CompatRun(Model):
    tests: list[CompatTest] = Field(default_factory=list)
    duration_s: float = 0.0
    returncode: int | None = None
    error: str | None = None

    def counts(self) -> dict[str, int]:
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        for test in self.tests:
            key = {"error": "failed", "xpassed": "failed", "xfailed": "skipped"}.get(
                test.outcome, test.outcome
            )
            counts[key] += 1
        return counts


class Benchmark(Model):
    """One benchmark: raw samples plus the statistics envlab derived from them."""

    name: str
    version: int
    params: dict[str, Any] = Field(default_factory=dict)
    unit: str
    higher_is_better: bool = True
    samples: list[float]
    median: float
    iqr: float
    cv: float
    noisy: bool
    peak: float | None = None
    peak_source: str | None = None
    fraction_of_peak: float | None = None
    error: str | None = None


class Result(Model):
    schema_version: int = SCHEMA_VERSION  # stamped again by Store.write
    run_id: str
    created: str
    env: str
    spec_hash: str
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    # a cell of a factored envspec: that envspec's name and the cell's factor values (in order)
    matrix: str | None = None
    factors: dict[str, str] = Field(default_factory=dict)
    host: Host
    outcome: Outcome
    reason: str | None = None
    build: BuildRecord = Field(default_factory=BuildRecord)
    checks: list[Check] = Field(default_factory=list)
    facts: Facts = Field(default_factory=Facts)
    compat: CompatRun | None = None
    benchmarks: list[Benchmark] = Field(default_factory=list)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


# --------------------------------------------------------------------------- migration

Migration = Callable[[dict[str, Any]], dict[str, Any]]


# schema_version -> function producing the next version; add one whenever SCHEMA_VERSION moves.
MIGRATIONS: dict[int, Migration] = {}


def parse(text: str, source: str = "<result>") -> Result:
    """Parse and validate a result document, migrating older schema versions."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultError(
            f"{source}: expected a JSON result document, found invalid JSON ({exc})"
        ) from None
    if not isinstance(doc, dict) or "schema_version" not in doc:
        raise ResultError(
            f"{source}: expected an envlab result (with schema_version), "
            "found another JSON document"
        )
    version = doc["schema_version"]
    if not isinstance(version, int):
        raise ResultError(f"{source}: expected an integer schema_version, found {version!r}")
    if version > SCHEMA_VERSION:
        raise ResultError(
            f"{source}: schema_version {version} is newer than this envlab supports "
            f"({SCHEMA_VERSION}); upgrade envlab to read it"
        )
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise ResultError(
                f"{source}: schema_version {version} cannot be migrated to {SCHEMA_VERSION}; "
                "re-run the env to produce a current result"
            )
        doc = step(doc)
        version = doc["schema_version"]
    try:
        return Result.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(map(str, err["loc"]))
        raise ResultError(
            f"{source}: field {loc!r}: {err['msg']} (found {err.get('input')!r:.80})"
        ) from None


def load(path: Path) -> Result:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultError(f"{path}: cannot read ({exc})") from None
    return parse(text, str(path))


# --------------------------------------------------------------------------- identities


def new_run_id(now: datetime | None = None) -> str:
    """Sortable run id: UTC timestamp plus a short random suffix."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def default_host_id() -> str:
    return os.environ.get("ENVLAB_HOST_ID") or socket.gethostname()
