"""The OpenAI-compatible surface driven by the official `openai` package: models, one-shot and durable
turns, streaming, errors as the SDK's exception types, tenants, roles and limits."""

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import httpx
import openai
import pytest
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
)
from prometheus_client import REGISTRY

from api.app import create_app
from settings import RateLimit, Settings
from tests.api.conftest import MintKey
from tests.http_server import serve_in_thread
from tests.waiting import eventually

LONG_REPLY = "[echo] " + " ".join(f"word{i}" for i in range(300))  # ~300 tokens, 1-3 s on sim-llama-8b

MODELS = """
default_model: sim-zero
models:
  - name: sim-zero
    base_url: {llm}
  - name: sim-llama-8b
    base_url: {llm}
  - name: acme-only
    base_url: {llm}
    upstream_model: sim-zero
    tenants: [acme]
"""


@pytest.fixture
async def api_url(settings: Settings, tmp_path: Path) -> AsyncIterator[str]:
    """The API with a models policy where one model serves tenant `acme` only."""
    policy = tmp_path / "models.yaml"
    policy.write_text(MODELS.format(llm=settings.llm_url))
    settings.models_file = policy
    settings.conversation.task_queue = f"conversations-{uuid.uuid4().hex[:8]}"
    settings.api.with_worker = True
    with serve_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture
async def key(mint_key: MintKey) -> str:
    return await mint_key()


@pytest.fixture
def sdk(api_url: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{api_url}/v1", api_key=key, max_retries=0)


async def _conversation(api_url: str, key: str, conversation_id: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"}) as http:
        return await http.get(f"/v1/conversations/{conversation_id}")


def _durable(conversation_id: str) -> dict[str, str]:
    """The header that makes a turn durable."""
    return {"X-Conversation-Id": conversation_id}


def _body(error: openai.APIStatusError) -> dict[str, object]:
    """The error object of an API error's JSON body."""
    assert isinstance(error.body, dict)
    return error.body


# ---- models and one-shot -------------------------------------------------------------------


async def test_models_lists_what_the_tenant_may_use(api_url: str, mint_key: MintKey) -> None:
    default = openai.AsyncOpenAI(base_url=f"{api_url}/v1", api_key=await mint_key())
    acme = openai.AsyncOpenAI(base_url=f"{api_url}/v1", api_key=await mint_key(tenant="acme"))
    assert [m.id for m in (await default.models.list()).data] == ["sim-llama-8b", "sim-zero"]
    assert [m.id for m in (await acme.models.list()).data] == ["acme-only", "sim-llama-8b", "sim-zero"]
    with pytest.raises(openai.NotFoundError) as err:
        await default.chat.completions.create(model="acme-only", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "model_not_found" and "GET /v1/models" in err.value.message
    reply = await acme.chat.completions.create(
        model="acme-only", messages=[{"role": "user", "content": "[echo] for acme"}]
    )
    assert reply.choices[0].message.content == "for acme"
    async with httpx.AsyncClient(
        base_url=api_url, headers={"Authorization": f"Bearer {default.api_key}"}
    ) as http:
        refused = await http.post("/v1/conversations", json={"model": "acme-only"})
        assert (
            refused.status_code == 422 and "not served to your tenant" in refused.json()["error"]["message"]
        )


def test_one_shot_with_the_sync_client(api_url: str, key: str) -> None:
    sdk = openai.OpenAI(base_url=f"{api_url}/v1", api_key=key, max_retries=0)
    reply = sdk.chat.completions.create(
        model="sim-zero",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "[echo] two words"}],
        user="librechat-user-1",  # LibreChat sends these; unknown ones are ignored, not refused
        extra_body={"logit_bias": {}, "some_future_param": True},
    )
    assert reply.object == "chat.completion" and reply.model == "sim-zero"
    assert reply.choices[0].message.content == "two words"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == 2
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 2

    conversation_id = uuid.uuid4().hex  # the sync client streaming a durable turn
    stream = sdk.chat.completions.create(
        model="sim-zero",
        messages=[{"role": "user", "content": "[echo] sync stream"}],
        stream=True,
        extra_headers={"X-Conversation-Id": conversation_id},
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "sync stream"
    recorded = httpx.get(
        f"{api_url}/v1/conversations/{conversation_id}", headers={"Authorization": f"Bearer {key}"}
    )
    assert [m["content"] for m in recorded.json()["messages"]] == ["[echo] sync stream", "sync stream"]


async def test_one_shot_stream_with_usage(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="sim-llama-8b",
        messages=[{"role": "user", "content": "[echo] one two three four"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2  # token by token
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]


async def test_stream_without_include_usage_has_no_usage_chunk(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="sim-zero", messages=[{"role": "user", "content": "[echo] hi"}], stream=True
    )
    assert all(chunk.usage is None for chunk in [c async for c in stream])


# ---- errors as the SDK's types -------------------------------------------------------------


async def test_errors_surface_as_sdk_exceptions(api_url: str, sdk: openai.AsyncOpenAI) -> None:
    bad_key = openai.AsyncOpenAI(base_url=f"{api_url}/v1", api_key="lcp_nope_notakey", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        await bad_key.models.list()
    assert "not valid" in auth.value.message and "notakey" not in str(auth.value.body)

    with pytest.raises(openai.BadRequestError) as bad:
        await sdk.chat.completions.create(model="sim-zero", messages=[])
    assert _body(bad.value)["param"] == "messages" and _body(bad.value)["type"] == "invalid_request_error"

    with pytest.raises(openai.BadRequestError):
        await sdk.chat.completions.create(
            model="sim-zero", messages=[{"role": "user", "content": "x"}], temperature=7
        )
    with pytest.raises(openai.NotFoundError):
        await sdk.chat.completions.create(model="gpt-7", messages=[{"role": "user", "content": "x"}])


async def test_endpoint_failure_is_a_server_error_and_busy_is_a_rate_limit(
    sdk: openai.AsyncOpenAI, simulator: str
) -> None:
    admin = simulator.removesuffix("/v1")
    async with httpx.AsyncClient(base_url=admin) as http:
        try:
            await http.put("/admin/faults", json={"error_rate_500": 1.0})
            with pytest.raises(openai.InternalServerError) as err:
                await sdk.chat.completions.create(
                    model="sim-zero", messages=[{"role": "user", "content": "x"}]
                )
            assert err.value.status_code == 502 and _body(err.value)["code"] == "EndpointError"
            await http.put("/admin/faults", json={"error_rate_429": 1.0})
            with pytest.raises(openai.RateLimitError):
                await sdk.chat.completions.create(
                    model="sim-zero", messages=[{"role": "user", "content": "x"}]
                )
        finally:
            await http.delete("/admin/faults")


# ---- durable conversations ------------------------------------------------------------------


async def test_durable_turns_record_only_what_is_new(api_url: str, key: str, sdk: openai.AsyncOpenAI) -> None:
    conversation_id = uuid.uuid4().hex
    history: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "[echo] first"},
    ]
    first = await sdk.chat.completions.create(
        model="sim-zero", messages=history, extra_headers=_durable(conversation_id)
    )
    assert first.choices[0].message.content == "first"
    # LibreChat re-sends the whole history with each new message
    history += [{"role": "assistant", "content": "first"}, {"role": "user", "content": "[echo] second"}]
    second = await sdk.chat.completions.with_raw_response.create(
        model="sim-zero", messages=history, extra_headers=_durable(conversation_id)
    )
    assert second.headers["x-conversation-id"] == conversation_id
    assert second.parse().choices[0].message.content == "second"

    detail = (await _conversation(api_url, key, conversation_id)).json()
    assert [(m["role"], m["content"]) for m in detail["messages"]] == [
        ("user", "[echo] first"),
        ("assistant", "first"),
        ("user", "[echo] second"),
        ("assistant", "second"),
    ]
    assert detail["conversation"]["system_prompt"] == "You are terse."
    assert second.headers["x-message-id"] == detail["messages"][-1]["id"]


async def test_durable_turn_from_metadata_and_edits_become_branches(
    api_url: str, key: str, sdk: openai.AsyncOpenAI
) -> None:
    conversation_id = uuid.uuid4().hex
    meta = {"metadata": {"conversation_id": conversation_id}}
    await sdk.chat.completions.create(
        model="sim-zero", messages=[{"role": "user", "content": "[echo] a"}], extra_body=meta
    )
    await sdk.chat.completions.create(
        model="sim-zero",
        messages=[
            {"role": "user", "content": "[echo] a"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "[echo] b"},
        ],
        extra_body=meta,
    )
    # the user edits their second message in the client: same prefix, different last message
    await sdk.chat.completions.create(
        model="sim-zero",
        messages=[
            {"role": "user", "content": "[echo] a"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "[echo] b, edited"},
        ],
        extra_body=meta,
    )
    detail = (await _conversation(api_url, key, conversation_id)).json()
    assert [m["content"] for m in detail["messages"]] == ["[echo] a", "a", "[echo] b, edited", "b, edited"]
    assert len(detail["branches"]) == 2
    assert detail["conversation"]["message_count"] == 6


async def test_same_idempotency_key_records_the_turn_once(
    api_url: str, key: str, sdk: openai.AsyncOpenAI
) -> None:
    conversation_id = uuid.uuid4().hex
    headers = {"X-Conversation-Id": conversation_id, "Idempotency-Key": "turn-1"}
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
    first = await sdk.chat.completions.create(model="sim-zero", messages=messages, extra_headers=headers)
    again = await sdk.chat.completions.create(model="sim-zero", messages=messages, extra_headers=headers)
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.id == first.id
    detail = (await _conversation(api_url, key, conversation_id)).json()
    assert detail["conversation"]["message_count"] == 2


async def test_title_requests_are_answered_but_not_recorded(
    api_url: str, key: str, sdk: openai.AsyncOpenAI
) -> None:
    conversation_id = uuid.uuid4().hex
    older: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Please generate a title for this conversation ||>Title:"}
    ]
    newer: list[ChatCompletionMessageParam] = [
        {
            "role": "user",
            "content": "Provide a concise, 5-word-or-less title for the conversation, using title case "
            "conventions. Only return the title itself.\n\nConversation:\nUser: Hello!\nAI: Hi!",
        }
    ]
    for messages in (older, newer):
        reply = await sdk.chat.completions.create(
            model="sim-zero", messages=messages, max_tokens=16, extra_headers=_durable(conversation_id)
        )
        assert reply.choices[0].message.content
    assert (await _conversation(api_url, key, conversation_id)).status_code == 404


async def test_durable_stream_reaches_the_client_before_the_reply_is_recorded(
    api_url: str, key: str, sdk: openai.AsyncOpenAI
) -> None:
    conversation_id = uuid.uuid4().hex
    stream = await sdk.chat.completions.create(
        model="sim-llama-8b",
        messages=[{"role": "user", "content": LONG_REPLY}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=_durable(conversation_id),
    )
    parts: list[str] = []
    recorded_when_first_token_came: int | None = None
    usage = None
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            if recorded_when_first_token_came is None:
                recorded_when_first_token_came = (
                    await _conversation(api_url, key, conversation_id)
                ).status_code
            parts.append(chunk.choices[0].delta.content)
    assert recorded_when_first_token_came == 404  # the model was still generating: nothing stored yet
    assert len(parts) > 10
    detail = (await _conversation(api_url, key, conversation_id)).json()
    reply = detail["messages"][-1]
    assert reply["role"] == "assistant" and reply["content"] == "".join(parts)
    assert usage is not None and usage.completion_tokens == 300 == reply["completion_tokens"]


async def test_client_leaving_mid_stream_still_records_the_whole_reply_once(api_url: str, key: str) -> None:
    conversation_id = uuid.uuid4().hex
    body = {"model": "sim-llama-8b", "stream": True, "messages": [{"role": "user", "content": LONG_REPLY}]}
    headers = {"Authorization": f"Bearer {key}", "X-Conversation-Id": conversation_id}
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    break  # the first token arrived: hang up
    found = await eventually(
        lambda: _conversation(api_url, key, conversation_id),
        until=lambda found: found.status_code == 200 and found.json()["conversation"]["message_count"] == 2,
        what="the whole reply to be recorded",
        interval=0.1,
    )
    messages = found.json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["content"] == LONG_REPLY.removeprefix("[echo] ")
    await asyncio.sleep(0.5)  # not a wait: time for a second copy of the reply to arrive, were one sent
    assert (await _conversation(api_url, key, conversation_id)).json()["conversation"]["message_count"] == 2


async def test_archived_conversation_refuses_turns_with_409(
    api_url: str, key: str, sdk: openai.AsyncOpenAI
) -> None:
    conversation_id = uuid.uuid4().hex
    await sdk.chat.completions.create(
        model="sim-zero",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers=_durable(conversation_id),
    )
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"}) as http:
        assert (await http.post(f"/v1/conversations/{conversation_id}/archive")).status_code == 200
    with pytest.raises(openai.ConflictError) as err:
        await sdk.chat.completions.create(
            model="sim-zero",
            messages=[{"role": "user", "content": "hi again"}],
            extra_headers=_durable(conversation_id),
        )
    assert _body(err.value)["code"] == "ConversationClosed"


# ---- tenants, roles, keys, limits, secrets ---------------------------------------------------


async def test_tenants_never_see_each_other(api_url: str, key: str, mint_key: MintKey) -> None:
    conversation_id = uuid.uuid4().hex
    other_key = await mint_key(tenant="other")
    mine = openai.AsyncOpenAI(base_url=f"{api_url}/v1", api_key=key)
    theirs = openai.AsyncOpenAI(base_url=f"{api_url}/v1", api_key=other_key)
    await mine.chat.completions.create(
        model="sim-zero",
        messages=[{"role": "user", "content": "[echo] mine"}],
        extra_headers=_durable(conversation_id),
    )
    assert (await _conversation(api_url, other_key, conversation_id)).status_code == 404
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {other_key}"}) as http:
        listed = (await http.get("/v1/conversations")).json()["data"]
        assert conversation_id not in [c["id"] for c in listed]
        sent = await http.post(f"/v1/conversations/{conversation_id}/messages", json={"content": "hi"})
        assert sent.status_code == 404
    # the same id in the other tenant is another conversation
    await theirs.chat.completions.create(
        model="sim-zero",
        messages=[{"role": "user", "content": "[echo] theirs"}],
        extra_headers=_durable(conversation_id),
    )
    mine_now = (await _conversation(api_url, key, conversation_id)).json()
    assert [m["content"] for m in mine_now["messages"]] == ["[echo] mine", "mine"]


async def test_routes_check_roles(api_url: str, mint_key: MintKey) -> None:
    sre = {"Authorization": f"Bearer {await mint_key(roles=('sre',))}"}
    client = {"Authorization": f"Bearer {await mint_key(roles=('client',))}"}
    async with httpx.AsyncClient(base_url=api_url) as http:
        refused = await http.post(
            "/v1/chat/completions",
            json={"model": "sim-zero", "messages": [{"role": "user", "content": "x"}]},
            headers=sre,
        )
        assert refused.status_code == 403 and "'client' role" in refused.json()["error"]["message"]
        assert (await http.get("/v1/conversations", headers=sre)).status_code == 403
        assert (await http.get("/v1/admin/keys", headers=client)).status_code == 403
        assert (await http.get("/v1/conversations")).status_code == 401
        assert (await http.get("/v1/conversations")).headers["www-authenticate"] == "Bearer"
        assert (await http.get("/healthz")).status_code == 200  # health checks need no key


async def test_admin_creates_lists_and_revokes_keys(api_url: str, mint_key: MintKey) -> None:
    admin = {"Authorization": f"Bearer {await mint_key(tenant='acme', roles=('admin',))}"}
    async with httpx.AsyncClient(base_url=api_url, headers=admin) as http:
        created = await http.post("/v1/admin/keys", json={"name": "librechat", "roles": ["client"]})
        assert created.status_code == 201
        new = created.json()
        assert new["tenant"] == "acme" and new["key"].startswith("lcp_")
        listed = (await http.get("/v1/admin/keys")).json()["data"]
        assert new["id"] in [k["id"] for k in listed]
        assert all("key" not in k and "key_hash" not in k for k in listed)  # shown once, never again
        use = {"Authorization": f"Bearer {new['key']}"}
        assert (await http.get("/v1/models", headers=use)).status_code == 200
        revoked = await http.delete(f"/v1/admin/keys/{new['id']}")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        assert (await http.get("/v1/models", headers=use)).status_code == 401
        bad_role = await http.post("/v1/admin/keys", json={"name": "x", "roles": ["root"]})
        assert bad_role.status_code == 422 and "roles" in bad_role.json()["error"]["message"]

    other_admin = {"Authorization": f"Bearer {await mint_key(tenant='other', roles=('admin',))}"}
    async with httpx.AsyncClient(base_url=api_url, headers=other_admin) as http:
        assert (await http.delete(f"/v1/admin/keys/{new['id']}")).status_code == 404  # not theirs


async def test_request_limit_answers_429_with_retry_after(api_url: str, mint_key: MintKey) -> None:
    sdk = openai.AsyncOpenAI(
        base_url=f"{api_url}/v1", api_key=await mint_key(requests_per_minute=2), max_retries=0
    )
    await sdk.models.list()
    await sdk.models.list()
    with pytest.raises(openai.RateLimitError) as err:
        await sdk.models.list()
    assert int(err.value.response.headers["retry-after"]) >= 1
    assert "2 requests/minute" in err.value.message


async def test_token_limit_answers_429_once_spent(api_url: str, mint_key: MintKey) -> None:
    sdk = openai.AsyncOpenAI(
        base_url=f"{api_url}/v1", api_key=await mint_key(tokens_per_minute=50), max_retries=0
    )
    # ~34 prompt tokens fit the budget (a prompt that doesn't is a 413 up front); the echoed reply spends it
    spend = "[echo] " + " ".join(["spend"] * 30)
    await sdk.chat.completions.create(model="sim-zero", messages=[{"role": "user", "content": spend}])
    with pytest.raises(openai.RateLimitError) as err:
        await sdk.chat.completions.create(model="sim-zero", messages=[{"role": "user", "content": "x"}])
    assert "tokens/minute" in err.value.message and err.value.response.headers["retry-after"]


async def test_no_secret_reaches_logs_or_error_bodies(
    api_url: str, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sdk = openai.AsyncOpenAI(base_url=f"{api_url}/v1", api_key=key, max_retries=0)
    await sdk.chat.completions.create(model="sim-zero", messages=[{"role": "user", "content": "hi"}])
    forged = key[:-4] + "AAAA"
    async with httpx.AsyncClient(base_url=api_url) as http:
        refused = await http.get("/v1/models", headers={"Authorization": f"Bearer {forged}"})
        malformed = await http.get("/v1/models", headers={"Authorization": "Bearer a.b.c"})
    secret = key.split("_", 2)[2]
    assert refused.status_code == 401 and malformed.status_code == 401
    for text in (refused.text, malformed.text, caplog.text):
        assert secret not in text and forged.split("_", 2)[2] not in text


async def test_one_shot_is_metered_and_counted_but_not_kept(
    api_url: str, key: str, sdk: openai.AsyncOpenAI
) -> None:
    def sample(text: str, name: str, **labels: str) -> float:
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    # Tokens are counted by tenant, a series the open /metrics leaves out: read them in this process,
    # which serves the app.
    tokens = {"tenant": "default", "model": "sim-zero", "kind": "completion"}
    tokens_before = REGISTRY.get_sample_value("lcp_tokens_total", tokens) or 0.0
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"}) as http:
        before = (await http.get("/metrics")).text
        await sdk.chat.completions.create(
            model="sim-zero", messages=[{"role": "user", "content": "[echo] a b c"}]
        )
        after = (await http.get("/metrics")).text
        listed = (await http.get("/v1/conversations")).json()["data"]
    assert (REGISTRY.get_sample_value("lcp_tokens_total", tokens) or 0.0) - tokens_before == 3
    assert "lcp_tokens_total" not in after
    counted = {"mode": "one-shot", "stream": "false", "model": "sim-zero", "outcome": "ok"}
    assert (
        sample(after, "lcp_chat_completions_total", **counted)
        == sample(before, "lcp_chat_completions_total", **counted) + 1
    )
    assert listed == []  # nothing recorded


async def test_tenant_limit_spans_its_keys(settings: Settings, api_url: str, mint_key: MintKey) -> None:
    # as LCP_LIMITS__TENANTS='{"t3": {"requests_per_minute": 3}}' would (the app reads this object)
    settings.limits.tenants["t3"] = RateLimit(requests_per_minute=3)
    first, second = await mint_key(tenant="t3"), await mint_key(tenant="t3")
    async with httpx.AsyncClient(base_url=api_url) as http:
        codes = [
            (await http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})).status_code
            for key in (first, second, first, second)
        ]
        other = await http.get(
            "/v1/models", headers={"Authorization": f"Bearer {await mint_key(tenant='t4')}"}
        )
    assert codes == [200, 200, 200, 429]
    assert other.status_code == 200  # another tenant is not affected


WEATHER: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASKS_FOR_WEATHER: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": 'What is it like outside? get_weather {"city": "Paris"}'}
]


async def test_client_tools_pass_through_one_shot_whole_and_streamed(sdk: openai.AsyncOpenAI) -> None:
    whole = await sdk.chat.completions.create(model="sim-zero", messages=ASKS_FOR_WEATHER, tools=[WEATHER])
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    [call] = choice.message.tool_calls
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}

    # Streamed, the SDK's own accumulation finds the same call in the deltas.
    streamed: dict[int, dict[str, str]] = {}
    finish = None
    stream = await sdk.chat.completions.create(
        model="sim-zero",
        messages=ASKS_FOR_WEATHER,
        tools=[WEATHER],
        stream=True,
    )
    async for chunk in stream:
        for streamed_choice in chunk.choices:
            for delta in streamed_choice.delta.tool_calls or []:
                entry = streamed.setdefault(delta.index, {"id": delta.id or "", "name": "", "arguments": ""})
                entry["name"] += (delta.function.name or "") if delta.function else ""
                entry["arguments"] += (delta.function.arguments or "") if delta.function else ""
            finish = streamed_choice.finish_reason or finish
    assert finish == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for c in streamed.values()] == [
        ("get_weather", {"city": "Paris"})
    ]

    # The client runs the tool and sends its result back: the model answers from it.
    answered = await sdk.chat.completions.create(
        model="sim-zero",
        messages=[
            *ASKS_FOR_WEATHER,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [cast(ChatCompletionMessageFunctionToolCallParam, call.model_dump())],
            },
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'},
        ],
        tools=[WEATHER],
    )
    reply = answered.choices[0]
    assert reply.finish_reason == "stop" and reply.message.content and "21" in reply.message.content
    assert "get_weather" in reply.message.content

    # tool_choice "none" gets text, even when a tool is named.
    text = await sdk.chat.completions.create(
        model="sim-zero",
        messages=ASKS_FOR_WEATHER,
        tools=[WEATHER],
        tool_choice="none",
    )
    assert text.choices[0].message.tool_calls is None and text.choices[0].finish_reason == "stop"


async def test_client_tools_on_a_durable_turn_are_refused_and_nothing_is_recorded(
    api_url: str, key: str, sdk: openai.AsyncOpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.chat.completions.create(
            model="sim-zero",
            messages=ASKS_FOR_WEATHER,
            tools=[WEATHER],
            extra_headers={"X-Conversation-Id": "with-tools"},
        )
    assert refused.value.code == "ToolsNotDurable" and "one-shot" in refused.value.message
    assert (await _conversation(api_url, key, "with-tools")).status_code == 404

    with pytest.raises(openai.BadRequestError) as no_call_id:
        await sdk.chat.completions.create(
            model="sim-zero",
            # a tool message without its tool_call_id, ill-typed on purpose: the API must refuse it
            messages=[*ASKS_FOR_WEATHER, {"role": "tool", "content": "{}"}],  # type: ignore[list-item,misc]
        )
    assert "tool_call_id" in no_call_id.value.message
    with pytest.raises(openai.BadRequestError) as unmade_call:
        await sdk.chat.completions.create(
            model="sim-zero",
            messages=[*ASKS_FOR_WEATHER, {"role": "tool", "tool_call_id": "call_1", "content": "{}"}],
        )
    assert "'call_1'" in unmade_call.value.message and "did not make" in unmade_call.value.message
    with pytest.raises(openai.BadRequestError) as undeclared:
        await sdk.chat.completions.create(
            model="sim-zero",
            messages=ASKS_FOR_WEATHER,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_time"}},
        )
    assert "get_time" in undeclared.value.message
