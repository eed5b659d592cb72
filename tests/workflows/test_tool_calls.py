"""Conversations whose assistant declares tools: the tool loop against the real simulator and a real HTTP
tool, invalid calls, failures, the round limit, streaming, and what later turns see."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, Worker

from activities.egress import EgressRules, fenced_client
from activities.inference import ChatCompletionInput, ChatCompletionResult, ChatMessage, InferenceActivities
from activities.store import StoreActivities
from activities.tools import ToolActivities
from inference.gateway import Gateway, load_routes, make_http_client
from inference.token_relay import MemoryRelay
from policies.assistants import AssistantBinding, AssistantSpec, ToolSpec
from settings import Settings
from store import crud
from store.db import make_engine, make_sessionmaker
from tests.http_server import serve_in_thread
from workers.conversations import conversation_worker
from workflows.conversation import (
    ChatTurn,
    ConversationInput,
    ConversationWorkflow,
    SendMessage,
    TurnResult,
    workflow_id,
)

TENANT = "default"
pytestmark = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)

ORDER_SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}},
    "required": ["order_id"],
}


@dataclass
class ToolServer:
    """HTTP tools that record every request: /orders answers, /broken always fails with 503, /flaky fails
    with 503 the first time each Idempotency-Key comes."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)

    def to(self, path: str) -> list[dict[str, Any]]:
        return [request for request in self.requests if request["path"] == path]


def _tool_app(server_requests: list[dict[str, Any]]) -> FastAPI:
    app = FastAPI()

    @app.post("/{path}")
    async def tool(path: str, request: Request) -> Response:
        key = request.headers.get("idempotency-key")
        seen = [r for r in server_requests if r["path"] == path and r["idempotency_key"] == key]
        body = await request.json()
        server_requests.append(
            {
                "path": path,
                "body": body,
                "idempotency_key": key,
                "authorization": request.headers.get("authorization"),
            }
        )
        if path == "broken" or (path == "flaky" and not seen):
            return PlainTextResponse("upstream is down", status_code=503)
        return JSONResponse({"order_id": body.get("order_id"), "state": "shipped"})

    return app


@pytest.fixture(scope="module")
def tool_server() -> Iterator[ToolServer]:
    requests: list[dict[str, Any]] = []
    with serve_in_thread(_tool_app(requests)) as url:
        yield ToolServer(url, requests)


@pytest.fixture
def settings(settings: Settings, tool_server: ToolServer) -> Settings:
    """The suite's settings, with the egress allow-list opening the tool server (it is on loopback)."""
    allow = [tool_server.url.removeprefix("http://")]
    return settings.model_copy(update={"egress": settings.egress.model_copy(update={"allow": allow})})


def lookup_order(server: ToolServer, path: str = "orders", **overrides: Any) -> ToolSpec:
    return ToolSpec(
        name="lookup_order",
        description="Where an order is",
        parameters=ORDER_SCHEMA,
        url=f"{server.url}/{path}",
        **overrides,
    )


def binding(*tools: ToolSpec, max_tool_rounds: int = 4) -> AssistantBinding:
    spec = AssistantSpec(name="Support", model="sim-zero", tools=list(tools), max_tool_rounds=max_tool_rounds)
    return AssistantBinding(assistant_id="support", version="v1", spec=spec)


class RecordingModel:
    """The real inference activity, keeping what each call asked for and what it got."""

    def __init__(self, inner: InferenceActivities) -> None:
        self.inner = inner
        self.requests: list[ChatCompletionInput] = []
        self.results: list[ChatCompletionResult] = []

    @activity.defn(name="inference.chat_completion")
    async def chat_completion(self, request: ChatCompletionInput) -> ChatCompletionResult:
        self.requests.append(request)
        result = await self.inner.chat_completion(request)
        self.results.append(result)
        return result


class ToolHappyModel:
    """A model that calls the tool `name` on every request (writing `preamble` first), until tool_choice
    "none" makes it answer."""

    def __init__(self, name: str, preamble: str = "") -> None:
        self.name, self.preamble = name, preamble
        self.requests: list[ChatCompletionInput] = []

    @activity.defn(name="inference.chat_completion")
    async def chat_completion(self, request: ChatCompletionInput) -> ChatCompletionResult:
        self.requests.append(request)
        if request.tool_choice == "none":
            return ChatCompletionResult("done with tools", "fake", "stop", 1, 1, 1.0)
        call = {"id": f"call_{len(self.requests)}", "name": self.name, "arguments": '{"order_id": "A1"}'}
        return ChatCompletionResult(self.preamble, "fake", "tool_calls", 10, 2, 1.0, tool_calls=[call])


@dataclass
class Stack:
    client: Client
    settings: Settings
    task_queue: str
    relay: MemoryRelay


@asynccontextmanager
async def running(
    client: Client, settings: Settings, model: Any, relay: MemoryRelay | None = None
) -> AsyncIterator[Stack]:
    """A conversation worker whose inference activity is `model`, with the real store and tool
    activities."""
    task_queue = f"tools-{uuid.uuid4().hex[:8]}"
    relay = relay or MemoryRelay()
    engine = make_engine(settings.resolved_database_url())
    store = StoreActivities(make_sessionmaker(engine), single_writer=True)
    async with fenced_client(EgressRules(settings.egress.allow)) as tool_http:
        tools = ToolActivities(
            tool_http,
            settings.resolved_secrets_dir(),
            settings.tools.max_result_chars,
            settings.tools.allowed_hosts,
        )
        worker = Worker(
            client,
            task_queue=task_queue,
            workflows=[ConversationWorkflow],
            activities=[model.chat_completion, store.project_conversation, tools.call],
        )
        async with worker:
            yield Stack(client, settings, task_queue, relay)
    await engine.dispose()


def real_model(settings: Settings, http: httpx.AsyncClient, relay: MemoryRelay) -> RecordingModel:
    routes = load_routes(settings.models_file, llm_url=settings.llm_url)
    return RecordingModel(InferenceActivities(Gateway(http, routes), relay))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client() as client:
        yield client


@pytest.fixture
def secrets(settings: Settings) -> Settings:
    tenant_secrets = settings.resolved_secrets_dir() / TENANT  # a tenant's secrets are in its own folder
    tenant_secrets.mkdir(parents=True)
    (tenant_secrets / "orders").write_text("Bearer orders-token\n")
    return settings


async def start(stack: Stack, assistant: AssistantBinding | None) -> tuple[WorkflowHandle[Any, Any], str]:
    conversation_id = uuid.uuid4().hex
    handle = await stack.client.start_workflow(
        ConversationWorkflow.run,
        ConversationInput(
            tenant=TENANT, conversation_id=conversation_id, model="sim-zero", assistant=assistant
        ),
        id=workflow_id(TENANT, conversation_id),
        task_queue=stack.task_queue,
    )
    return handle, conversation_id


async def say(handle: WorkflowHandle[Any, Any], text: str) -> TurnResult:
    result: TurnResult = await handle.execute_update(ConversationWorkflow.send_message, SendMessage(text))
    return result


async def replays(handle: WorkflowHandle[Any, Any]) -> None:
    """The run's history replays without nondeterminism (raises otherwise)."""
    replayer = Replayer(workflows=[ConversationWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(await handle.fetch_history())


async def test_a_tool_turn_runs_the_tool_records_it_and_later_turns_see_it(
    client: Client, secrets: Settings, tool_server: ToolServer, http: httpx.AsyncClient
) -> None:
    relay = MemoryRelay()
    model = real_model(secrets, http, relay)
    tool = lookup_order(tool_server, auth_secret="orders")
    async with running(client, secrets, model, relay) as stack:
        handle, conversation_id = await start(stack, binding(tool))
        turn = await say(handle, 'Where is my order? lookup_order {"order_id": "A1"}')

        [call] = turn.reply.tool_calls or []
        result = '{"order_id":"A1","state":"shipped"}'
        assert {key: call[key] for key in ("name", "arguments", "ok", "result")} == {
            "name": "lookup_order",
            "arguments": '{"order_id": "A1"}',
            "ok": True,
            "result": result,
        }
        assert call["id"].startswith("call_") and call["duration_ms"] > 0
        assert turn.reply.content == f"Tool results: lookup_order → {result}"

        [request] = tool_server.to("orders")[-1:]
        assert request["body"] == {"order_id": "A1"}
        assert request["authorization"] == "Bearer orders-token"
        assert request["idempotency_key"] == f"{workflow_id(TENANT, conversation_id)}/{call['id']}"

        first, second = model.requests
        assert first.tools == [tool.openai_tool()] and first.tool_choice is None
        assert [(m.role, m.tool_call_id) for m in second.messages[-2:]] == [
            ("assistant", None),
            ("tool", call["id"]),
        ]
        assert second.messages[-1].content == result
        assert turn.reply.prompt_tokens == sum(r.prompt_tokens for r in model.results)
        assert turn.reply.completion_tokens == sum(r.completion_tokens for r in model.results)

        later = await say(handle, "[echo] thanks")
        assert later.reply.content == "thanks" and later.reply.tool_calls is None
        seen = [(m.role, m.content, m.tool_call_id) for m in model.requests[-1].messages]
        assert seen[-5:] == [
            ("user", 'Where is my order? lookup_order {"order_id": "A1"}', None),
            ("assistant", "", None),
            ("tool", result, call["id"]),
            ("assistant", turn.reply.content, None),
            ("user", "[echo] thanks", None),
        ]
        assert model.requests[-1].messages[-4].tool_calls == [
            {"id": call["id"], "name": "lookup_order", "arguments": '{"order_id": "A1"}'}
        ]
        await replays(handle)

    engine = make_engine(secrets.resolved_database_url())
    async with make_sessionmaker(engine)() as session:
        messages = await crud.list_messages(session, tenant=TENANT, conversation_id=conversation_id)
        events = await crud.list_events(session, stream=workflow_id(TENANT, conversation_id))
    await engine.dispose()
    stored = {m.id: m for m in messages}
    assert stored[turn.reply.id].tool_calls == turn.reply.tool_calls
    assert stored[turn.reply.id].assistant_version == "v1"
    [called] = [event for event in events if event.type == "tool.called"]
    assert called.payload == {
        "name": "lookup_order",
        "ok": True,
        "duration_ms": call["duration_ms"],
        "error_type": "",
    }


async def test_invalid_arguments_go_back_to_the_model_and_the_tool_is_not_called(
    client: Client, settings: Settings, tool_server: ToolServer, http: httpx.AsyncClient
) -> None:
    relay = MemoryRelay()
    async with running(client, settings, real_model(settings, http, relay), relay) as stack:
        handle, _ = await start(stack, binding(lookup_order(tool_server, "invalid-args")))
        turn = await say(handle, 'lookup_order {"order_id": 5}')
    assert tool_server.to("invalid-args") == []
    [call] = turn.reply.tool_calls or []
    assert call["ok"] is False and "invalid arguments" in call["result"] and "$.order_id" in call["result"]
    assert turn.reply.content.startswith("Tool results: lookup_order failed: ")
    assert "5 is not of type 'string'" in turn.reply.content


@pytest.mark.parametrize("max_tool_rounds", [0, 2])
async def test_after_max_tool_rounds_the_model_must_answer_in_text(
    client: Client, settings: Settings, tool_server: ToolServer, max_tool_rounds: int
) -> None:
    model = ToolHappyModel("lookup_order", preamble="Checking. ")
    path = f"rounds-{max_tool_rounds}"
    async with running(client, settings, model) as stack:
        handle, _ = await start(
            stack, binding(lookup_order(tool_server, path), max_tool_rounds=max_tool_rounds)
        )
        turn = await say(handle, "lookup_order, again and again")
        await replays(handle)
    assert [r.tool_choice for r in model.requests] == [None] * max_tool_rounds + ["none"]
    assert len(tool_server.to(path)) == max_tool_rounds
    assert turn.reply.content == "Checking. " * max_tool_rounds + "done with tools"  # every round's text
    assert len(turn.reply.tool_calls or []) == max_tool_rounds
    if max_tool_rounds:
        assert (turn.reply.prompt_tokens, turn.reply.completion_tokens) == (10 * max_tool_rounds + 1, 5)
        # Each round's calls and results are in the next round's request.
        assert [m.role for m in model.requests[-1].messages[-4:]] == [
            "assistant",
            "tool",
            "assistant",
            "tool",
        ]


async def test_a_tool_the_assistant_does_not_declare_is_an_error_result(
    client: Client, settings: Settings, tool_server: ToolServer
) -> None:
    model = ToolHappyModel("drop_tables")
    async with running(client, settings, model) as stack:
        handle, _ = await start(stack, binding(lookup_order(tool_server, "undeclared"), max_tool_rounds=1))
        turn = await say(handle, "do something")
    [call] = turn.reply.tool_calls or []
    assert call["ok"] is False and "there is no tool named 'drop_tables'" in call["result"]
    assert "lookup_order" in call["result"]
    assert tool_server.to("undeclared") == [] and turn.reply.content == "done with tools"


async def test_a_failing_tool_is_retried_only_when_idempotent(
    client: Client, settings: Settings, tool_server: ToolServer, http: httpx.AsyncClient
) -> None:
    relay = MemoryRelay()
    broken = lookup_order(tool_server, "broken")
    flaky = ToolSpec(
        name="order_status", parameters=ORDER_SCHEMA, url=f"{tool_server.url}/flaky", idempotent=True
    )
    async with running(client, settings, real_model(settings, http, relay), relay) as stack:
        handle, _ = await start(stack, binding(broken, flaky))
        failed = await say(handle, 'lookup_order {"order_id": "B2"}')
        retried = await say(handle, 'order_status {"order_id": "C3"}')
        await replays(handle)

    assert len(tool_server.to("broken")) == 1  # not idempotent: never called twice
    [call] = failed.reply.tool_calls or []
    assert call["ok"] is False and "HTTP 503" in call["result"]
    assert "lookup_order failed" in failed.reply.content and "outcome is unknown" in failed.reply.content

    attempts = tool_server.to("flaky")
    assert len(attempts) == 2 and attempts[0]["idempotency_key"] == attempts[1]["idempotency_key"]
    assert (retried.reply.tool_calls or [])[0]["ok"] is True
    assert retried.reply.content == 'Tool results: order_status → {"order_id":"C3","state":"shipped"}'


async def test_a_streamed_tool_turn_relays_only_the_final_text(
    client: Client, settings: Settings, tool_server: ToolServer, http: httpx.AsyncClient
) -> None:
    relay = MemoryRelay()
    async with running(client, settings, real_model(settings, http, relay), relay) as stack:
        handle, _ = await start(stack, binding(lookup_order(tool_server)))
        async with relay.subscribe("turn-1") as deltas:
            turn: TurnResult = await handle.execute_update(
                ConversationWorkflow.chat,
                ChatTurn(
                    history=[ChatMessage("user", 'lookup_order {"order_id": "D4"}')], stream_channel="turn-1"
                ),
            )
            relayed = []
            while not deltas.empty():
                relayed.append(deltas.get_nowait())
    assert turn.reply.tool_calls and turn.reply.content.startswith("Tool results: lookup_order → ")
    assert "".join(delta.text for delta in relayed) == turn.reply.content
    assert {delta.attempt for delta in relayed} == {1}


async def test_without_tools_the_turn_asks_the_model_once_as_before(
    client: Client, settings: Settings, http: httpx.AsyncClient
) -> None:
    relay = MemoryRelay()
    model = real_model(settings, http, relay)
    async with running(client, settings, model, relay) as stack:
        for assistant in (None, binding()):
            handle, _ = await start(stack, assistant)
            turn = await say(handle, "[echo] lookup_order please")
            assert turn.reply.content == "lookup_order please" and turn.reply.tool_calls is None
            history = await handle.fetch_history()
            scheduled = [e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")]
            assert len(scheduled) == 1
    assert all(r.tools is None and r.tool_choice is None for r in model.requests)


async def test_the_conversation_worker_runs_builtin_tools(client: Client, settings: Settings) -> None:
    calculator = ToolSpec(
        name="calculator",
        kind="builtin",
        builtin="calculator",
        parameters={
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    )
    settings.conversation.task_queue = f"tools-{uuid.uuid4().hex[:8]}"
    async with conversation_worker(client, settings) as worker, worker:
        stack = Stack(client, settings, settings.conversation.task_queue, MemoryRelay())
        handle, _ = await start(stack, binding(calculator))
        turn = await asyncio.wait_for(say(handle, 'calculator {"expression": "6 * 7"}'), 60)
    assert turn.reply.content == 'Tool results: calculator → {"expression": "6 * 7", "result": 42}'
    assert json.loads((turn.reply.tool_calls or [])[0]["result"])["result"] == 42
