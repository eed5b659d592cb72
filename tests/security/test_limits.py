"""Hostile tenant vs token limits and Idempotency-Keys: every route that makes the model work charges
its tokens (also when the client hangs up mid-stream), a request larger than a whole minute's budget is
refused up front, and a key reused for another request is refused instead of answered with the first
request's reply."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from settings import RateLimit, Settings
from tests.api.test_assistants_api import _create
from tests.waiting import eventually

# The read model matters to the idempotency race only: the rest runs once, on SQLite.
sqlite_only = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)

MintKey = Callable[..., Awaitable[str]]
Client = Callable[..., Awaitable[httpx.AsyncClient]]

# An echoed message of 30 words: about 34 prompt tokens and 30 completion tokens, so one turn costs
# more than a budget of 50 tokens/minute while the request alone fits in it.
ECHO = "[echo] " + " ".join(f"spend{i}" for i in range(30))
SMALL_BUDGET = 50
# 300 echoed words at 5 ms a token on sim-llama-8b: a stream that lasts long enough to hang up in.
LONG = "[echo] " + " ".join(f"word{i}" for i in range(300))
LONG_BUDGET = 400  # fits one LONG prompt (about 304 tokens), not two


@pytest.fixture
async def client(api_url: str, mint_key: MintKey) -> AsyncIterator[Client]:
    """`await client(tokens_per_minute=50)`: an HTTP client with a key of its own limits."""
    opened: list[httpx.AsyncClient] = []

    async def _client(tenant: str = "default", **limits: int) -> httpx.AsyncClient:
        key = await mint_key(tenant=tenant, requests_per_minute=10_000, **limits)
        http = httpx.AsyncClient(base_url=api_url, timeout=60, headers={"Authorization": f"Bearer {key}"})
        opened.append(http)
        return http

    yield _client
    for http in opened:
        await http.aclose()


def refused_for_tokens(response: httpx.Response) -> bool:
    """A 429 because a token limit is spent (GET /v1/models costs no tokens, but a budget in debt
    refuses every request until it refills)."""
    return response.status_code == 429 and "tokens/minute" in response.text


async def conversation_with_reply(api: httpx.AsyncClient) -> tuple[str, str, str]:
    """A conversation (of the default tenant, started with an unlimited key) with an echoed reply:
    (conversation id, user message id, reply id)."""
    created = await api.post("/v1/conversations", json={"model": "sim-zero", "message": {"content": ECHO}})
    assert created.status_code == 201, created.text
    turn = created.json()["turn"]
    return created.json()["conversation"]["id"], turn["message"]["id"], turn["reply"]["id"]


async def read_stream(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, await response.aread()
    return [line async for line in response.aiter_lines() if line.startswith("data:")]


# ---- every route charges -------------------------------------------------------------------


ROUTES = [
    "messages",
    "edit",
    "regenerate",
    "create",
    "chat",
    "chat-stream",
    "chat-durable",
    "chat-durable-stream",
    "assistant",
]


@sqlite_only
@pytest.mark.parametrize("route", ROUTES)
async def test_every_route_that_makes_the_model_work_charges_its_tokens(
    route: str, api: httpx.AsyncClient, admin: httpx.AsyncClient, client: Client
) -> None:
    conversation_id, message_id, reply_id = await conversation_with_reply(api)
    hostile = await client(tokens_per_minute=SMALL_BUDGET)
    assert (await hostile.get("/v1/models")).status_code == 200

    base = f"/v1/conversations/{conversation_id}"
    chat = {"model": "sim-zero", "messages": [{"role": "user", "content": ECHO}]}
    durable = {"X-Conversation-Id": uuid.uuid4().hex}
    if route == "messages":
        response = await hostile.post(f"{base}/messages", json={"content": ECHO})
    elif route == "edit":
        response = await hostile.post(f"{base}/messages/{message_id}/edit", json={"content": ECHO})
    elif route == "regenerate":
        response = await hostile.post(f"{base}/messages/{reply_id}/regenerate")
    elif route == "create":
        body = {"model": "sim-zero", "message": {"content": ECHO}}
        response = await hostile.post("/v1/conversations", json=body)
    elif route in ("chat", "chat-durable"):
        headers = durable if route == "chat-durable" else {}
        response = await hostile.post("/v1/chat/completions", json=chat, headers=headers)
    elif route == "assistant":
        assistant_id = f"a{uuid.uuid4().hex[:10]}"
        await _create(admin, assistant_id, publish=True)
        response = await hostile.post(
            "/v1/chat/completions", json={**chat, "model": f"assistant:{assistant_id}"}
        )
    else:
        headers = durable if route == "chat-durable-stream" else {}
        stream = {**chat, "stream": True}
        async with hostile.stream("POST", "/v1/chat/completions", json=stream, headers=headers) as streamed:
            assert (await read_stream(streamed))[-1] == "data: [DONE]"
        response = streamed
    assert response.status_code in (200, 201), response.text

    refused = await hostile.get("/v1/models")  # the turn cost more than the whole budget
    assert refused_for_tokens(refused), refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    again = await hostile.post(f"{base}/messages", json={"content": "and again"})
    assert refused_for_tokens(again), again.text


# ---- hanging up does not dodge the charge --------------------------------------------------


async def hang_up_after_first_token(
    http: httpx.AsyncClient, headers: dict[str, str], refused_up_front: bool = False
) -> None:
    """Start a LONG stream and hang up at its first token; with `refused_up_front`, what is left of the
    budget cannot cover the prompt's estimate, so the request is a 429 instead."""
    body = {"model": "sim-llama-8b", "stream": True, "messages": [{"role": "user", "content": LONG}]}
    async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        if refused_up_front:
            await response.aread()
            assert refused_for_tokens(response), response.text
            return
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if '"content":"' in line and '"content":""' not in line:
                break  # the first token arrived: hang up


@sqlite_only
async def test_a_one_shot_stream_dropped_after_the_first_token_is_charged(client: Client) -> None:
    """What was generated before the hang-up, and the prompt, are charged: after one dropped stream of a
    prompt that fits the budget once, what is left cannot cover a second: its estimate is taken from the
    budget when it is admitted, and set against what the dropped turn is charged, so it is refused up
    front."""
    hostile = await client(tokens_per_minute=LONG_BUDGET)
    await hang_up_after_first_token(hostile, {})
    second = await hostile.get("/v1/models")
    assert second.status_code == 200, second.text  # one prompt fits the budget
    await hang_up_after_first_token(hostile, {}, refused_up_front=True)


@sqlite_only
async def test_a_durable_stream_dropped_after_the_first_token_is_charged(client: Client) -> None:
    """The turn goes on in its workflow and the whole reply is recorded: it is charged as recorded
    (about 600 tokens against a budget of 400)."""
    hostile = await client(tokens_per_minute=LONG_BUDGET)
    conversation_id = uuid.uuid4().hex
    await hang_up_after_first_token(hostile, {"X-Conversation-Id": conversation_id})
    await eventually(  # once the turn the client left ends
        lambda: hostile.get("/v1/models"),
        until=refused_for_tokens,
        what="the dropped durable turn to be charged (its key refused for tokens)",
        within=15,
        interval=0.1,
    )
    recorded = await hostile.get(f"/v1/conversations/{conversation_id}")
    assert refused_for_tokens(recorded)


# ---- refused up front ----------------------------------------------------------------------


@sqlite_only
async def test_a_request_larger_than_the_whole_budget_is_refused_up_front(client: Client) -> None:
    hostile = await client(tokens_per_minute=100)
    huge = " ".join(["flood"] * 5_000)
    openai_body = {"model": "sim-zero", "messages": [{"role": "user", "content": huge}]}

    for headers in ({}, {"X-Conversation-Id": uuid.uuid4().hex}):
        refused = await hostile.post("/v1/chat/completions", json=openai_body, headers=headers)
        assert refused.status_code == 413, refused.text
        error = refused.json()["error"]
        assert error["code"] == "RequestTooLarge"
        assert "100 tokens/minute" in error["message"] and "key limit" in error["message"]
        assert "Retry-After" not in refused.headers
    streamed = await hostile.post("/v1/chat/completions", json={**openai_body, "stream": True})
    assert streamed.status_code == 413, streamed.text

    # max_tokens counts: a short prompt asking for more than the budget is refused as well
    asks_much = {"model": "sim-zero", "max_tokens": 500, "messages": [{"role": "user", "content": "hi"}]}
    refused = await hostile.post("/v1/chat/completions", json=asks_much)
    assert refused.status_code == 413 and "max_tokens 500" in refused.json()["error"]["message"]

    created = await hostile.post(
        "/v1/conversations", json={"model": "sim-zero", "message": {"content": huge}}
    )
    assert created.status_code == 413 and "100 tokens/minute" in created.json()["error"]["message"]
    conversation = await hostile.post("/v1/conversations", json={"model": "sim-zero"})
    assert conversation.status_code == 201, conversation.text
    sent = await hostile.post(
        f"/v1/conversations/{conversation.json()['conversation']['id']}/messages", json={"content": huge}
    )
    assert sent.status_code == 413 and sent.json()["error"]["type"] == "RequestTooLarge", sent.text

    # nothing was generated, so nothing was charged: the budget is whole
    assert (await hostile.get("/v1/models")).status_code == 200
    fits = await hostile.post(
        "/v1/chat/completions", json={**openai_body, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert fits.status_code == 200, fits.text


@sqlite_only
async def test_the_tenant_budget_is_checked_up_front_too(settings: Settings, client: Client) -> None:
    tenant = f"hostile-{uuid.uuid4().hex[:6]}"
    settings.limits.tenants[tenant] = RateLimit(tokens_per_minute=80)  # read by the running API
    hostile = await client(tenant=tenant)
    body = {"model": "sim-zero", "messages": [{"role": "user", "content": " ".join(["x"] * 200)}]}
    refused = await hostile.post("/v1/chat/completions", json=body)
    assert refused.status_code == 413, refused.text
    assert "tenant limit of 80 tokens/minute" in refused.json()["error"]["message"]


# ---- Idempotency-Key reuse -----------------------------------------------------------------


@sqlite_only
async def test_an_idempotency_key_reused_with_another_body_is_422(api: httpx.AsyncClient) -> None:
    conversation_id = (await api.post("/v1/conversations", json={"model": "sim-zero"})).json()[
        "conversation"
    ]["id"]
    path = f"/v1/conversations/{conversation_id}/messages"
    headers = {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}

    first = await api.post(path, json={"content": "pay alice 10"}, headers=headers)
    assert first.status_code == 200, first.text
    other = await api.post(path, json={"content": "pay mallory 1000"}, headers=headers)
    assert other.status_code == 422, other.text
    error = other.json()["error"]
    assert error["type"] == "IdempotencyKeyReused"
    assert "already used for another request" in error["message"]

    again = await api.post(path, json={"role": "user", "content": "pay alice 10"}, headers=headers)
    assert again.status_code == 200, again.text  # the same request (defaults spelled out): its reply
    assert again.json()["reply"]["id"] == first.json()["reply"]["id"]

    shown = (await api.get(f"/v1/conversations/{conversation_id}")).json()
    assert [m["content"] for m in shown["messages"] if m["role"] == "user"] == ["pay alice 10"]


@sqlite_only
async def test_a_refused_request_frees_its_key_for_the_corrected_one(api: httpx.AsyncClient) -> None:
    conversation_id = (await api.post("/v1/conversations", json={"model": "sim-zero"})).json()[
        "conversation"
    ]["id"]
    path = f"/v1/conversations/{conversation_id}/messages"
    headers = {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    stale = await api.post(path, json={"content": "hi", "expected_version": 7}, headers=headers)
    assert stale.status_code == 409, stale.text
    fixed = await api.post(path, json={"content": "hi", "expected_version": 0}, headers=headers)
    assert fixed.status_code == 200, fixed.text


@sqlite_only
async def test_an_idempotency_key_reused_on_a_durable_chat_turn_is_422(api: httpx.AsyncClient) -> None:
    headers = {"X-Conversation-Id": uuid.uuid4().hex, "Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    first = {"model": "sim-zero", "messages": [{"role": "user", "content": "one"}]}
    assert (await api.post("/v1/chat/completions", json=first, headers=headers)).status_code == 200
    again = await api.post("/v1/chat/completions", json=first, headers=headers)
    assert again.status_code == 200, again.text
    other = {**first, "messages": [{"role": "user", "content": "two"}]}
    for body in (other, {**other, "stream": True}):
        refused = await api.post("/v1/chat/completions", json=body, headers=headers)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "IdempotencyKeyReused"
    shown = (await api.get(f"/v1/conversations/{headers['X-Conversation-Id']}")).json()
    assert shown["conversation"]["message_count"] == 2


@pytest.mark.parametrize("database_kind", ["sqlite", "postgres"], indirect=True)
async def test_twenty_different_bodies_racing_with_one_key_apply_one_and_refuse_the_rest(
    api: httpx.AsyncClient,
) -> None:
    conversation_id = (await api.post("/v1/conversations", json={"model": "sim-zero"})).json()[
        "conversation"
    ]["id"]
    path = f"/v1/conversations/{conversation_id}/messages"
    headers = {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}

    responses = await asyncio.gather(
        *(api.post(path, json={"content": f"body {n}"}, headers=headers) for n in range(20))
    )
    applied = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 422]
    assert len(applied) == 1 and len(refused) == 19, [(r.status_code, r.text) for r in responses]
    assert {r.json()["error"]["type"] for r in refused} == {"IdempotencyKeyReused"}

    shown = (await api.get(f"/v1/conversations/{conversation_id}")).json()
    stored = [m["content"] for m in shown["messages"] if m["role"] == "user"]
    assert stored == [applied[0].json()["message"]["content"]]  # the one applied, and only it
