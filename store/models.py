"""Read-model tables: conversations, their messages, the domain events projected from workflows, API
keys, the traffic weights of model canaries, predictive scaling's decisions, and assistants with their
versions, experiments and message feedback; the requests clients' idempotency keys were used for; the
buckets of request and token limits every API process shares."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Column, DateTime, Float, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def _utc(**kwargs: Any) -> Any:
    return Field(sa_column=Column(DateTime(timezone=True), **kwargs))


class Conversation(SQLModel, table=True):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_assistant", "tenant", "assistant_id"),)

    # Conversation ids are the client's to choose, so they are unique only within a tenant.
    tenant: str = Field(primary_key=True, max_length=128)
    id: str = Field(primary_key=True, max_length=128)
    workflow_id: str = Field(max_length=300)
    title: str | None = Field(default=None, max_length=300)
    model: str = Field(max_length=200)
    system_prompt: str | None = Field(default=None, sa_column=Column(Text))
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="active", max_length=32)
    version: int = 0
    active_leaf_id: str | None = Field(default=None, max_length=64)
    summary: str | None = Field(default=None, sa_column=Column(Text))
    message_count: int = 0
    created_at: datetime = _utc(nullable=False, index=True)
    updated_at: datetime = _utc(nullable=False)
    # Set when an assistant serves it: which version (and experiment arm), and for whom.
    assistant_id: str | None = Field(default=None, max_length=128)
    assistant_version: str | None = Field(default=None, max_length=32)
    experiment_id: str | None = Field(default=None, max_length=128)
    arm: str | None = Field(default=None, max_length=64)
    principal: str | None = Field(default=None, max_length=200)


class Message(SQLModel, table=True):
    __tablename__ = "messages"

    __table_args__ = (Index("ix_messages_tenant_conversation", "tenant", "conversation_id"),)

    id: str = Field(primary_key=True, max_length=64)
    conversation_id: str = Field(max_length=128)
    tenant: str = Field(max_length=128)
    parent_id: str | None = Field(default=None, max_length=64)
    role: str = Field(max_length=32)
    content: str = Field(sa_column=Column(Text, nullable=False))
    version: int = 1
    seq: int
    model: str | None = Field(default=None, max_length=200)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    created_at: datetime = _utc(nullable=False)
    assistant_version: str | None = Field(default=None, max_length=32)  # a reply's: which version wrote it
    arm: str | None = Field(default=None, max_length=64)
    # A reply's tool calls: [{id, name, arguments, ok, result, duration_ms}], in the order they ran.
    tool_calls: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class Event(SQLModel, table=True):
    """One domain event, keyed by its stream (the workflow ID) and sequence number."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("stream", "seq", name="uq_events_stream_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    stream: str = Field(index=True, max_length=300)
    seq: int
    tenant: str = Field(max_length=128)
    type: str = Field(max_length=100)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    occurred_at: datetime = _utc(nullable=False)


class ApiKey(SQLModel, table=True):
    """An API key: only its SHA-256 is stored; the key itself is shown once, when it is created."""

    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=32)
    tenant: str = Field(index=True, max_length=128)
    name: str = Field(max_length=200)
    roles: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    key_hash: str = Field(max_length=64, unique=True)
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    created_at: datetime = _utc(nullable=False)
    revoked_at: datetime | None = _utc(nullable=True)


class ModelCanary(SQLModel, table=True):
    """The share of a model's traffic its canary version gets (models policy: the entry's `canary:`),
    set by canary rollouts and read by every gateway. One row per model; `promoted`: the canary gets
    everything until an operator makes it the stable version in the policy file."""

    __tablename__ = "model_canaries"
    __table_args__ = (CheckConstraint("weight >= 0 AND weight <= 100", name="ck_model_canaries_weight"),)

    model: str = Field(primary_key=True, max_length=200)
    canary_version: str = Field(max_length=64)
    weight: int = 0  # percent of the requests, 0..100
    promoted: bool = False
    rollout_id: str = Field(default="", max_length=300)
    updated_at: datetime = _utc(nullable=False)


class ScalingDecision(SQLModel, table=True):
    """One decision of a predictive-scaling workflow: what it read, forecast and did (or would have, in
    forecast-only mode). Keyed by the workflow id and the decision's sequence number, so a retried
    activity stores it once."""

    __tablename__ = "scaling_decisions"
    __table_args__ = (Index("ix_scaling_decisions_target", "namespace", "deployment", "at"),)

    workflow_id: str = Field(primary_key=True, max_length=300)
    seq: int = Field(primary_key=True)
    namespace: str = Field(max_length=253)
    deployment: str = Field(max_length=253)
    at: datetime = _utc(nullable=False)
    mode: str = Field(max_length=32)
    status: str = Field(max_length=32)  # scaled | unchanged | recorded | no-data | target-missing
    data_status: str = Field(max_length=32)  # ok | prometheus-down | no-data | nan | stale | bad-query
    forecast_status: str = Field(default="", max_length=32)  # the forecaster's: ok | short-history | ...
    detail: str = Field(default="", sa_column=Column(Text, nullable=False))
    observed_rps: float | None = None
    forecast_peak_rps: float | None = None
    confidence: float | None = None
    current_replicas: int | None = None
    ready_replicas: int | None = None
    reactive_need: int | None = None
    forecast_need: int | None = None
    target: int | None = None
    basis: str = Field(default="", max_length=32)
    limited_by: str | None = Field(default=None, max_length=32)
    reason: str = Field(default="", sa_column=Column(Text, nullable=False))
    forecast: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    model: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Assistant(SQLModel, table=True):
    """An assistant as its workflow last projected it: state, the live version, a running experiment."""

    __tablename__ = "assistants"

    tenant: str = Field(primary_key=True, max_length=128)
    id: str = Field(primary_key=True, max_length=128)
    workflow_id: str = Field(max_length=300)
    name: str = Field(max_length=200)
    state: str = Field(max_length=32)  # draft | published | experimenting | archived
    live_version: str | None = Field(default=None, max_length=32)
    latest_version: str = Field(max_length=32)
    experiment: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_by: str = Field(max_length=200)
    created_at: datetime = _utc(nullable=False)
    updated_at: datetime = _utc(nullable=False)


class AssistantVersion(SQLModel, table=True):
    """One immutable version of an assistant: its spec, what changed, who made it and when."""

    __tablename__ = "assistant_versions"

    tenant: str = Field(primary_key=True, max_length=128)
    assistant_id: str = Field(primary_key=True, max_length=128)
    version: str = Field(primary_key=True, max_length=32)
    number: int
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    changed: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    note: str = Field(default="", sa_column=Column(Text, nullable=False))
    created_by: str = Field(max_length=200)
    created_at: datetime = _utc(nullable=False)
    published_at: datetime | None = _utc(nullable=True)


class AssistantExperiment(SQLModel, table=True):
    """An A/B experiment between an assistant's versions, running or ended (promoted or aborted)."""

    __tablename__ = "assistant_experiments"

    tenant: str = Field(primary_key=True, max_length=128)
    assistant_id: str = Field(primary_key=True, max_length=128)
    id: str = Field(primary_key=True, max_length=128)
    arms: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    state: str = Field(max_length=32)  # running | promoted | aborted
    winner: str | None = Field(default=None, max_length=32)
    started_by: str = Field(max_length=200)
    started_at: datetime = _utc(nullable=False)
    ended_at: datetime | None = _utc(nullable=True)


class MessageFeedback(SQLModel, table=True):
    """A thumbs up (+1) or down (-1) on a reply, one per person per message (a second one replaces it)."""

    __tablename__ = "message_feedback"
    __table_args__ = (CheckConstraint("rating IN (-1, 1)", name="ck_message_feedback_rating"),)

    tenant: str = Field(primary_key=True, max_length=128)
    message_id: str = Field(primary_key=True, max_length=64)
    principal: str = Field(primary_key=True, max_length=200)
    conversation_id: str = Field(max_length=128)
    rating: int
    comment: str = Field(default="", sa_column=Column(Text, nullable=False))
    updated_at: datetime = _utc(nullable=False)


class IdempotencyKey(SQLModel, table=True):
    """The request a client's Idempotency-Key was first used for: per tenant and scope (a hash of the
    method and the resource it changes), the fingerprint of the whole request (method, path, body)."""

    __tablename__ = "idempotency_keys"

    tenant: str = Field(primary_key=True, max_length=128)
    key: str = Field(primary_key=True, max_length=200)
    scope: str = Field(primary_key=True, max_length=64)
    fingerprint: str = Field(max_length=64)
    created_at: datetime = _utc(nullable=False)


class LimitBucket(SQLModel, table=True):
    """A limit's bucket (policies/limits.py), shared by every API process: `scope` is key or tenant,
    `name` the key's subject or the tenant, `unit` requests or tokens; `tat` is when the bucket is full
    again (GCRA's theoretical arrival time), in seconds since the epoch on the database's clock."""

    __tablename__ = "limit_buckets"

    scope: str = Field(primary_key=True, max_length=16)
    name: str = Field(sa_column=Column(Text, primary_key=True))
    unit: str = Field(primary_key=True, max_length=16)
    tat: float = Field(sa_column=Column(Float(precision=53), nullable=False))
