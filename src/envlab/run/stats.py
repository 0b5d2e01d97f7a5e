"""Statistics over raw benchmark samples: pure functions over sequences of floats.

Quantiles use linear interpolation between closest ranks (Hyndman & Fan type 7, the default of
numpy's ``percentile`` and of R): position ``h = (n - 1) * q`` in the sorted samples, interpolated
between the values either side. The IQR is ``Q3 - Q1`` with that method.

The Mann-Whitney U test is implemented here because scipy is not an envlab dependency. The
statistic is ``U_a = R_a - n_a (n_a + 1) / 2`` (``R_a``: the rank sum of ``a``, ties given mid
ranks), the number of pairs where ``a`` beats ``b`` (ties count one half), as scipy reports it.
The p-value is exact (the permutation distribution of U) when there are no ties and both samples
have at most ``EXACT_MAX_N`` values; otherwise it uses the normal approximation with the tie
correction of the variance and a 0.5 continuity correction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from typing import Literal

NOISY_THRESHOLD = 0.10
EXACT_MAX_N = 30

Alternative = Literal["two-sided", "greater", "less"]


def _checked(samples: Sequence[float]) -> list[float]:
    values = [float(x) for x in samples]
    if not values:
        raise ValueError("expected at least one sample, found none")
    if any(math.isnan(x) for x in values):
        raise ValueError("samples contain NaN")
    return values


def quantile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0 <= q <= 1) by linear interpolation between closest ranks (type 7)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], found {q}")
    values = sorted(_checked(samples))
    h = (len(values) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (h - lo) * (values[hi] - values[lo])


def median(samples: Sequence[float]) -> float:
    return quantile(samples, 0.5)


def quartiles(samples: Sequence[float]) -> tuple[float, float, float]:
    """(Q1, median, Q3)."""
    return quantile(samples, 0.25), quantile(samples, 0.5), quantile(samples, 0.75)


def iqr(samples: Sequence[float]) -> float:
    q1, _, q3 = quartiles(samples)
    return q3 - q1


def mean(samples: Sequence[float]) -> float:
    values = _checked(samples)
    return math.fsum(values) / len(values)


def stdev(samples: Sequence[float]) -> float:
    """Sample standard deviation (n - 1 denominator); 0 for a single sample."""
    values = _checked(samples)
    if len(values) < 2:
        return 0.0
    m = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((x - m) ** 2 for x in values) / (len(values) - 1))


def cv(samples: Sequence[float]) -> float:
    """Coefficient of variation: sample standard deviation / |mean| (inf if the mean is 0)."""
    m = mean(samples)
    s = stdev(samples)
    if m == 0.0:
        return 0.0 if s == 0.0 else math.inf
    return s / abs(m)


def relative_iqr(samples: Sequence[float]) -> float:
    """IQR / |median| (inf if the median is 0 and the IQR is not)."""
    spread = iqr(samples)
    mid = median(samples)
    if mid == 0.0:
        return 0.0 if spread == 0.0 else math.inf
    return spread / abs(mid)


def is_noisy(samples: Sequence[float], threshold: float = NOISY_THRESHOLD) -> bool:
    """True when IQR / median exceeds ``threshold`` (10%)."""
    return relative_iqr(samples) > threshold


# --------------------------------------------------------------------------- Mann-Whitney U


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Mid ranks (1-based) of ``values`` and the sizes of the tie groups."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        mid = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[order[k]] = mid
        ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


@cache
def _u_counts(n1: int, n2: int) -> tuple[int, ...]:
    """Number of arrangements of n1 + n2 untied values giving U = 0 .. n1*n2 (for the first sample).

    Recurrence on the largest value: it belongs to sample 1 (adding n2 to U) or to sample 2.
    """
    if n1 == 0 or n2 == 0:
        return (1,)
    with_first = _u_counts(n1 - 1, n2)
    with_second = _u_counts(n1, n2 - 1)
    counts = [0] * (n1 * n2 + 1)
    for u, c in enumerate(with_first):
        counts[u + n2] += c
    for u, c in enumerate(with_second):
        counts[u] += c
    return tuple(counts)


def _exact_cdf(u: float, n1: int, n2: int) -> float:
    """P(U <= u) under H0 for untied samples."""
    counts = _u_counts(n1, n2)
    total = math.comb(n1 + n2, n1)
    upto = math.floor(u + 1e-9)
    return sum(counts[: upto + 1]) / total


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def mann_whitney_u(
    a: Sequence[float], b: Sequence[float], alternative: Alternative = "two-sided"
) -> tuple[float, float]:
    """Mann-Whitney U test of ``a`` against ``b``: ``(U_a, p)``.

    ``alternative="greater"`` tests whether ``a`` tends to be larger than ``b``; ``"less"``
    whether it tends to be smaller; ``"two-sided"`` either. ``U_a`` is the same for all three.
    """
    xa, xb = _checked(a), _checked(b)
    n1, n2 = len(xa), len(xb)
    ranks, ties = _ranks(xa + xb)
    u1 = math.fsum(ranks[:n1]) - n1 * (n1 + 1) / 2
    mu = n1 * n2 / 2
    has_ties = any(t > 1 for t in ties)

    if not has_ties and max(n1, n2) <= EXACT_MAX_N:
        u2 = n1 * n2 - u1
        p_less = _exact_cdf(u1, n1, n2)  # P(U <= u1)
        p_greater = _exact_cdf(u2, n1, n2)  # P(U >= u1), by symmetry of U's distribution
        if alternative == "less":
            p = p_less
        elif alternative == "greater":
            p = p_greater
        else:
            p = 2.0 * min(p_less, p_greater)
        return u1, min(1.0, p)

    n = n1 + n2
    tie_term = math.fsum(t**3 - t for t in ties) / (n * (n - 1))
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term))
    if sigma == 0.0:  # every value identical: no evidence either way
        return u1, 1.0
    if alternative == "greater":
        p = _normal_sf((u1 - mu - 0.5) / sigma)
    elif alternative == "less":
        p = _normal_sf((mu - u1 - 0.5) / sigma)
    else:
        p = 2.0 * _normal_sf((abs(u1 - mu) - 0.5) / sigma)
    return u1, min(1.0, max(0.0, p))


def mann_whitney_u_one_sided(
    a: Sequence[float], b: Sequence[float], alternative: Literal["greater", "less"]
) -> tuple[float, float]:
    """One-sided Mann-Whitney U: is ``a`` stochastically greater (or less) than ``b``?"""
    if alternative not in ("greater", "less"):
        raise ValueError(f"expected alternative 'greater' or 'less', found {alternative!r}")
    return mann_whitney_u(a, b, alternative)
