"""Experiment statistics against known values, and intervals that cover the truth as often as claimed."""

import random

import pytest

from policies.ab_stats import mean_difference, percentile, proportion_difference, wilson


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 50, None), ([5.0], 95, 5.0), ([1.0, 2.0, 3.0, 4.0], 50, 2.5), ([*range(1, 101)], 95, 95.05)],
)
def test_percentile(values: list[float], q: float, expected: float | None) -> None:
    assert (
        percentile(values, q) == pytest.approx(expected)
        if expected is not None
        else percentile(values, q) is None
    )


def test_wilson_matches_a_published_value() -> None:
    low, high = wilson(81, 263)  # Newcombe (1998), example: 0.2553 to 0.3662
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


def test_newcombe_difference_matches_a_published_value() -> None:
    # Newcombe (1998) table II, example (a): 56/70 vs 48/80 → difference 0.2, interval 0.0524 to 0.3339
    diff = proportion_difference(control=(48, 80), treatment=(56, 70))
    assert diff.value == pytest.approx(0.2)
    assert (round(diff.low or 0, 4), round(diff.high or 0, 4)) == (0.0524, 0.3339)


def test_no_data_gives_no_interval() -> None:
    assert proportion_difference((0, 0), (3, 10)).value is None
    assert mean_difference([1.0], [2.0]).low is None


def test_the_95_percent_interval_covers_the_true_difference_about_95_percent_of_the_time() -> None:
    rng = random.Random(7)
    covered = 0
    for _ in range(400):
        control = [rng.gauss(100, 20) for _ in range(60)]
        treatment = [rng.gauss(110, 30) for _ in range(60)]
        diff = mean_difference(control, treatment)
        covered += diff.low is not None and diff.high is not None and diff.low <= 10 <= diff.high
    assert 0.91 <= covered / 400 <= 0.98
