"""What GET /v1/fleet answers: each model version's deployments as this API process's gateway sees them."""

from pydantic import BaseModel, Field


class DeploymentStatus(BaseModel):
    deployment: str = Field(description="The deployment's name (the policy file's, the pod's, or host:port)")
    base_url: str
    state: str = Field(description="healthy, cooling_down or draining")
    cooling_down_for_s: float | None = Field(None, description="Seconds until it comes back by itself")
    cooling_down_because: str | None = None
    in_flight: int = Field(description="This process's calls to it now")
    waiting: float = Field(description="Requests waiting at the replica, as last read from its /metrics")
    running: float = Field(description="Requests running at the replica, as last read from its /metrics")
    kv_cache_usage: float = Field(description="KV-cache use, 0-1, as last read")
    prefix_cache_hit_rate: float | None = Field(
        None, description="Prompt tokens served from its prefix cache"
    )
    metrics_read_s_ago: float | None = Field(None, description="None: its /metrics are not read")
    recent_calls: int
    recent_errors: int
    recent_latency_p50_s: float | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class ModelFleet(BaseModel):
    model: str
    version: str
    strategy: str
    discovered: bool = Field(description="Its deployments come from Kubernetes (EndpointSlices)")
    fallbacks: list[str] = Field(default_factory=list, description="General fallbacks, in order")
    deployments: list[DeploymentStatus]


class FleetView(BaseModel):
    simulated: bool = Field(description="True when a model is served by lcp's LLM simulator, not real GPUs")
    models: list[ModelFleet]
