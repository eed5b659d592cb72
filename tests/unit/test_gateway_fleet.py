"""The gateway against a fleet of simulator replicas over real HTTP: picking among deployments,
cooldown and return, a retry on another deployment, each kind of fallback, waiting when every
deployment is cooling down, and a replica that dies mid-stream."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from inference.gateway import BROKEN_STREAMS, Gateway, InferenceFailure
from inference.messages import ChatCompletionResult, ChatMessage
from lab.llm_simulator import create_app
from policies.models import parse_routes
from tests.http_server import free_port, serve_in_thread
from tests.waiting import eventually

ASK = [ChatMessage("user", "[echo] hello there friend")]
QUICK = {"allowed_fails": 0, "window_s": 60, "cooldown_s": 0.3}


@pytest.fixture
def replicas() -> Iterator[list[str]]:
    """Three simulator replicas, each its own server (and cache, and faults)."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(serve_in_thread(create_app(seed=i))) for i in range(3)]


def model(name: str, urls: list[str], **fields: Any) -> dict[str, Any]:
    deployments = [{"name": f"r{i}", "base_url": f"{url}/v1"} for i, url in enumerate(urls)]
    return {"name": name, "upstream_model": "sim-zero", "timeout_s": 5, "deployments": deployments, **fields}


@contextlib.asynccontextmanager
async def gateway(*models: dict[str, Any]) -> AsyncIterator[Gateway]:
    async with httpx.AsyncClient() as http:
        gw = Gateway(http, parse_routes({"models": list(models)}))
        try:
            yield gw
        finally:
            await gw.aclose()


def fault(url: str, **settings: Any) -> None:
    httpx.put(f"{url}/admin/faults", json={"model": "sim-zero", **settings}).raise_for_status()


def served(url: str) -> int:
    return int(httpx.get(f"{url}/admin/stats").json()["received"])


async def test_requests_spread_over_the_deployments(replicas: list[str]) -> None:
    async with gateway(model("m", replicas, routing={"strategy": "round_robin"})) as gw:
        answered = [(await gw.complete("m", ASK, {})).deployment for _ in range(6)]
    assert answered == ["r0", "r1", "r2", "r0", "r1", "r2"]
    assert [served(url) for url in replicas] == [2, 2, 2]


async def test_a_failing_deployment_cools_down_and_comes_back(replicas: list[str]) -> None:
    fault(replicas[0], fail_next=1, fail_next_status=429)
    async with gateway(model("m", replicas, routing={"strategy": "round_robin", "cooldown": QUICK})) as gw:
        first = await gw.complete("m", ASK, {})  # r0 answers 429: the request goes on to another
        assert first.deployment in ("r1", "r2") and first.content == "hello there friend"
        route = gw.route("m")
        status = {row["deployment"]: row for row in gw.fleet.status(route)}
        assert status["r0"]["state"] == "cooling_down"
        assert status["r0"]["cooling_down_because"] == "rate_limited"
        during = {(await gw.complete("m", ASK, {})).deployment for _ in range(4)}
        assert "r0" not in during
        await asyncio.sleep(0.35)  # the cooldown's length: r0 comes back by itself
        after = {(await gw.complete("m", ASK, {})).deployment for _ in range(3)}
    assert "r0" in after


async def test_an_unreachable_deployment_costs_the_client_nothing(replicas: list[str]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with gateway(model("m", [dead, *replicas[:1]], routing={"strategy": "round_robin"})) as gw:
        results = [await gw.complete("m", ASK, {}) for _ in range(4)]
        assert {r.deployment for r in results} == {"r1"}
        assert {row["deployment"]: row["state"] for row in gw.fleet.status(gw.route("m"))}[
            "r0"
        ] == "cooling_down"


async def test_on_the_durable_path_one_attempt_and_the_next_goes_elsewhere(replicas: list[str]) -> None:
    fault(replicas[0], fail_next=1, fail_next_status=500)
    routing = {"strategy": "round_robin", "cooldown": {**QUICK, "cooldown_s": 30}}
    async with gateway(model("m", replicas[:2], routing=routing)) as gw:
        with pytest.raises(InferenceFailure) as err:  # Temporal's retry policy is the loop here
            await gw.complete("m", ASK, {}, single_attempt=True)
        assert err.value.type == "EndpointError" and err.value.others_ready
        retried = await gw.complete("m", ASK, {}, single_attempt=True)
    assert retried.deployment == "r1"


async def test_general_fallback_when_no_deployment_answers(replicas: list[str]) -> None:
    fault(replicas[0], error_rate_500=1.0)
    fault(replicas[1], error_rate_500=1.0)
    cooling = {"cooldown": {**QUICK, "cooldown_s": 30}}
    models = (model("m", replicas[:2], routing=cooling, fallbacks=["backup"]), model("backup", replicas[2:]))
    async with gateway(*models) as gw:
        result = await gw.complete("m", ASK, {})
        assert (result.model, result.deployment) == ("backup", "r0")
        durable = await gw.complete("m", ASK, {}, single_attempt=True)  # both of m's cooling: no other
        assert durable.model == "backup"


async def test_context_window_fallback_and_the_400_without_one(replicas: list[str]) -> None:
    small = model("small", replicas[:1])
    small["deployments"][0]["context_window"] = 64
    long = model("long", replicas[1:2])
    long_prompt = [ChatMessage("user", "word " * 200)]
    async with gateway({**small, "context_window_fallbacks": ["long"]}, long) as gw:
        result = await gw.complete("small", long_prompt, {"max_tokens": 10})
        assert result.model == "long"
        assert (await gw.complete("small", ASK, {})).model == "small"  # a short prompt fits
    async with gateway(small) as gw:
        with pytest.raises(InferenceFailure) as err:
            await gw.complete("small", long_prompt, {"max_tokens": 10})
    assert err.value.type == "ContextWindowExceeded" and err.value.status == 400
    assert "need about 214 tokens" in err.value.message and "at most 64" in err.value.message
    assert served(replicas[0]) == 1  # the refused request never reached the endpoint


def _refusing_endpoint() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def refuse() -> JSONResponse:
        error = {"message": "The response was filtered (content policy)", "code": "content_filter"}
        return JSONResponse({"error": error}, status_code=400)

    return app


async def test_content_policy_fallback(replicas: list[str]) -> None:
    with serve_in_thread(_refusing_endpoint()) as strict:
        models = (model("strict", [strict], content_policy_fallbacks=["open"]), model("open", replicas[:1]))
        async with gateway(*models) as gw:
            assert (await gw.complete("strict", ASK, {})).model == "open"
        async with gateway(model("strict", [strict])) as gw:
            with pytest.raises(InferenceFailure) as err:
                await gw.complete("strict", ASK, {})
    assert err.value.type == "ContentPolicyViolation" and err.value.status == 400


async def test_when_every_deployment_cools_down_the_request_waits_for_the_first_back(
    replicas: list[str],
) -> None:
    for url in replicas[:2]:
        fault(url, fail_next=1, fail_next_status=429)
    async with gateway(model("m", replicas[:2], routing={"cooldown": QUICK})) as gw:
        with pytest.raises(InferenceFailure):  # both answer 429 (and cool down): nowhere left to try
            await gw.complete("m", ASK, {})
        waited = await gw.complete("m", ASK, {})  # both cooling: it waits the 0.3 s for one
    assert waited.content == "hello there friend"


async def test_a_503_with_retry_after_when_none_comes_back_in_time(replicas: list[str]) -> None:
    for url in replicas[:2]:
        fault(url, fail_next=1, fail_next_status=429)
    routing = {"cooldown": {**QUICK, "cooldown_s": 30}}
    async with gateway(model("m", replicas[:2], routing=routing, timeout_s=1)) as gw:
        with pytest.raises(InferenceFailure):
            await gw.complete("m", ASK, {})
        with pytest.raises(InferenceFailure) as err:
            await gw.complete("m", ASK, {})
    assert (err.value.type, err.value.status) == ("NoDeployment", 503)
    assert err.value.retry_after is not None and 25 <= err.value.retry_after.total_seconds() <= 30
    assert "every deployment is cooling down" in err.value.message


async def _drain(stream: Any) -> list[Any]:
    return [item async for item in stream]


async def test_a_replica_that_dies_mid_stream(replicas: list[str]) -> None:
    fault(replicas[0], break_stream_next=1)
    long_reply = [ChatMessage("user", "[echo] " + "token " * 20)]
    before = BROKEN_STREAMS.labels("m", "stable")._value.get()
    async with gateway(model("m", replicas[:2], routing={"strategy": "round_robin"})) as gw:
        # one-shot: the stream had started, so it ends with the error (the API sends an error event)
        with pytest.raises(InferenceFailure) as err:
            await _drain(gw.stream("m", long_reply, {}))
        assert err.value.type == "EndpointUnavailable"
        assert BROKEN_STREAMS.labels("m", "stable")._value.get() == before + 1
        # the durable turn's retry (Temporal's next attempt) goes to the other replica
        items = await _drain(gw.stream("m", long_reply, {}, single_attempt=True))
    result = items[-1]
    assert isinstance(result, ChatCompletionResult) and result.deployment == "r1"
    assert result.content.split() == ["token"] * 20


async def test_the_picker_reads_each_replica_s_load_and_prefers_the_idle_ones(replicas: list[str]) -> None:
    """Cache-aware routing scores on what each replica's vLLM /metrics says: a replica busy with
    requests lcp did not send loses to idle ones."""
    long_echo = {
        "model": "sim-llama-8b",
        "messages": [{"role": "user", "content": "[echo] " + "word " * 600}],
    }
    async with gateway(model("m", replicas)) as gw, httpx.AsyncClient(timeout=30) as http:
        route = gw.route("m")
        busy = [
            asyncio.create_task(http.post(f"{replicas[0]}/v1/chat/completions", json=long_echo))
            for _ in range(3)
        ]
        r0 = next(r for r in gw.fleet.replicas(route) if r.deployment.id == "r0")
        for _ in range(200):  # until r0's metrics show the three generating (about 3 s of work each)
            await gw._reader.read_all()
            if r0.running >= 3:
                break
            await asyncio.sleep(0.02)
        assert r0.running == 3
        answered = {(await gw.complete("m", ASK, {})).deployment for _ in range(6)}
        for task in busy:
            task.cancel()
    assert answered <= {"r1", "r2"}


async def test_a_stream_that_breaks_before_its_first_token_goes_to_another_replica(
    replicas: list[str],
) -> None:
    fault(replicas[0], break_stream_next=1, break_stream_after=0)  # r0 dies with the request queued
    long_reply = [ChatMessage("user", "[echo] " + "token " * 5)]
    async with gateway(model("m", replicas[:2], routing={"strategy": "round_robin"})) as gw:
        items = await _drain(gw.stream("m", long_reply, {}))  # the one-shot consumer sees nothing of it
        assert items[-1].deployment == "r1" and "".join(items[:-1]).split() == ["token"] * 5
        # on the durable path the attempt fails, and Temporal's next one goes elsewhere
        fault(replicas[1], break_stream_next=1, break_stream_after=0)
        with pytest.raises(InferenceFailure):
            await _drain(gw.stream("m", long_reply, {}, single_attempt=True))


async def test_flow_control_holds_a_request_while_the_replica_is_saturated_and_refuses_past_max_held(
    replicas: list[str],
) -> None:
    """A long prompt saturates the one replica: the next request is held in the gateway and sent once the
    first is answered; one more, past max_held, is a 503 with Retry-After."""
    long = [ChatMessage("user", "word " * 20_000)]  # ~0.6 s of prefill on sim-llama-8b
    flow = {"max_pending_prefill_tokens": 1000, "max_held": 1}
    spec = model("m", replicas[:1], upstream_model="sim-llama-8b", routing={"flow_control": flow})
    async with gateway(spec) as gw, asyncio.timeout(30):
        route = gw.route("m")
        first = asyncio.create_task(gw.complete("m", long, {"max_tokens": 2}, tenant="t"))
        await eventually(lambda: gw.fleet.replicas(route)[0].in_flight, what="the first call", interval=0.01)
        second = asyncio.create_task(gw.complete("m", long, {"max_tokens": 2}, tenant="t"))
        await eventually(lambda: gw.flow.held(route), what="the second request held", interval=0.01)
        with pytest.raises(InferenceFailure) as refused:
            await gw.complete("m", long, {"max_tokens": 2}, tenant="t")
        answered = await asyncio.gather(first, second)
    assert (refused.value.type, refused.value.status) == ("NoDeployment", 503)
    assert refused.value.retry_after == timedelta(seconds=1)
    assert [result.deployment for result in answered] == ["r0", "r0"]
