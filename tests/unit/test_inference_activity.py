"""The inference activity against the simulator over HTTP: replies, and how each failure is classed."""

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.inference import ChatCompletionInput, ChatMessage, InferenceActivities
from inference.gateway import Gateway, make_http_client
from inference.messages import ChatCompletionResult
from inference.token_relay import MemoryRelay
from policies.models import ModelRoute
from tests.http_server import serve_in_thread


@pytest.fixture
async def inference(simulator: str) -> AsyncIterator[InferenceActivities]:
    routes = {
        "sim-zero": ModelRoute("sim-zero", simulator, "sim-zero", timeout_s=0.5),
        "renamed": ModelRoute("renamed", simulator, "sim-zero"),
        "missing-upstream": ModelRoute("missing-upstream", simulator, "no-such-model"),
        "nobody-home": ModelRoute("nobody-home", "http://127.0.0.1:9/v1", "x"),
    }
    async with make_http_client() as http:
        yield InferenceActivities(Gateway(http, routes))


@pytest.fixture
async def faults(simulator: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=simulator.removesuffix("/v1")) as admin:
        yield admin
        await admin.delete("/admin/faults")


def _ask(model: str = "sim-zero", text: str = "[echo] hi") -> ChatCompletionInput:
    return ChatCompletionInput(model=model, messages=[ChatMessage("user", text)], params={"seed": 1})


async def _run(inference: InferenceActivities, request: ChatCompletionInput) -> ChatCompletionResult:
    return await ActivityEnvironment().run(inference.chat_completion, request)


async def test_reply_usage_and_model_name(inference: InferenceActivities) -> None:
    result = await _run(inference, _ask("renamed"))
    assert result.content == "hi"
    assert result.model == "renamed"  # our name for it, not the upstream's
    assert result.prompt_tokens > 0 and result.completion_tokens == 1


async def test_unknown_model_fails_at_once_naming_the_known_ones(inference: InferenceActivities) -> None:
    with pytest.raises(ApplicationError) as err:
        await _run(inference, _ask("gpt-7"))
    assert err.value.non_retryable and err.value.type == "UnknownModel"
    assert "sim-zero" in err.value.message


async def test_endpoint_rejection_is_final_with_its_message(inference: InferenceActivities) -> None:
    with pytest.raises(ApplicationError) as err:
        await _run(inference, _ask("missing-upstream"))
    assert err.value.non_retryable and err.value.type == "EndpointRejected"
    assert "HTTP 404" in err.value.message and "no-such-model" in err.value.message


@pytest.mark.parametrize("status", [400, 401, 422])
async def test_client_errors_are_final(
    inference: InferenceActivities, faults: httpx.AsyncClient, status: int
) -> None:
    await faults.put("/admin/faults", json={"fail_next": 1, "fail_next_status": status})
    with pytest.raises(ApplicationError) as err:
        await _run(inference, _ask())
    assert err.value.non_retryable and f"HTTP {status}" in err.value.message


async def test_server_errors_retry(inference: InferenceActivities, faults: httpx.AsyncClient) -> None:
    await faults.put("/admin/faults", json={"fail_next": 1, "fail_next_status": 503})
    with pytest.raises(ApplicationError) as err:
        await _run(inference, _ask())
    assert not err.value.non_retryable and err.value.type == "EndpointError"


async def test_429_retries_after_the_endpoints_retry_after(
    inference: InferenceActivities, faults: httpx.AsyncClient
) -> None:
    await faults.put("/admin/faults", json={"fail_next": 1, "fail_next_status": 429})
    with pytest.raises(ApplicationError) as err:
        await _run(inference, _ask())
    assert not err.value.non_retryable and err.value.type == "EndpointBusy"
    assert err.value.next_retry_delay == timedelta(seconds=1)


async def test_timeouts_and_unreachable_endpoints_retry(
    inference: InferenceActivities, faults: httpx.AsyncClient
) -> None:
    await faults.put("/admin/faults", json={"timeout_rate": 1.0})
    with pytest.raises(ApplicationError) as err:
        await _run(inference, _ask())  # the route's read timeout is 0.5 s
    assert not err.value.non_retryable and err.value.type == "EndpointTimeout"

    with pytest.raises(ApplicationError) as err:
        await _run(inference, _ask("nobody-home"))
    assert not err.value.non_retryable and err.value.type == "EndpointUnavailable"


def _preamble_then_tool_call_endpoint() -> FastAPI:
    """An endpoint that streams some text, then a tool call (as GPT-4-class models do), in OpenAI's chunks."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions() -> StreamingResponse:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return (
                f"data: {json.dumps({'id': 'c', 'object': 'chat.completion.chunk', 'choices': [choice]})}\n\n"
            )

        call = {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": "lookup", "arguments": "{}"},
        }
        events = [
            chunk({"role": "assistant", "content": "Let me "}),
            chunk({"content": "check. "}),
            chunk({"tool_calls": [call]}),
            chunk({}, "tool_calls"),
            "data: [DONE]\n\n",
        ]
        return StreamingResponse(iter(events), media_type="text/event-stream")

    return app


class _BatchingRelay(MemoryRelay):
    batch_s = 3600.0  # holds every delta until the reply ends, as a slow PostgreSQL batch would


@pytest.mark.parametrize("relay_class", [MemoryRelay, _BatchingRelay])
async def test_a_streamed_tool_call_round_relays_exactly_the_text_it_records(
    relay_class: type[MemoryRelay],
) -> None:
    relay = relay_class()
    with serve_in_thread(_preamble_then_tool_call_endpoint()) as url:
        async with make_http_client() as http:
            inference = InferenceActivities(Gateway(http, {"m": ModelRoute("m", f"{url}/v1", "m")}), relay)
            request = _ask("m", "where is my order?")
            request.stream_channel = "turn"
            async with relay.subscribe("turn") as deltas:
                result = await _run(inference, request)
                relayed = "".join(deltas.get_nowait().text for _ in range(deltas.qsize()))
    assert isinstance(result, ChatCompletionResult)
    assert result.content == relayed == "Let me check. "
    assert result.tool_calls == [{"id": "call_1", "name": "lookup", "arguments": "{}"}]
