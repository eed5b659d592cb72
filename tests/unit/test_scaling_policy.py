"""Predictive scaling policy as tables: the needs, the bounds, the step limits, the stabilisation window."""

import math
from dataclasses import replace
from typing import Any

import pytest
from temporalio.converter import DataConverter

from policies.scaling import (
    Decision,
    DecisionInput,
    Recommendation,
    ScalingBounds,
    decide,
    reactive_need,
    remember,
    replicas_for,
)

B = ScalingBounds()  # 10 rps per replica at 80% → 8 rps planned per replica
MIN2, MIN3 = replace(B, min_replicas=2), replace(B, min_replicas=3)


def inp(
    current: int,
    observed: float,
    forecast: float | None = None,
    confidence: float = 0.9,
    now: float = 1_000.0,
    recent: tuple[Recommendation, ...] = (),
) -> DecisionInput:
    return DecisionInput(now, current, observed, forecast, confidence, recent)


# ── the needs ────────────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("rps", "bounds", "expected"),
    [
        (0.0, B, 0),
        (-3.0, B, 0),
        (8.0, B, 1),
        (8.1, B, 2),
        (24.0, B, 3),
        (412.0, B, 52),
        # 2.7 / (3 × 0.3) is 3.0000000000000004 in floats: still 3 replicas
        (2.7, ScalingBounds(capacity_rps=3.0, target_utilization=0.3), 3),
        (9.0, ScalingBounds(capacity_rps=3.0, target_utilization=0.3), 10),
        (1000.0, B, 125),  # not bounded by max_replicas
    ],
)
def test_replicas_for(rps: float, bounds: ScalingBounds, expected: int) -> None:
    assert replicas_for(rps, bounds) == expected


@pytest.mark.parametrize(
    ("current", "observed", "expected"),
    [
        (10, 80.0, 10),  # exactly on target
        (10, 88.0, 10),  # ratio 1.1: the edge of the tolerance band holds
        (10, 72.0, 10),  # ratio 0.9: likewise
        (10, 89.0, 12),  # ratio 1.1125 → ceil(11.125)
        (10, 71.0, 9),  # ratio 0.8875 → ceil(8.875)
        (10, 160.0, 20),
        (10, 0.0, 0),
        (4, 400.0, 50),  # not bounded
        (0, 20.0, 3),  # no replicas: what the demand needs
        (0, 0.0, 0),
    ],
)
def test_reactive_need_is_the_hpa_formula(current: int, observed: float, expected: int) -> None:
    assert reactive_need(current, observed, B) == expected


# ── decide, rule by rule ─────────────────────────────────────────────────────────────────────────────────

CASES = [
    # (id, input, bounds, target, basis, limited_by, recommendation, forecast_need)
    ("within tolerance holds", inp(10, 84.0), B, 10, "no-forecast", None, 10, None),
    ("reactive scale-up", inp(10, 120.0), B, 15, "no-forecast", None, 15, None),
    ("forecast above reactive scales up", inp(10, 80.0, 120.0), B, 15, "forecast", None, 15, 15),
    ("forecast below reactive keeps reactive", inp(10, 160.0, 40.0), B, 20, "reactive", None, 20, 5),
    ("forecast never scales in below reactive", inp(10, 40.0, 8.0), B, 5, "reactive", None, 5, 1),
    ("forecast equal to reactive is reactive", inp(10, 80.0, 80.0), B, 10, "reactive", None, 10, 10),
    ("low confidence falls back", inp(10, 80.0, 400.0, 0.3), B, 10, "low-confidence", None, 10, None),
    ("confidence at the minimum counts", inp(10, 80.0, 120.0, 0.5), B, 15, "forecast", None, 15, 15),
    ("max_replicas", inp(30, 240.0, 480.0), B, 50, "forecast", "max_replicas", 50, 60),
    ("min_replicas", inp(3, 0.0), MIN3, 3, "no-forecast", "min_replicas", 3, None),
    ("step-up ×2", inp(10, 80.0, 400.0), B, 20, "forecast", "step-up", 50, 50),
    ("step-up binds after max", inp(10, 80.0, 1000.0), B, 20, "forecast", "step-up", 50, 125),
    ("step-up from 1", inp(1, 80.0), B, 2, "no-forecast", "step-up", 10, None),
    ("step-up from 0 goes to 1", inp(0, 400.0), B, 1, "no-forecast", "step-up", 50, None),
    ("step-up from 0 goes to min", inp(0, 400.0), MIN3, 3, "no-forecast", "step-up", 50, None),
    ("step-up ×3", inp(10, 400.0), replace(B, max_up_factor=3.0), 30, "no-forecast", "step-up", 50, None),
    ("step-down ÷2", inp(20, 8.0), B, 10, "no-forecast", "step-down", 1, None),
    ("step-down of 3 rounds up", inp(3, 0.0), B, 2, "no-forecast", "step-down", 1, None),
    ("current 1 stays at 1", inp(1, 0.0), B, 1, "no-forecast", "min_replicas", 1, None),
    ("step-down stops at min", inp(4, 0.0), MIN3, 3, "no-forecast", "min_replicas", 3, None),
    ("above max comes down", inp(60, 480.0), B, 50, "no-forecast", "max_replicas", 50, None),
    ("never zero", inp(0, 0.0, 0.0, 1.0), B, 1, "reactive", "min_replicas", 1, 0),
    ("never zero, min 2", inp(0, 0.0, 0.0, 1.0), MIN2, 2, "reactive", "min_replicas", 2, 0),
]


@pytest.mark.parametrize(
    ("given", "bounds", "target", "basis", "limited_by", "recommendation", "forecast_need"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decide(
    given: DecisionInput,
    bounds: ScalingBounds,
    target: int,
    basis: str,
    limited_by: str | None,
    recommendation: int,
    forecast_need: int | None,
) -> None:
    decision = decide(given, bounds)
    assert (decision.target, decision.basis, decision.limited_by) == (target, basis, limited_by)
    assert decision.recommendation == recommendation
    assert decision.forecast_need == forecast_need
    assert decision.reactive_need == reactive_need(given.current_replicas, given.observed_rps, bounds)
    assert decision.target >= max(1, bounds.min_replicas)


def test_reason_says_what_drove_the_decision() -> None:
    decision = decide(inp(40, 320.0, 412.0), replace(B, max_replicas=48))
    assert decision.reason.startswith("forecast peak 412.0 rps over the lead time needs 52 > reactive 40")
    assert "limited to 48 by max_replicas" in decision.reason
    assert "40 → 48" in decision.reason
    low = decide(inp(10, 80.0, 400.0, 0.3), B)
    assert "confidence 0.30 < 0.50" in low.reason and "stays at 10" in low.reason
    assert "no forecast" in decide(inp(10, 80.0), B).reason


# ── scale-down stabilisation ─────────────────────────────────────────────────────────────────────────────


def test_stabilisation_holds_a_scale_down_then_releases_after_the_window() -> None:
    recent: tuple[Recommendation, ...] = ()
    current = 10
    steps = [  # (now, observed rps, expected target, expected limited_by)
        (0.0, 80.0, 10, None),  # recommends 10
        (60.0, 40.0, 10, "stabilization"),  # needs 5, held by the 10 of t=0
        (300.0, 40.0, 10, "stabilization"),  # t=0 is still inside the window (at >= now − 300)
        (301.0, 40.0, 5, None),  # released: the highest recommendation left is 5
    ]
    for now, observed, expected, limited_by in steps:
        decision = decide(inp(current, observed, now=now, recent=recent), B)
        assert (decision.target, decision.limited_by) == (expected, limited_by), now
        recent = remember(recent, decision, now, B)
        current = decision.target


@pytest.mark.parametrize(
    ("hold_forecast", "expected"),
    [
        (False, [(10, "forecast", None), (5, "reactive", None), (5, "reactive", None)]),
        # as before the change: the forecast's 10 holds the scale-down for the window
        (
            True,
            [(10, "forecast", None), (10, "reactive", "stabilization"), (10, "reactive", "stabilization")],
        ),
    ],
)
def test_the_window_holds_the_reactive_need_not_the_forecasts_headroom(
    hold_forecast: bool, expected: list[tuple[int, str, str | None]]
) -> None:
    recent: tuple[Recommendation, ...] = ()
    current = 5
    steps = [  # (now, observed rps, forecast peak rps): 40 rps needs 5 replicas, 80 needs 10
        (0.0, 40.0, 80.0),  # a jump ahead: 5 → 10 on the forecast
        (60.0, 40.0, 40.0),  # no longer expected
        (120.0, 40.0, 40.0),
    ]
    for (now, observed, forecast), (target, basis, limited_by) in zip(steps, expected, strict=True):
        decision = decide(inp(current, observed, forecast, now=now, recent=recent), B)
        assert (decision.target, decision.basis, decision.limited_by) == (target, basis, limited_by), now
        recent = remember(recent, decision, now, B, hold_forecast=hold_forecast)
        current = decision.target
    assert [r.replicas for r in recent] == ([10, 5, 5] if hold_forecast else [5, 5, 5])


def test_the_window_holds_the_reactive_need_within_min_and_max() -> None:
    idle = decide(inp(4, 0.0, 80.0), MIN2)  # reactive need 0, forecast 10
    assert (idle.reactive_need, idle.recommendation) == (0, 10)
    assert remember((), idle, 0.0, MIN2) == (Recommendation(0.0, 2),)
    flood = decide(inp(50, 1000.0), B)  # reactive need 125, above max_replicas 50
    assert remember((), flood, 0.0, B) == (Recommendation(0.0, 50),)


def test_stabilisation_keeps_a_partial_scale_down_and_caps_old_recommendations() -> None:
    recent = (Recommendation(900.0, 8),)
    decision = decide(inp(10, 40.0, recent=recent), B)
    assert (decision.target, decision.limited_by, decision.recommendation) == (8, "stabilization", 5)
    assert "held at 8" in decision.reason
    # a recommendation from before max_replicas was lowered doesn't hold the target above the new max
    lowered = decide(inp(10, 40.0, recent=(Recommendation(900.0, 10),)), replace(B, max_replicas=6))
    assert lowered.target == 6


def test_scale_up_is_never_delayed() -> None:
    recent = (Recommendation(990.0, 2), Recommendation(995.0, 3))
    decision = decide(inp(10, 120.0, recent=recent), B)
    assert (decision.target, decision.limited_by) == (15, None)


def test_no_window_means_no_stabilisation() -> None:
    bounds = replace(B, scale_down_stabilization_s=0.0)
    decision = decide(inp(10, 40.0, recent=(Recommendation(999.0, 10),)), bounds)
    assert decision.target == 5


def test_remember_appends_and_prunes() -> None:
    decision = decide(inp(10, 80.0), B)
    recent = (Recommendation(0.0, 5), Recommendation(50.0, 6), Recommendation(100.0, 7))
    assert remember(recent, decision, 350.0, B) == (
        Recommendation(50.0, 6),
        Recommendation(100.0, 7),
        Recommendation(350.0, 10),
    )
    assert remember((), decision, 0.0, replace(B, scale_down_stabilization_s=0.0)) == (
        Recommendation(0.0, 10),
    )


# ── validation ───────────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"min_replicas": 0}, "min_replicas"),
        ({"min_replicas": 1.5}, "min_replicas"),
        ({"max_replicas": 0}, "max_replicas"),
        ({"min_replicas": 5, "max_replicas": 4}, "max_replicas"),
        ({"capacity_rps": 0.0}, "capacity_rps"),
        ({"capacity_rps": math.inf}, "capacity_rps"),
        ({"capacity_rps": math.nan}, "capacity_rps"),
        ({"target_utilization": 0.0}, "target_utilization"),
        ({"target_utilization": 1.2}, "target_utilization"),
        ({"tolerance": -0.1}, "tolerance"),
        ({"tolerance": 1.0}, "tolerance"),
        ({"max_up_factor": 0.5}, "max_up_factor"),
        ({"max_down_factor": 0.9}, "max_down_factor"),
        ({"scale_down_stabilization_s": -1.0}, "scale_down_stabilization_s"),
        ({"min_confidence": 1.1}, "min_confidence"),
        ({"min_confidence": -0.1}, "min_confidence"),
    ],
)
def test_bounds_problem_names_the_field(change: dict[str, Any], field: str) -> None:
    problem = replace(B, **change).problem()
    assert problem is not None and problem.startswith(field)


def test_valid_bounds_have_no_problem() -> None:
    assert B.problem() is None
    assert (
        ScalingBounds(min_replicas=50, max_replicas=50, tolerance=0.0, min_confidence=1.0).problem() is None
    )


@pytest.mark.parametrize(
    ("given", "bounds", "match"),
    [
        (inp(10, math.nan), B, "observed_rps"),
        (inp(10, -1.0), B, "observed_rps"),
        (inp(10, math.inf), B, "observed_rps"),
        (inp(10, 80.0, math.nan), B, "forecast_peak_rps"),
        (inp(10, 80.0, -5.0), B, "forecast_peak_rps"),
        (inp(10, 80.0, 100.0, 1.5), B, "confidence"),
        (inp(10, 80.0, 100.0, -0.1), B, "confidence"),
        (inp(10, 80.0, 100.0, math.nan), B, "confidence"),
        (inp(-1, 80.0), B, "current_replicas"),
        (inp(10, 80.0, now=math.nan), B, "now"),
        (inp(10, 80.0), ScalingBounds(min_replicas=0), "min_replicas"),
    ],
)
def test_invalid_inputs_raise(given: DecisionInput, bounds: ScalingBounds, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decide(given, bounds)


def test_replicas_for_rejects_nan() -> None:
    with pytest.raises(ValueError, match="rps"):
        replicas_for(math.nan, B)


# ── payloads ─────────────────────────────────────────────────────────────────────────────────────────────


def test_input_decision_and_bounds_survive_temporal_payloads() -> None:
    converter = DataConverter.default.payload_converter
    given = inp(40, 320.0, 412.0, recent=(Recommendation(900.0, 44), Recommendation(950.5, 48)))
    bounds = replace(B, max_replicas=48)
    decision = decide(given, bounds)
    no_forecast = inp(3, 0.0, None, 0.0)
    payloads = converter.to_payloads([given, decision, bounds, no_forecast, decide(no_forecast, B)])
    decoded = converter.from_payloads(
        payloads, [DecisionInput, Decision, ScalingBounds, DecisionInput, Decision]
    )
    assert decoded == [given, decision, bounds, no_forecast, decide(no_forecast, B)]
    assert isinstance(decoded[0].recent, tuple) and isinstance(decoded[0].recent[0], Recommendation)
