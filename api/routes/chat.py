"""OpenAI-compatible chat completions and models: one-shot through the gateway, or durable (with a
conversation ID) through the tenant's ConversationWorkflow; whole or streamed as server-sent events."""

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, cast

import anyio
from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import (
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateHandle,
    WorkflowUpdateStage,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.assistant_calls import assistant_binding
from api.assistant_schemas import AssistantRef
from api.auth import ClientDep
from api.conversation_calls import (
    IdempotencyKey,
    charge_when_done,
    conversation_closed,
    idempotent,
    meter,
    metered_turn,
    start_operation,
    temporal_unavailable,
    update_id,
)
from api.deps import AppState, SessionDep, StateDep
from api.errors import ApiError, from_update_failure, openai_error_body
from api.metrics import COMPLETIONS
from api.openai_schemas import ChatCompletion, ChatCompletionRequest, Model, ModelList, check_message_limits
from api.schemas import CONVERSATION_ID_PATTERN
from inference.gateway import InferenceFailure, estimate_prompt_tokens, estimate_tokens, wire_message
from inference.messages import ChatCompletionResult, ChatMessage
from inference.token_relay import Delta
from policies.access import Principal
from policies.conversation import is_side_request
from policies.models import ModelRoute
from store import crud
from workflows.assistant import ARCHIVED
from workflows.conversation import ChatTurn, ConversationWorkflow, TurnResult, workflow_id

router = APIRouter(prefix="/v1", tags=["openai"])

MODELS_CREATED = int(time.time())  # the models policy has no dates; this is when it was loaded
ASSISTANT_MODEL_PREFIX = "assistant:"  # model "assistant:ID" or "assistant:ID@vN" asks for an assistant
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_CONVERSATION_ID = re.compile(CONVERSATION_ID_PATTERN)
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": description}
    for status, description in {
        400: "Malformed request (OpenAI error object).",
        401: "Missing or invalid credentials.",
        404: "Model or assistant not served to your tenant.",
        409: "The conversation is archived, or served by another assistant or model.",
        429: "A limit is spent, or the model endpoint is busy: see Retry-After.",
        502: "The model endpoint failed.",
    }.items()
}


@router.get("/models", response_model=ModelList)
async def list_models(state: StateDep, session: SessionDep, caller: ClientDep) -> ModelList:
    """The models your tenant may use, in OpenAI's list shape, then its assistants that serve
    (`assistant:ID`: a model name clients such as LibreChat can pick)."""
    models = [
        Model(id=name, created=MODELS_CREATED, owned_by=route.owned_by)
        for name, route in sorted(state.gateway.routes.items())
        if route.serves(caller.tenant)
    ]
    assistants = [
        Model(
            id=f"{ASSISTANT_MODEL_PREFIX}{row.id}",
            created=int(row.created_at.timestamp()),
            owned_by=f"lcp assistant ({row.name})",
        )
        for row in await crud.list_assistants(session, tenant=caller.tenant)
        if row.state != ARCHIVED and (row.live_version or row.experiment)
    ]
    return ModelList(data=models + assistants)


def served_route(state: AppState, caller: Principal, model: str) -> ModelRoute:
    """The models policy's route for `model`; 404 when the caller's tenant may not use it."""
    route = state.gateway.routes.get(model)
    if route is None or not route.serves(caller.tenant):
        raise ApiError(
            404,
            "model_not_found",
            f"model {model[:200]!r} is not served to your tenant: GET /v1/models lists the ones that are",
            param="model",
        )
    return route


@router.get("/models/{model_id:path}", response_model=Model, responses={404: ERRORS[404]})
async def retrieve_model(model_id: str, state: StateDep, session: SessionDep, caller: ClientDep) -> Model:
    """One model or assistant of GET /v1/models (OpenAI's `models.retrieve`); 404 for any other."""
    listed = await list_models(state, session, caller)
    found = next((model for model in listed.data if model.id == model_id), None)
    if found is None:
        raise ApiError(
            404,
            "model_not_found",
            f"model {model_id[:200]!r} is not served to your tenant: GET /v1/models lists the ones that are",
            param="model",
        )
    return found


ConversationIdHeader = Annotated[
    str | None,
    Header(
        alias="X-Conversation-Id",
        max_length=100,
        description="Makes the turn durable: it is recorded in this conversation of your tenant.",
    ),
]


@router.post("/chat/completions", response_model=ChatCompletion, responses=ERRORS)
async def chat_completions(
    body: ChatCompletionRequest,
    state: StateDep,
    session: SessionDep,
    caller: ClientDep,
    x_conversation_id: ConversationIdHeader = None,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """OpenAI's chat completion, whole or streamed (`stream: true`). With a conversation ID (header
    `X-Conversation-Id`, `conversation_id` in the body, or `metadata.conversation_id`) the turn is
    durable: the messages lcp already recorded are recognised, the new user message and the reply are
    recorded exactly once.

    Instead of a model, an assistant (`assistant: {id, version?}`, or model `assistant:ID[@vN]`) may
    answer: its version's model, instructions, params and tools apply, and the turn is always durable
    (a new conversation when none is named, its ID in `X-Conversation-Id`), so it counts in the
    assistant's analytics."""
    check_message_limits(body, state.settings.conversation.max_message_chars)  # one-shot and durable alike
    conversation_id = (
        _given(x_conversation_id) or _given(body.conversation_id) or _given(_metadata_conversation_id(body))
    )
    messages = _messages(body)
    await _refuse_oversized(state, caller, body, messages)
    side_request = is_side_request([(m.role, m.content) for m in messages], body.stream)
    ref = _assistant_ref(body)
    if (ref or conversation_id) and not side_request:
        what = "an assistant's turn" if ref else "a durable turn"
        _refuse_client_tools(body, what)
        _refuse_choices(
            body, f"{what} records one reply, so it takes n=1: send n > 1 without a conversation ID"
        )
    if ref:
        if side_request:  # a title request: answered by the assistant's model, and not kept
            binding = await assistant_binding(
                session, caller.tenant, ref, body.user or caller.subject, state.gateway.routes
            )
            return await _one_shot(state, caller, body, binding.spec.model, messages)
        return await _assistant_turn(
            state, session, caller, body, ref, conversation_id, messages, idempotency_key
        )
    route = served_route(state, caller, body.model)
    if route.kind != "chat":
        raise ApiError(
            400,
            "InvalidRequest",
            f"model {body.model!r} is an {route.kind} model: send it to POST /v1/embeddings",
            param="model",
        )
    if conversation_id and not side_request:
        return await _durable(state, caller, body, conversation_id, messages, idempotency_key)
    # Without a conversation, or for a title request, the reply is not kept.
    return await _one_shot(state, caller, body, body.model, messages)


async def _refuse_oversized(
    state: AppState, caller: Principal, body: ChatCompletionRequest, messages: list[ChatMessage]
) -> None:
    """Refuse up front what a whole minute of the caller's token limits cannot cover: the prompt's
    estimate plus max_tokens (an assistant's instructions, or a conversation's summary, come on top)."""
    prompt = estimate_prompt_tokens(messages)
    max_tokens = body.params().get("max_tokens") or 0
    choices = body.n or 1
    what = f"a prompt of about {prompt}" + (f" plus max_tokens {max_tokens}" if max_tokens else "")
    what += f", for each of {choices} choices" if choices > 1 else ""
    await state.limiter.reserve(caller, (prompt + max_tokens) * choices, what)


def _refuse_choices(body: ChatCompletionRequest, why: str) -> None:
    if (body.n or 1) > 1:
        raise ApiError(400, "InvalidRequest", f"n={body.n} is not supported here: {why}", param="n")


def _refuse_client_tools(body: ChatCompletionRequest, what: str) -> None:
    """A turn lcp records can't wait for the client to run a tool: client tools are one-shot only."""
    if body.tools or any(m.tool_calls or m.role == "tool" for m in body.messages):
        raise ApiError(
            400,
            "ToolsNotDurable",
            f"client-side tools (tools, tool_calls, tool messages) are not supported in {what}: send them "
            "without a conversation ID (one-shot), or give an assistant the tools to run server-side",
            param="tools",
        )


def _assistant_ref(body: ChatCompletionRequest) -> AssistantRef | None:
    """The assistant the request asks for, from `assistant` or a model named `assistant:ID[@vN]`."""
    if not body.model.startswith(ASSISTANT_MODEL_PREFIX):
        if body.assistant is not None and body.model:
            raise ApiError(
                400,
                "InvalidRequest",
                "give an assistant or a model, not both: the assistant's version sets the model",
                param="model",
            )
        if body.assistant is None and not body.model:
            raise ApiError(400, "InvalidRequest", "give a model, or an assistant", param="model")
        return body.assistant
    assistant_id, _, version = body.model.removeprefix(ASSISTANT_MODEL_PREFIX).partition("@")
    try:
        ref = AssistantRef(id=assistant_id, version=version or None)
    except ValidationError:
        raise ApiError(
            400,
            "InvalidRequest",
            f"model {body.model!r} is not an assistant name: use assistant:ID or assistant:ID@vN "
            "(an ID of lowercase letters, digits, '-' and '_'; a version like v3)",
            param="model",
        ) from None
    if body.assistant is not None and body.assistant != ref:
        raise ApiError(
            400, "InvalidRequest", "model and assistant name different assistants", param="assistant"
        )
    return ref


# ---- one-shot ------------------------------------------------------------------------------


async def _one_shot(
    state: AppState, caller: Principal, body: ChatCompletionRequest, model: str, messages: list[ChatMessage]
) -> Any:
    """The reply not kept: `n` choices, each its own call to the model, whole or streamed."""
    tools, tool_choice = body.tool_declarations(), body.tool_choice_wire()
    choices = range(body.n or 1)
    stream = "true" if body.stream else "false"
    try:
        async with asyncio.TaskGroup() as group:  # one failed choice cancels the others
            if body.stream:  # endpoint errors before the first token are HTTP errors
                streams = [
                    state.gateway.stream(
                        model,
                        messages,
                        _choice_params(body, i),
                        tools=tools,
                        tool_choice=tool_choice,
                        tenant=caller.tenant,
                    )
                    for i in choices
                ]
                firsts = [group.create_task(anext(each)) for each in streams]
            else:
                tasks = [
                    group.create_task(_whole_choice(state, caller, body, model, messages, i)) for i in choices
                ]
    except* InferenceFailure as failures:
        err = cast(InferenceFailure, failures.exceptions[0])
        COMPLETIONS.labels("one-shot", stream, model, err.type or "error").inc()
        if body.stream:
            with anyio.CancelScope(shield=True):
                for each in streams:
                    await each.aclose()
        raise gateway_error(err) from err
    if not body.stream:
        COMPLETIONS.labels("one-shot", "false", model, "ok").inc()
        results = [task.result() for task in tasks]
        content = _completion(f"chatcmpl-{uuid.uuid4().hex}", results[0].model, results)
        return JSONResponse(content, headers={"X-Lcp-Mode": "one-shot"})
    return StreamingResponse(
        _one_shot_events(state, caller, body, model, messages, [first.result() for first in firsts], streams),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, "X-Lcp-Mode": "one-shot"},
    )


def _choice_params(body: ChatCompletionRequest, index: int) -> dict[str, Any]:
    """The endpoint's parameters for choice `index`: a seeded request's choices differ, reproducibly."""
    params = body.turn_params()
    if index and "seed" in params:
        params["seed"] = (params["seed"] + index) % 2**63
    return params


async def _whole_choice(
    state: AppState,
    caller: Principal,
    body: ChatCompletionRequest,
    model: str,
    messages: list[ChatMessage],
    index: int,
) -> ChatCompletionResult:
    tools, tool_choice = body.tool_declarations(), body.tool_choice_wire()
    params = _choice_params(body, index)
    result = await state.gateway.complete(
        model, messages, params, tools=tools, tool_choice=tool_choice, tenant=caller.tenant
    )
    _meter(state, caller, model, result.prompt_tokens, result.completion_tokens)
    return result


Item = str | ChatCompletionResult


async def _merged(
    firsts: list[Item], streams: list[AsyncGenerator[Item, None]]
) -> AsyncGenerator[tuple[int, Item], None]:
    """The items of every choice's stream as they come, each with its choice's index; one stream is
    relayed as is (no task between it and the client). The queue between is small, so a client that stops
    reading stops the reading of the streams too, as it does for one stream."""
    if len(streams) == 1:
        item = firsts[0]
        while True:
            yield 0, item
            if isinstance(item, ChatCompletionResult):
                return
            item = await anext(streams[0])
    queue: asyncio.Queue[tuple[int, Item | Exception]] = asyncio.Queue(maxsize=len(streams))

    async def pump(index: int) -> None:
        item = firsts[index]
        try:
            while True:
                await queue.put((index, item))
                if isinstance(item, ChatCompletionResult):
                    return
                item = await anext(streams[index])
        except Exception as err:  # the consumer raises it
            await queue.put((index, err))

    pumps = [asyncio.create_task(pump(index)) for index in range(len(streams))]
    try:
        finished = 0
        while finished < len(streams):
            index, got = await queue.get()
            if isinstance(got, Exception):
                raise got
            finished += isinstance(got, ChatCompletionResult)
            yield index, got
    finally:
        for task in pumps:
            task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*pumps, return_exceptions=True)


async def _one_shot_events(
    state: AppState,
    caller: Principal,
    body: ChatCompletionRequest,
    model: str,
    messages: list[ChatMessage],
    firsts: list[Item],
    streams: list[AsyncGenerator[Item, None]],
) -> AsyncIterator[str]:
    chunk = _Chunks(f"chatcmpl-{uuid.uuid4().hex}", model)
    sent: list[list[str]] = [[] for _ in streams]
    ended: list[ChatCompletionResult | None] = [None for _ in streams]
    outcome = "disconnected"
    items = _merged(firsts, streams)
    try:
        for index in range(len(streams)):
            yield chunk.delta({"role": "assistant", "content": ""}, index)
        async for index, item in items:
            if isinstance(item, ChatCompletionResult):
                if item.tool_calls:  # the endpoint's calls arrive whole: one delta carries them all
                    calls = wire_message(ChatMessage("assistant", "", item.tool_calls))["tool_calls"]
                    deltas = [{"index": i, **call} for i, call in enumerate(calls)]
                    yield chunk.delta({"tool_calls": deltas}, index)
                yield chunk.finish(item.finish_reason, index)
                _meter(state, caller, model, item.prompt_tokens, item.completion_tokens)
                ended[index] = item
                continue
            sent[index].append(item)
            yield chunk.delta({"content": item}, index)
        if body.stream_options and body.stream_options.include_usage:
            results = [result for result in ended if result is not None]
            prompt, completion = (
                sum(r.prompt_tokens for r in results),
                sum(r.completion_tokens for r in results),
            )
            yield chunk.usage(prompt, completion)
        yield chunk.done()
        outcome = "ok"
    except InferenceFailure as err:
        outcome = err.type or "error"
        yield _sse(openai_error_body(err.status, err.type or "EndpointError", str(err.message)))
        yield chunk.done()
    finally:
        # Charged before anything is awaited: a client that went away cancels this task, and every
        # await in this block would then raise again at once (anyio's cancel scope), skipping the rest.
        for index, result in enumerate(ended):
            if result is None:  # what was generated before the end is still metered
                generated = estimate_tokens("".join(sent[index]))
                _meter(state, caller, model, estimate_prompt_tokens(messages), generated)
        COMPLETIONS.labels("one-shot", "true", model, outcome).inc()
        with anyio.CancelScope(shield=True):
            await items.aclose()
            for each in streams:
                await each.aclose()  # a client that went away stops the endpoint's generation too


# ---- durable -------------------------------------------------------------------------------


async def _durable(
    state: AppState,
    caller: Principal,
    body: ChatCompletionRequest,
    conversation_id: str,
    messages: list[ChatMessage],
    idempotency_key: str | None,
) -> Any:
    _check_durable(conversation_id, messages)
    system = "\n\n".join(m.content for m in messages if m.role == "system") or None
    start = start_operation(
        state.settings.conversation,
        tenant=caller.tenant,
        conversation_id=conversation_id,
        model=body.model,
        join_existing=True,  # every turn may be the first: start the conversation or join it
        system_prompt=system,
        params=body.params(),
        principal=body.user or caller.subject,
    )
    turn = ChatTurn(
        history=[m for m in messages if m.role != "system"],
        model=body.model,
        params=body.turn_params(),  # recorded with the turn; the conversation keeps only params()
        stream_channel=uuid.uuid4().hex if body.stream else None,
    )
    return await _run_turn(state, caller, body, body.model, conversation_id, start, turn, idempotency_key)


async def _assistant_turn(
    state: AppState,
    session: AsyncSession,
    caller: Principal,
    body: ChatCompletionRequest,
    ref: AssistantRef,
    conversation_id: str | None,
    messages: list[ChatMessage],
    idempotency_key: str | None,
) -> Any:
    """A turn answered by an assistant. A new conversation is started on the version that serves the
    user (the one asked for, their experiment arm's, or the live one); a running one keeps its version.
    The version's instructions and params stand in for the request's system messages and params."""
    tenant, user = caller.tenant, body.user or caller.subject
    if conversation_id is None:
        conversation_id = (
            uuid.uuid5(uuid.NAMESPACE_URL, f"lcp:{tenant}:chat:{idempotency_key}").hex
            if idempotency_key
            else uuid.uuid4().hex
        )
    _check_durable(conversation_id, messages)
    start = None
    if await crud.get_conversation(session, tenant=tenant, conversation_id=conversation_id) is None:
        binding = await assistant_binding(session, tenant, ref, user, state.gateway.routes)
        start = start_operation(
            state.settings.conversation,
            tenant=tenant,
            conversation_id=conversation_id,
            model=binding.spec.model,
            join_existing=True,
            system_prompt=binding.spec.instructions or None,
            params=dict(binding.spec.params),
            assistant=binding,
            principal=user,
        )
    turn = ChatTurn(
        history=[m for m in messages if m.role != "system"],
        # The version's params stand; only the turn's own response_format is the request's.
        params={k: v for k, v in body.turn_params().items() if k == "response_format"},
        stream_channel=uuid.uuid4().hex if body.stream else None,
        assistant_id=ref.id,
    )
    label = f"{ASSISTANT_MODEL_PREFIX}{ref.id}"
    asked = body.model or label  # the reply names the assistant as asked for; its version is a header
    return await _run_turn(
        state, caller, body, label, conversation_id, start, turn, idempotency_key, answered_as=asked
    )


def _check_durable(conversation_id: str, messages: list[ChatMessage]) -> None:
    """Refuse before anything starts what the conversation's workflow would refuse after starting."""
    if not _CONVERSATION_ID.match(conversation_id):
        raise ApiError(
            400,
            "InvalidConversationId",
            "the conversation id must be 1-100 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit",
            param="X-Conversation-Id",
        )
    if unsupported := sorted({m.role for m in messages} - {"system", "user", "assistant"}):
        raise ApiError(
            400,
            "InvalidMessage",
            f"durable conversations take user, assistant and system messages, not {', '.join(unsupported)}",
            param="messages",
        )
    # What the workflow's validator would refuse, refused here: a refused turn starts no conversation.
    if [m.role for m in messages if m.role != "system"][-1:] != ["user"]:
        raise ApiError(
            422, "InvalidMessage", "the last message must be the user's new message", param="messages"
        )


async def _run_turn(
    state: AppState,
    caller: Principal,
    body: ChatCompletionRequest,
    model: str,
    conversation_id: str,
    start: WithStartWorkflowOperation[Any, Any] | None,
    turn: ChatTurn,
    idempotency_key: str | None,
    answered_as: str | None = None,
) -> Any:
    """Send the turn to the conversation's workflow (started first when `start` is given) and answer
    with the recorded reply, whole or streamed. `model` names the request in metrics; `answered_as`
    (an assistant's name as the client gave it) the reply, else the model that wrote it."""
    key = update_id("chat", idempotency_key)
    handle = state.temporal.get_workflow_handle(workflow_id(caller.tenant, conversation_id))
    headers = {"X-Conversation-Id": conversation_id, "X-Lcp-Mode": "durable"}
    target = f"/v1/chat/completions conversation={conversation_id}"
    keyed = idempotent(state, caller.tenant, idempotency_key, "POST", target, body.model_dump(mode="json"))
    if turn.stream_channel is None:
        errors = _conversation_errors(state, start, conversation_id, model, "false")
        async with state.turns.slot(caller.tenant) as slot, keyed as repeat, errors:
            call = (
                state.temporal.execute_update_with_start_workflow(
                    ConversationWorkflow.chat, turn, start_workflow_operation=start, id=key
                )
                if start
                else handle.execute_update(ConversationWorkflow.chat, turn, id=key)
            )
            result: TurnResult = await metered_turn(state, caller, call, slot, charge=not repeat, model=model)
        reply = result.reply
        COMPLETIONS.labels("durable", "false", model, "ok").inc()
        shown = answered_as or reply.model or model
        content = _completion(f"chatcmpl-{reply.id}", shown, [_Reply(reply.content, reply)])
        if reply.assistant_version:
            headers["X-Assistant-Version"] = reply.assistant_version
        return JSONResponse(content, headers={**headers, "X-Message-Id": reply.id})

    async with state.turns.slot(caller.tenant) as slot:  # given back unless the turn below is followed
        subscription = state.relay.subscribe(turn.stream_channel)
        queue = await subscription.__aenter__()
        try:
            async with keyed as repeat, _conversation_errors(state, start, conversation_id, model, "true"):
                accepted = WorkflowUpdateStage.ACCEPTED  # refusals are HTTP errors, not SSE
                update: WorkflowUpdateHandle[TurnResult] = await (
                    state.temporal.start_update_with_start_workflow(
                        ConversationWorkflow.chat,
                        turn,
                        start_workflow_operation=start,
                        id=key,
                        wait_for_stage=accepted,
                    )
                    if start
                    else handle.start_update(ConversationWorkflow.chat, turn, id=key, wait_for_stage=accepted)
                )
        except BaseException:
            await subscription.__aexit__(None, None, None)
            raise
        # The reply is charged when the turn ends, even if the client has gone by then (the turn goes on).
        ending: asyncio.Future[TurnResult] = asyncio.ensure_future(update.result())
        slot.follow(ending, counted=not repeat)
    if not repeat:
        charge_when_done(state, caller, ending, model)
    return StreamingResponse(
        _durable_events(
            answered_as or model, conversation_id, ending, queue, subscription, body, keep=not repeat
        ),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **headers},
    )


async def _durable_events(
    model: str,
    conversation_id: str,
    result: "asyncio.Future[TurnResult]",
    queue: "asyncio.Queue[Delta]",
    subscription: contextlib.AbstractAsyncContextManager[Any],
    body: ChatCompletionRequest,
    keep: bool,
) -> AsyncIterator[str]:
    """Relay the reply's tokens while the workflow's turn runs; the recorded reply is the truth,
    so whatever the relay did not bring is sent from it at the end. A client that goes away does
    not stop the turn: the reply is recorded whole either way, and charged when it is (`keep`: the
    wait for `result` goes on after the client left, for that charge)."""
    chunk = _Chunks(f"chatcmpl-{uuid.uuid4().hex}", model)
    sent: list[str] = []
    attempt: int | None = None
    outcome = "disconnected"

    def take(delta: Delta) -> str | None:
        nonlocal attempt
        attempt = delta.attempt if attempt is None else attempt
        if delta.attempt != attempt:  # a retried call after a failure: its text is checked at the end
            return None
        sent.append(delta.text)
        return chunk.delta({"content": delta.text})

    try:
        yield chunk.delta({"role": "assistant", "content": ""})
        while not result.done():
            waiting = asyncio.ensure_future(queue.get())
            either: set[asyncio.Future[Any]] = {waiting, result}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if waiting.done():
                if event := take(waiting.result()):
                    yield event
            else:
                waiting.cancel()
        while not queue.empty():
            if event := take(queue.get_nowait()):
                yield event
        try:
            turn: TurnResult = result.result()
        except WorkflowUpdateFailedError as err:
            failure = from_update_failure(err)
            outcome = failure.type
            yield _sse(openai_error_body(failure.status, failure.type, failure.message))
            yield chunk.done()
            return
        reply, streamed = turn.reply, "".join(sent)
        if not reply.content.startswith(streamed):
            outcome = "ReplyDiverged"
            message = (
                "the model call was retried after a failure and the recorded reply differs from what "
                f"was streamed: read it with GET /v1/conversations/{conversation_id}"
            )
            yield _sse(openai_error_body(502, "ReplyDiverged", message))
            yield chunk.done()
            return
        if rest := reply.content[len(streamed) :]:
            yield chunk.delta({"content": rest})
        yield chunk.finish("stop")
        if body.stream_options and body.stream_options.include_usage:
            yield chunk.usage(reply.prompt_tokens or 0, reply.completion_tokens or 0)
        yield chunk.done()
        outcome = "ok"
    finally:
        if not keep:
            result.cancel()  # stops waiting here; the turn itself goes on in the workflow
        COMPLETIONS.labels("durable", "true", model, outcome).inc()
        with anyio.CancelScope(shield=True):  # a client that went away cancels every other await here
            await subscription.__aexit__(None, None, None)


@contextlib.asynccontextmanager
async def _conversation_errors(
    state: AppState, start: Any, conversation_id: str, model: str, stream: str
) -> AsyncIterator[None]:
    """Temporal's answers to a durable turn, as API errors."""
    try:
        yield
    except WorkflowUpdateFailedError as err:
        failure = from_update_failure(err)
        COMPLETIONS.labels("durable", stream, model, failure.type).inc()
        raise failure from err
    except (WorkflowAlreadyStartedError, RPCError) as err:
        if start is not None:
            with contextlib.suppress(Exception):
                await start.workflow_handle()  # collect the start's own failure, reported here
        closed = RPCStatusCode.ALREADY_EXISTS if start is not None else RPCStatusCode.NOT_FOUND
        if isinstance(err, RPCError) and err.status != closed:
            raise temporal_unavailable(err) from err
        COMPLETIONS.labels("durable", stream, model, "ConversationClosed").inc()
        raise conversation_closed(conversation_id) from err


# ---- shapes --------------------------------------------------------------------------------


def _given(conversation_id: str | None) -> str | None:
    """A conversation id, unless it is empty or a placeholder an older LibreChat left unfilled."""
    return conversation_id if conversation_id and "{{" not in conversation_id else None


def _metadata_conversation_id(body: ChatCompletionRequest) -> str | None:
    value = (body.metadata or {}).get("conversation_id")
    return str(value) if value else None


def _messages(body: ChatCompletionRequest) -> list[ChatMessage]:
    converted = []
    for index, message in enumerate(body.messages):
        if isinstance(message.content, list) and any(part.type != "text" for part in message.content):
            raise ApiError(
                400, "UnsupportedContent", "only text content parts are supported", param=f"messages.{index}"
            )
        role = "system" if message.role == "developer" else message.role
        calls = [
            {"id": call.id, "name": call.function.name, "arguments": call.function.arguments}
            for call in message.tool_calls or []
        ]
        converted.append(ChatMessage(role, message.text(), calls or None, message.tool_call_id))
    return converted


def _meter(state: AppState, caller: Principal, model: str, prompt: int, completion: int) -> None:
    meter(state, caller, model, prompt, completion)


def gateway_error(err: InferenceFailure) -> ApiError:
    headers = {"Retry-After": str(max(1, int(err.retry_after.total_seconds())))} if err.retry_after else None
    return ApiError(err.status, err.type or "EndpointError", str(err.message), headers=headers)


@dataclass
class _Reply:
    """A recorded reply as a choice: the text, and the token counts of the record."""

    content: str
    usage: Any
    finish_reason: str = "stop"
    tool_calls: list[dict[str, Any]] | None = None

    @property
    def prompt_tokens(self) -> int:
        return int(self.usage.prompt_tokens or 0)

    @property
    def completion_tokens(self) -> int:
        return int(self.usage.completion_tokens or 0)


def _completion(
    completion_id: str, model: str, choices: Sequence[ChatCompletionResult | _Reply]
) -> dict[str, Any]:
    """A chat.completion of one choice or several (n), whose usage adds up every choice's call."""
    prompt = sum(choice.prompt_tokens for choice in choices)
    completion = sum(choice.completion_tokens for choice in choices)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": index,
                "message": wire_message(ChatMessage("assistant", choice.content, choice.tool_calls)),
                "finish_reason": choice.finish_reason,
                "logprobs": None,
            }
            for index, choice in enumerate(choices)
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


class _Chunks:
    """OpenAI's `chat.completion.chunk` events of one streamed reply."""

    def __init__(self, completion_id: str, model: str) -> None:
        self._base = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time())}
        self._model = model

    def delta(self, delta: dict[str, Any], index: int = 0) -> str:
        return self._event([{"index": index, "delta": delta, "finish_reason": None, "logprobs": None}])

    def finish(self, reason: str, index: int = 0) -> str:
        return self._event([{"index": index, "delta": {}, "finish_reason": reason, "logprobs": None}])

    def usage(self, prompt: int, completion: int) -> str:
        totals = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        return self._event([], usage=totals)

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        return _sse({**self._base, "model": self._model, "choices": choices, **extra})

    @staticmethod
    def done() -> str:
        return "data: [DONE]\n\n"
