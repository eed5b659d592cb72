"""Writes workflows' events into the SQL read model, idempotently: conversations, scaling decisions,
assistants."""

import asyncio
import contextlib
from dataclasses import asdict, fields

from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.contracts import store as contract
from activities.contracts.store import (
    AssistantProjection,
    ProjectionInput,
    ScalingDecisionRecord,
)
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


class StoreActivities(contract.StoreActivities):
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
        # The assistants row: the projection's own fields, its assistant_id as the row's id.
        assistant = {
            field.name: getattr(projection, field.name)
            for field in fields(projection)
            if field.name not in ("versions", "experiments")
        }
        assistant["id"] = assistant.pop("assistant_id")
        async with self._write_lock, self._sessions() as session:
            await crud.project_assistant(
                session,
                assistant=assistant,
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
