import math
from math import comb

import pytest

from pytest_slm.stats import compare_outcomes, compare_timings, mcnemar_one_sided, mcnemar_two_sided, spread


@pytest.mark.parametrize(
    ("regressed", "improved", "expected"),
    [
        (0, 0, 1.0),
        (10, 0, 1 / 1024),
        (0, 10, 1.0),
        (3, 1, 5 / 16),
        (5, 5, sum(comb(10, k) for k in range(5, 11)) / 1024),
        (1, 0, 0.5),
    ],
)
def test_mcnemar_exact_one_sided_known_values(regressed, improved, expected):
    assert mcnemar_one_sided(regressed, improved) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("first_only", "second_only", "expected"),
    [(0, 0, 1.0), (10, 0, 2 / 1024), (0, 10, 2 / 1024), (3, 1, 10 / 16), (5, 5, 1.0)],
)
def test_mcnemar_two_sided_is_symmetric_and_doubles_the_larger_tail(first_only, second_only, expected):
    assert mcnemar_two_sided(first_only, second_only) == pytest.approx(expected)


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError):
        mcnemar_one_sided(-1, 2)


def test_compare_pairs_samples_by_id_and_counts_flips():
    baseline = {"00": 1, "01": 1, "02": 0, "03": 0, "04": 1}
    current = {"00": 0, "01": 1, "02": 1, "03": 0, "05": 1}  # 04 and 05 are not shared
    result = compare_outcomes(baseline, current)
    assert result.n == 4
    assert result.regressed == ("00",)
    assert result.improved == ("02",)
    assert result.baseline_accuracy == 0.5 and result.accuracy == 0.5
    assert result.p_value == pytest.approx(0.75)


def test_regression_needs_both_significance_and_size():
    baseline = {f"{i:03d}": 1 for i in range(100)}
    ten_lost = {k: (0 if i < 10 else 1) for i, k in enumerate(baseline)}
    comparison = compare_outcomes(baseline, ten_lost)
    assert comparison.p_value == pytest.approx(1 / 1024)
    assert comparison.delta_points == pytest.approx(-10.0)
    assert comparison.is_regression(alpha=0.05, min_drop_points=1.0)
    assert not comparison.is_regression(alpha=0.05, min_drop_points=20.0)
    assert not comparison.is_regression(alpha=0.0005, min_drop_points=1.0)


def test_spread_is_robust_to_one_stalled_run():
    steady = spread([1.00, 1.02, 0.98, 1.01, 0.99])
    stalled = spread([1.00, 1.02, 0.98, 1.01, 9.0])
    assert steady.median == 1.00 and steady.minimum == 0.98 and steady.mad == pytest.approx(0.01)
    assert stalled.median == 1.01 and stalled.mad == pytest.approx(0.01)
    assert steady.relative == pytest.approx(1.4826 * 0.01)


def test_a_slowdown_must_exceed_both_the_tolerance_and_the_noise():
    base = spread([1.0] * 5)
    assert compare_timings(base, spread([1.2] * 5), tolerance=0.10, k=3).regressed
    assert not compare_timings(base, spread([1.08] * 5), tolerance=0.10, k=3).regressed
    noisy = spread([1.2, 1.0, 1.4, 1.2, 1.3])  # robust sigma 12.4% of the median, over 5 repeats
    result = compare_timings(base, noisy, tolerance=0.10, k=3)
    median_error = math.sqrt(math.pi / 2) * 1.4826 * 0.1 / 1.2 / math.sqrt(5)  # the median's standard error
    assert result.change == pytest.approx(0.2) and result.limit == pytest.approx(3 * median_error)
    assert not result.regressed  # 20% slower, limit 20.8%
    # the same scatter over 20 repeats pins the median twice as finely: the same slowdown now fails
    longer = compare_timings(base, spread([1.2, 1.0, 1.4, 1.2, 1.3] * 4), tolerance=0.10, k=3)
    assert longer.limit == pytest.approx(3 * median_error / 2) and longer.regressed


def test_an_item_states_the_drop_it_detects_and_whether_it_can_fail_at_all():
    from pytest_slm.stats import detectable_drop, fewest_failing_flips

    assert fewest_failing_flips(200, 0.05, 1.0) == 5  # 2^-4 = 0.0625 is not under 0.05; 2^-5 is
    assert fewest_failing_flips(200, 0.05, 4.0) == 8  # and the drop must reach 4 points of 200
    assert detectable_drop(100, 4, 0.05, 1.0) is None  # 4 right answers: even all 4 flipping is p = 1/16
    assert 3.0 < detectable_drop(180, 90, 0.05, 1.0) < 4.5
    assert detectable_drop(40, 20, 0.05, 1.0) > detectable_drop(180, 90, 0.05, 1.0)  # fewer samples, blunter
