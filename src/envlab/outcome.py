"""The lab's outcome vocabulary, defined once.

Every env of a run ends with one :class:`Outcome`; results store its value, and everything that
compares, ranks, sorts, colours or counts outcomes asks the enum instead of spelling the strings.
A layer of a build ends with a :class:`LayerStatus`.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """What one env turned out to be in one run."""

    BUILT = "built"
    """Built (or reused) and every expectation holds."""
    EXTERNAL = "external"
    """An interpreter envlab probed and tested but did not build (``test-host``)."""
    VERIFY_FAILED = "verify-failed"
    """Built, but not what was asked for; still tested,
    so the report shows what the mismatch breaks."""
    BUILD_FAILED = "build-failed"
    """The build was attempted and failed (a resolution conflict, a hash mismatch, a stale lock)."""
    UNAVAILABLE = "unavailable"
    """Cannot be built here (index unreachable, wheel missing, no conda, no Python, platform)."""
    INVALID_SPEC = "invalid-spec"
    """The env's envspec is malformed; nothing was attempted."""

    @property
    def has_env(self) -> bool:
        """An env exists that was probed and tested, so its checks and benchmarks mean something."""
        return self in (Outcome.BUILT, Outcome.EXTERNAL, Outcome.VERIFY_FAILED)

    @property
    def healthy(self) -> bool:
        """Nothing is wrong with the env itself."""
        return self in (Outcome.BUILT, Outcome.EXTERNAL)

    @property
    def failed(self) -> bool:
        """Something the env's owner must fix (as opposed to healthy, or not buildable here)."""
        return self in (Outcome.VERIFY_FAILED, Outcome.BUILD_FAILED, Outcome.INVALID_SPEC)

    @property
    def rank(self) -> int:
        """Distance from healthy: a higher rank than the baseline's is a regression."""
        return _RANK[self]

    @property
    def severity(self) -> int:
        """Sort key for reports: what needs attention first
        (failed, then healthy, then unavailable)."""
        return _SEVERITY[self]

    @property
    def tone(self) -> str:
        """How a report colours it: ``ok``, ``fail`` or ``muted``."""
        return "ok" if self.healthy else "fail" if self.failed else "muted"

    @property
    def icon(self) -> str:
        return {"ok": "✅", "fail": "❌", "muted": "⛔"}[self.tone]

    @classmethod
    def by_severity(cls) -> list[Outcome]:
        return sorted(cls, key=lambda o: (o.severity, list(cls).index(o)))


_RANK = {
    Outcome.BUILT: 0,
    Outcome.EXTERNAL: 0,
    Outcome.VERIFY_FAILED: 1,
    Outcome.BUILD_FAILED: 2,
    Outcome.INVALID_SPEC: 2,
    Outcome.UNAVAILABLE: 2,
}
_SEVERITY = {
    Outcome.VERIFY_FAILED: 0,
    Outcome.BUILD_FAILED: 0,
    Outcome.INVALID_SPEC: 0,
    Outcome.BUILT: 1,
    Outcome.EXTERNAL: 1,
    Outcome.UNAVAILABLE: 2,
}


class LayerStatus(StrEnum):
    """How one layer of a build ended."""

    OK = "ok"
    FAILED = "failed"
    UNAVAILABLE = "unavailable"
    SKIPPED = "skipped"

    @classmethod
    def for_outcome(cls, outcome: Outcome) -> LayerStatus:
        """The status of the layer that ended the build with ``outcome``."""
        return cls.UNAVAILABLE if outcome is Outcome.UNAVAILABLE else cls.FAILED
