"""The SQL read model on SQLite and PostgreSQL: migrations, idempotent projection, paging."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from activities.contracts.store import (
    ConversationRecord,
    EventRecord,
    MessageRecord,
    ProjectionInput,
    ScalingDecisionRecord,
)
from activities.store import StoreActivities
from store import crud
from store.db import make_engine, make_sessionmaker
from store.migrate import current_tables, upgrade
from store.models import Conversation, Event, Message

T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
TENANT = "default"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


def conversation(
    conversation_id: str = "c1",
    *,
    version: int = 1,
    message_count: int = 2,
    created_at: datetime = T0,
    status: str = "active",
    summary: str | None = None,
) -> ConversationRecord:
    return ConversationRecord(
        id=conversation_id,
        tenant=TENANT,
        workflow_id=f"conversation/{TENANT}/{conversation_id}",
        model="sim-zero",
        status=status,
        version=version,
        message_count=message_count,
        created_at=created_at,
        updated_at=created_at + timedelta(seconds=version),
        title="a title",
        params={"temperature": 0.5},
        active_leaf_id=f"{conversation_id}-m{message_count}",
        summary=summary,
    )


def message(conversation_id: str, seq: int, parent_id: str | None) -> MessageRecord:
    return MessageRecord(
        id=f"{conversation_id}-m{seq}",
        parent_id=parent_id,
        role="user" if seq % 2 else "assistant",
        content=f"message {seq}",
        version=1,
        seq=seq,
        created_at=T0 + timedelta(seconds=seq),
        model=None if seq % 2 else "sim-zero",
    )


def event(conversation_id: str, seq: int, type_: str) -> EventRecord:
    return EventRecord(
        stream=f"conversation/{TENANT}/{conversation_id}",
        seq=seq,
        tenant=TENANT,
        type=type_,
        occurred_at=T0 + timedelta(seconds=seq),
        payload={"n": seq},
    )


def first_turn(conversation_id: str = "c1") -> ProjectionInput:
    return ProjectionInput(
        conversation=conversation(conversation_id),
        messages=[message(conversation_id, 1, None), message(conversation_id, 2, f"{conversation_id}-m1")],
        events=[
            event(conversation_id, 1, "conversation.created"),
            event(conversation_id, 2, "message.added"),
            event(conversation_id, 3, "message.added"),
        ],
    )


async def count(sessions: async_sessionmaker[AsyncSession], model: type) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_migrations_create_the_tables(engine: AsyncEngine) -> None:
    tables = await current_tables(engine)
    assert {
        "conversations",
        "messages",
        "events",
        "api_keys",
        "model_canaries",
        "scaling_decisions",
        "idempotency_keys",
        "limit_buckets",
        "alembic_version",
    } <= tables


async def test_upgrade_from_the_first_schema_keeps_every_row(blank_database_url: str) -> None:
    engine = make_engine(blank_database_url)
    try:
        await upgrade(engine, "0001")
        batch = first_turn()
        async with engine.begin() as connection:  # rows as the 0001 schema held them
            columns = await connection.run_sync(
                lambda sync: {
                    table: {c["name"] for c in inspect(sync).get_columns(table)}
                    for table in ("conversations", "messages", "events")
                }
            )

            def row(table: str, values: dict[str, object]) -> dict[str, object]:
                return {k: v for k, v in values.items() if k in columns[table]}

            await connection.execute(insert(Conversation), [row("conversations", asdict(batch.conversation))])
            await connection.execute(
                insert(Message),
                [
                    row("messages", {**asdict(m), "conversation_id": "c1", "tenant": TENANT})
                    for m in batch.messages
                ],
            )
            await connection.execute(insert(Event), [row("events", asdict(e)) for e in batch.events])
        await upgrade(engine)
        sessions = make_sessionmaker(engine)
        assert await count(sessions, Message) == 2 and await count(sessions, Event) == 3
        async with sessions() as session:
            stored = await crud.get_conversation(session, tenant=TENANT, conversation_id="c1")
            messages = await crud.list_messages(session, tenant=TENANT, conversation_id="c1")
        assert stored is not None and stored.title == "a title" and stored.params == {"temperature": 0.5}
        assert [m.role for m in messages] == ["user", "assistant"]
    finally:
        await engine.dispose()


async def test_conversation_ids_are_per_tenant(sessions: async_sessionmaker[AsyncSession]) -> None:
    store = StoreActivities(sessions)
    await store.project_conversation(first_turn())
    theirs = first_turn()
    theirs.conversation.tenant = "other"
    theirs.conversation.title = "their title"
    for message in theirs.messages:
        message.id += "-other"
    theirs.events = []
    await store.project_conversation(theirs)
    async with sessions() as session:
        mine = await crud.get_conversation(session, tenant=TENANT, conversation_id="c1")
        other = await crud.get_conversation(session, tenant="other", conversation_id="c1")
        my_messages = await crud.list_messages(session, tenant=TENANT, conversation_id="c1")
    assert mine is not None and mine.title == "a title"  # not overwritten by the other tenant's c1
    assert other is not None and other.title == "their title"
    assert len(my_messages) == 2


async def test_upgrading_twice_is_harmless(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await StoreActivities(sessions).project_conversation(first_turn())
    before = await current_tables(engine)

    await upgrade(engine)  # the database_url fixture already ran it once
    await upgrade(engine)

    assert await current_tables(engine) == before
    async with engine.connect() as connection:
        revision = (await connection.execute(text("SELECT version_num FROM alembic_version"))).all()
    assert revision == [("0007",)]
    assert await count(sessions, Conversation) == 1
    assert await count(sessions, Message) == 2
    assert await count(sessions, Event) == 3


async def test_a_retried_scaling_decision_is_stored_once_and_listed_newest_first(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = StoreActivities(sessions)
    at = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    records = [
        ScalingDecisionRecord(
            workflow_id="scaling/lab/web",
            seq=seq,
            namespace="lab",
            deployment="web",
            at=at + timedelta(minutes=seq),
            mode="active",
            status="scaled",
            data_status="ok",
            observed_rps=120.5,
            target=seq + 2,
            forecast={"start": 0.0, "step_s": 60.0, "mean": [1.0, 2.0]},
            model={"model": "trees", "samples": 10},
        )
        for seq in (1, 2)
    ]
    for record in (*records, records[1]):  # the second one retried after a lost ack
        await store.record_scaling_decision(record)

    async with sessions() as session:
        stored = await crud.list_scaling_decisions(session, namespace="lab", deployment="web")
        other = await crud.list_scaling_decisions(session, namespace="lab", deployment="api")
    assert [(d.seq, d.target) for d in stored] == [(2, 4), (1, 3)] and other == []
    assert stored[0].forecast["mean"] == [1.0, 2.0] and stored[0].model["samples"] == 10


async def test_a_retried_projection_never_duplicates(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = StoreActivities(sessions)
    batch = first_turn()

    await store.project_conversation(batch)
    await store.project_conversation(batch)  # the activity retried after a lost ack

    assert await count(sessions, Conversation) == 1
    assert await count(sessions, Message) == 2
    assert await count(sessions, Event) == 3
    async with sessions() as session:
        messages = await crud.list_messages(session, tenant=TENANT, conversation_id="c1")
        events = await crud.list_events(session, stream="conversation/default/c1")
        row = await crud.get_conversation(session, tenant=TENANT, conversation_id="c1")
    assert [m.id for m in messages] == ["c1-m1", "c1-m2"]
    assert [m.content for m in messages] == ["message 1", "message 2"]
    assert [(e.seq, e.type) for e in events] == [
        (1, "conversation.created"),
        (2, "message.added"),
        (3, "message.added"),
    ]
    assert row is not None
    assert (row.version, row.message_count, row.params) == (1, 2, {"temperature": 0.5})


async def test_the_conversation_row_never_goes_backwards(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = StoreActivities(sessions)
    newer = ProjectionInput(
        conversation=conversation(version=3, message_count=6, summary="the newest summary")
    )
    older = ProjectionInput(conversation=conversation(version=2, message_count=4))

    await store.project_conversation(newer)
    await store.project_conversation(older)  # a late, older batch arrives afterwards

    async with sessions() as session:
        row = await crud.get_conversation(session, tenant=TENANT, conversation_id="c1")
    assert row is not None
    assert (row.version, row.message_count, row.summary) == (3, 6, "the newest summary")
    assert row.active_leaf_id == "c1-m6"

    # The same version again (a retry) and a newer one both apply.
    await store.project_conversation(
        ProjectionInput(conversation=conversation(version=4, status="archived", message_count=6))
    )
    async with sessions() as session:
        row = await crud.get_conversation(session, tenant=TENANT, conversation_id="c1")
    assert row is not None
    assert (row.version, row.status) == (4, "archived")


async def test_get_conversation_is_scoped_to_the_tenant(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await StoreActivities(sessions).project_conversation(first_turn())
    async with sessions() as session:
        assert await crud.get_conversation(session, tenant=TENANT, conversation_id="c1")
        assert await crud.get_conversation(session, tenant="other", conversation_id="c1") is None
        assert await crud.get_conversation(session, tenant=TENANT, conversation_id="nope") is None


async def test_list_conversations_pages_newest_first(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = StoreActivities(sessions)
    # c0..c4 a minute apart, plus two (t1, t2) created at the very same instant as c2.
    for i in range(5):
        await store.project_conversation(
            ProjectionInput(conversation=conversation(f"c{i}", created_at=T0 + timedelta(minutes=i)))
        )
    for name in ("t1", "t2"):
        await store.project_conversation(
            ProjectionInput(conversation=conversation(name, created_at=T0 + timedelta(minutes=2)))
        )
    other = conversation("x9", created_at=T0 + timedelta(minutes=9))
    other.tenant = "other"
    await store.project_conversation(ProjectionInput(conversation=other))

    expected = ["c4", "c3", "t2", "t1", "c2", "c1", "c0"]
    seen: list[str] = []
    before = None
    async with sessions() as session:
        for _ in range(10):
            page = await crud.list_conversations(session, tenant=TENANT, limit=2, before=before)
            if not page:
                break
            assert len(page) <= 2
            seen.extend(row.id for row in page)
            before = (page[-1].created_at, page[-1].id)
        everything = await crud.list_conversations(session, tenant=TENANT, limit=100)
    assert seen == expected
    assert [row.id for row in everything] == expected


async def test_an_idempotency_key_is_bound_to_one_request_once_even_when_claims_race(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async def claim(fingerprint: str, key: str = "k1", scope: str = "s1") -> tuple[bool, str]:
        async with sessions() as session:
            return await crud.claim_idempotency_key(
                session, tenant=TENANT, key=key, scope=scope, fingerprint=fingerprint, at=T0
            )

    outcomes = await asyncio.gather(*(claim(f"body-{n}") for n in range(20)))
    winners = [bound for claimed, bound in outcomes if claimed]
    assert len(winners) == 1
    assert {bound for _, bound in outcomes} == set(winners)  # every loser is told the winner's request
    assert await claim(winners[0]) == (False, winners[0])  # the same request again: a repeat
    assert await claim("other", scope="s2") == (True, "other")  # another resource: another binding
    assert await claim("other", key="k2") == (True, "other")

    async with sessions() as session:  # a refused request frees its key, only its own binding
        await crud.release_idempotency_key(session, tenant=TENANT, key="k1", scope="s1", fingerprint="nope")
        assert await claim("body-x") == (False, winners[0])
        await crud.release_idempotency_key(
            session, tenant=TENANT, key="k1", scope="s1", fingerprint=winners[0]
        )
    assert await claim("body-x") == (True, "body-x")
