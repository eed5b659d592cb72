"""The adaptive limit on durable turns in flight (policies/concurrency.py): it settles where lcp's own part
of a turn takes about its target, grows when there is room and the room is used, and is not fooled by a
single slow turn or by turns whose model is slow."""

import math
from collections.abc import Callable

import pytest

from policies.concurrency import AdaptiveLimit

TurnTime = Callable[[int], float]  # lcp's part of a turn with so many turns in flight


def _shared(base_s: float, parallel: int) -> TurnTime:
    """A machine that runs `parallel` turns at once at full speed and shares itself beyond that."""
    return lambda in_flight: base_s * max(1.0, in_flight / parallel)


def _run(
    limit: AdaptiveLimit, lcp_s: TurnTime, seconds: float, model_s: float = 0.0, start: float = 0.0
) -> float:
    """Keep the limit full for `seconds` of simulated time; returns the clock at the end."""
    now = start
    while now < start + seconds:
        in_flight = limit.allowed
        now += (lcp_s(in_flight) + model_s) / in_flight  # turns end one after another
        limit.observe(lcp_s(in_flight), now, in_flight - 1)
    return now


def test_a_limit_set_far_too_high_comes_down_to_where_turns_take_the_target() -> None:
    limit = AdaptiveLimit(0.3, 200.0)
    _run(limit, _shared(0.05, 2), 60)
    assert 8 <= limit.allowed <= 18  # 0.3 s at 12 in flight on this machine
    assert _shared(0.05, 2)(limit.allowed) <= 0.5  # 200 at once took 5 s each


def test_a_limit_set_too_low_grows_to_what_the_machine_runs_within_the_target() -> None:
    limit = AdaptiveLimit(0.3, 4.0)
    _run(limit, _shared(0.05, 200), 30)
    assert limit.allowed >= 200


def test_turns_with_slow_models_hold_many_slots_without_bringing_the_limit_down() -> None:
    """A turn holds its slot through its model's 20 s reply; only lcp's part is judged."""
    limit = AdaptiveLimit(0.3, 16.0)
    _run(limit, _shared(0.05, 500), 120, model_s=20.0)
    assert limit.allowed >= 500


def test_a_limit_nothing_uses_does_not_grow() -> None:
    limit = AdaptiveLimit(0.3, 16.0)
    for second in range(100):
        limit.observe(0.01, float(second), 0)
    assert limit.allowed == 16


def test_one_slow_turn_does_not_cut_the_limit() -> None:
    limit = AdaptiveLimit(0.3, 40.0)
    now = _run(limit, _shared(0.05, 1000), 3)
    before = limit.allowed
    limit.observe(30.0, now + 0.001, before - 1)
    _run(limit, _shared(0.05, 1000), 1.5, start=now + 0.001)
    assert limit.allowed >= before  # a median of the turns that ended, not the slowest


def test_it_stays_within_its_bounds_and_ignores_nonsense() -> None:
    limit = AdaptiveLimit(0.3, 8.0, minimum=4, maximum=10)
    for now in range(1, 20):
        limit.observe(100.0, float(now), 8)
    assert limit.allowed == 4
    for now in range(20, 40):
        limit.observe(0.0, float(now), 10)
    assert limit.allowed == 10
    for nonsense in (math.nan, math.inf, -1.0):
        limit.observe(nonsense, 50.0, 10)
    assert limit.allowed == 10
    for bad in ({"limit": 0.0}, {"limit": 5.0, "maximum": 4}, {"limit": 5.0, "target_s": 0.0}):
        with pytest.raises(ValueError):
            AdaptiveLimit(**{"target_s": 0.3, "minimum": 1, **bad})  # type: ignore[arg-type]


def test_a_target_the_deployment_cannot_reach_does_not_pin_the_limit_down() -> None:
    """Turns take 0.2 s of lcp's time at any load (a slower database): shedding does not make them faster,
    so at the minimum the target is raised above what they take, and the limit grows again."""
    limit = AdaptiveLimit(0.05, 16.0)
    now = _run(limit, lambda in_flight: 0.2, 30)
    assert limit.target_at(now) == pytest.approx(0.25)
    assert limit.allowed > 16
    assert limit.target_at(now + 601) == 0.05  # and held for floor_s only


def test_turns_slowed_by_a_burst_never_raise_the_target_they_are_judged_by() -> None:
    limit = AdaptiveLimit(0.15, 16.0)
    now = _run(limit, _shared(0.05, 2), 600)  # ten minutes of a burst on a machine that runs 2 at once
    assert limit.target_at(now) == 0.15
    assert _shared(0.05, 2)(limit.allowed) <= 0.2
