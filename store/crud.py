"""Reads and idempotent writes of the read model; every function takes keyword arguments."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from store.models import Conversation, Event, Message


def _insert(session: AsyncSession, table: Any) -> Any:
    dialect = session.bind.dialect.name if session.bind else "sqlite"
    return (postgresql if dialect == "postgresql" else sqlite).insert(table)


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
    table = Conversation.__table__
    insert = _insert(session, table).values(**conversation)
    changes = {key: insert.excluded[key] for key in conversation if key not in ("id", "created_at")}
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=["id"], set_=changes, where=table.c.version <= insert.excluded.version
        )
    )
    if messages:
        await session.execute(
            _insert(session, Message.__table__)
            .values(list(messages))
            .on_conflict_do_nothing(index_elements=["id"])
        )
    if events:
        await session.execute(
            _insert(session, Event.__table__)
            .values(list(events))
            .on_conflict_do_nothing(index_elements=["stream", "seq"])
        )
    await session.commit()


async def get_conversation(
    session: AsyncSession, *, tenant: str, conversation_id: str
) -> Conversation | None:
    row = await session.get(Conversation, conversation_id, populate_existing=True)
    return row if row is not None and row.tenant == tenant else None


async def list_conversations(
    session: AsyncSession,
    *,
    tenant: str,
    limit: int,
    before: tuple[datetime, str] | None = None,
) -> list[Conversation]:
    """Newest first; `before` is the (created_at, id) of the last row of the previous page."""
    query = select(Conversation).where(Conversation.tenant == tenant)
    if before is not None:
        created, ident = before
        query = query.where(
            or_(
                Conversation.created_at < created,
                and_(Conversation.created_at == created, Conversation.id < ident),
            )
        )
    query = query.order_by(Conversation.created_at.desc(), Conversation.id.desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def list_messages(session: AsyncSession, *, conversation_id: str) -> list[Message]:
    query = select(Message).where(Message.conversation_id == conversation_id).order_by(Message.seq)
    return list((await session.execute(query)).scalars())


async def list_events(session: AsyncSession, *, stream: str) -> list[Event]:
    query = select(Event).where(Event.stream == stream).order_by(Event.seq)
    return list((await session.execute(query)).scalars())
