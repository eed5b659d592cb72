"""Request bodies of the rollout routes; answers are the workflow's own RolloutView."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from policies.canary import DEFAULT_CONSECUTIVE_ERROR_LIMIT, Analyze, Pause, SetWeight, Step

NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # a Kubernetes object name (RFC 1123 label)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SetWeightIn(_Strict):
    kind: Literal["set_weight"]
    percent: int = Field(ge=0, le=100)


class PauseIn(_Strict):
    kind: Literal["pause"]
    duration_s: float | None = Field(default=None, ge=0, description="None: until a human promotes.")


class AnalyzeIn(_Strict):
    kind: Literal["analyze"]
    templates: list[str] = Field(min_length=1, description="Metric templates, measured together.")
    interval_s: float = Field(gt=0)
    count: int = Field(ge=1)
    failure_limit: int = Field(default=0, ge=0)
    inconclusive_limit: int = Field(default=0, ge=0)
    consecutive_error_limit: int = Field(default=DEFAULT_CONSECUTIVE_ERROR_LIMIT, ge=0)


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


class JudgeSettingsIn(_Strict):
    confidence: float = Field(default=0.98, gt=0, lt=1)
    pass_threshold: float = Field(default=95.0, ge=0, le=100)
    marginal_threshold: float = Field(default=75.0, ge=0, le=100)
    min_samples: int = Field(default=5, ge=3)
    samples_per_interval: int = Field(default=6, ge=3, le=60)


class RolloutCreate(_Strict):
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
    time_scale: float = Field(
        default=1.0, gt=0, le=100, description="Multiplies the default plan's durations (not given steps)."
    )
    router: Literal["replicas", "istio", "gateway-api"] = "replicas"
    judge: Literal["threshold", "statistical"] = "threshold"
    judge_settings: JudgeSettingsIn = JudgeSettingsIn()
    templates: dict[str, Any] | None = Field(
        default=None,
        description="Metric templates added to (or replacing by name) the server's, in the shape of "
        "policies/analysis.yaml's `templates` mapping.",
    )
    total_replicas: int | None = Field(default=None, ge=1, le=10_000)
    on_failure: Literal["rollback", "freeze"] = "rollback"
    allow_decrease: bool = False


class PromoteIn(_Strict):
    full: bool = Field(default=False, description="Skip every remaining step and analysis.")
    reason: str = Field(default="", max_length=500)


class ReasonIn(_Strict):
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
