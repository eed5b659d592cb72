"""OpenAI compatibility beyond plain chat, with the official `openai` SDK: structured outputs (one-shot,
streamed, durable), n choices, models.retrieve, the conversation id in the body, legacy function calling
refused, and refused first turns that start nothing."""

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal, cast

import httpx
import openai
import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel, Field
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.app import create_app
from settings import Settings
from tests.api.conftest import MintKey
from tests.api.test_openai_api import MODELS, _conversation, _durable
from tests.http_server import serve_in_thread
from workflows.conversation import workflow_id

EMBEDDING_MODELS = """
  - name: embed
    kind: embedding
    base_url: {llm}
    upstream_model: sim-embed
  - name: acme-embed
    kind: embedding
    base_url: {llm}
    upstream_model: sim-embed
    tenants: [acme]
"""

ASK: Any = [{"role": "user", "content": "file a ticket about the printer"}]


@pytest.fixture
async def api_url(settings: Settings, tmp_path: Path) -> AsyncIterator[str]:
    """The API with test_openai_api's models policy and two embedding models (one for tenant acme)."""
    policy = tmp_path / "models.yaml"
    policy.write_text((MODELS + EMBEDDING_MODELS).format(llm=settings.llm_url))
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


class Ticket(BaseModel):
    title: str = Field(min_length=5, max_length=60)
    priority: Literal["low", "high"]
    votes: int = Field(ge=1, le=5)
    tags: list[str]


async def test_structured_outputs_round_trip_one_shot_streamed_and_durable(
    api_url: str,
    key: str,
    sdk: openai.AsyncOpenAI,
) -> None:
    whole = await sdk.chat.completions.parse(model="sim-zero", messages=ASK, response_format=Ticket)
    assert isinstance(whole.choices[0].message.parsed, Ticket)

    async with sdk.chat.completions.stream(model="sim-zero", messages=ASK, response_format=Ticket) as stream:
        streamed = await stream.get_final_completion()
    assert isinstance(streamed.choices[0].message.parsed, Ticket)

    free = await sdk.chat.completions.create(
        model="sim-zero", messages=ASK, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(free.choices[0].message.content or ""), dict)

    conversation_id = f"so-{uuid.uuid4().hex[:8]}"
    durable = await sdk.chat.completions.parse(
        model="sim-zero", messages=ASK, response_format=Ticket, extra_headers=_durable(conversation_id)
    )
    ticket = durable.choices[0].message.parsed
    assert isinstance(ticket, Ticket)
    recorded = (await _conversation(api_url, key, conversation_id)).json()["messages"]
    assert Ticket.model_validate_json(recorded[-1]["content"]) == ticket
    # A schema the model cannot follow fails the durable turn as any rejected model call does (502
    # InferenceFailed, nothing recorded), with the model's words naming the path.
    unsatisfiable = {
        "type": "object",
        "properties": {"id": {"type": "string", "pattern": "^x+$"}},
        "required": ["id"],
    }
    with pytest.raises(openai.InternalServerError, match="#/properties/id/pattern") as failed:
        await sdk.chat.completions.create(
            model="sim-zero",
            messages=[*ASK, {"role": "assistant", "content": "{}"}, {"role": "user", "content": "again"}],
            response_format=cast(
                Any, {"type": "json_schema", "json_schema": {"name": "t", "schema": unsatisfiable}}
            ),
            extra_headers=_durable(conversation_id),
        )
    assert failed.value.code == "InferenceFailed"
    # The format was that turn's: the next one, without it, is text again.
    follow_up: Any = [*ASK, {"role": "assistant", "content": recorded[-1]["content"]}]
    follow_up.append({"role": "user", "content": "[echo] thanks"})
    text = await sdk.chat.completions.create(
        model="sim-zero", messages=follow_up, extra_headers=_durable(conversation_id)
    )
    assert text.choices[0].message.content == "thanks"


async def test_bad_schemas_are_400s_naming_the_path(sdk: openai.AsyncOpenAI) -> None:
    loose = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    cases = [
        (
            {"name": "t", "schema": loose, "strict": True},
            '#: with strict, an object needs "additionalProperties"',
        ),
        (
            {"name": "t", "schema": {"type": "object", "properties": {"a": {"type": 3}}}},
            "at #/properties/a/type",
        ),
        ({"name": "t", "schema": {"$ref": "https://example.com/s.json"}}, "nothing is fetched"),
        # Well formed, but not what the simulator can build: its own 400, passed on.
        ({"name": "t", "schema": {"type": "string", "pattern": "^x+$"}}, "at #/pattern"),
    ]
    for json_schema, where in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            await sdk.chat.completions.create(
                model="sim-zero",
                messages=ASK,
                response_format=cast(Any, {"type": "json_schema", "json_schema": json_schema}),
            )
        assert where in refused.value.message, refused.value.message


async def test_a_tools_parameters_schema_is_checked_as_response_formats_is(sdk: openai.AsyncOpenAI) -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(40):
        deep = {"type": "array", "items": deep}
    loose = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    cases = [
        ({"name": "f", "parameters": deep}, "nests deeper than"),
        ({"name": "f", "parameters": {"$ref": "http://169.254.169.254/latest/"}}, "nothing is fetched"),
        ({"name": "f", "parameters": {"type": "nonsense"}}, "at #/type"),
        ({"name": "f", "parameters": loose, "strict": True}, 'an object needs "additionalProperties"'),
    ]
    for function, says in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            await sdk.chat.completions.create(
                model="sim-zero", messages=ASK, tools=cast(Any, [{"type": "function", "function": function}])
            )
        assert "invalid parameters: " in refused.value.message and says in refused.value.message
    fine = {"type": "function", "function": {"name": "f", "parameters": loose}}
    assert (
        await sdk.chat.completions.create(model="sim-zero", messages=ASK, tools=cast(Any, [fine]))
    ).choices


async def test_n_choices_one_shot_and_refused_where_one_reply_is_kept(
    sdk: openai.AsyncOpenAI,
) -> None:
    several = await sdk.chat.completions.create(model="sim-zero", messages=ASK, n=3, seed=5)
    assert [choice.index for choice in several.choices] == [0, 1, 2]
    assert len({choice.message.content for choice in several.choices}) == 3  # each its own sample
    assert several.usage is not None and several.usage.prompt_tokens > 0
    again = await sdk.chat.completions.create(model="sim-zero", messages=ASK, n=3, seed=5)
    assert [c.message.content for c in again.choices] == [c.message.content for c in several.choices]

    with pytest.raises(openai.BadRequestError, match="records one reply"):
        await sdk.chat.completions.create(
            model="sim-zero", messages=ASK, n=2, extra_headers=_durable(f"n-{uuid.uuid4().hex[:8]}")
        )
    # Streamed: the choices' chunks interleave, each with its index; the same seeds give the same texts.
    stream = await sdk.chat.completions.create(
        model="sim-zero", messages=ASK, n=3, seed=5, stream=True, stream_options={"include_usage": True}
    )
    texts, finished, usage = ["", "", ""], [False, False, False], None
    async for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            finished[choice.index] |= choice.finish_reason == "stop"
        usage = chunk.usage or usage
    assert texts == [choice.message.content for choice in several.choices] and all(finished)
    assert usage is not None and usage.completion_tokens == several.usage.completion_tokens
    with pytest.raises(openai.BadRequestError, match="n: Input should be less than or equal to 8"):
        await sdk.chat.completions.create(model="sim-zero", messages=ASK, n=9)


async def test_n_choices_fail_as_one_request(sdk: openai.AsyncOpenAI, simulator: str) -> None:
    """A choice that fails before its first token fails the request (the others are stopped); one that
    breaks off mid-stream ends the stream with an error event after what the choices sent."""
    async with httpx.AsyncClient(base_url=simulator.removesuffix("/v1")) as admin:
        try:
            await admin.put("/admin/faults", json={"fail_next": 1})
            with pytest.raises(openai.InternalServerError):
                await sdk.chat.completions.create(model="sim-zero", messages=ASK, n=3)
            await admin.put("/admin/faults", json={"fail_next": 1})
            with pytest.raises(openai.InternalServerError):
                await sdk.chat.completions.create(model="sim-zero", messages=ASK, n=3, stream=True)
            # Three: a choice of the request before, cancelled, may still reach the simulator after this
            # (under load it once took the only broken stream, and this request's choices ran whole).
            await admin.put("/admin/faults", json={"break_stream_next": 3, "break_stream_after": 5})
            long: Any = [{"role": "user", "content": "[echo] " + " ".join(["word"] * 200)}]
            stream = await sdk.chat.completions.create(model="sim-zero", messages=long, n=2, stream=True)
            with pytest.raises(openai.APIError, match="broke off"):
                async for _ in stream:
                    pass
        finally:
            await admin.delete("/admin/faults")
    assert (await sdk.chat.completions.create(model="sim-zero", messages=ASK, n=2)).choices[1].index == 1


async def test_models_retrieve_is_tenant_scoped(api_url: str, mint_key: MintKey) -> None:
    acme = openai.AsyncOpenAI(base_url=f"{api_url}/v1", api_key=await mint_key(tenant="acme"), max_retries=0)
    other = openai.AsyncOpenAI(base_url=f"{api_url}/v1", api_key=await mint_key(), max_retries=0)
    assert (await acme.models.retrieve("acme-only")).id == "acme-only"
    assert (await other.models.retrieve("sim-zero")).object == "model"
    for missing in ("acme-only", "no-such-model", "a/b/c"):
        with pytest.raises(openai.NotFoundError, match="not served to your tenant"):
            await other.models.retrieve(missing)


async def test_legacy_function_calling_is_refused_pointing_at_tools(sdk: openai.AsyncOpenAI) -> None:
    function = {"name": "lookup", "parameters": {"type": "object", "properties": {}}}
    requests: list[dict[str, Any]] = [
        {"functions": [function]},
        {"function_call": "auto"},
        {
            "messages": [
                *ASK,
                {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": "lookup", "arguments": "{}"},
                },
                {"role": "function", "name": "lookup", "content": "{}"},
            ]
        },
    ]
    for extra in requests:
        body = {"model": "sim-zero", "messages": ASK, **extra}
        with pytest.raises(openai.BadRequestError, match="deprecated function calling") as refused:
            await sdk.chat.completions.create(**body)
        assert "tool" in refused.value.message


async def test_conversation_id_in_the_body_makes_the_turn_durable_and_names_the_principal(
    api_url: str,
    key: str,
    sdk: openai.AsyncOpenAI,
    client: Client,
) -> None:
    conversation_id = f"body-{uuid.uuid4().hex[:8]}"
    raw = await sdk.chat.completions.with_raw_response.create(
        model="sim-zero",
        messages=[{"role": "user", "content": "[echo] kept"}],
        user="alice",
        extra_body={"conversation_id": conversation_id},
    )
    assert raw.headers["X-Lcp-Mode"] == "durable" and raw.headers["X-Conversation-Id"] == conversation_id
    assert (await _conversation(api_url, key, conversation_id)).status_code == 200
    handle = client.get_workflow_handle(workflow_id("default", conversation_id))
    started = [event async for event in handle.fetch_history_events()][0]
    payload = started.workflow_execution_started_event_attributes.input.payloads[0]
    assert json.loads(payload.data)["principal"] == "alice"


async def test_a_refused_first_turn_starts_no_conversation(
    api_url: str,
    key: str,
    sdk: openai.AsyncOpenAI,
    client: Client,
) -> None:
    for content in ("   ", "\n\t"):
        with pytest.raises(openai.UnprocessableEntityError, match="empty or whitespace only"):
            await sdk.chat.completions.create(
                model="sim-zero", messages=[{"role": "user", "content": content}]
            )
        conversation_id = f"refused-{uuid.uuid4().hex[:8]}"
        with pytest.raises(openai.UnprocessableEntityError, match="empty or whitespace only"):
            await sdk.chat.completions.create(
                model="sim-zero",
                messages=[{"role": "user", "content": content}],
                extra_headers=_durable(conversation_id),
            )
        assert (await _conversation(api_url, key, conversation_id)).status_code == 404
        await _never_started(client, conversation_id)
    # Nor does a turn that does not end with the user's message (the workflow's validator would refuse it).
    conversation_id = f"refused-{uuid.uuid4().hex[:8]}"
    with pytest.raises(openai.UnprocessableEntityError, match="the last message must be the user's"):
        await sdk.chat.completions.create(
            model="sim-zero",
            messages=[*ASK, {"role": "assistant", "content": "done"}],
            extra_headers=_durable(conversation_id),
        )
    await _never_started(client, conversation_id)


async def _never_started(client: Client, conversation_id: str) -> None:
    with pytest.raises(RPCError) as missing:
        await client.get_workflow_handle(workflow_id("default", conversation_id)).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND


async def test_the_openapi_document_describes_the_new_fields(api_url: str) -> None:
    async with httpx.AsyncClient(base_url=api_url) as http:
        spec = (await http.get("/openapi.json")).json()
    assert "/v1/models/{model_id}" in spec["paths"]
    request = spec["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert {"response_format", "conversation_id", "n"} <= set(request)


async def test_embeddings_through_the_gateway_metered_and_tenant_scoped(
    api_url: str, sdk: openai.AsyncOpenAI, mint_key: MintKey
) -> None:
    texts = ["the printer is on fire", "the printer is on fire", "all is well"]
    # Unasked, the SDK asks for base64 and decodes it; floats when asked for.
    for encoding in ({}, {"encoding_format": "float"}):
        result = await sdk.embeddings.create(model="embed", input=texts, **encoding)  # type: ignore[arg-type]
        vectors = [item.embedding for item in result.data]
        assert [item.index for item in result.data] == [0, 1, 2] and result.model == "embed"
        assert len(vectors[0]) == 64 and vectors[0] == vectors[1] != vectors[2]
        assert abs(sum(value * value for value in vectors[0]) - 1) < 1e-3  # unit vectors
        assert result.usage.prompt_tokens == 13
    assert len((await sdk.embeddings.create(model="embed", input="one", dimensions=8)).data[0].embedding) == 8
    tokens = REGISTRY.get_sample_value(
        "lcp_tokens_total", {"tenant": "default", "model": "embed", "kind": "prompt"}
    )
    assert tokens is not None and tokens >= 13 * 2 + 1

    assert {m.id for m in (await sdk.models.list()).data} >= {"embed", "sim-zero"}
    with pytest.raises(openai.BadRequestError, match="not an embedding model"):
        await sdk.embeddings.create(model="sim-zero", input="hi")
    with pytest.raises(openai.BadRequestError, match="is an embedding model: send it to POST /v1/embeddings"):
        await sdk.chat.completions.create(model="embed", messages=ASK)
    with pytest.raises(openai.NotFoundError, match="not served to your tenant"):
        await sdk.embeddings.create(model="acme-embed", input="hi")
    with pytest.raises(openai.BadRequestError):
        await sdk.embeddings.create(model="embed", input=[])
    with pytest.raises(openai.BadRequestError):
        await sdk.embeddings.create(model="embed", input=[""])
    with pytest.raises(openai.BadRequestError):
        await sdk.embeddings.create(model="embed", input="")
    with pytest.raises(openai.BadRequestError, match="at most 2048 items"):
        await sdk.embeddings.create(model="embed", input=["a"] * 2049)
    long_text = "word " * 1000  # one text longer than the list's 2,048 items: its length is the token limit's
    assert len((await sdk.embeddings.create(model="embed", input=long_text)).data) == 1
    acme = openai.AsyncOpenAI(base_url=f"{api_url}/v1", api_key=await mint_key(tenant="acme"), max_retries=0)
    assert len((await acme.embeddings.create(model="acme-embed", input="hi")).data) == 1


async def test_embeddings_count_against_the_token_limit(api_url: str, mint_key: MintKey) -> None:
    limited = await mint_key(tokens_per_minute=20)
    client = openai.AsyncOpenAI(base_url=f"{api_url}/v1", api_key=limited, max_retries=0)
    await client.embeddings.create(model="embed", input="one two three four five six seven eight nine ten")
    with pytest.raises(openai.RateLimitError):
        for _ in range(3):
            await client.embeddings.create(
                model="embed", input="one two three four five six seven eight nine"
            )
