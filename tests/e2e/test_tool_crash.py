"""A conversation worker SIGKILLed while a tool is handling its call: a non-idempotent tool is never
called twice (the model is told its outcome is unknown); an idempotent one is retried and succeeds."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from temporalio.client import Client

from cli.drills import DrillStack
from policies.assistants import AssistantBinding, AssistantSpec, ToolSpec
from settings import TemporalSettings
from temporal.client import connect
from temporal.constants import CONVERSATIONS_QUEUE
from tests.http_server import serve_in_thread
from tests.waiting import eventually
from workflows.conversation import (
    ConversationInput,
    ConversationWorkflow,
    SendMessage,
    TurnResult,
    workflow_id,
)

TENANT = "drills"
TOOL_BUSY_S = 2.0  # how long the tool takes: the worker is killed meanwhile
TOOL_TIMEOUT_S = 3.0
TURN_TIMEOUT_S = 120.0


class SlowTool:
    """A tool endpoint that takes TOOL_BUSY_S per call and keeps each call's Idempotency-Key by path."""

    def __init__(self, url: str, calls: dict[str, list[str]]) -> None:
        self.url, self.calls = url, calls

    async def until_called(self, path: str) -> None:
        await eventually(lambda: self.calls.get(path), what=f"a call of the tool at /{path}", within=60)


def _slow_tool_app(calls: dict[str, list[str]]) -> FastAPI:
    app = FastAPI()

    @app.post("/{path}")
    async def tool(path: str, request: Request) -> dict[str, Any]:
        calls.setdefault(path, []).append(request.headers.get("idempotency-key", ""))
        await asyncio.sleep(TOOL_BUSY_S)  # not a wait: the tool is slow, so the worker dies mid-call
        return {"table": "booked" if path == "book" else "free", "party": (await request.json())["party"]}

    return app


@pytest.fixture(scope="module")
def slow_tool() -> Iterator[SlowTool]:
    calls: dict[str, list[str]] = {}
    with serve_in_thread(_slow_tool_app(calls)) as url:
        yield SlowTool(url, calls)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory, slow_tool: SlowTool) -> AsyncIterator[DrillStack]:
    stack = DrillStack(Path(tmp_path_factory.mktemp("tool-crash")))
    with pytest.MonkeyPatch.context() as env:
        # The stack's processes inherit this: the tool is on loopback, which the egress fence refuses.
        env.setenv("LCP_EGRESS__ALLOW", json.dumps([slow_tool.url.removeprefix("http://")]))
        try:
            await stack.start()
            yield stack
        finally:
            await asyncio.to_thread(stack.close)


@pytest.fixture(scope="module")
async def temporal(stack: DrillStack) -> Client:
    return await connect(TemporalSettings(address=f"127.0.0.1:{stack.ports['temporal']}"))


def _binding(tool: ToolSpec) -> AssistantBinding:
    spec = AssistantSpec(name="Bookings", model="sim-zero", tools=[tool])
    return AssistantBinding(assistant_id="bookings", version="v1", spec=spec)


async def _turn_through_a_worker_kill(
    stack: DrillStack, temporal: Client, slow_tool: SlowTool, tool: ToolSpec, path: str
) -> TurnResult:
    """Start a conversation on the stack's worker, ask for `tool`, SIGKILL the worker while the tool is
    busy with the call, start the worker again, and wait for the turn."""
    conversation_id = uuid.uuid4().hex
    handle = await temporal.start_workflow(
        ConversationWorkflow.run,
        ConversationInput(TENANT, conversation_id, model="sim-zero", assistant=_binding(tool)),
        id=workflow_id(TENANT, conversation_id),
        task_queue=CONVERSATIONS_QUEUE,
    )
    turn = asyncio.create_task(
        handle.execute_update(ConversationWorkflow.send_message, SendMessage(f'{tool.name} {{"party": 4}}'))
    )
    await slow_tool.until_called(path)
    stack.kill("conversation-worker")
    stack.start_process("conversation-worker")
    result: TurnResult = await asyncio.wait_for(turn, TURN_TIMEOUT_S)
    return result


async def test_a_non_idempotent_tool_is_not_called_again_after_a_worker_crash(
    stack: DrillStack, temporal: Client, slow_tool: SlowTool
) -> None:
    tool = ToolSpec(
        name="book_table",
        parameters={"type": "object", "properties": {"party": {"type": "integer"}}},
        url=f"{slow_tool.url}/book",
        timeout_s=TOOL_TIMEOUT_S,
        idempotent=False,
    )
    turn = await _turn_through_a_worker_kill(stack, temporal, slow_tool, tool, "book")
    assert len(slow_tool.calls["book"]) == 1, "a non-idempotent tool was called twice"
    [call] = turn.reply.tool_calls or []
    assert call["ok"] is False
    assert turn.reply.content.startswith("Tool results: book_table failed: ")
    assert "outcome is unknown" in turn.reply.content and "not retried" in turn.reply.content


async def test_an_idempotent_tool_is_retried_after_a_worker_crash_and_succeeds(
    stack: DrillStack, temporal: Client, slow_tool: SlowTool
) -> None:
    tool = ToolSpec(
        name="table_status",
        parameters={"type": "object", "properties": {"party": {"type": "integer"}}},
        url=f"{slow_tool.url}/status",
        timeout_s=TOOL_TIMEOUT_S,
        idempotent=True,
    )
    turn = await _turn_through_a_worker_kill(stack, temporal, slow_tool, tool, "status")
    keys = slow_tool.calls["status"]
    assert len(keys) == 2 and keys[0] == keys[1], "the retry did not repeat the same Idempotency-Key"
    [call] = turn.reply.tool_calls or []
    assert call["ok"] is True
    assert turn.reply.content == 'Tool results: table_status → {"table":"free","party":4}'
