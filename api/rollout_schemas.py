"""Request bodies of the rollout routes; answers are the workflow's own RolloutView."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictBool

from api.ops_bounds import InRange
from api.strict import Strict
from policies.canary import (
    ANALYSIS_INTERVAL_RANGE,
    COUNT_RANGE,
    DEFAULT_CONSECUTIVE_ERROR_LIMIT,
    LIMIT_RANGE,
    MIN_SAMPLES_RANGE,
    PAUSE_RANGE,
    TIME_SCALE_RANGE,
    Analyze,
    Pause,
    SetWeight,
    Step,
)
from policies.ranges import PERCENT, REPLICAS, Range, whole

NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # a Kubernetes object name (RFC 1123 label)


class SetWeightIn(Strict):
    kind: Literal["set_weight"]
    percent: Annotated[int, InRange(whole(0, 100, "a whole percentage"))]


class PauseIn(Strict):
    kind: Literal["pause"]
    duration_s: Annotated[float, InRange(PAUSE_RANGE)] | None = Field(
        default=None, description="None: until a human promotes."
    )


class AnalyzeIn(Strict):
    kind: Literal["analyze"]
    templates: list[str] = Field(
        min_length=1, max_length=20, description="Metric templates, measured together."
    )
    interval_s: Annotated[float, InRange(ANALYSIS_INTERVAL_RANGE)]
    count: Annotated[int, InRange(COUNT_RANGE)]
    failure_limit: Annotated[int, InRange(LIMIT_RANGE)] = 0
    inconclusive_limit: Annotated[int, InRange(LIMIT_RANGE)] = 0
    consecutive_error_limit: Annotated[int, InRange(LIMIT_RANGE)] = DEFAULT_CONSECUTIVE_ERROR_LIMIT


StepIn = Annotated[SetWeightIn | PauseIn | AnalyzeIn, Field(discriminator="kind")]


def to_step(step: SetWeightIn | PauseIn | AnalyzeIn) -> Step:
    if isinstance(step, SetWeightIn):
        return SetWeight(step.percent)
    if isinstance(step, PauseIn):
        return Pause(step.duration_s)
    return Analyze(
        tuple(step.templates),
        step.interval_s,
        step.count,
        step.failure_limit,
        step.inconclusive_limit,
        step.consecutive_error_limit,
    )


class JudgeSettingsIn(Strict):
    confidence: Annotated[float, InRange(Range(0, 1, low_open=True, high_open=True))] = 0.98
    pass_threshold: Annotated[float, InRange(PERCENT)] = 95.0
    marginal_threshold: Annotated[float, InRange(PERCENT)] = 75.0
    min_samples: Annotated[int, InRange(MIN_SAMPLES_RANGE)] = 5
    samples_per_interval: Annotated[int, InRange(whole(3, 60))] = 6


class RolloutCreate(Strict):
    target: Literal["deployment", "model"] = Field(
        default="deployment",
        description="deployment: a Kubernetes Deployment named `service`; model: the model `service` in "
        "the models policy, whose canary version the gateway weights (namespace and image unused).",
    )
    service: str = Field(pattern=NAME, max_length=63)
    namespace: str = Field(default="default", pattern=NAME, max_length=63)
    image: str = Field(default="", max_length=500, description="The new image (deployments only).")
    version: str = Field(
        pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        max_length=63,
        description="The new release's lcp.dev/version label: its metrics carry it.",
    )
    deployment: str | None = Field(
        default=None, pattern=NAME, max_length=63, description="The stable Deployment (default: the service)."
    )
    container: str | None = Field(default=None, description="The container that gets the image.")
    steps: list[StepIn] | None = Field(
        default=None,
        max_length=50,
        description="The plan; default: 10% → pause 2 min → 20% → pause 2 min → analysis → 50% → "
        "pause 5 min → 100%.",
    )
    time_scale: Annotated[float, InRange(TIME_SCALE_RANGE)] = Field(
        default=1.0, description="Multiplies the default plan's durations (not given steps)."
    )
    router: Literal["replicas", "istio", "gateway-api"] = "replicas"
    judge: Literal["threshold", "statistical"] = "threshold"
    judge_settings: JudgeSettingsIn = JudgeSettingsIn()
    templates: dict[str, Any] | None = Field(
        default=None,
        max_length=20,
        description="Metric templates added to (or replacing by name) the server's, in the shape of "
        "policies/analysis.yaml's `templates` mapping.",
    )
    total_replicas: Annotated[int, InRange(REPLICAS)] | None = None
    on_failure: Literal["rollback", "freeze"] = "rollback"
    allow_decrease: StrictBool = False
    exact_weights: StrictBool = Field(
        default=False,
        description="With the replica router, raise the total (total_replicas, else the stable's replicas) "
        "to the fewest replicas that split into every set_weight exactly (10% and 25%: a multiple of 20).",
    )


class PromoteIn(Strict):
    full: StrictBool = Field(default=False, description="Skip every remaining step and analysis.")
    reason: str = Field(default="", max_length=500)


class ReasonIn(Strict):
    reason: str = Field(default="", max_length=500)


class RolloutSummary(BaseModel):
    id: str
    namespace: str
    service: str
    phase: str | None
    status: str  # Temporal's: RUNNING, COMPLETED, ...
    started_at: str | None
    closed_at: str | None


class RolloutList(BaseModel):
    data: list[RolloutSummary]
