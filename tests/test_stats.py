"""Statistics over benchmark samples: quantiles, spread, noisy flag, Mann-Whitney U."""

from __future__ import annotations

import math
import random

import pytest

from envlab.run import stats


def test_median_of_odd_and_even_counts() -> None:
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    assert stats.median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert stats.median([7.0]) == 7.0


def test_quartiles_interpolate_between_closest_ranks() -> None:
    # Type 7: Q1 at position 0.75 between 1 and 2 -> 1.75; Q3 at position 2.25 -> 3.25.
    assert stats.quartiles([4.0, 2.0, 1.0, 3.0]) == (1.75, 2.5, 3.25)
    assert stats.iqr([1.0, 2.0, 3.0, 4.0]) == pytest.approx(1.5)
    # Positions land exactly on samples for n = 5: Q1 = 2nd, Q3 = 4th value.
    assert stats.quartiles([10.0, 20.0, 30.0, 40.0, 50.0]) == (20.0, 30.0, 40.0)
    assert stats.quantile([1.0, 9.0], 0.0) == 1.0 and stats.quantile([1.0, 9.0], 1.0) == 9.0


def test_coefficient_of_variation_uses_sample_stdev() -> None:
    # mean 5, sum of squared deviations 32, sample variance 32/7.
    samples = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
    assert stats.stdev(samples) == pytest.approx(math.sqrt(32 / 7))
    assert stats.cv(samples) == pytest.approx(math.sqrt(32 / 7) / 5)
    assert stats.cv([3.0]) == 0.0
    assert stats.cv([-2.0, -4.0]) == pytest.approx(math.sqrt(2) / 3)


def test_noisy_flag_is_iqr_over_median_above_ten_percent() -> None:
    assert not stats.is_noisy([100.0, 101.0, 99.0, 100.0, 100.5])
    assert not stats.is_noisy([95.0, 95.0, 100.0, 105.0, 105.0])  # exactly 10%: not above
    assert stats.is_noisy([94.0, 94.0, 100.0, 106.0, 106.0])  # 12%
    assert stats.relative_iqr([94.0, 94.0, 100.0, 106.0, 106.0]) == pytest.approx(0.12)
    assert not stats.is_noisy([0.0, 0.0, 0.0])
    assert stats.is_noisy([0.0, 0.0, 1.0, 1.0])  # median 0.5, IQR 1


def test_empty_or_nan_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        stats.median([])
    with pytest.raises(ValueError, match="NaN"):
        stats.iqr([1.0, math.nan])
    with pytest.raises(ValueError, match="within"):
        stats.quantile([1.0], 1.5)


def test_mann_whitney_exact_for_complete_separation() -> None:
    # U = 0; of C(6,3) = 20 equally likely rank sets only one gives U <= 0.
    assert stats.mann_whitney_u([1, 2, 3], [4, 5, 6]) == (0.0, pytest.approx(0.1))
    assert stats.mann_whitney_u([1, 2, 3], [4, 5, 6], "less") == (0.0, pytest.approx(0.05))
    assert stats.mann_whitney_u([1, 2, 3], [4, 5, 6], "greater") == (0.0, pytest.approx(1.0))
    assert stats.mann_whitney_u([4, 5, 6], [1, 2, 3]) == (9.0, pytest.approx(0.1))


def test_mann_whitney_exact_textbook_example() -> None:
    # Sorted: 11b 12b 16a 17b 19a 20b 22a 24a 29a; ranks of a: 3+5+7+8+9 = 32, U_a = 32 - 15 = 17.
    # U_b = 20 - 17 = 3; arrangements with U <= 3 for (5, 4): 1 + 1 + 2 + 3 = 7 of C(9, 4) = 126.
    u, p = stats.mann_whitney_u([19, 22, 16, 29, 24], [20, 11, 17, 12])
    assert u == 17.0
    assert p == pytest.approx(2 * 7 / 126)
    assert stats.mann_whitney_u_one_sided([19, 22, 16, 29, 24], [20, 11, 17, 12], "greater")[1] == (
        pytest.approx(7 / 126)
    )


def test_mann_whitney_normal_approximation_with_ties() -> None:
    # Sorted: 1a 2a 2a 2b 3b 4a 4b 5b; mid ranks 1, 3, 3, 3, 5, 6.5, 6.5, 8.
    # R_a = 1 + 3 + 3 + 6.5 = 13.5, U_a = 13.5 - 10 = 3.5, mean 8.
    # Ties (3 and 2): sum(t^3 - t) = 30; var = 4*4/12 * (9 - 30/56) = 11.2857; sd = 3.35942.
    # z = (|3.5 - 8| - 0.5) / 3.35942 = 1.19068; two-sided p = 2 * (1 - Phi(z)) = 0.23378.
    u, p = stats.mann_whitney_u([1, 2, 2, 4], [2, 3, 4, 5])
    assert u == 3.5
    assert p == pytest.approx(0.233779, abs=1e-5)
    assert stats.mann_whitney_u([1, 2, 2, 4], [2, 3, 4, 5], "less")[1] == pytest.approx(
        0.116889, abs=1e-5
    )
    assert stats.mann_whitney_u([2.0] * 4, [2.0] * 5) == (10.0, 1.0)


def test_exact_and_normal_agree_at_the_switch_size() -> None:
    rng = random.Random(7)
    a = [rng.gauss(0, 1) for _ in range(stats.EXACT_MAX_N)]
    b = [rng.gauss(0.4, 1) for _ in range(stats.EXACT_MAX_N)]
    _, exact = stats.mann_whitney_u(a, b)
    _, approx = stats.mann_whitney_u(a + [99.0], b + [99.5])  # one more each: normal approximation
    assert exact == pytest.approx(approx, abs=0.05)


def test_statistic_is_symmetric() -> None:
    rng = random.Random(3)
    a = [round(rng.gauss(10, 2), 1) for _ in range(40)]
    b = [round(rng.gauss(11, 2), 1) for _ in range(35)]
    u_ab, p_ab = stats.mann_whitney_u(a, b)
    u_ba, p_ba = stats.mann_whitney_u(b, a)
    assert u_ab + u_ba == 40 * 35
    assert p_ab == pytest.approx(p_ba)


def test_a_a_samples_give_large_p_and_calibrated_false_positives() -> None:
    rng = random.Random(11)
    false_alarms = 0
    trials = 200
    for _ in range(trials):
        a = [rng.gauss(100, 3) for _ in range(10)]
        b = [rng.gauss(100, 3) for _ in range(10)]
        if stats.mann_whitney_u(a, b)[1] < 0.05:
            false_alarms += 1
    # Under H0 about 5% fall below 0.05 (binomial sd ~1.5%); a wrong null distribution shows here.
    assert false_alarms / trials < 0.10
    same = [100.0 + rng.gauss(0, 1) for _ in range(20)]
    assert stats.mann_whitney_u(same, list(reversed(same)))[1] == pytest.approx(1.0)


def test_twenty_percent_slowdown_with_low_noise_is_significant() -> None:
    rng = random.Random(5)
    base = [100 * (1 + rng.gauss(0, 0.02)) for _ in range(10)]
    slow = [80 * (1 + rng.gauss(0, 0.02)) for _ in range(10)]
    _, p_two = stats.mann_whitney_u(slow, base)
    _, p_less = stats.mann_whitney_u_one_sided(slow, base, "less")
    assert p_two < 1e-3
    assert p_less < 1e-4
    assert stats.mann_whitney_u_one_sided(slow, base, "greater")[1] > 0.99
    with pytest.raises(ValueError, match="greater"):
        stats.mann_whitney_u_one_sided(slow, base, "two-sided")  # type: ignore[arg-type]
