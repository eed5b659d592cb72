"""Bodies of the predictive-scaling routes (the live state is the workflow's own ScalingView)."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.ops_bounds import InRange
from api.rollout_schemas import NAME
from api.strict import Strict
from policies.scaling import BOUNDS_RANGES, MAX_SEASONS, SEASON_RANGE, SETTINGS_RANGES, ScalingBounds
from workflows.scaling import DEFAULT_QUERY, ScalingInput

_DEFAULT = ScalingInput(namespace="", deployment="")
_BOUNDS = ScalingBounds()
_B, _S = BOUNDS_RANGES, SETTINGS_RANGES  # each field's range, as the workflow checks it too


class ScalingCreate(Strict):
    """A Deployment to scale ahead of demand. New targets start in forecast-only mode: decisions are
    recorded, nothing is scaled, until an SRE switches them to active."""

    namespace: str = Field(default="default", pattern=NAME, max_length=63)
    deployment: str = Field(pattern=NAME, max_length=63)
    mode: Literal["forecast-only", "active"] = "forecast-only"
    capacity_rps: Annotated[float, InRange(_B["capacity_rps"])] = Field(
        description="Requests/s one replica serves at its SLO."
    )
    min_replicas: Annotated[int, InRange(_B["min_replicas"])] = Field(
        default=_BOUNDS.min_replicas, description="Never below (never 0)."
    )
    max_replicas: Annotated[int, InRange(_B["max_replicas"])] = _BOUNDS.max_replicas
    target_utilization: Annotated[float, InRange(_B["target_utilization"])] = _BOUNDS.target_utilization
    tolerance: Annotated[float, InRange(_B["tolerance"])] = _BOUNDS.tolerance
    max_up_factor: Annotated[float, InRange(_B["max_up_factor"])] = _BOUNDS.max_up_factor
    max_down_factor: Annotated[float, InRange(_B["max_down_factor"])] = _BOUNDS.max_down_factor
    scale_down_stabilization_s: Annotated[float, InRange(_B["scale_down_stabilization_s"])] = (
        _BOUNDS.scale_down_stabilization_s
    )
    min_confidence: Annotated[float, InRange(_B["min_confidence"])] = _BOUNDS.min_confidence
    query: str = Field(
        default=DEFAULT_QUERY,
        min_length=1,
        max_length=2000,
        description="PromQL giving the target's requests/s; {{namespace}} and {{deployment}} are filled in.",
    )
    interval_s: Annotated[float, InRange(_S["interval_s"])] = Field(
        default=_DEFAULT.interval_s, description="Between decisions."
    )
    startup_s: Annotated[float, InRange(_S["startup_s"])] = Field(
        default=_DEFAULT.startup_s, description="A new pod's start-up time."
    )
    horizon_s: Annotated[float, InRange(_S["horizon_s"])] = Field(
        default=_DEFAULT.horizon_s, description="How far the forecast looks."
    )
    step_s: Annotated[float, InRange(_S["step_s"])] = Field(
        default=_DEFAULT.step_s, description="Resolution of the history."
    )
    lookback_s: Annotated[float, InRange(_S["lookback_s"])] = Field(
        default=_DEFAULT.lookback_s, description="History to learn from."
    )
    season_s: list[Annotated[float, InRange(SEASON_RANGE)]] = Field(
        default_factory=lambda: list(_DEFAULT.season_s), max_length=MAX_SEASONS
    )
    refresh_s: Annotated[float, InRange(_S["refresh_s"])] = Field(
        default=_DEFAULT.refresh_s, description="Retrain when older than this."
    )
    max_age_s: Annotated[float, InRange(_S["max_age_s"])] = Field(
        default=_DEFAULT.max_age_s, description="Older data counts as stale."
    )
    planning_quantile: Annotated[float, InRange(_S["planning_quantile"])] = _DEFAULT.planning_quantile

    def to_input(self, *, forecast_queue: str, requested_by: str) -> ScalingInput:
        """The workflow's input: each field under its own name, the bounds (BOUNDS_RANGES' names) gathered
        in its ScalingBounds."""
        fields = self.model_dump()
        bounds = ScalingBounds(**{name: fields.pop(name) for name in BOUNDS_RANGES})
        return ScalingInput(**fields, bounds=bounds, forecast_queue=forecast_queue, requested_by=requested_by)


class ModeIn(Strict):
    mode: Literal["forecast-only", "active"]
    reason: str = Field(default="", max_length=500)


class ScalingSummary(BaseModel):
    id: str
    namespace: str
    deployment: str
    phase: str | None
    status: str
    started_at: str | None
    closed_at: str | None


class ScalingList(BaseModel):
    data: list[ScalingSummary]


class StoredDecision(BaseModel):
    """One decision as the read model keeps it."""

    model_config = ConfigDict(from_attributes=True)

    workflow_id: str
    seq: int
    at: datetime
    mode: str
    status: str
    data_status: str
    forecast_status: str
    detail: str
    observed_rps: float | None
    forecast_peak_rps: float | None
    confidence: float | None
    current_replicas: int | None
    ready_replicas: int | None
    reactive_need: int | None
    forecast_need: int | None
    target: int | None
    basis: str
    limited_by: str | None
    reason: str
    forecast: dict[str, Any]
    model: dict[str, Any]


class DecisionList(BaseModel):
    data: list[StoredDecision]
