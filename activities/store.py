"""Writes workflows' events into the SQL read model, idempotently: conversations, scaling decisions,
assistants."""

import asyncio
import contextlib
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from store import crud

# lcp's own /metrics (the worker that stores decisions exports them): what predictive scaling decided.
SCALING_DECISIONS = Counter(
    "lcp_scaling_decisions",
    "Predictive-scaling decisions by outcome: scaled, unchanged, recorded (forecast-only), or no action "
    "for want of data (no-data) or of the target (target-missing, cluster-error).",
    ["namespace", "deployment", "status", "data_status"],
)
SCALING_TARGET = Gauge(
    "lcp_scaling_target_replicas",
    "Replicas the latest predictive-scaling decision asked for (or would have, in forecast-only mode).",
    ["namespace", "deployment", "mode"],
)
SCALING_DATA_OK = Gauge(
    "lcp_scaling_data_ok",
    "1 when the latest predictive-scaling decision had a usable demand reading, 0 when it had none.",
    ["namespace", "deployment"],
)


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
    def __init__(self, sessions: async_sessionmaker[AsyncSession], single_writer: bool = False) -> None:
        self._sessions = sessions
        # SQLite takes one writer at a time; queueing writers here avoids its busy-wait backoff,
        # which otherwise puts second-long tails on concurrent turns.
        self._write_lock = asyncio.Lock() if single_writer else contextlib.nullcontext()

    @activity.defn(name="store.project_conversation")
    async def project_conversation(self, batch: ProjectionInput) -> None:
        async with self._write_lock, self._sessions() as session:
            await crud.project(
                session,
                conversation=asdict(batch.conversation),
                messages=[
                    {
                        **asdict(message),
                        "conversation_id": batch.conversation.id,
                        "tenant": batch.conversation.tenant,
                    }
                    for message in batch.messages
                ],
                events=[asdict(event) for event in batch.events],
            )

    @activity.defn(name="store.project_assistant")
    async def project_assistant(self, projection: AssistantProjection) -> None:
        key = {"tenant": projection.tenant, "assistant_id": projection.assistant_id}
        async with self._write_lock, self._sessions() as session:
            await crud.project_assistant(
                session,
                assistant={
                    "tenant": projection.tenant,
                    "id": projection.assistant_id,
                    "workflow_id": projection.workflow_id,
                    "name": projection.name,
                    "state": projection.state,
                    "live_version": projection.live_version,
                    "latest_version": projection.latest_version,
                    "experiment": projection.experiment,
                    "created_by": projection.created_by,
                    "created_at": projection.created_at,
                    "updated_at": projection.updated_at,
                },
                versions=[{**asdict(version), **key} for version in projection.versions],
                experiments=[{**asdict(experiment), **key} for experiment in projection.experiments],
            )

    @activity.defn(name="store.record_scaling_decision")
    async def record_scaling_decision(self, record: ScalingDecisionRecord) -> None:
        """Store the decision (once per workflow id and seq) and export it on /metrics."""
        async with self._write_lock, self._sessions() as session:
            await crud.add_scaling_decision(session, decision=asdict(record))
        target = (record.namespace, record.deployment)
        SCALING_DECISIONS.labels(*target, record.status, record.data_status).inc()
        SCALING_DATA_OK.labels(*target).set(1 if record.data_status == "ok" else 0)
        if record.target is not None:
            SCALING_TARGET.labels(*target, record.mode).set(record.target)
