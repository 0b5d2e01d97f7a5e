"""Typed errors. A subclass of :class:`UserError` is printed as one line; anything else is a bug.

An error that stops one env carries the :class:`~envlab.outcome.Outcome` that env ends with
(``Unavailable``, ``BuildFailed``, ``SpecError`` families); the pipeline records ``exc.outcome``
and never reads an outcome out of a message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from envlab.outcome import Outcome

if TYPE_CHECKING:
    from pydantic import ValidationError


class UserError(Exception):
    """An error caused by input or environment; the CLI prints it as one line and exits non-zero."""

    exit_code = 2
    outcome: ClassVar[Outcome | None] = None  # what an env stopped by this error ends as


# --------------------------------------------------------------------------- unavailable here


class Unavailable(UserError):
    """The env cannot be built on this machine; nothing is wrong with the env itself."""

    outcome = Outcome.UNAVAILABLE


class IndexUnavailable(Unavailable):
    """A package index could not be reached (or does not serve the requested package)."""

    def __init__(self, index: str, url: str, detail: str, hint: str, reached: bool = False) -> None:
        self.index, self.url, self.detail, self.hint = index, url, detail, hint
        # reached: it answered, but not with the package (a 404, or a page that is no index)
        state = f"({url}) answered" if reached else f"unreachable ({url})"
        super().__init__(f"index {index!r} {state}: {detail}; {hint}")


class InterpreterNotFound(Unavailable):
    """The requested Python version is not installed anywhere envlab looks."""


class UnsupportedPlatform(Unavailable):
    """The env declares this platform unsupported (or does not list it)."""


class CondaUnavailable(Unavailable):
    """No conda/micromamba executable: conda-based envs cannot be locked or built here."""


class ChannelUnavailable(Unavailable):
    """A conda channel could not be reached (or does not serve a locked package)."""

    def __init__(self, channel: str, url: str, detail: str, hint: str) -> None:
        self.channel, self.url, self.detail, self.hint = channel, url, detail, hint
        super().__init__(f"conda channel {channel!r} unreachable ({url}): {detail}; {hint}")


class NotPublished(Unavailable):
    """A matrix cell whose torch build PyTorch does not publish (a CUDA variant or a Python the
    release has no wheels for), known from the published-releases tables: never built to find
    out."""


class LockUnavailable(Unavailable):
    """A lock cannot be made or used here (its index is unreachable, a conda base is not locked)."""


# --------------------------------------------------------------------------- the build failed


class BuildFailed(UserError):
    """The env was attempted and could not be built as declared."""

    outcome = Outcome.BUILD_FAILED


class LockError(BuildFailed):
    """A lockfile is missing, stale, malformed or does not match what is installed."""


# --------------------------------------------------------------------------- input


class SpecError(UserError):
    """An envspec or indexes file is malformed."""

    outcome = Outcome.INVALID_SPEC


class UnknownEnvError(UserError):
    """A requested env name does not exist in envspecs/."""


class Busy(UserError):
    """Another process holds what this command needs (an env being built), and it would not wait.

    Exit code 75 (EX_TEMPFAIL): try again later.
    """

    exit_code = 75


class CommandError(UserError):
    """An external command exited non-zero."""

    def __init__(self, argv: list[str], returncode: int, output: str) -> None:
        self.argv, self.returncode, self.output = argv, returncode, output
        tail = output.strip().splitlines()[-1] if output.strip() else "no output"
        super().__init__(f"command failed with exit code {returncode}: {argv[0]} ... ({tail})")


class ResultError(UserError):
    """A result document is corrupt, foreign, or of an unsupported schema version."""


def stopped(outcome: Outcome, message: str) -> UserError:
    """The error that ends an env with ``outcome``
    (for a failure explained from a tool's output)."""
    kinds: dict[Outcome, type[UserError]] = {
        Outcome.UNAVAILABLE: Unavailable,
        Outcome.BUILD_FAILED: BuildFailed,
    }
    return kinds[outcome](message)


def first_problem(exc: ValidationError) -> str:
    """A data file's first validation problem as one phrase: ``unknown key 'a.b'`` or
    ``field 'a.b': <what was expected>``."""
    first = exc.errors(include_url=False)[0]
    loc = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"unknown key {loc!r}"
    return f"field {loc!r}: {first['msg'].removeprefix('Value error, ')}"
