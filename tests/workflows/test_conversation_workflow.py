"""ConversationWorkflow driven straight through the Temporal client, with a real worker."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError

from activities.inference import ChatMessage
from settings import Settings
from store import crud
from store.db import make_engine, make_sessionmaker
from temporal.constants import PHASE
from tests.workflows.saved_histories import save_history
from workers.conversations import conversation_worker
from workflows.conversation import (
    Archive,
    ChatTurn,
    ConversationInput,
    ConversationLimits,
    ConversationStatus,
    ConversationWorkflow,
    EditMessage,
    Regenerate,
    SendMessage,
    TurnResult,
    workflow_id,
)

TENANT = "default"
# Only the read-model test below runs on both databases; the rest run once, on SQLite.
sqlite_only = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)


@pytest.fixture
async def worker(settings: Settings, client: Client) -> AsyncIterator[Settings]:
    settings.conversation.task_queue = f"wf-test-{uuid.uuid4().hex[:8]}"
    async with conversation_worker(client, settings) as running, running:
        yield settings


@pytest.fixture
async def sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(settings.resolved_database_url())
    yield make_sessionmaker(engine)
    await engine.dispose()


async def start(
    client: Client,
    settings: Settings,
    content: str,
    limits: ConversationLimits | None = None,
) -> tuple[str, str, TurnResult]:
    """Start a conversation with its first message, as the API does; (id, first run id, turn)."""
    conversation_id = uuid.uuid4().hex
    operation = WithStartWorkflowOperation(
        ConversationWorkflow.run,
        ConversationInput(
            tenant=TENANT,
            conversation_id=conversation_id,
            model="sim-zero",
            limits=limits or ConversationLimits(),
        ),
        id=workflow_id(TENANT, conversation_id),
        task_queue=settings.conversation.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    turn = await client.execute_update_with_start_workflow(
        ConversationWorkflow.send_message,
        SendMessage(content=content),
        start_workflow_operation=operation,
    )
    handle = await operation.workflow_handle()
    assert handle.result_run_id is not None
    return conversation_id, handle.result_run_id, turn


def latest(client: Client, conversation_id: str) -> WorkflowHandle[Any, Any]:
    """A handle on whatever run is current (updates and queries follow continue-as-new)."""
    return client.get_workflow_handle(workflow_id(TENANT, conversation_id))


async def rejected(update: Any) -> ApplicationError:
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await update
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError)
    return cause


async def count_events(handle: WorkflowHandle[Any, Any], kind: "EventType.ValueType") -> int:
    history = await handle.fetch_history()
    return sum(1 for event in history.events if event.event_type == kind)


@sqlite_only
async def test_status_query_reports_version_and_message_count(client: Client, worker: Settings) -> None:
    conversation_id, _, first = await start(client, worker, "hello")
    handle = latest(client, conversation_id)

    status = await handle.query(ConversationWorkflow.state)
    assert isinstance(status, ConversationStatus)
    assert (status.conversation_id, status.tenant, status.status) == (conversation_id, TENANT, "active")
    # `status`, the query's former name, still answers (clients and running workflows of older code).
    assert await handle.query("status", result_type=ConversationStatus) == status
    assert (status.version, status.message_count, status.turns_this_run) == (1, 2, 1)
    assert status.active_leaf_id == first.reply.id
    assert status.summary is None

    second = await handle.execute_update(
        ConversationWorkflow.send_message, SendMessage("again", expected_version=1)
    )
    status = await handle.query(ConversationWorkflow.status)
    assert (status.version, status.message_count) == (2, 4)
    assert second.version == 2
    assert status.active_leaf_id == second.reply.id


@sqlite_only
async def test_rejected_updates_never_reach_history(client: Client, worker: Settings) -> None:
    conversation_id, _, first = await start(client, worker, "hello")
    handle = latest(client, conversation_id)

    empty = await rejected(handle.execute_update(ConversationWorkflow.send_message, SendMessage("  ")))
    assert empty.type == "InvalidMessage"
    stale = await rejected(
        handle.execute_update(ConversationWorkflow.send_message, SendMessage("hi", expected_version=0))
    )
    assert stale.type == "VersionConflict"
    assert stale.details and stale.details[0] == {"current_version": 1}
    as_assistant = await rejected(
        handle.execute_update(ConversationWorkflow.send_message, SendMessage("hi", role="assistant"))
    )
    assert as_assistant.type == "InvalidMessage"
    not_a_reply = await rejected(
        handle.execute_update(ConversationWorkflow.regenerate, Regenerate(first.message.id))
    )
    assert not_a_reply.type == "InvalidMessage"
    unknown = await rejected(
        handle.execute_update(ConversationWorkflow.edit_message, EditMessage("nope", "x"))
    )
    assert unknown.type == "MessageNotFound"

    await handle.execute_update(ConversationWorkflow.send_message, SendMessage("a real one"))

    accepted = await count_events(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)
    completed = await count_events(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED)
    rejected_events = await count_events(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_REJECTED)
    assert (accepted, completed, rejected_events) == (2, 2, 0)
    status = await handle.query(ConversationWorkflow.status)
    assert (status.version, status.message_count) == (2, 4)


async def test_continue_as_new_keeps_the_conversation_whole(
    client: Client, worker: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    limits = ConversationLimits(max_turns_per_run=3, keep_messages_on_continue=2)
    conversation_id, first_run, first = await start(client, worker, "[echo] turn 1", limits)
    handle = latest(client, conversation_id)
    turns = [first]
    for n in range(2, 6):
        turns.append(
            await handle.execute_update(ConversationWorkflow.send_message, SendMessage(f"[echo] turn {n}"))
        )
    assert [turn.reply.content for turn in turns] == [f"turn {n}" for n in range(1, 6)]
    assert [turn.version for turn in turns] == [1, 2, 3, 4, 5]

    description = await handle.describe()
    assert description.run_id != first_run, "the run never continued as new"
    status = await handle.query(ConversationWorkflow.status)
    assert status.summary, "continue-as-new folded older turns into no summary"
    assert (status.version, status.message_count) == (5, 10)
    assert status.active_leaf_id == turns[-1].reply.id

    # Still answering after continue-as-new, with the next version.
    after = await handle.execute_update(
        ConversationWorkflow.send_message, SendMessage("[echo] after", expected_version=5)
    )
    assert (after.version, after.reply.content) == (6, "after")
    assert after.message.parent_id == turns[-1].reply.id

    async with sessions() as session:
        messages = await crud.list_messages(session, tenant=TENANT, conversation_id=conversation_id)
        events = await crud.list_events(session, stream=workflow_id(TENANT, conversation_id))
        row = await crud.get_conversation(session, tenant=TENANT, conversation_id=conversation_id)
    ids = [m.id for m in messages]
    assert len(ids) == len(set(ids)) == 12
    expected_ids = [m.id for turn in turns for m in (turn.message, turn.reply)]
    assert ids == [*expected_ids, after.message.id, after.reply.id]
    # One unbroken chain from the first message to the newest reply.
    assert [m.parent_id for m in messages] == [None, *ids[:-1]]
    assert [m.content for m in messages if m.role == "user"] == [
        *(f"[echo] turn {n}" for n in range(1, 6)),
        "[echo] after",
    ]
    types = [e.type for e in events]
    assert "conversation.continued" in types
    assert types.count("message.added") == 12
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert row is not None
    assert (row.version, row.message_count) == (6, 12)
    assert row.summary == status.summary


@sqlite_only
async def test_concurrent_sends_with_the_same_version_apply_once(client: Client, worker: Settings) -> None:
    conversation_id, _, _ = await start(client, worker, "hello")
    handle = latest(client, conversation_id)

    results = await asyncio.gather(
        *(
            handle.execute_update(
                ConversationWorkflow.send_message, SendMessage(f"racer {i}", expected_version=1)
            )
            for i in range(3)
        ),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, TurnResult)]
    lost = [r for r in results if isinstance(r, WorkflowUpdateFailedError)]
    assert len(won) == 1 and len(lost) == 2, results
    assert all(isinstance(e.cause, ApplicationError) and e.cause.type == "VersionConflict" for e in lost)
    status = await handle.query(ConversationWorkflow.status)
    assert (status.version, status.message_count) == (2, 4)


@sqlite_only
async def test_continues_as_new_when_the_server_suggests_it(settings: Settings) -> None:
    """A dev server that suggests continue-as-new after 30 history events (the default is
    thousands): the conversation moves to a new run on the server's word alone."""
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from temporal.constants import KIND, SERVICE
    from temporal.constants import TENANT as TENANT_ATTRIBUTE
    from temporal.devserver import temporal_binary

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        search_attributes=[TENANT_ATTRIBUTE, KIND, SERVICE, PHASE],
        dev_server_extra_args=["--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=30"],
    )
    try:
        settings.conversation.task_queue = f"wf-suggest-{uuid.uuid4().hex[:8]}"
        async with conversation_worker(env.client, settings) as running, running:
            conversation_id, first_run, _ = await start(env.client, settings, "[echo] 1")
            handle = env.client.get_workflow_handle(workflow_id(TENANT, conversation_id))
            for n in range(2, 7):
                await handle.execute_update(ConversationWorkflow.send_message, SendMessage(f"[echo] {n}"))
            status = await handle.query(ConversationWorkflow.status)
            assert (await handle.describe()).run_id != first_run
            assert status.message_count == 12 and status.version == 6
            assert status.turns_this_run < 6  # the limit of 500 turns never came into it
    finally:
        await env.shutdown()


@sqlite_only
async def test_sent_edited_regenerated_and_archived(client: Client, worker: Settings) -> None:
    """The scenario of histories/conversation_v*.json: every change is a version, edits and regenerations
    are branches beside what they replace."""
    conversation_id, _, first = await start(client, worker, "[echo] one")
    handle = latest(client, conversation_id)
    second = await handle.execute_update(
        ConversationWorkflow.send_message, SendMessage("[echo] two", expected_version=1)
    )
    edited = await handle.execute_update(
        ConversationWorkflow.edit_message, EditMessage(second.message.id, "[echo] two, edited", 2)
    )
    assert (edited.reply.content, edited.message.parent_id) == ("two, edited", first.reply.id)
    assert (edited.version, edited.message_variants) == (3, 2)
    regenerated = await handle.execute_update(
        ConversationWorkflow.regenerate, Regenerate(edited.reply.id, expected_version=3)
    )
    assert regenerated.message.id == edited.message.id
    assert (regenerated.version, regenerated.reply_variants) == (4, 2)
    archived = await handle.execute_update(ConversationWorkflow.archive, Archive(expected_version=4))
    assert (archived.status, archived.version, archived.message_count) == ("archived", 5, 7)
    described = await handle.describe()
    assert described.typed_search_attributes.get(PHASE) == "Archived"  # PascalCase, as every kind's
    await save_history(handle, "conversation")


@sqlite_only
async def test_openai_style_turns_add_only_what_is_new(client: Client, worker: Settings) -> None:
    """The scenario of histories/conversation_v*_chat.json: each turn re-sends the whole dialogue; a turn
    sent again is answered again, and a reply the client edited becomes a branch."""
    conversation_id = uuid.uuid4().hex
    said = [ChatMessage("user", "[echo] a")]
    operation = WithStartWorkflowOperation(
        ConversationWorkflow.run,
        ConversationInput(tenant=TENANT, conversation_id=conversation_id, model="sim-zero"),
        id=workflow_id(TENANT, conversation_id),
        task_queue=worker.conversation.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    first = await client.execute_update_with_start_workflow(
        ConversationWorkflow.chat, ChatTurn(said), start_workflow_operation=operation
    )
    handle = latest(client, conversation_id)
    said += [ChatMessage("assistant", first.reply.content), ChatMessage("user", "[echo] b")]
    second = await handle.execute_update(ConversationWorkflow.chat, ChatTurn(said))
    again = await handle.execute_update(ConversationWorkflow.chat, ChatTurn(said))
    assert (again.message.id, again.reply_variants) == (second.message.id, 2)
    edited = [said[0], ChatMessage("assistant", "a, edited"), ChatMessage("user", "[echo] c")]
    branched = await handle.execute_update(ConversationWorkflow.chat, ChatTurn(edited))
    assert branched.reply.content == "c"
    status = await handle.query(ConversationWorkflow.status)
    assert (status.version, status.message_count) == (4, 8)  # 2 + 2 + a second reply + 3
    await handle.execute_update(ConversationWorkflow.archive, Archive())
    await save_history(handle, "conversation", "chat")


@sqlite_only
async def test_the_worker_caches_as_many_conversations_as_set(settings: Settings, client: Client) -> None:
    """Each cached conversation costs the worker about 0.6 MB (README): the operator sets how many."""
    settings.conversation.task_queue = f"wf-cache-{uuid.uuid4().hex[:8]}"
    settings.conversation.cached_workflows = 7
    async with conversation_worker(client, settings) as worker:
        assert worker.config()["max_cached_workflows"] == 7
