"""Reads and idempotent writes of the read model; every function takes keyword arguments."""

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from store.models import (
    ApiKey,
    Assistant,
    AssistantExperiment,
    AssistantVersion,
    Conversation,
    Event,
    IdempotencyKey,
    Message,
    MessageFeedback,
    ModelCanary,
    ScalingDecision,
)


def _table(model: type) -> Table:
    return model.__table__  # type: ignore[attr-defined,no-any-return]


@functools.cache
def _statements(dialect: str) -> tuple[Any, Any, Any]:
    """Parameterized upserts, built once per dialect so SQLAlchemy caches their compiled form."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = _table(Conversation)
    upsert = insert(table)
    conversation = upsert.on_conflict_do_update(
        index_elements=["tenant", "id"],
        set_={
            c.name: upsert.excluded[c.name]
            for c in table.columns
            if c.name not in ("tenant", "id", "created_at")
        },
        where=table.c.version <= upsert.excluded.version,
    )
    messages = insert(_table(Message)).on_conflict_do_nothing(index_elements=["id"])
    events = insert(_table(Event)).on_conflict_do_nothing(index_elements=["stream", "seq"])
    return conversation, messages, events


async def project(
    session: AsyncSession,
    *,
    conversation: dict[str, Any],
    messages: Sequence[dict[str, Any]],
    events: Sequence[dict[str, Any]],
) -> None:
    """Apply one projection batch in a transaction; replaying the same batch changes nothing.

    Messages are keyed by id and events by (stream, seq), so a retried activity inserts nothing
    twice; the conversation row only moves forward (an older version never overwrites a newer).
    """
    upsert_conversation, insert_messages, insert_events = _statements(session.get_bind().dialect.name)
    await session.execute(upsert_conversation, conversation)
    if messages:
        await session.execute(insert_messages, list(messages))
    if events:
        await session.execute(insert_events, list(events))
    await session.commit()


async def get_conversation(
    session: AsyncSession, *, tenant: str, conversation_id: str
) -> Conversation | None:
    return await session.get(Conversation, {"tenant": tenant, "id": conversation_id}, populate_existing=True)


async def list_conversations(
    session: AsyncSession,
    *,
    tenant: str,
    limit: int,
    before: tuple[datetime, str] | None = None,
) -> list[Conversation]:
    """Newest first; `before` is the (created_at, id) of the last row of the previous page."""
    query = select(Conversation).where(col(Conversation.tenant) == tenant)
    if before is not None:
        created, ident = before
        query = query.where(
            or_(
                col(Conversation.created_at) < created,
                and_(col(Conversation.created_at) == created, col(Conversation.id) < ident),
            )
        )
    query = query.order_by(col(Conversation.created_at).desc(), col(Conversation.id).desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def list_messages(session: AsyncSession, *, tenant: str, conversation_id: str) -> list[Message]:
    query = (
        select(Message)
        .where(col(Message.tenant) == tenant, col(Message.conversation_id) == conversation_id)
        .order_by(col(Message.seq))
    )
    return list((await session.execute(query)).scalars())


async def list_events(session: AsyncSession, *, stream: str) -> list[Event]:
    query = select(Event).where(col(Event.stream) == stream).order_by(col(Event.seq))
    return list((await session.execute(query)).scalars())


async def add_api_key(session: AsyncSession, *, key: ApiKey) -> ApiKey:
    session.add(key)
    await session.commit()
    await session.refresh(key)
    return key


async def get_api_key(session: AsyncSession, *, key_id: str) -> ApiKey | None:
    return await session.get(ApiKey, key_id, populate_existing=True)


async def list_api_keys(session: AsyncSession, *, tenant: str | None = None) -> list[ApiKey]:
    query = select(ApiKey).order_by(col(ApiKey.created_at))
    if tenant is not None:
        query = query.where(col(ApiKey.tenant) == tenant)
    return list((await session.execute(query)).scalars())


async def revoke_api_key(session: AsyncSession, *, key_id: str, at: datetime) -> ApiKey | None:
    """Mark the key revoked (once: a second revoke keeps the first time); None if there is no such key."""
    key = await get_api_key(session, key_id=key_id)
    if key is not None and key.revoked_at is None:
        key.revoked_at = at
        await session.commit()
        await session.refresh(key)
    return key


async def list_model_canaries(session: AsyncSession) -> list[ModelCanary]:
    query = select(ModelCanary).order_by(col(ModelCanary.model))
    return list((await session.execute(query)).scalars())


async def get_model_canary(session: AsyncSession, *, model: str) -> ModelCanary | None:
    return await session.get(ModelCanary, model, populate_existing=True)


@functools.cache
def _canary_upsert(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    upsert = insert(_table(ModelCanary))
    return upsert.on_conflict_do_update(
        index_elements=["model"],
        set_={
            name: upsert.excluded[name]
            for name in ("canary_version", "weight", "promoted", "rollout_id", "updated_at")
        },
    )


async def upsert_model_canary(
    session: AsyncSession,
    *,
    model: str,
    canary_version: str,
    weight: int,
    promoted: bool,
    rollout_id: str,
    at: datetime,
) -> ModelCanary:
    """Set the model's canary row (insert or overwrite, in one statement): writing the same values
    again changes nothing but updated_at."""
    row: dict[str, Any] = {
        "model": model,
        "canary_version": canary_version,
        "weight": weight,
        "promoted": promoted,
        "rollout_id": rollout_id,
        "updated_at": at,
    }
    await session.execute(_canary_upsert(session.get_bind().dialect.name), row)
    await session.commit()
    return ModelCanary(**row)


@functools.cache
def _scaling_insert(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(_table(ScalingDecision)).on_conflict_do_nothing(index_elements=["workflow_id", "seq"])


async def add_scaling_decision(session: AsyncSession, *, decision: dict[str, Any]) -> None:
    """Store one scaling decision; storing the same (workflow_id, seq) again changes nothing."""
    await session.execute(_scaling_insert(session.get_bind().dialect.name), decision)
    await session.commit()


async def list_scaling_decisions(
    session: AsyncSession, *, namespace: str, deployment: str, limit: int = 50
) -> list[ScalingDecision]:
    """The target's decisions, newest first (across its workflow runs)."""
    query = (
        select(ScalingDecision)
        .where(col(ScalingDecision.namespace) == namespace, col(ScalingDecision.deployment) == deployment)
        .order_by(col(ScalingDecision.at).desc(), col(ScalingDecision.seq).desc())
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


@functools.cache
def _assistant_statements(dialect: str) -> tuple[Any, Any, Any]:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert

    def upsert(model: type, keys: list[str], where_newer: bool = False) -> Any:
        table = _table(model)
        statement = insert(table)
        changed = {c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys}
        where = table.c.updated_at <= statement.excluded.updated_at if where_newer else None
        return statement.on_conflict_do_update(index_elements=keys, set_=changed, where=where)

    return (
        upsert(Assistant, ["tenant", "id"], where_newer=True),
        upsert(AssistantVersion, ["tenant", "assistant_id", "version"]),
        upsert(AssistantExperiment, ["tenant", "assistant_id", "id"]),
    )


async def project_assistant(
    session: AsyncSession,
    *,
    assistant: dict[str, Any],
    versions: Sequence[dict[str, Any]],
    experiments: Sequence[dict[str, Any]],
) -> None:
    """Store an assistant as its workflow sees it, in one transaction; an older projection arriving
    late never overwrites a newer one's row."""
    upsert_assistant, upsert_versions, upsert_experiments = _assistant_statements(
        session.get_bind().dialect.name
    )
    await session.execute(upsert_assistant, assistant)
    if versions:
        await session.execute(upsert_versions, list(versions))
    if experiments:
        await session.execute(upsert_experiments, list(experiments))
    await session.commit()


async def get_assistant(session: AsyncSession, *, tenant: str, assistant_id: str) -> Assistant | None:
    return await session.get(Assistant, (tenant, assistant_id))


async def list_assistants(session: AsyncSession, *, tenant: str) -> list[Assistant]:
    query = (
        select(Assistant).where(col(Assistant.tenant) == tenant).order_by(col(Assistant.created_at).desc())
    )
    return list((await session.execute(query)).scalars())


async def get_assistant_version(
    session: AsyncSession, *, tenant: str, assistant_id: str, version: str
) -> AssistantVersion | None:
    return await session.get(AssistantVersion, (tenant, assistant_id, version))


async def list_assistant_versions(
    session: AsyncSession, *, tenant: str, assistant_id: str
) -> list[AssistantVersion]:
    query = (
        select(AssistantVersion)
        .where(col(AssistantVersion.tenant) == tenant, col(AssistantVersion.assistant_id) == assistant_id)
        .order_by(col(AssistantVersion.number))
    )
    return list((await session.execute(query)).scalars())


async def list_assistant_experiments(
    session: AsyncSession, *, tenant: str, assistant_id: str
) -> list[AssistantExperiment]:
    query = (
        select(AssistantExperiment)
        .where(
            col(AssistantExperiment.tenant) == tenant, col(AssistantExperiment.assistant_id) == assistant_id
        )
        .order_by(col(AssistantExperiment.started_at))
    )
    return list((await session.execute(query)).scalars())


async def assistant_replies(
    session: AsyncSession, *, tenant: str, assistant_id: str
) -> list[tuple[Message, Conversation]]:
    """Every reply an assistant's versions wrote, with its conversation."""
    query = (
        select(Message, Conversation)
        .join(
            Conversation,
            and_(
                col(Conversation.tenant) == col(Message.tenant),
                col(Conversation.id) == col(Message.conversation_id),
            ),
        )
        .where(
            col(Conversation.tenant) == tenant,
            col(Conversation.assistant_id) == assistant_id,
            col(Message.role) == "assistant",
        )
    )
    return [(message, conversation) for message, conversation in (await session.execute(query)).all()]


async def assistant_conversations(
    session: AsyncSession, *, tenant: str, assistant_id: str
) -> list[Conversation]:
    query = select(Conversation).where(
        col(Conversation.tenant) == tenant, col(Conversation.assistant_id) == assistant_id
    )
    return list((await session.execute(query)).scalars())


async def failed_turns(session: AsyncSession, *, streams: Sequence[str]) -> list[Event]:
    """The turn.failed events of these conversation workflows."""
    if not streams:
        return []
    query = select(Event).where(col(Event.stream).in_(list(streams)), col(Event.type) == "turn.failed")
    return list((await session.execute(query)).scalars())


async def set_feedback(session: AsyncSession, *, feedback: dict[str, Any]) -> None:
    """A person's rating of a reply; a second one from the same person replaces the first."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(_table(MessageFeedback))
    keys = ["tenant", "message_id", "principal"]
    changed = {name: statement.excluded[name] for name in ("rating", "comment", "updated_at")}
    await session.execute(statement.on_conflict_do_update(index_elements=keys, set_=changed), feedback)
    await session.commit()


async def feedback_for(
    session: AsyncSession, *, tenant: str, message_ids: Sequence[str]
) -> list[MessageFeedback]:
    if not message_ids:
        return []
    query = select(MessageFeedback).where(
        col(MessageFeedback.tenant) == tenant, col(MessageFeedback.message_id).in_(list(message_ids))
    )
    return list((await session.execute(query)).scalars())


async def claim_idempotency_key(
    session: AsyncSession, *, tenant: str, key: str, scope: str, fingerprint: str, at: datetime
) -> tuple[bool, str]:
    """Bind `key` to the request `fingerprint` unless it is bound already: (claimed now, the bound
    fingerprint). The primary key decides between concurrent claims, so exactly one of them wins."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    row = {"tenant": tenant, "key": key, "scope": scope, "fingerprint": fingerprint, "created_at": at}
    query = select(col(IdempotencyKey.fingerprint)).where(
        col(IdempotencyKey.tenant) == tenant,
        col(IdempotencyKey.key) == key,
        col(IdempotencyKey.scope) == scope,
    )
    while True:  # again only when the binding found was released before it could be read
        result = await session.execute(insert(_table(IdempotencyKey)).values(row).on_conflict_do_nothing())
        await session.commit()
        if result.rowcount == 1:  # type: ignore[attr-defined]
            return True, fingerprint
        bound = (await session.execute(query)).scalar_one_or_none()
        await session.commit()
        if bound is not None:
            return False, str(bound)


async def release_idempotency_key(
    session: AsyncSession, *, tenant: str, key: str, scope: str, fingerprint: str
) -> None:
    """Free a key whose request was refused, so that a corrected request may use it."""
    table = _table(IdempotencyKey)
    await session.execute(
        table.delete().where(
            and_(
                table.c.tenant == tenant,
                table.c.key == key,
                table.c.scope == scope,
                table.c.fingerprint == fingerprint,
            )
        )
    )
    await session.commit()
