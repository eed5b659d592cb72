"""How the API starts and changes ConversationWorkflows: the start operation, update ids bound to
the request their Idempotency-Key was first used for, the tokens a turn charges, and Temporal's
failures turned into API errors. Shared by the REST and OpenAI-compatible routes."""

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import Header
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError

from activities.contracts.store import MessageRecord
from api.deps import AppState
from api.errors import ApiError
from api.metrics import TOKENS
from api.turn_gate import Admitted
from inference.gateway import estimate_prompt_tokens
from inference.messages import ChatMessage
from policies.access import Principal
from policies.assistants import AssistantBinding
from settings import ConversationSettings
from store import crud
from temporal.constants import KIND, PHASE, TENANT
from workflows.conversation import (
    ACTIVE,
    ConversationInput,
    ConversationLimits,
    ConversationWorkflow,
    TurnResult,
    workflow_id,
)

T = TypeVar("T")

IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=200,
        description="Repeat a request safely: the same key never applies the change twice, and the "
        "repeat gets the first answer. A key is bound to its first request (method, path, body): "
        "reusing it for another request to the same resource is a 422 IdempotencyKeyReused.",
    ),
]


def start_operation(
    settings: ConversationSettings,
    *,
    tenant: str,
    conversation_id: str,
    model: str,
    join_existing: bool,
    system_prompt: str | None = None,
    title: str | None = None,
    params: dict[str, Any] | None = None,
    assistant: AssistantBinding | None = None,
    principal: str | None = None,
) -> WithStartWorkflowOperation[Any, Any]:
    """Start the conversation's workflow unless it runs; `join_existing` joins a running one instead
    of refusing. An archived conversation's id is never reused."""
    return WithStartWorkflowOperation(
        ConversationWorkflow.run,
        ConversationInput(
            tenant=tenant,
            conversation_id=conversation_id,
            model=model,
            system_prompt=system_prompt,
            title=title,
            params=params or {},
            limits=ConversationLimits(
                max_message_chars=settings.max_message_chars,
                max_turns_per_run=settings.max_turns_per_run,
                keep_messages_on_continue=settings.keep_messages_on_continue,
            ),
            assistant=assistant,
            principal=principal,
        ),
        id=workflow_id(tenant, conversation_id),
        task_queue=settings.task_queue,
        id_conflict_policy=(
            WorkflowIDConflictPolicy.USE_EXISTING if join_existing else WorkflowIDConflictPolicy.FAIL
        ),
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(TENANT, tenant),
                SearchAttributePair(KIND, "conversation"),
                SearchAttributePair(PHASE, ACTIVE),
            ]
        ),
    )


def update_id(update_name: str, key: str | None, message_id: str | None = None) -> str | None:
    """The Temporal update ID for a client's Idempotency-Key, per kind of change and message: a key
    reused for another kind of change (create, then send, then archive) or another message's edit or
    regeneration is a new request (it was answered with the first message's reply, charged again); the
    same request again is a replay of the first answer."""
    if not key:
        return None
    if message_id is not None:
        update_name += ":" + hashlib.sha256(message_id.encode()).hexdigest()[:16]
    return f"{update_name}:{key}"


def temporal_unavailable(err: RPCError) -> ApiError:
    return ApiError(503, "TemporalUnavailable", f"the workflow service did not answer ({err}); retry shortly")


def conversation_closed(conversation_id: str, status: str = "archived") -> ApiError:
    return ApiError(
        409,
        "ConversationClosed",
        f"conversation {conversation_id} is {status}: it takes no more messages; start a new conversation",
    )


# ---- idempotency keys --------------------------------------------------------------------


def request_fingerprint(method: str, target: str, body: Any) -> str:
    """A hash of the request: method, target (path, and a durable chat's conversation) and the body
    as validated, in canonical JSON (key order and defaults left out or spelled out make no difference)."""
    canonical = json.dumps([method, target, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


@contextlib.asynccontextmanager
async def idempotent(
    state: AppState, tenant: str, key: str | None, method: str, target: str, body: Any
) -> AsyncIterator[bool]:
    """Bind the Idempotency-Key to this request before it changes anything; yields whether this is a
    repeat of the request the key was bound to (its answer is the first one's, its tokens charged once).

    A key is bound per tenant and target (the resource changed: one key may serve a create, then a send,
    as update_id allows), to the fingerprint of the first request; another body under the same key and
    target is a 422, also while the first is still running: of two different requests racing with one
    key, the first to be bound is applied and the other refused, never silently answered with the
    first's reply. A request refused with an API error (a version conflict, a missing conversation)
    frees its key, so the corrected request may use it."""
    if key is None:
        yield False
        return
    scope = hashlib.sha256(f"{method} {target}".encode("utf-8", "surrogatepass")).hexdigest()
    fingerprint = request_fingerprint(method, target, body)
    async with state.sessions() as session:
        claimed, bound = await crud.claim_idempotency_key(
            session, tenant=tenant, key=key, scope=scope, fingerprint=fingerprint, at=datetime.now(UTC)
        )
    if bound != fingerprint:
        raise ApiError(
            422,
            "IdempotencyKeyReused",
            f"the Idempotency-Key {key!r} was already used for another request to {method} {target}: "
            "a key names one request. Repeat that request exactly to get its answer, or send this one "
            "with a new key",
            param="Idempotency-Key",
        )
    try:
        yield not claimed
    except ApiError:
        if claimed:
            async with state.sessions() as session:
                await crud.release_idempotency_key(
                    session, tenant=tenant, key=key, scope=scope, fingerprint=fingerprint
                )
        raise


# ---- tokens ------------------------------------------------------------------------------

_CHARGES_PENDING: set["asyncio.Future[Any]"] = set()  # turns still running for a client that left


def meter(state: AppState, caller: Principal, model: str, prompt: int, completion: int) -> None:
    """Charge a reply's tokens to the caller's token limits and count them in the metrics."""
    state.limiter.charge_tokens(caller, prompt + completion)
    TOKENS.labels(caller.tenant, model, "prompt").inc(prompt)
    TOKENS.labels(caller.tenant, model, "completion").inc(completion)


def meter_reply(state: AppState, caller: Principal, reply: MessageRecord, model: str | None = None) -> None:
    meter(
        state,
        caller,
        model or reply.model or "unknown",
        reply.prompt_tokens or 0,
        reply.completion_tokens or 0,
    )


def charge_when_done(
    state: AppState,
    caller: Principal,
    turn: "asyncio.Future[Any]",
    model: str | None = None,
    reply_of: Callable[[Any], MessageRecord | None] = lambda result: result.reply,
) -> None:
    """Charge the reply of `turn` once it is done, whoever still waits for it: the turn goes on in its
    workflow after the client went away (a dropped stream, a cancelled request) and its tokens were
    spent all the same. A callback, not an await: it runs even where cancellation cuts every await."""

    def charge(done: "asyncio.Future[Any]") -> None:
        _CHARGES_PENDING.discard(done)
        if done.cancelled() or done.exception() is not None:
            return  # a failed turn has no reply to charge
        reply = reply_of(done.result())
        if reply is not None:
            meter_reply(state, caller, reply, model)

    _CHARGES_PENDING.add(turn)  # a strong reference: the turn's task outlives the request
    turn.add_done_callback(charge)


async def metered_turn(
    state: AppState,
    caller: Principal,
    call: Awaitable[T],
    slot: Admitted,
    *,
    charge: bool = True,
    model: str | None = None,
) -> T:
    """Await a change that makes the model work (its result a TurnResult) and charge the reply's
    tokens, also when this request is cancelled meanwhile (the turn runs on in the workflow).
    `charge=False` for a repeat of a keyed request: its answer was generated, and charged, once.
    `slot`: the turn's place in the API's turn gate (api/turn_gate.py), taken before its Idempotency-Key
    was claimed, and given back when the change ends."""
    task = asyncio.ensure_future(call)
    slot.follow(task, counted=charge)  # a repeat's time is no turn's
    if charge:
        charge_when_done(state, caller, task, model, _reply_of)
    else:  # nobody may be left to read its outcome: read it here, so it is never logged as lost
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return await asyncio.shield(task)


def _reply_of(result: Any) -> MessageRecord | None:
    return result.reply if isinstance(result, TurnResult) else None


async def refuse_oversized(
    state: AppState, caller: Principal, texts: list[str | None], max_tokens: Any = None
) -> None:
    """Refuse up front a turn whose prompt estimate (these texts, e.g. a system prompt and the message)
    plus max_tokens exceeds a whole minute of the caller's token limit. A conversation's history comes
    on top: it is charged with the reply, as the endpoint counted it."""
    estimate = estimate_prompt_tokens([ChatMessage("user", text) for text in texts if text])
    extra = max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) else 0
    what = f"a prompt of about {estimate}" + (f" plus max_tokens {extra}" if extra else "")
    await state.limiter.reserve(caller, estimate + extra, what)
