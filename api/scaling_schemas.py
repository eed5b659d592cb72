"""Bodies of the predictive-scaling routes (the live state is the workflow's own ScalingView)."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.rollout_schemas import NAME
from policies.scaling import ScalingBounds
from workflows.scaling import DEFAULT_QUERY, ScalingInput

_DEFAULT = ScalingInput(namespace="", deployment="")
_BOUNDS = ScalingBounds()


class ScalingCreate(BaseModel):
    """A Deployment to scale ahead of demand. New targets start in forecast-only mode: decisions are
    recorded, nothing is scaled, until an SRE switches them to active."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    namespace: str = Field(default="default", pattern=NAME)
    deployment: str = Field(pattern=NAME)
    mode: Literal["forecast-only", "active"] = "forecast-only"
    capacity_rps: float = Field(gt=0, description="Requests/s one replica serves at its SLO.")
    min_replicas: int = Field(default=_BOUNDS.min_replicas, ge=1, description="Never below (never 0).")
    max_replicas: int = Field(default=_BOUNDS.max_replicas, ge=1)
    target_utilization: float = Field(default=_BOUNDS.target_utilization, gt=0, le=1)
    tolerance: float = Field(default=_BOUNDS.tolerance, ge=0, lt=1)
    max_up_factor: float = Field(default=_BOUNDS.max_up_factor, ge=1)
    max_down_factor: float = Field(default=_BOUNDS.max_down_factor, ge=1)
    scale_down_stabilization_s: float = Field(default=_BOUNDS.scale_down_stabilization_s, ge=0)
    min_confidence: float = Field(default=_BOUNDS.min_confidence, ge=0, le=1)
    query: str = Field(
        default=DEFAULT_QUERY,
        min_length=1,
        description="PromQL giving the target's requests/s; {{namespace}} and {{deployment}} are filled in.",
    )
    interval_s: float = Field(default=_DEFAULT.interval_s, gt=0, description="Between decisions.")
    startup_s: float = Field(default=_DEFAULT.startup_s, ge=0, description="A new pod's start-up time.")
    horizon_s: float = Field(default=_DEFAULT.horizon_s, gt=0, description="How far the forecast looks.")
    step_s: float = Field(default=_DEFAULT.step_s, gt=0, description="Resolution of the history.")
    lookback_s: float = Field(default=_DEFAULT.lookback_s, gt=0, description="History to learn from.")
    season_s: list[float] = Field(default_factory=lambda: list(_DEFAULT.season_s))
    refresh_s: float = Field(default=_DEFAULT.refresh_s, gt=0, description="Retrain when older than this.")
    max_age_s: float = Field(default=_DEFAULT.max_age_s, gt=0, description="Older data counts as stale.")
    planning_quantile: float = Field(default=_DEFAULT.planning_quantile, gt=0, lt=1)


class ModeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
