"""The Kubernetes HPA reproduction: tolerance, the scale-up policies, scale-down stabilisation, bounds."""

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from policies.hpa import Hpa, HpaSpec, ScaleEvent
from policies.scaling import ScalingBounds, reactive_need

SPEC = HpaSpec()  # 10 rps per pod at 80% → a target of 8 rps per pod


def replay(spec: HpaSpec, start: int, demand: Sequence[float], step_s: float = 15.0) -> list[int]:
    """Sync every `step_s` seconds, applying each answer at once and with every pod ready."""
    hpa, current, replicas = Hpa(spec), start, []
    for i, rps in enumerate(demand):
        current = hpa.sync(i * step_s, current, current, rps)
        replicas.append(current)
    return replicas


# ── the metric ───────────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("demand", "desired", "recommended"),
    [
        (80.0, 10, 10),  # on target
        (88.0, 10, 10),  # ratio 1.1: within the tolerance
        (89.0, 12, 12),  # ratio 1.1125: ceil(11.125)
        (72.0, 10, 10),  # ratio 0.9: within the tolerance
        (71.0, 10, 9),  # ratio 0.8875 recommends 9, but the fresh window holds 10
    ],
)
def test_tolerance_band(demand: float, desired: int, recommended: int) -> None:
    hpa = Hpa(SPEC)
    assert hpa.sync(0.0, 10, 10, demand) == desired
    assert hpa.recommendations[-1].replicas == recommended


@pytest.mark.parametrize("current", [1, 3, 10, 37])
@pytest.mark.parametrize("demand", [0.0, 5.0, 80.0, 88.0, 95.0, 300.0, 1000.0])
def test_with_every_pod_ready_it_recommends_what_lcps_reactive_need_says(current: int, demand: float) -> None:
    hpa = Hpa(SPEC)
    hpa.sync(0.0, current, current, demand)
    assert hpa.recommendations[-1].replicas == reactive_need(current, demand, ScalingBounds())


@pytest.mark.parametrize(
    ("ready", "demand", "desired"),
    [
        # 5 ready pods at 24 rps each (ratio 3) would ask for 15 from the ready pods alone; Kubernetes re-runs
        # it with the 5 unready pods at 0: 120 / (10 × 8) = 1.5 → 15
        (5, 120.0, 15),
        (5, 84.0, 10),  # ready-only ratio 2.1, but 84 / 80 = 1.05 is within the tolerance: no change
        (5, 200.0, 20),  # 200 / 80 = 2.5 → 25, limited to ×2 (20)
        (0, 500.0, 10),  # no ready pods, no metrics: the controller leaves the scale alone
    ],
)
def test_unready_pods_count_as_idle_on_a_scale_up(ready: int, demand: float, desired: int) -> None:
    assert Hpa(SPEC).sync(0.0, 10, ready, demand) == desired


def test_unready_pods_are_left_out_when_demand_falls() -> None:
    hpa = Hpa(replace(SPEC, scale_down_stabilization_s=0.0))
    # 8 ready pods at 2 rps each: ratio 0.25 → ceil(0.25 × 8) = 2 (the 2 pending pods don't count)
    assert hpa.sync(0.0, 10, 8, 16.0) == 2


# ── scale-up policies: max(+4 pods, +100%) per 15 s ─────────────────────────────────────────────────────


def test_tripled_demand_takes_two_syncs_when_doubling_binds() -> None:
    hpa = Hpa(SPEC)
    assert hpa.sync(0.0, 10, 10, 240.0) == 20  # wants 30; max(10 + 4, 10 × 2) = 20
    assert hpa.scale_events == (ScaleEvent(0.0, 10),)
    assert hpa.sync(5.0, 20, 20, 240.0) == 20  # same period: measured from its start (10), still 20
    assert hpa.sync(15.0, 20, 20, 240.0) == 30  # the t=0 scale left the period: 20 → up to 40


def test_tripled_demand_takes_two_syncs_when_four_pods_bind() -> None:
    hpa = Hpa(SPEC)
    assert hpa.sync(0.0, 3, 3, 72.0) == 7  # wants 9; max(3 + 4, 3 × 2) = 7
    assert hpa.sync(15.0, 7, 7, 72.0) == 9


def test_small_counts_get_four_pods_at_once() -> None:
    assert Hpa(SPEC).sync(0.0, 2, 2, 48.0) == 6  # ×3 demand: max(2 + 4, 2 × 2) = 6 in one sync
    assert Hpa(SPEC).sync(0.0, 1, 1, 400.0) == 5  # max(1 + 4, 1 × 2)


# ── scale-down: stabilisation only ───────────────────────────────────────────────────────────────────────


def test_scale_down_waits_for_the_stabilisation_window_then_drops_at_once() -> None:
    hpa, current = Hpa(SPEC), 10
    assert hpa.sync(0.0, current, current, 80.0) == 10
    for now in range(15, 300, 15):
        assert hpa.sync(float(now), current, current, 16.0) == 10, now  # wants 2, held by t=0's 10
    assert hpa.sync(300.0, current, current, 16.0) == 2  # t=0 left the window: 10 → 2 in one step


def test_a_new_controller_does_not_scale_down_before_a_window() -> None:
    hpa = Hpa(SPEC)
    assert hpa.sync(0.0, 10, 10, 0.0) == 10
    assert hpa.sync(285.0, 10, 10, 0.0) == 10
    assert hpa.sync(300.0, 10, 10, 0.0) == 1


def test_never_below_min_and_never_above_max() -> None:
    spec = replace(SPEC, min_replicas=3, max_replicas=12, scale_down_stabilization_s=0.0)
    assert Hpa(spec).sync(0.0, 10, 10, 0.0) == 3
    assert Hpa(spec).sync(0.0, 10, 10, 1000.0) == 12
    assert Hpa(spec).sync(0.0, 0, 0, 0.0) == 3  # below min: back to min, never 0
    assert Hpa(spec).sync(0.0, 20, 20, 1000.0) == 12  # above max: back to max


# ── a replay ─────────────────────────────────────────────────────────────────────────────────────────────


def test_replay_of_a_spike() -> None:
    demand = [16.0] * 2 + [80.0] * 3 + [40.0] * 24
    replicas = replay(SPEC, 2, demand)
    assert replicas[:5] == [2, 2, 6, 10, 10]  # 2 → 6 (+4 pods) → 10 (the next period allows ×2)
    # demand halves at t=75 s; the last recommendation of 10 was at t=60 s, so it holds until t=360 s
    assert replicas[5:24] == [10] * 19
    assert replicas[24:] == [5] * 5
    assert len(replicas) == len(demand)


# ── validation ───────────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"min_replicas": 0}, "min_replicas"),
        ({"min_replicas": 4, "max_replicas": 3}, "max_replicas"),
        ({"capacity_rps": -1.0}, "capacity_rps"),
        ({"target_utilization": 0.0}, "target_utilization"),
        ({"tolerance": 1.0}, "tolerance"),
        ({"sync_period_s": 0.0}, "sync_period_s"),
        ({"scale_up_period_s": math.nan}, "scale_up_period_s"),
        ({"scale_down_stabilization_s": -1.0}, "scale_down_stabilization_s"),
        ({"scale_up_pods": 0}, "scale_up_pods"),
        ({"scale_up_percent": 0.0}, "scale_up_percent"),
    ],
)
def test_spec_problem_names_the_field(change: dict[str, Any], field: str) -> None:
    spec = replace(SPEC, **change)
    problem = spec.problem()
    assert problem is not None and problem.startswith(field)
    with pytest.raises(ValueError, match=field):
        Hpa(spec)


@pytest.mark.parametrize(
    ("now", "current", "ready", "demand", "match"),
    [
        (math.nan, 10, 10, 80.0, "now"),
        (0.0, -1, 0, 80.0, "current_replicas"),
        (0.0, 10, -1, 80.0, "ready_replicas"),
        (0.0, 10, 10, -1.0, "demand_rps"),
        (0.0, 10, 10, math.nan, "demand_rps"),
    ],
)
def test_invalid_sync_inputs_raise(now: float, current: int, ready: int, demand: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Hpa(SPEC).sync(now, current, ready, demand)


def test_time_may_not_go_backwards() -> None:
    hpa = Hpa(SPEC)
    hpa.sync(100.0, 10, 10, 80.0)
    with pytest.raises(ValueError, match="before the previous sync"):
        hpa.sync(99.0, 10, 10, 80.0)
