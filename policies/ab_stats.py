"""Experiment statistics: percentiles, and differences between two arms with confidence intervals."""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist, fmean, variance


@dataclass(frozen=True)
class Difference:
    """treatment − control, with a two-sided confidence interval (None bounds: too little data)."""

    value: float | None
    low: float | None
    high: float | None
    confidence: float


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), interpolated between the closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    below, above = math.floor(position), math.ceil(position)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for a proportion (good at small n and near 0 or 1)."""
    if n == 0:
        return 0.0, 1.0
    z, p = _z(confidence), successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion_difference(
    control: tuple[int, int], treatment: tuple[int, int], confidence: float = 0.95
) -> Difference:
    """p(treatment) − p(control) for (successes, n) pairs, with Newcombe's hybrid score interval
    (built from each arm's Wilson interval)."""
    (x1, n1), (x2, n2) = control, treatment
    if n1 == 0 or n2 == 0:
        return Difference(None, None, None, confidence)
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, confidence)
    l2, u2 = wilson(x2, n2, confidence)
    diff = p2 - p1
    low = diff - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    high = diff + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return Difference(diff, low, high, confidence)


def mean_difference(
    control: Sequence[float], treatment: Sequence[float], confidence: float = 0.95
) -> Difference:
    """mean(treatment) − mean(control) with a Welch (unequal variances) normal-approximation interval;
    each arm needs two values or more."""
    if len(control) < 2 or len(treatment) < 2:
        diff = fmean(treatment) - fmean(control) if control and treatment else None
        return Difference(diff, None, None, confidence)
    diff = fmean(treatment) - fmean(control)
    half = _z(confidence) * math.sqrt(variance(control) / len(control) + variance(treatment) / len(treatment))
    return Difference(diff, diff - half, diff + half, confidence)
