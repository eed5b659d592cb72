"""The adaptive limit on durable turns in flight (policies/concurrency.py), against a simulated machine where
a turn ends only after its lcp part and its model's reply: it settles where lcp's part takes about its
target, grows when there is room and the room is used, and is not fooled by a single slow turn, by turns
whose model is slow, or by turns let in under an older limit."""

import heapq
import math
from collections.abc import Callable

import pytest

from policies.concurrency import AdaptiveLimit

LcpTime = Callable[[int], float]  # lcp's part of a turn let in with so many turns in flight


def _shared(base_s: float, parallel: int) -> LcpTime:
    """A machine that runs `parallel` turns' lcp parts at once at full speed and shares itself beyond."""
    return lambda in_flight: base_s * max(1.0, in_flight / parallel)


def _simulate(
    limit: AdaptiveLimit, lcp_s: LcpTime, seconds: float, model_s: float = 0.0, start: float = 0.0
) -> tuple[float, list[int]]:
    """Keep the limit full for `seconds` of simulated time: each turn takes the lcp time of the load it
    was let in beside, plus `model_s`. Returns the clock at the end and the limit after each turn."""
    now, limits = start, []
    running: list[tuple[float, float, float]] = []  # (ends at, let in at, lcp's part)
    while now < start + seconds:
        while len(running) < limit.allowed:
            heapq.heappush(running, (now + lcp_s(len(running) + 1) + model_s, now, lcp_s(len(running) + 1)))
        now, admitted_at, lcp = heapq.heappop(running)
        limit.observe(lcp, admitted_at, now, len(running))
        limits.append(limit.allowed)
    return now, limits


def test_a_limit_set_far_too_high_comes_down_to_where_turns_take_the_target() -> None:
    limit = AdaptiveLimit(0.3, 200.0)
    _, limits = _simulate(limit, _shared(0.05, 2), 120)
    assert 8 <= limit.allowed <= 16  # 0.3 s at 12 in flight on this machine
    assert max(limits[-200:]) - min(limits[-200:]) <= 4  # settled, not swinging


def test_a_limit_set_too_low_grows_to_what_the_machine_runs_within_the_target() -> None:
    limit = AdaptiveLimit(0.3, 4.0)
    _simulate(limit, _shared(0.05, 200), 60)
    assert limit.allowed >= 200


def test_turns_with_slow_models_hold_many_slots_without_bringing_the_limit_down() -> None:
    """A turn holds its slot through its model's 20 s reply; only lcp's part is judged."""
    limit = AdaptiveLimit(0.3, 16.0)
    _simulate(limit, _shared(0.05, 500), 600, model_s=20.0)
    assert limit.allowed >= 500


def test_with_slow_models_it_settles_instead_of_swinging() -> None:
    """Turns end a model reply after they were let in: only those let in under the current limit count,
    so the limit does not keep cutting on turns let in under the last one (it swung 12 to 49 before)."""
    limit = AdaptiveLimit(0.15, 16.0)
    _, limits = _simulate(limit, _shared(0.05, 24), 1200, model_s=3.0)
    tail = limits[len(limits) // 2 :]
    assert 60 <= min(tail) and max(tail) <= 90  # 0.15 s at 72 turns in flight on this machine


def test_a_limit_nothing_uses_does_not_grow() -> None:
    limit = AdaptiveLimit(0.3, 16.0)
    for second in range(100):
        limit.observe(0.01, second - 0.01, float(second), 0)
    assert limit.allowed == 16


def test_one_slow_turn_does_not_cut_the_limit() -> None:
    limit = AdaptiveLimit(0.3, 40.0, min_samples=9)
    for turn in range(8):
        limit.observe(0.05, 0.0, 1 + turn / 100, 39)
    limit.observe(30.0, 0.0, 1.1, 39)  # one turn of nine took 30 s: the median is not the mean
    assert limit.allowed == 60


def test_turns_let_in_under_an_older_limit_are_not_counted() -> None:
    limit = AdaptiveLimit(0.1, 16.0, min_samples=1, update_s=0)
    limit.observe(1.0, 0.0, 1.0, 15)  # 10 times the target: halved
    assert limit.allowed == 8
    limit.observe(1.0, 0.5, 1.1, 15)  # let in before the change at 1.0: ran beside 16
    assert limit.allowed == 8
    limit.observe(1.0, 1.05, 2.0, 7)
    assert limit.allowed == 4


def test_a_target_the_deployment_cannot_reach_does_not_pin_the_limit_down() -> None:
    """Turns take 0.2 s of lcp's time at any load (a slower database): shedding does not make them
    faster, so at the minimum the target is raised above what they take, and the limit grows again."""
    limit = AdaptiveLimit(0.05, 16.0)
    now, _ = _simulate(limit, lambda in_flight: 0.2, 60)
    assert limit.target_at(now) == pytest.approx(0.25)
    assert limit.allowed > 16
    assert limit.target_at(now + 601) == 0.05  # and held for floor_s only


def test_turns_slowed_by_a_burst_do_not_raise_the_target_they_are_judged_by() -> None:
    """At 0.12 s the limit needs the minimum on this machine (0.1 s there): the turns let in at the
    minimum are on target, so it is not raised."""
    limit = AdaptiveLimit(0.12, 64.0)
    now, limits = _simulate(limit, _shared(0.05, 2), 600, model_s=1.0)
    assert min(limits) == 4
    assert limit.target_at(now) == 0.12


def test_the_tenant_with_the_most_turns_does_not_decide_the_limit_alone() -> None:
    limit = AdaptiveLimit(0.2, 20.0, min_samples=12, update_s=0)
    for turn in range(10):
        limit.observe(1.0, 0.0, 1 + turn / 100, 19, "heavy")  # its imported histories: 1 s each
    limit.observe(0.1, 0.0, 1.2, 19, "a")
    limit.observe(0.1, 0.0, 1.3, 19, "b")
    assert limit.allowed == 30  # the median of three tenants' medians, 0.1 s: grown, not halved


def test_it_stays_within_its_bounds_and_ignores_nonsense() -> None:
    limit = AdaptiveLimit(0.3, 8.0, minimum=4, maximum=10, min_samples=1, update_s=0)
    for now in range(1, 4):
        limit.observe(0.3, now - 0.5, float(now), 8)
    limit.observe(0.0, 3.5, 4.0, 8)
    limit.observe(0.0, 4.5, 5.0, 9)
    assert limit.allowed == 10
    for nonsense in (math.nan, math.inf, -1.0):
        limit.observe(nonsense, 9.0, 10.0, 10)
    assert limit.allowed == 10
    for bad in ({"limit": 0.0}, {"limit": 5.0, "maximum": 4}, {"limit": 5.0, "target_s": 0.0}):
        with pytest.raises(ValueError):
            AdaptiveLimit(**{"target_s": 0.3, "minimum": 1, **bad})  # type: ignore[arg-type]
