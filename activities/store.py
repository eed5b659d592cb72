"""Projects conversation workflow events into the SQL read model, idempotently."""

import asyncio
import contextlib
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from store import crud


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
