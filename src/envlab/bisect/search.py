"""The bisection itself, over candidates that can be built and tested.

Both searches take ``breaks(candidate) -> bool`` (build the candidate, run the target, say whether
it broke), ask it at most once per candidate, count those builds and stop at ``max_steps``.

* :func:`minimal_culprit` finds, among ordered groups of changes, a smallest set whose changes
  applied to the good set break the target: one group, or groups that only break together. It
  narrows the shortest breaking prefix by halving, keeps its last group, and repeats with that
  group applied until the kept groups break on their own. The bad end is built first (does the
  break reproduce?); the good end only when no candidate passed. One culprit among ``n`` groups
  costs at most ``ceil(log2(n)) + 2`` builds.
* :func:`first_bad` finds the first breaking build of an ordered sequence (nightlies by date)
  whose first item is taken as good and last as bad; either end is built only when no other
  build confirmed it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

Breaks = Callable[[tuple[int, ...]], bool]
"""A candidate (indices of groups applied, or of one build) -> whether the target broke."""


class Status(StrEnum):
    """How a search ended."""

    FOUND = "found"
    NOT_REPRODUCED = "not-reproduced"  # the bad end does not break here
    GOOD_BREAKS = "good-breaks"  # the good end breaks here too
    MAX_STEPS = "max-steps"  # stopped by --max-steps before the end
    UNBUILDABLE = "unbuildable"  # a candidate could not be built


@dataclass(frozen=True)
class Found:
    status: Status
    culprit: tuple[int, ...] = ()  # the groups (or the one build) found; partial at max-steps
    remaining: tuple[int, ...] = ()  # at max-steps: where the rest of the culprit must be
    builds: int = 0


class _OutOfSteps(Exception):
    pass


class _Oracle:
    """``breaks`` asked once per candidate, within a budget of builds."""

    def __init__(self, breaks: Breaks, max_steps: int | None) -> None:
        self._breaks = breaks
        self.max_steps = max_steps
        self.answers: dict[frozenset[int], bool] = {}

    @property
    def builds(self) -> int:
        return len(self.answers)

    def known(self, candidate: Sequence[int]) -> bool:
        return frozenset(candidate) in self.answers

    def __call__(self, candidate: Sequence[int]) -> bool:
        key = frozenset(candidate)
        if key not in self.answers:
            if self.max_steps is not None and self.builds >= self.max_steps:
                raise _OutOfSteps
            self.answers[key] = self._breaks(tuple(sorted(key)))
        return self.answers[key]

    def passed_any(self) -> bool:
        return not all(self.answers.values())


def _shortest_breaking_prefix(oracle: _Oracle, fixed: list[int], order: list[int]) -> int:
    """Smallest k such that ``fixed + order[:k]`` breaks (``fixed + order`` is known to)."""
    lo, hi = 0, len(order)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if oracle(fixed + order[:mid]):
            hi = mid
        else:
            lo = mid
    return hi


def minimal_culprit(n: int, breaks: Breaks, max_steps: int | None = None) -> Found:
    """The smallest set of the ``n`` groups that breaks the target (see the module docstring)."""
    oracle = _Oracle(breaks, max_steps)
    found: list[int] = []
    order = list(range(n))
    try:
        if not oracle(order):
            return Found(Status.NOT_REPRODUCED, builds=oracle.builds)
        while not (found and oracle(found)):
            k = _shortest_breaking_prefix(oracle, found, order)
            found.append(order[k - 1])
            order = order[: k - 1]
        if not oracle.passed_any() and oracle(()):
            return Found(Status.GOOD_BREAKS, builds=oracle.builds)
    except _OutOfSteps:
        return Found(Status.MAX_STEPS, tuple(sorted(found)), tuple(order), oracle.builds)
    return Found(Status.FOUND, tuple(sorted(found)), builds=oracle.builds)


def first_bad(n: int, breaks: Breaks, max_steps: int | None = None) -> Found:
    """The first of ``n`` ordered builds that breaks; build 0 is taken as good, ``n - 1`` as bad."""
    if n < 2:
        raise ValueError(f"first_bad needs a good and a bad build, found {n} build(s)")
    oracle = _Oracle(breaks, max_steps)
    lo, hi = 0, n - 1
    try:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if oracle((mid,)):
                hi = mid
            else:
                lo = mid
        if not oracle.known((hi,)) and not oracle((hi,)):
            return Found(Status.NOT_REPRODUCED, builds=oracle.builds)
        if not oracle.known((lo,)) and oracle((lo,)):
            return Found(Status.GOOD_BREAKS, builds=oracle.builds)
    except _OutOfSteps:
        return Found(Status.MAX_STEPS, (hi,), tuple(range(lo + 1, hi + 1)), oracle.builds)
    return Found(Status.FOUND, (hi,), builds=oracle.builds)
