"""What workflows and the API share with the read-model projection activities (activities/store.py):
the records they carry and the activities' names, without the database engine."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from temporalio import activity


@dataclass
class ConversationRecord:
    id: str
    tenant: str
    workflow_id: str
    model: str
    status: str
    version: int
    message_count: int
    created_at: datetime
    updated_at: datetime
    title: str | None = None
    system_prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    active_leaf_id: str | None = None
    summary: str | None = None
    assistant_id: str | None = None
    assistant_version: str | None = None
    experiment_id: str | None = None
    arm: str | None = None
    principal: str | None = None


@dataclass
class MessageRecord:
    """One message, as the conversation workflow keeps it and the read model stores it."""

    id: str
    parent_id: str | None
    role: str
    content: str
    version: int
    seq: int
    created_at: datetime
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    assistant_version: str | None = None  # a reply's: the assistant version (and arm) that wrote it
    arm: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # a reply's tool calls, in the order they ran


@dataclass
class EventRecord:
    stream: str
    seq: int
    tenant: str
    type: str
    occurred_at: datetime
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProjectionInput:
    conversation: ConversationRecord
    messages: list[MessageRecord] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)


@dataclass
class ScalingDecisionRecord:
    """One predictive-scaling decision, as the workflow made it (the scaling_decisions row)."""

    workflow_id: str
    seq: int
    namespace: str
    deployment: str
    at: datetime
    mode: str
    status: str
    data_status: str
    forecast_status: str = ""
    detail: str = ""
    observed_rps: float | None = None
    forecast_peak_rps: float | None = None
    confidence: float | None = None
    current_replicas: int | None = None
    ready_replicas: int | None = None
    reactive_need: int | None = None
    forecast_need: int | None = None
    target: int | None = None
    basis: str = ""
    limited_by: str | None = None
    reason: str = ""
    forecast: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)


@dataclass
class AssistantVersionRecord:
    version: str
    number: int
    spec: dict[str, Any]
    changed: list[str]
    note: str
    created_by: str
    created_at: datetime
    published_at: datetime | None = None


@dataclass
class AssistantExperimentRecord:
    id: str
    arms: list[dict[str, Any]]  # [{name, version, share}] in assignment order
    state: str
    started_by: str
    started_at: datetime
    winner: str | None = None
    ended_at: datetime | None = None


@dataclass
class AssistantProjection:
    """An assistant as it stands after a change: the row conversations resolve versions from, every
    version and every experiment (storing the same projection twice changes nothing)."""

    workflow_id: str
    tenant: str
    assistant_id: str
    name: str
    state: str
    live_version: str | None
    latest_version: str
    experiment: dict[str, Any] | None  # the running one: {id, arms}
    created_by: str
    created_at: datetime
    updated_at: datetime
    versions: list[AssistantVersionRecord] = field(default_factory=list)
    experiments: list[AssistantExperimentRecord] = field(default_factory=list)


class StoreActivities:
    """The activities' contract: what workflows call. The implementation, activities/store.py's
    StoreActivities, subclasses this and overrides every method under the same activity name."""

    @activity.defn(name="store.project_conversation")
    async def project_conversation(self, batch: ProjectionInput) -> None:
        raise NotImplementedError

    @activity.defn(name="store.project_assistant")
    async def project_assistant(self, projection: AssistantProjection) -> None:
        raise NotImplementedError

    @activity.defn(name="store.record_scaling_decision")
    async def record_scaling_decision(self, record: ScalingDecisionRecord) -> None:
        """Store the decision (once per workflow id and seq) and export it on /metrics."""
        raise NotImplementedError
