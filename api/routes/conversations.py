"""Conversations: start, list, read, send, edit, regenerate, archive (writes via the workflow)."""

import base64
import contextlib
import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.contracts.store import MessageRecord
from api.assistant_calls import assistant_binding
from api.assistant_schemas import AssistantRef, AssistantSwitch
from api.auth import ClientDep
from api.conversation_calls import (
    IdempotencyKey,
    conversation_closed,
    idempotent,
    metered_turn,
    refuse_oversized,
    start_operation,
    temporal_unavailable,
    update_id,
)
from api.deps import AppState, SessionDep, StateDep
from api.errors import ApiError, from_update_failure
from api.metrics import counted_change
from api.schemas import (
    ERROR_RESPONSES,
    BranchOut,
    ConversationCreate,
    ConversationCreated,
    ConversationDetail,
    ConversationOut,
    ConversationPage,
    EditIn,
    FeedbackIn,
    FeedbackOut,
    MessageIn,
    MessageOut,
    TurnOut,
    VersionIn,
)
from policies.access import Principal
from policies.conversation import Node, leaves, message_problem, path_to
from store import crud
from store.models import Conversation, Message
from workflows.conversation import (
    Archive,
    ConversationWorkflow,
    EditMessage,
    Regenerate,
    SendMessage,
    SwitchAssistant,
    TurnResult,
    workflow_id,
)

router = APIRouter(prefix="/v1/conversations", tags=["conversations"], responses=ERROR_RESPONSES)

# ---- routes ------------------------------------------------------------------------------


@router.post("", status_code=201, response_model=ConversationCreated)
async def create_conversation(
    body: ConversationCreate,
    state: StateDep,
    session: SessionDep,
    caller: ClientDep,
    idempotency_key: IdempotencyKey = None,
) -> ConversationCreated:
    """Start a conversation, optionally with its first message (answered in the response)."""
    tenant = caller.tenant
    binding = None
    if body.assistant is not None:
        if body.model or body.system_prompt or body.params.model_dump(exclude_none=True):
            raise ApiError(
                422,
                "InvalidRequest",
                "give an assistant or a model with its system prompt and params, not both: "
                "the assistant's version sets them",
            )
        binding = await assistant_binding(
            session, tenant, body.assistant, body.user or caller.subject, state.gateway.routes
        )
    model = binding.spec.model if binding else body.model or state.settings.conversation.default_model
    routes = state.gateway.routes.items()
    served = sorted(name for name, route in routes if route.serves(tenant) and route.kind == "chat")
    if model not in served:
        raise ApiError(
            422,
            "UnknownModel",
            f"model {model!r} is not served to your tenant; pick one of: {', '.join(served)}",
        )
    if body.message is not None:
        problem = message_problem(
            body.message.content, body.message.role, state.settings.conversation.max_message_chars
        )
        if problem:
            raise ApiError(422, "InvalidMessage", problem)
        params = dict(binding.spec.params) if binding else body.params.model_dump(exclude_none=True)
        system = binding.spec.instructions if binding else body.system_prompt
        await refuse_oversized(state, caller, [system, body.message.content], params.get("max_tokens"))
    conversation_id = body.id or (
        uuid.uuid5(uuid.NAMESPACE_URL, f"lcp:{tenant}:{idempotency_key}").hex
        if idempotency_key
        else uuid.uuid4().hex
    )
    # A repeated request (same Idempotency-Key) joins the conversation it started before;
    # any other request for a taken id is refused.
    start = start_operation(
        state.settings.conversation,
        tenant=tenant,
        conversation_id=conversation_id,
        model=model,
        join_existing=idempotency_key is not None,
        system_prompt=binding.spec.instructions or None if binding else body.system_prompt,
        title=body.title,
        params=dict(binding.spec.params) if binding else body.params.model_dump(exclude_none=True),
        assistant=binding,
        principal=body.user or caller.subject,
    )
    turn: TurnResult | None = None
    keyed = idempotent(
        state, tenant, idempotency_key, "POST", "/v1/conversations", body.model_dump(mode="json")
    )
    async with state.turns.slot(tenant) as slot, keyed as repeat:
        with counted_change("create"):
            try:
                if body.message is not None:
                    turn = await metered_turn(
                        state,
                        caller,
                        state.temporal.execute_update_with_start_workflow(
                            ConversationWorkflow.send_message,
                            SendMessage(content=body.message.content, role=body.message.role),
                            start_workflow_operation=start,
                            id=update_id("create-send_message", idempotency_key),
                        ),
                        slot,
                        charge=not repeat,
                    )
                else:
                    await state.temporal.execute_update_with_start_workflow(
                        ConversationWorkflow.open,
                        start_workflow_operation=start,
                        id=update_id("create-open", idempotency_key),
                    )
            except WorkflowUpdateFailedError as err:
                failure = from_update_failure(err)
                failure.extra["conversation_id"] = conversation_id  # it exists now: retry into it
                raise failure from err
            except (WorkflowAlreadyStartedError, RPCError) as err:
                with contextlib.suppress(Exception):
                    await start.workflow_handle()  # collect the start's own failure, reported here
                if isinstance(err, RPCError) and err.status != RPCStatusCode.ALREADY_EXISTS:
                    raise temporal_unavailable(err) from err
                raise ApiError(
                    409,
                    "ConversationExists",
                    f"conversation {conversation_id} already exists: send messages to "
                    f"/v1/conversations/{conversation_id}/messages, or pick another id",
                ) from err
    row = await _fresh_conversation(session, tenant, conversation_id)
    return ConversationCreated(conversation=_conversation_out(row), turn=_turn_out(turn) if turn else None)


@router.get("", response_model=ConversationPage)
async def list_conversations(
    session: SessionDep,
    caller: ClientDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> ConversationPage:
    """Conversations, newest first, a page at a time."""
    tenant = caller.tenant
    rows = await crud.list_conversations(
        session, tenant=tenant, limit=limit + 1, before=_decode_cursor(cursor) if cursor else None
    )
    page, more = rows[:limit], len(rows) > limit
    return ConversationPage(
        data=[_conversation_out(row) for row in page],
        next_cursor=_encode_cursor(page[-1]) if more else None,
    )


@router.get("/{conversation_id}", response_model=ConversationDetail)
async def get_conversation(
    conversation_id: str,
    session: SessionDep,
    caller: ClientDep,
    branch: Annotated[
        str | None, Query(description="A message id: show the branch through it (default: active)")
    ] = None,
) -> ConversationDetail:
    """The conversation with the messages of one branch, and the list of all branches."""
    tenant = caller.tenant
    row = await _require(session, tenant, conversation_id)
    messages = await crud.list_messages(session, tenant=tenant, conversation_id=conversation_id)
    return _detail(row, messages, branch)


@router.post("/{conversation_id}/messages", response_model=TurnOut)
async def send_message(
    conversation_id: str,
    body: MessageIn,
    state: StateDep,
    session: SessionDep,
    caller: ClientDep,
    idempotency_key: IdempotencyKey = None,
) -> TurnOut:
    """Send a user message; the model's reply is in the response and already stored."""
    await refuse_oversized(state, caller, [body.content])
    request = SendMessage(body.content, body.role, body.expected_version)
    update = ConversationWorkflow.send_message
    target = f"/v1/conversations/{conversation_id}/messages"
    return _turn_out(
        await _update(state, session, caller, conversation_id, update, request, idempotency_key, target, body)
    )


@router.post("/{conversation_id}/messages/{message_id}/edit", response_model=TurnOut)
async def edit_message(
    conversation_id: str,
    message_id: str,
    body: EditIn,
    state: StateDep,
    session: SessionDep,
    caller: ClientDep,
    idempotency_key: IdempotencyKey = None,
) -> TurnOut:
    """Replace a user message on a new branch and get a fresh reply to it."""
    await refuse_oversized(state, caller, [body.content])
    request = EditMessage(message_id, body.content, body.expected_version)
    update = ConversationWorkflow.edit_message
    target = f"/v1/conversations/{conversation_id}/messages/{message_id}/edit"
    key = idempotency_key
    return _turn_out(
        await _update(state, session, caller, conversation_id, update, request, key, target, body, message_id)
    )


@router.post("/{conversation_id}/messages/{message_id}/regenerate", response_model=TurnOut)
async def regenerate(
    conversation_id: str,
    message_id: str,
    state: StateDep,
    session: SessionDep,
    caller: ClientDep,
    body: VersionIn | None = None,
    idempotency_key: IdempotencyKey = None,
) -> TurnOut:
    """Ask again for an assistant reply; the new one becomes a new branch."""
    request = Regenerate(message_id, body.expected_version if body else None)
    update = ConversationWorkflow.regenerate
    target = f"/v1/conversations/{conversation_id}/messages/{message_id}/regenerate"
    key = idempotency_key
    return _turn_out(
        await _update(state, session, caller, conversation_id, update, request, key, target, body, message_id)
    )


@router.post("/{conversation_id}/archive", response_model=ConversationOut)
async def archive(
    conversation_id: str,
    state: StateDep,
    session: SessionDep,
    caller: ClientDep,
    body: VersionIn | None = None,
    idempotency_key: IdempotencyKey = None,
) -> ConversationOut:
    """Close the conversation: it stays readable and takes no more messages."""
    request = Archive(body.expected_version if body else None)
    target = f"/v1/conversations/{conversation_id}/archive"
    update = ConversationWorkflow.archive
    await _update(state, session, caller, conversation_id, update, request, idempotency_key, target, body)
    return _conversation_out(await _fresh_conversation(session, caller.tenant, conversation_id))


@router.put("/{conversation_id}/assistant", response_model=ConversationOut)
async def switch_assistant(
    conversation_id: str,
    body: AssistantSwitch,
    state: StateDep,
    session: SessionDep,
    caller: ClientDep,
    idempotency_key: IdempotencyKey = None,
) -> ConversationOut:
    """Serve the rest of the conversation with another version of its assistant (editing an assistant
    never moves a running conversation by itself). Replies already written keep their version."""
    tenant = caller.tenant
    row = await _require(session, tenant, conversation_id)
    if row.assistant_id is None:
        raise ApiError(
            409,
            "AssistantMismatch",
            f"conversation {conversation_id} is served by model {row.model}, not an assistant",
        )
    ref = AssistantRef(id=row.assistant_id, version=body.version)
    binding = await assistant_binding(
        session, tenant, ref, row.principal or caller.subject, state.gateway.routes
    )
    request = SwitchAssistant(binding, body.expected_version)
    update = ConversationWorkflow.switch_assistant
    target = f"/v1/conversations/{conversation_id}/assistant"
    await _update(state, session, caller, conversation_id, update, request, idempotency_key, target, body)
    return _conversation_out(await _fresh_conversation(session, tenant, conversation_id))


@router.post("/{conversation_id}/messages/{message_id}/feedback", response_model=FeedbackOut)
async def feedback(
    conversation_id: str, message_id: str, body: FeedbackIn, session: SessionDep, caller: ClientDep
) -> FeedbackOut:
    """A thumbs up or down on a reply (one per person: a second replaces the first). It counts in the
    serving assistant version's analytics."""
    await _require(session, caller.tenant, conversation_id)
    messages = await crud.list_messages(session, tenant=caller.tenant, conversation_id=conversation_id)
    message = next((m for m in messages if m.id == message_id), None)
    if message is None:
        raise ApiError(404, "MessageNotFound", f"conversation {conversation_id} has no message {message_id}")
    if message.role != "assistant":
        raise ApiError(422, "InvalidFeedback", f"message {message_id} is the user's: rate replies only")
    principal = body.user or caller.subject
    row = {
        "tenant": caller.tenant,
        "message_id": message_id,
        "principal": principal,
        "conversation_id": conversation_id,
        "rating": 1 if body.rating == "up" else -1,
        "comment": body.comment,
        "updated_at": datetime.now(UTC),
    }
    await crud.set_feedback(session, feedback=row)
    return FeedbackOut(message_id=message_id, rating=body.rating, comment=body.comment, by=principal)


# ---- helpers -----------------------------------------------------------------------------


async def _require(session: AsyncSession, tenant: str, conversation_id: str) -> Conversation:
    row = await crud.get_conversation(session, tenant=tenant, conversation_id=conversation_id)
    if row is None:
        raise ApiError(
            404,
            "ConversationNotFound",
            f"no conversation {conversation_id}: list yours with GET /v1/conversations",
        )
    return row


async def _fresh_conversation(session: AsyncSession, tenant: str, conversation_id: str) -> Conversation:
    """Read the row as the workflow just left it (not from an older transaction's snapshot)."""
    await session.rollback()
    return await _require(session, tenant, conversation_id)


async def _update(
    state: AppState,
    session: AsyncSession,
    caller: Principal,
    conversation_id: str,
    update: Any,
    arg: Any,
    key: str | None,
    target: str,
    body: BaseModel | None,
    message_id: str | None = None,
) -> Any:
    """Apply a change through the conversation's workflow (its ID names the tenant, so a tenant
    can only ever reach its own conversations); the SQL read happens only on the error path. The
    Idempotency-Key is bound to (target, body) first, and to the `message_id` a change is about; a
    reply's tokens are charged to the caller."""
    tenant = caller.tenant
    handle = state.temporal.get_workflow_handle(workflow_id(tenant, conversation_id))
    fingerprinted = body.model_dump(mode="json") if body is not None else None
    method = "PUT" if target.endswith("/assistant") else "POST"
    keyed = idempotent(state, tenant, key, method, target, fingerprinted)
    async with state.turns.slot(tenant) as slot, keyed as repeat:
        with counted_change(update.__name__):
            try:
                call = handle.execute_update(update, arg, id=update_id(update.__name__, key, message_id))
                return await metered_turn(state, caller, call, slot, charge=not repeat)
            except WorkflowUpdateFailedError as err:
                raise from_update_failure(err) from err
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise temporal_unavailable(err) from err
                row = await _require(session, tenant, conversation_id)  # 404 when it never existed
                raise conversation_closed(conversation_id, row.status) from err


def _encode_cursor(row: Conversation) -> str:
    raw = json.dumps([row.created_at.isoformat(), row.id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, ident = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created), str(ident)
    except (ValueError, TypeError) as err:
        raise ApiError(
            422, "InvalidCursor", "cursor is not one this API issued: pass next_cursor as given"
        ) from err


def _conversation_out(row: Conversation) -> ConversationOut:
    return ConversationOut.model_validate(row, from_attributes=True)


def _message_out(message: MessageRecord | Message, variants: int | None = None) -> MessageOut:
    out = MessageOut.model_validate(message, from_attributes=True)
    if variants is not None:
        out.variants = variants
    return out


def _turn_out(turn: TurnResult) -> TurnOut:
    return TurnOut(
        conversation_id=turn.conversation_id,
        version=turn.version,
        message=_message_out(turn.message, turn.message_variants),
        reply=_message_out(turn.reply, turn.reply_variants),
    )


def _detail(row: Conversation, messages: list[Message], branch: str | None) -> ConversationDetail:
    by_id = {message.id: message for message in messages}
    nodes = {message.id: Node(message.id, message.parent_id) for message in messages}
    children: dict[str | None, list[Message]] = {}
    for message in messages:
        children.setdefault(message.parent_id, []).append(message)
    if branch is not None and branch not in by_id:
        raise ApiError(404, "MessageNotFound", f"branch {branch!r} is not a message of this conversation")
    tip = branch or row.active_leaf_id
    while tip is not None and children.get(tip):  # follow the newest variant down to a leaf
        tip = max(children[tip], key=lambda m: m.version).id
    shown = path_to(tip, nodes)
    branches = [
        BranchOut(
            leaf_id=leaf,
            length=len(path_to(leaf, nodes)),
            active=leaf == row.active_leaf_id,
            updated_at=by_id[leaf].created_at,
        )
        for leaf in leaves(nodes.values())
    ]
    return ConversationDetail(
        conversation=_conversation_out(row),
        branch=tip,
        messages=[
            _message_out(by_id[message_id], len(children[by_id[message_id].parent_id]))
            for message_id in shown
        ],
        branches=sorted(branches, key=lambda b: b.updated_at),
    )
