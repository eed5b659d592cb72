"""Predictive scaling: how many replicas to set from the demand now and a forecast of the peak ahead."""

import math
from dataclasses import dataclass

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
        """Why these bounds can't be used, as one sentence naming the field; None when they are fine."""
        if not is_whole(self.min_replicas) or self.min_replicas < 1:
            return f"min_replicas must be a whole number ≥ 1 (never zero), got {self.min_replicas!r}"
        if not is_whole(self.max_replicas) or self.max_replicas < self.min_replicas:
            return (
                f"max_replicas must be a whole number ≥ min_replicas ({self.min_replicas}), "
                f"got {self.max_replicas!r}"
            )
        if not (is_finite_number(self.capacity_rps) and self.capacity_rps > 0):
            return f"capacity_rps must be a positive, finite number of requests/s, got {self.capacity_rps!r}"
        if not (is_finite_number(self.target_utilization) and 0 < self.target_utilization <= 1):
            return f"target_utilization must be in (0, 1], e.g. 0.8, got {self.target_utilization!r}"
        if not (is_finite_number(self.tolerance) and 0 <= self.tolerance < 1):
            return f"tolerance must be in [0, 1), e.g. 0.1, got {self.tolerance!r}"
        if not (is_finite_number(self.max_up_factor) and self.max_up_factor >= 1):
            return f"max_up_factor must be a number ≥ 1, got {self.max_up_factor!r}"
        if not (is_finite_number(self.max_down_factor) and self.max_down_factor >= 1):
            return f"max_down_factor must be a number ≥ 1, got {self.max_down_factor!r}"
        if not (is_finite_number(self.scale_down_stabilization_s) and self.scale_down_stabilization_s >= 0):
            return (
                "scale_down_stabilization_s must be a number of seconds ≥ 0, "
                f"got {self.scale_down_stabilization_s!r}"
            )
        if not (is_finite_number(self.min_confidence) and 0 <= self.min_confidence <= 1):
            return f"min_confidence must be in [0, 1], got {self.min_confidence!r}"
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
    recommendation: int  # bounded by min/max but before step limits and stabilisation: remember this one
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
    recent: tuple[Recommendation, ...], decision: Decision, now: float, bounds: ScalingBounds
) -> tuple[Recommendation, ...]:
    """`recent` with this decision's recommendation added, less those older than the stabilisation window."""
    cutoff = now - bounds.scale_down_stabilization_s
    kept = (*recent, Recommendation(now, decision.recommendation))
    return tuple(r for r in kept if r.at >= cutoff)
