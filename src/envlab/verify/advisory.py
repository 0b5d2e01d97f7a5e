"""Advisory checks: facts worth a warning that do not make an env fail verification.

An advisory check holds (``ok=True``, so neither the outcome nor the regression judge counts it)
and its message starts with :data:`PREFIX`, which the log and the report show as it is.
"""

from __future__ import annotations

from envlab.results.schema import Check

PREFIX = "warning: "


def warn(message: str) -> str:
    return PREFIX + message


def warnings(checks: list[Check]) -> list[Check]:
    """The checks that hold but warn."""
    return [c for c in checks if c.ok and c.message.startswith(PREFIX)]
