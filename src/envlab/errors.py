"""Typed errors. A subclass of :class:`UserError` is printed as one line; anything else is a bug."""

from __future__ import annotations


class UserError(Exception):
    """An error caused by input or environment; the CLI prints it as one line and exits non-zero."""

    exit_code = 2


class SpecError(UserError):
    """An envspec or indexes file is malformed."""


class UnknownEnvError(UserError):
    """A requested env name does not exist in envspecs/."""


class InterpreterNotFound(UserError):
    """The requested Python version is not installed anywhere envlab looks."""


class IndexUnavailable(UserError):
    """A package index could not be reached (or does not serve the requested package)."""

    def __init__(self, index: str, url: str, detail: str, hint: str) -> None:
        self.index, self.url, self.detail, self.hint = index, url, detail, hint
        super().__init__(f"index {index!r} unreachable ({url}): {detail}; {hint}")


class CommandError(UserError):
    """An external command exited non-zero."""

    def __init__(self, argv: list[str], returncode: int, output: str) -> None:
        self.argv, self.returncode, self.output = argv, returncode, output
        tail = output.strip().splitlines()[-1] if output.strip() else "no output"
        super().__init__(f"command failed with exit code {returncode}: {argv[0]} ... ({tail})")


class ResolutionError(UserError):
    """A layer could not be resolved; names the package that caused it where known."""


class ResultError(UserError):
    """A result document is corrupt, foreign, or of an unsupported schema version."""


class LockError(UserError):
    """A lockfile is missing, stale or does not match what is installed."""
