"""Predictive scaling: how many replicas to set from the demand now and a forecast of the peak ahead."""

import math
from collections.abc import Mapping
from dataclasses import dataclass

from policies.ranges import DAY_S, HOUR_S, REPLICAS, SHARE, Range, seconds

# Float noise (3.0000000001 from 2.4 / 0.8) must not cost a replica: ceilings and the tolerance band give
# this much relative slack.
_EPSILON = 1e-9


def is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def robust_ceil(value: float) -> int:
    """`math.ceil` that ignores float noise just above a whole number (3.0000000001 → 3)."""
    return math.ceil(value - _EPSILON * max(1.0, abs(value)))


@dataclass(frozen=True)
class ScalingBounds:
    """The limits and targets of one Deployment's scaling, shared by lcp's policy and the HPA it replaces."""

    min_replicas: int = 1  # ≥ 1: never scale to zero
    max_replicas: int = 50
    capacity_rps: float = 10.0  # requests/s one replica serves at its SLO
    target_utilization: float = 0.8  # share of capacity to plan for (the HPA's target, same for both)
    tolerance: float = 0.1  # the HPA's tolerance around the target
    max_up_factor: float = 2.0  # up at most ×2 per decision
    max_down_factor: float = 2.0  # down at most ÷2 per decision
    scale_down_stabilization_s: float = 300.0
    min_confidence: float = 0.5  # a forecast below this confidence is ignored (reactive need only)

    def problem(self) -> str | None:
        """Why these bounds can't be used, as one sentence naming the field and its range; None when they
        are fine."""
        for name, allowed in BOUNDS_RANGES.items():
            if problem := allowed.problem(name, getattr(self, name)):
                return problem
        if self.max_replicas < self.min_replicas:
            return f"max_replicas must be ≥ min_replicas ({self.min_replicas}), got {self.max_replicas!r}"
        return None


# The range of every setting of a scaling target (BOUNDS_RANGES: its ScalingBounds; SETTINGS_RANGES: the
# rest of the workflow's input). Decisions come at most once a second, no count runs past what a cluster
# holds, and one forecast reads at most MAX_HISTORY_POINTS points and predicts at most MAX_HORIZON_STEPS.
MAX_FACTOR = 100.0
MAX_SEASONS = 4
# lookback_s / step_s: what the forecasting activity reads (ForecastSettings.max_history_points), 69 days
# at 1 min, 14 days at 12 s; a longer lookback was accepted here and its every forecast refused there.
MAX_HISTORY_POINTS = 100_000
# horizon_s / step_s: 72 min at a 1 min step, 6 h at 5 min. The forecaster's features and every tree node
# grow with the steps ahead; past this, a fit with MAX_SEASONS seasons and a lead as long as the horizon
# would need more than its memory limit per fit (activities/forecasting.py; a unit test ties the two).
MAX_HORIZON_STEPS = 72
BOUNDS_RANGES: dict[str, Range] = {
    "min_replicas": REPLICAS,
    "max_replicas": REPLICAS,
    "capacity_rps": Range(0, 1_000_000, low_open=True, what="a number of requests/s"),
    "target_utilization": Range(0, 1, low_open=True),
    "tolerance": Range(0, 1, high_open=True),
    "max_up_factor": Range(1, MAX_FACTOR),
    "max_down_factor": Range(1, MAX_FACTOR),
    "scale_down_stabilization_s": seconds(0, DAY_S),
    "min_confidence": SHARE,
}
SETTINGS_RANGES: dict[str, Range] = {
    "interval_s": seconds(1, DAY_S),
    "startup_s": seconds(0, HOUR_S),
    "horizon_s": seconds(1, 7 * DAY_S),
    "step_s": seconds(1, HOUR_S),
    "lookback_s": seconds(60, 90 * DAY_S),
    "refresh_s": seconds(10, 7 * DAY_S),
    "max_age_s": seconds(1, DAY_S),
    "planning_quantile": Range(0, 1, low_open=True, high_open=True),
}
SEASON_RANGE = seconds(1, 366 * DAY_S)


def settings_problem(settings: Mapping[str, object]) -> str | None:
    """Why a scaling target's settings (SETTINGS_RANGES' names and season_s) can't be used, naming the
    field and its range; None when they are fine. Pairs that depend on each other are checked by the
    workflow's input_problem."""
    for name, allowed in SETTINGS_RANGES.items():
        if problem := allowed.problem(name, settings.get(name)):
            return problem
    seasons = settings.get("season_s")
    if not isinstance(seasons, list | tuple) or len(seasons) > MAX_SEASONS:
        return f"season_s must be a list of at most {MAX_SEASONS} seasons, got {seasons!r}"
    for index, season in enumerate(seasons):
        if problem := SEASON_RANGE.problem(f"season_s[{index}]", season):
            return problem
    step, lookback, horizon = settings["step_s"], settings["lookback_s"], settings["horizon_s"]
    assert (
        isinstance(step, int | float)
        and isinstance(lookback, int | float)
        and isinstance(horizon, int | float)
    )
    if lookback / step > MAX_HISTORY_POINTS:
        return (
            f"lookback_s / step_s must be at most {MAX_HISTORY_POINTS} points of history, got "
            f"{lookback:g} / {step:g} = {lookback / step:.0f}: lengthen step_s or shorten lookback_s"
        )
    if horizon / step > MAX_HORIZON_STEPS:
        return (
            f"horizon_s / step_s must be at most {MAX_HORIZON_STEPS} forecast steps, got "
            f"{horizon:g} / {step:g} = {horizon / step:.0f}: lengthen step_s or shorten horizon_s"
        )
    return None


def _check_rps(name: str, value: float) -> None:
    if not (is_finite_number(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number of requests/s ≥ 0, got {value!r}")


def replicas_for(rps: float, bounds: ScalingBounds) -> int:
    """Replicas that serve `rps` at the target utilisation: ceil(rps / (capacity × target)), 0 for no
    demand. Not bounded by min/max."""
    if math.isnan(rps) or math.isinf(rps):
        raise ValueError(f"rps must be a finite number, got {rps!r}")
    if rps <= 0:
        return 0
    return robust_ceil(rps / (bounds.capacity_rps * bounds.target_utilization))


def reactive_need(current_replicas: int, observed_rps: float, bounds: ScalingBounds) -> int:
    """What the Kubernetes HPA's formula asks for now: current when the usage ratio is within the
    tolerance of 1, else ceil(current × ratio). With no replicas, what the demand needs. Not bounded."""
    if current_replicas <= 0:
        return replicas_for(observed_rps, bounds)
    utilisation = observed_rps / (current_replicas * bounds.capacity_rps)
    ratio = utilisation / bounds.target_utilization
    if abs(ratio - 1) <= bounds.tolerance + _EPSILON:
        return current_replicas
    return robust_ceil(current_replicas * ratio)


@dataclass(frozen=True)
class Recommendation:
    """A decision's recommendation (bounded by min/max, before step limits), kept for stabilisation."""

    at: float  # unix seconds
    replicas: int


@dataclass(frozen=True)
class DecisionInput:
    """What one scaling decision sees."""

    now: float
    current_replicas: int  # the Deployment's spec.replicas now
    observed_rps: float  # demand now
    forecast_peak_rps: float | None  # forecast peak demand over the lead time; None = no forecast
    confidence: float  # 0..1 of that forecast (ignored when forecast is None)
    recent: tuple[Recommendation, ...] = ()  # earlier recommendations, for the scale-down stabilisation


@dataclass(frozen=True)
class Decision:
    """What to set, and why."""

    target: int  # replicas to set (== current_replicas means no action)
    reactive_need: int
    forecast_need: int | None  # None when there is no forecast or it was ignored for low confidence
    basis: str  # "forecast" | "reactive" | "low-confidence" | "no-forecast"
    limited_by: str | None  # "max_replicas" | "min_replicas" | "step-up" | "step-down" | "stabilization"
    recommendation: int  # bounded by min/max but before step limits and stabilisation
    reason: str


def _check_input(inp: DecisionInput, bounds: ScalingBounds) -> None:
    if problem := bounds.problem():
        raise ValueError(f"invalid scaling bounds: {problem}")
    if not is_finite_number(inp.now):
        raise ValueError(f"now must be a finite number of unix seconds, got {inp.now!r}")
    if not is_whole(inp.current_replicas) or inp.current_replicas < 0:
        raise ValueError(f"current_replicas must be a whole number ≥ 0, got {inp.current_replicas!r}")
    _check_rps("observed_rps", inp.observed_rps)
    if inp.forecast_peak_rps is not None:
        _check_rps("forecast_peak_rps", inp.forecast_peak_rps)
    if not (is_finite_number(inp.confidence) and 0 <= inp.confidence <= 1):
        raise ValueError(f"confidence must be a number in [0, 1], got {inp.confidence!r}")


def _need_clause(inp: DecisionInput, bounds: ScalingBounds, reactive: int, forecast: int | None) -> str:
    observed = f"observed {inp.observed_rps:.1f} rps on {inp.current_replicas} replicas"
    if inp.forecast_peak_rps is None:
        return f"no forecast; reactive need {reactive} ({observed})"
    if forecast is None:
        return (
            f"forecast ignored (confidence {inp.confidence:.2f} < {bounds.min_confidence:.2f}); "
            f"reactive need {reactive} ({observed})"
        )
    peak = f"forecast peak {inp.forecast_peak_rps:.1f} rps over the lead time needs {forecast}"
    if forecast > reactive:
        return f"{peak} > reactive {reactive}"
    return f"reactive need {reactive} ({observed}) ≥ {peak}"


def decide(inp: DecisionInput, bounds: ScalingBounds) -> Decision:
    """The replicas to set: the larger of the reactive (HPA-formula) need and a confident forecast's need,
    bounded by min/max, moved at most ×max_up_factor up or ÷max_down_factor down from the current count,
    and held up by the highest recommendation of the scale-down stabilisation window. Never 0."""
    _check_input(inp, bounds)
    current = inp.current_replicas

    # 1–2: the needs and the larger of them (a forecast never scales in below the reactive need).
    reactive = reactive_need(current, inp.observed_rps, bounds)
    forecast: int | None = None
    if inp.forecast_peak_rps is None:
        basis = "no-forecast"
    elif inp.confidence < bounds.min_confidence:
        basis = "low-confidence"
    else:
        forecast = replicas_for(inp.forecast_peak_rps, bounds)
        basis = "forecast" if forecast > reactive else "reactive"
    raw = max(reactive, forecast or 0)

    # 3: min/max.
    limited_by: str | None = None
    recommendation = min(max(raw, bounds.min_replicas), bounds.max_replicas)
    if raw > bounds.max_replicas:
        limited_by = "max_replicas"
    elif raw < bounds.min_replicas:
        limited_by = "min_replicas"

    # 4: step limits relative to the current count.
    target = recommendation
    up_limit = max(robust_ceil(current * bounds.max_up_factor), bounds.min_replicas, 1)
    down_limit = max(robust_ceil(current / bounds.max_down_factor), bounds.min_replicas)
    if target > up_limit:
        target, limited_by = up_limit, "step-up"
    elif target < down_limit:
        target, limited_by = down_limit, "step-down"

    # 5: scale-down stabilisation (the HPA's): no lower than the highest recent recommendation. Old
    # recommendations are capped at today's max_replicas, in case the bounds changed since.
    window = bounds.scale_down_stabilization_s
    if target < current:
        in_window = [r.replicas for r in inp.recent if r.at >= inp.now - window]
        if in_window:
            stabilized = min(current, max(target, min(max(in_window), bounds.max_replicas)))
            if stabilized > target:
                target, limited_by = stabilized, "stabilization"

    # 6: never zero.
    target = max(target, bounds.min_replicas, 1)

    reason = _need_clause(inp, bounds, reactive, forecast)
    if limited_by == "stabilization":
        reason += f"; held at {target} by the highest recommendation of the last {window:g} s"
    elif limited_by is not None:
        reason += f"; limited to {target} by {limited_by}"
    reason += f"; {current} → {target}" if target != current else f"; stays at {current}"
    return Decision(target, reactive, forecast, basis, limited_by, recommendation, reason)


def remember(
    recent: tuple[Recommendation, ...],
    decision: Decision,
    now: float,
    bounds: ScalingBounds,
    *,
    hold_forecast: bool = False,
) -> tuple[Recommendation, ...]:
    """`recent` with what the stabilisation window holds of this decision added, less those older than the
    window: its reactive need, bounded by min/max. The forecast's headroom above it is not held. The window
    is the HPA's guard against a metric that dips for a moment; a forecast is already the peak over the
    whole lead, made afresh at every decision, and holding it for the window would pay for headroom ahead
    of a jump the forecaster no longer expects. `hold_forecast` holds the whole recommendation, as
    decisions did before (for workflow histories recorded then)."""
    reactive = min(max(decision.reactive_need, bounds.min_replicas), bounds.max_replicas)
    held = decision.recommendation if hold_forecast else reactive
    cutoff = now - bounds.scale_down_stabilization_s
    kept = (*recent, Recommendation(now, held))
    return tuple(r for r in kept if r.at >= cutoff)
