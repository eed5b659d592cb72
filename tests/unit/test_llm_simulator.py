"""Tests of the LLM simulator over real HTTP (uvicorn in a thread, httpx and the openai client)."""

import asyncio
import json
import math
import re
import statistics
import time
from collections.abc import Iterator
from typing import Any, cast

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam, ChatCompletionToolParam
from prometheus_client.parser import text_string_to_metric_families

from lab.llm_simulator import DEFAULT_PROFILES, EMBEDDING_MODELS, ModelProfile, create_app
from tests.http_server import serve_in_thread

ZERO = "sim-zero"


@pytest.fixture
def url() -> Iterator[str]:
    with serve_in_thread(create_app(seed=7)) as base:
        yield base


@pytest.fixture
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=10) as http:
        yield http


def chat(client: httpx.Client, text: str, **extra: object) -> httpx.Response:
    body = {"model": ZERO, "messages": [{"role": "user", "content": text}], **extra}
    return client.post("/v1/chat/completions", json=body)


def content_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def samples(metrics_text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics_text)
        for s in family.samples
    }


def test_default_profiles_follow_the_h200_measurements() -> None:
    llama8b = DEFAULT_PROFILES["sim-llama-8b"]
    assert llama8b.itl_s(1) == pytest.approx(0.005)
    assert llama8b.itl_s(64) == pytest.approx(0.008)
    assert llama8b.ttft_s(1024) == pytest.approx(0.020 + 1024 / 33_000)
    assert DEFAULT_PROFILES["sim-llama-1b"].itl_s(1) < llama8b.itl_s(1) / 2
    zero = DEFAULT_PROFILES[ZERO]
    assert zero.ttft_s(10_000) == 0 and zero.itl_s(1000) == 0


def test_replies_are_deterministic(client: httpx.Client) -> None:
    first = chat(client, "Tell me about rivers.", seed=1)
    second = chat(client, "Tell me about rivers.", seed=1)
    assert first.status_code == 200
    assert content_of(first) == content_of(second)
    assert first.json()["id"] != second.json()["id"]
    assert content_of(chat(client, "Tell me about rivers.", seed=2)) != content_of(first)
    assert content_of(chat(client, "Tell me about lakes.", seed=1)) != content_of(first)
    words = content_of(first).split()
    assert 8 <= len(words) <= DEFAULT_PROFILES[ZERO].default_max_tokens
    assert first.json()["usage"]["completion_tokens"] == len(words)


def test_without_a_seed_each_request_samples_anew(client: httpx.Client) -> None:
    replies = {content_of(chat(client, "Tell me about rivers.")) for _ in range(3)}
    assert len(replies) == 3


def test_max_tokens_truncates_the_same_reply(client: httpx.Client) -> None:
    full = chat(client, "Describe a garden.", seed=3).json()
    short = chat(client, "Describe a garden.", seed=3, max_completion_tokens=5).json()
    assert short["choices"][0]["finish_reason"] == "length"
    assert short["usage"]["completion_tokens"] == 5
    assert full["choices"][0]["message"]["content"].startswith(short["choices"][0]["message"]["content"])
    old_name = chat(client, "Describe a garden.", seed=3, max_tokens=5).json()
    assert old_name["choices"][0]["message"] == short["choices"][0]["message"]


def test_echo_marker_returns_the_user_text(client: httpx.Client) -> None:
    assert content_of(chat(client, "[echo] hello there,  world")) == "hello there,  world"


def test_non_stream_response_shape_and_usage(client: httpx.Client) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "[echo] one two three"},
    ]
    response = client.post("/v1/chat/completions", json={"model": ZERO, "messages": messages})
    body = response.json()
    assert response.status_code == 200
    assert body["id"].startswith("chatcmpl-sim-")
    assert body["object"] == "chat.completion"
    assert body["model"] == ZERO
    assert body["system_fingerprint"] == "lcp-simulator"
    assert isinstance(body["created"], int)
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "one two three"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    # 3 + 4 words, plus 4 tokens of overhead per message; 3 words generated.
    assert body["usage"] == {"prompt_tokens": 15, "completion_tokens": 3, "total_tokens": 18}


def test_streaming_through_the_openai_client(url: str, client: httpx.Client) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Write about the sea."}]
    expected = client.post(
        "/v1/chat/completions", json={"model": ZERO, "messages": messages, "seed": 4}
    ).json()
    with openai.OpenAI(base_url=url + "/v1", api_key="x") as oai:
        chunks = list(
            oai.chat.completions.create(
                model=ZERO,
                messages=messages,
                seed=4,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in chunks[1:-2]]
    assert all(p and len(p.split()) == 1 for p in pieces)
    assert all(p.startswith(" ") for p in pieces[1:])
    assert "".join(pieces) == expected["choices"][0]["message"]["content"]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == tuple(
        expected["usage"].values()
    )


def test_raw_stream_is_server_sent_events(client: httpx.Client) -> None:
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": ZERO,
            "messages": [{"role": "user", "content": "[echo] a b"}],
            "stream": True,
        },
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert [p["choices"][0]["delta"] for p in payloads] == [
        {"role": "assistant", "content": ""},
        {"content": "a"},
        {"content": " b"},
        {},
    ]
    assert "usage" not in payloads[0]


def test_unknown_model_is_a_404_naming_the_known_models(url: str, client: httpx.Client) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "model_not_found"
    assert "gpt-9" in error["message"] and "sim-llama-8b" in error["message"]
    with openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as oai:
        with pytest.raises(openai.NotFoundError):
            oai.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize(
    "body",
    [
        {"model": ZERO},
        {"model": ZERO, "messages": "hello"},
        {"model": ZERO, "messages": []},
        {"model": ZERO, "messages": [{"role": "user"}]},
        {"model": ZERO, "messages": [{"content": "hi"}]},
        {"model": ZERO, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0},
        {"messages": [{"role": "user", "content": "hi"}]},
        ["not", "an", "object"],
    ],
)
def test_invalid_bodies_are_400(client: httpx.Client, body: object) -> None:
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


def test_invalid_json_is_400(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", content=b"{not json")
    assert response.status_code == 400


def test_unknown_parameters_are_ignored(client: httpx.Client) -> None:
    response = chat(
        client,
        "[echo] fine",
        temperature=0.2,
        top_p=0.9,
        n=1,
        user="u1",
        tools=[{"type": "function", "function": {"name": "f"}}],
        frobnicate={"deep": [1, 2]},
    )
    assert content_of(response) == "fine"


def test_fail_next_fails_exactly_n_requests(client: httpx.Client) -> None:
    assert client.put("/admin/faults", json={"fail_next": 2}).status_code == 200
    assert [chat(client, "hi").status_code for _ in range(3)] == [500, 500, 200]
    client.put("/admin/faults", json={"fail_next": 1, "fail_next_status": 503})
    failed = chat(client, "hi")
    assert failed.status_code == 503
    assert failed.json()["error"]["type"] == "server_error"
    stats = client.get("/admin/stats").json()
    assert stats["by_model"][ZERO] == {
        "requests": 4,
        "ok": 1,
        "500": 2,
        "429": 0,
        "timeout": 0,
        "client_error": 0,
        "503": 1,
    }


def test_faults_can_target_one_model(client: httpx.Client) -> None:
    client.put("/admin/faults", json={"model": "sim-llama-1b", "error_rate_500": 1.0})
    assert chat(client, "hi").status_code == 200
    other = {"model": "sim-llama-1b", "messages": [{"role": "user", "content": "[echo] x"}]}
    assert client.post("/v1/chat/completions", json=other).status_code == 500


def test_429_carries_retry_after(client: httpx.Client) -> None:
    client.put("/admin/faults", json={"error_rate_429": 1.0})
    response = chat(client, "hi")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_error_rate_500_and_delete_resets(client: httpx.Client) -> None:
    client.put("/admin/faults", json={"error_rate_500": 1.0})
    assert client.get("/admin/faults").json()["faults"][0]["error_rate_500"] == 1.0
    assert [chat(client, "hi").status_code for _ in range(3)] == [500, 500, 500]
    assert client.delete("/admin/faults").status_code == 200
    assert client.get("/admin/faults").json() == {"faults": []}
    assert chat(client, "hi").status_code == 200


def test_partial_error_rate_is_seeded() -> None:
    def statuses() -> list[int]:
        with serve_in_thread(create_app(seed=42)) as base, httpx.Client(base_url=base) as http:
            http.put("/admin/faults", json={"error_rate_500": 0.5})
            return [chat(http, "hi").status_code for _ in range(20)]

    first = statuses()
    assert first == statuses()
    assert 500 in first and 200 in first


@pytest.mark.parametrize(
    "body",
    [
        {"error_rate_500": 1.5},
        {"timeout_rate": -0.1},
        {"error_rate_500": 0.6, "error_rate_429": 0.6},
        {"fail_next": -1},
        {"fail_next_status": 200},
        {"model": "gpt-9"},
        {"error_rate": 0.5},
    ],
)
def test_invalid_fault_settings_are_422(client: httpx.Client, body: dict[str, object]) -> None:
    response = client.put("/admin/faults", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith(("Invalid fault settings", "Unknown"))
    assert client.get("/admin/faults").json() == {"faults": []}


def test_timeout_fault_makes_the_client_time_out(client: httpx.Client, url: str) -> None:
    client.put("/admin/faults", json={"timeout_rate": 1.0})
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=httpx.Timeout(5.0, read=0.5)) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            chat(impatient, "hi")
    assert time.monotonic() - started < 2
    assert client.get("/admin/stats").json()["by_outcome"]["timeout"] == 1


def test_models_and_health_say_simulated(client: httpx.Client, url: str) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "simulated": True}
    listing = client.get("/v1/models").json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == [*DEFAULT_PROFILES, *EMBEDDING_MODELS]
    for model in listing["data"]:
        assert model["object"] == "model" and model["owned_by"] == "lcp-simulator"
        assert "simulated" in model["description"]
    with openai.OpenAI(base_url=url + "/v1", api_key="x") as oai:
        assert [m.id for m in oai.models.list()] == [*DEFAULT_PROFILES, *EMBEDDING_MODELS]


def test_embeddings_are_deterministic_unit_vectors_in_float_or_base64(client: httpx.Client, url: str) -> None:
    with openai.OpenAI(base_url=url + "/v1", api_key="x") as oai:
        floats = oai.embeddings.create(model="sim-embed", input=["a b", "c", "a b"], encoding_format="float")
        decoded = oai.embeddings.create(model="sim-embed", input=["a b"])  # the SDK asks for base64
    vectors = [item.embedding for item in floats.data]
    assert len(vectors[0]) == EMBEDDING_MODELS["sim-embed"] and vectors[0] == vectors[2] != vectors[1]
    assert math.isclose(sum(v * v for v in vectors[0]), 1.0, rel_tol=1e-9)
    assert decoded.data[0].embedding == pytest.approx(vectors[0], rel=1e-6)  # float32 on the wire
    assert floats.usage.prompt_tokens == 5
    assert client.post("/v1/embeddings", json={"model": ZERO, "input": "x"}).status_code == 404
    assert client.post("/v1/embeddings", json={"model": "sim-embed", "input": []}).status_code == 400
    too_wide = {"model": "sim-embed", "input": "x", "dimensions": 65}
    assert client.post("/v1/embeddings", json=too_wide).status_code == 400


def test_metrics_use_vllm_names_and_count_requests(client: httpx.Client) -> None:
    text = client.get("/metrics").text
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:e2e_request_latency_seconds_count",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:request_success_total",
    ):
        assert f"\n{name}{{" in text, name
    chat(client, "[echo] one two three")
    chat(client, "[echo] four five", max_tokens=1)
    values = samples(client.get("/metrics").text)
    zero = frozenset({("model_name", ZERO)})
    assert values[("vllm:request_success_total", zero | {("finished_reason", "stop")})] == 1
    assert values[("vllm:request_success_total", zero | {("finished_reason", "length")})] == 1
    assert values[("vllm:generation_tokens_total", zero)] == 4
    assert values[("vllm:prompt_tokens_total", zero)] == (4 + 4) + (3 + 4)
    assert values[("vllm:e2e_request_latency_seconds_count", zero)] == 2
    assert values[("vllm:num_requests_running", zero)] == 0


def test_apps_in_one_process_are_independent(client: httpx.Client) -> None:
    client.put("/admin/faults", json={"error_rate_500": 1.0})
    with serve_in_thread(create_app()) as other, httpx.Client(base_url=other) as http:
        assert chat(http, "hi").status_code == 200
        assert http.get("/admin/stats").json()["by_outcome"]["ok"] == 1
    assert chat(client, "hi").status_code == 500


async def test_latency_grows_when_requests_exceed_concurrency() -> None:
    slow = ModelProfile(
        name="slow",
        ttft_base_ms=0,
        prefill_tokens_per_s=math.inf,
        itl_ms=10,
        itl_growth=0,
        max_concurrency=2,
        default_max_tokens=16,
    )
    body = {"model": "slow", "messages": [{"role": "user", "content": "[echo] a b c d e"}]}

    async def timed(http: httpx.AsyncClient) -> float:
        started = time.monotonic()
        response = await http.post("/v1/chat/completions", json=body)
        assert response.status_code == 200
        return time.monotonic() - started

    with serve_in_thread(create_app({"slow": slow})) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            alone = statistics.median([await timed(http) for _ in range(3)])
            loaded = statistics.median(await asyncio.gather(*(timed(http) for _ in range(8))))
    # 4 tokens x 10 ms alone; 8 requests through 2 slots queue in 4 waves (median ~2.5x).
    assert alone >= 0.035
    assert loaded / alone > 1.8


# ---- tool calls -------------------------------------------------------------------------------

WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
                "latitude": {"type": "number"},
                "hourly": {"type": "boolean"},
                "fields": {"type": "array", "items": {"type": "string"}},
                "options": {"type": "object"},
                "note": {"type": "string"},
            },
            "required": ["city", "unit", "days", "latitude", "hourly", "fields", "options"],
        },
    },
}
TIME: ChatCompletionToolParam = {"type": "function", "function": {"name": "get_time"}}
WEATHER_WORD: ChatCompletionToolParam = {"type": "function", "function": {"name": "weather"}}
TOOLS = [WEATHER, TIME, WEATHER_WORD]


@pytest.fixture
def oai(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client:
        yield client


def ask(oai: openai.OpenAI, text: str, **extra: Any) -> ChatCompletion:
    """A non-streamed chat completion of one user message, with TOOLS declared."""
    completion = oai.chat.completions.create(
        model=ZERO, messages=[{"role": "user", "content": text}], tools=TOOLS, **extra
    )
    assert isinstance(completion, ChatCompletion)
    return completion


def called(completion: ChatCompletion) -> list[tuple[str, str]]:
    """(name, arguments) of each tool call of the reply."""
    calls = completion.choices[0].message.tool_calls or []
    return [(c.function.name, c.function.arguments) for c in calls if c.type == "function"]


def test_a_tool_named_in_the_message_is_called_with_schema_built_arguments(oai: openai.OpenAI) -> None:
    completion = ask(oai, "What is the get_weather for tomorrow?")
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.role == "assistant" and choice.message.content is None
    [(name, arguments)] = called(completion)
    assert name == "get_weather"
    assert json.loads(arguments) == {
        "city": "example",
        "unit": "celsius",
        "days": 1,
        "latitude": 1.0,
        "hourly": True,
        "fields": [],
        "options": {},
    }
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(arguments.split())


def test_tools_are_called_in_order_of_first_mention_as_whole_case_sensitive_words(
    oai: openai.OpenAI,
) -> None:
    completion = ask(oai, "Please get_time, then get_weather, then get_time again; not GET_TIME or weather2.")
    assert [name for name, _ in called(completion)] == ["get_time", "get_weather"]
    assert called(completion)[0] == ("get_time", "{}")  # no parameters declared


def test_a_message_naming_no_tool_gets_a_text_reply(oai: openai.OpenAI) -> None:
    completion = ask(oai, "[echo] what is the weatherman saying?")
    assert completion.choices[0].message.content == "what is the weatherman saying?"
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].finish_reason == "stop"


def test_explicit_json_arguments_pass_through_verbatim_even_when_invalid(oai: openai.OpenAI) -> None:
    completion = ask(
        oai, 'Call get_weather  {"city":  42, "bogus": [1, {"x": null}]} now, and get_time {"tz": "UTC"}'
    )
    assert called(completion) == [
        ("get_weather", '{"city":  42, "bogus": [1, {"x": null}]}'),
        ("get_time", '{"tz": "UTC"}'),
    ]
    # Text after a name that is not a JSON object leaves the arguments to the schema.
    [(_, arguments)] = called(ask(oai, "get_weather {city: Paris}"))
    assert json.loads(arguments)["city"] == "example"


def test_tool_choice_none_required_and_named(oai: openai.OpenAI) -> None:
    none = ask(oai, "[echo] get_weather please", tool_choice="none")
    assert none.choices[0].message.content == "get_weather please"
    assert none.choices[0].message.tool_calls is None
    required = ask(oai, "[echo] hello", tool_choice="required")
    assert [name for name, _ in called(required)] == ["get_weather"]  # nothing named: the first tool
    assert required.choices[0].finish_reason == "tool_calls"
    named = ask(
        oai,
        'get_weather {"city": "Oslo"} and get_time',
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert called(named) == [("get_time", "{}")]
    named_with_json = ask(
        oai,
        'get_weather {"city": "Oslo"} and get_time',
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert called(named_with_json) == [("get_weather", '{"city": "Oslo"}')]


def test_tool_call_ids_are_deterministic(oai: openai.OpenAI) -> None:
    first = ask(oai, "get_weather and get_time")
    second = ask(oai, "get_weather and get_time")
    ids = [c.id for c in first.choices[0].message.tool_calls or []]
    assert ids == [c.id for c in second.choices[0].message.tool_calls or []]
    assert first.id != second.id
    assert len(set(ids)) == 2
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", id_) for id_ in ids)
    other = ask(oai, "get_weather and get_time, please")
    assert not set(ids) & {c.id for c in other.choices[0].message.tool_calls or []}
    with serve_in_thread(create_app(seed=99)) as base:  # another simulator, same request: same ids
        with openai.OpenAI(base_url=base + "/v1", api_key="x") as elsewhere:
            again = ask(elsewhere, "get_weather and get_time")
    assert [c.id for c in again.choices[0].message.tool_calls or []] == ids


def test_streamed_tool_calls_accumulate_into_the_non_streamed_ones(oai: openai.OpenAI) -> None:
    text = 'get_time and get_weather {"city": "Paris", "days": 3}'
    expected = ask(oai, text)
    stream = oai.chat.completions.create(
        model=ZERO,
        messages=[{"role": "user", "content": text}],
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            assert delta.function is not None
            call["id"] += delta.id or ""
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
    assert [calls[i] for i in sorted(calls)] == [
        {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
        for c in expected.choices[0].message.tool_calls or []
        if c.type == "function"
    ]
    assert len([c for c in chunks if c.choices and c.choices[0].delta.tool_calls]) > len(calls) + 2
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage == expected.usage


def test_raw_tool_call_stream_follows_openais_chunk_format(client: httpx.Client) -> None:
    body = {
        "model": ZERO,
        "messages": [{"role": "user", "content": 'get_time {"tz": "UTC"} then get_weather {"city": "Rome"}'}],
        "tools": TOOLS,
        "stream": True,
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        raw = response.read().decode()
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    choices = [json.loads(e.removeprefix("data: "))["choices"][0] for e in events[:-2]]
    deltas = [c["delta"] for c in choices]
    ids = [d["tool_calls"][0]["id"] for d in deltas if "id" in d.get("tool_calls", [{}])[0]]
    opening = {
        "index": 0,
        "id": ids[0],
        "type": "function",
        "function": {"name": "get_time", "arguments": ""},
    }
    assert deltas == [
        {"role": "assistant", "content": None, "tool_calls": [opening]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"tz":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ' "UTC"}'}}]},
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": ids[1],
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 1, "function": {"arguments": '{"city":'}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": ' "Rome"}'}}]},
        {},
    ]
    assert [c["finish_reason"] for c in choices] == [None] * 6 + ["tool_calls"]


def test_after_tool_results_the_reply_states_them(oai: openai.OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "get_weather and get_time"}]
    first = oai.chat.completions.create(model=ZERO, messages=messages, tools=TOOLS)
    weather, time_ = first.choices[0].message.tool_calls or []
    messages += [
        cast(ChatCompletionMessageParam, first.choices[0].message.model_dump(exclude_none=True)),
        {"role": "tool", "tool_call_id": weather.id, "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": time_.id, "content": '{"error": "clock unreachable"}'},
    ]
    second = oai.chat.completions.create(model=ZERO, messages=messages, tools=TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None
    assert second.choices[0].message.content == (
        'Tool results: get_weather → {"temp": 21}; get_time failed: {"error": "clock unreachable"}'
    )


def test_tool_call_replies_meet_faults_latency_and_metrics() -> None:
    slow = ModelProfile(
        name="slow",
        ttft_base_ms=0,
        prefill_tokens_per_s=math.inf,
        itl_ms=30,
        itl_growth=0,
        max_concurrency=2,
        default_max_tokens=16,
    )
    body = {
        "model": "slow",
        "messages": [{"role": "user", "content": 'get_time {"a": 1, "b": 2, "c": 3}'}],
        "tools": [TIME],
    }
    with serve_in_thread(create_app({"slow": slow})) as base, httpx.Client(base_url=base) as http:
        http.put("/admin/faults", json={"fail_next": 1, "fail_next_status": 503})
        assert http.post("/v1/chat/completions", json=body).status_code == 503
        started = time.monotonic()
        response = http.post("/v1/chat/completions", json=body)
        elapsed = time.monotonic() - started
        assert response.status_code == 200
        assert response.json()["choices"][0]["finish_reason"] == "tool_calls"
        assert elapsed >= 5 * 0.030  # 6 argument tokens ('{"a":', ' 1,', ...), 30 ms apart
        values = samples(http.get("/metrics").text)
    labels = frozenset({("model_name", "slow"), ("finished_reason", "stop")})
    assert values[("vllm:request_success_total", labels)] == 1
    assert values[("vllm:generation_tokens_total", frozenset({("model_name", "slow")}))] == 6


def user(text: str) -> dict[str, object]:
    return {"role": "user", "content": text}


ASSISTANT_CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}],
}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"messages": [user("get_time"), ASSISTANT_CALL, {"role": "tool", "content": "12:00"}]},
            "tool message needs tool_call_id",
        ),
        ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools.0.function.name"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0.function.name"),
        ({"tools": [TIME, TIME]}, "get_time more than once"),
        (
            {"tools": [TIME], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
            "tool_choice names the function 'get_weather', which tools do not declare",
        ),
        ({"tool_choice": "required"}, 'tool_choice "required" needs at least one tool'),
        ({"tools": [TIME], "tool_choice": "sometimes"}, "tool_choice"),
        (
            {"messages": [{**user("hi"), "tool_calls": ASSISTANT_CALL["tool_calls"]}]},
            "tool_calls belong on assistant messages",
        ),
        ({"messages": [{"role": "assistant"}]}, "content is required"),
        (
            {"messages": [user("hi"), {"role": "tool", "tool_call_id": "call_9", "content": "x"}]},
            "no tool call with that id",
        ),
        ({"messages": [user("get_time"), ASSISTANT_CALL]}, "call_1 unanswered"),
        ({"messages": [user("get_time"), ASSISTANT_CALL, user("well?")]}, "call_1 were answered"),
    ],
)
def test_bad_tool_shapes_are_400_saying_what_is_wrong(
    client: httpx.Client, extra: dict[str, object], expected: str
) -> None:
    body = {"model": ZERO, "messages": [user("get_time")], **extra}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert expected in error["message"]


def test_the_openai_client_raises_bad_request_for_an_undeclared_tool_choice(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="do not declare"):
        ask(oai, "hi", tool_choice={"type": "function", "function": {"name": "launch_rockets"}})


def _metric(client: httpx.Client, name: str, model: str = ZERO) -> float:
    return samples(client.get("/metrics").text)[(name, frozenset({("model_name", model)}))]


def test_a_shared_prompt_prefix_is_served_from_the_prefix_cache(client: httpx.Client) -> None:
    shared = " ".join(f"w{i}" for i in range(1600))  # 100 blocks of 16 tokens
    assert content_of(chat(client, shared + " first question"))
    hits_before = _metric(client, "vllm:prefix_cache_hits_total")
    queries_before = _metric(client, "vllm:prefix_cache_queries_total")
    response = chat(client, shared + " another question")
    prompt = response.json()["usage"]["prompt_tokens"]
    hits = _metric(client, "vllm:prefix_cache_hits_total") - hits_before
    assert _metric(client, "vllm:prefix_cache_queries_total") - queries_before == prompt
    # the role marker and the 1,600 shared words fill 100 whole blocks; the question differs
    assert hits == 1600
    assert hits_before == 0  # the first request found nothing cached
    # a different prompt of the same length shares nothing
    chat(client, " ".join(f"v{i}" for i in range(1600)))
    assert _metric(client, "vllm:prefix_cache_hits_total") - hits_before == 1600
    assert _metric(client, "vllm:kv_cache_usage_perc") == 0  # no request running holds the cache


def test_the_prefix_cache_forgets_the_least_recently_used_blocks() -> None:
    small = {ZERO: ModelProfile(**{**DEFAULT_PROFILES[ZERO].__dict__, "kv_cache_tokens": 16 * 10})}
    with serve_in_thread(create_app(small, seed=1)) as base, httpx.Client(base_url=base) as http:
        first = " ".join(f"a{i}" for i in range(159))  # with "<user>": 10 blocks, the cache's size
        second = " ".join(f"b{i}" for i in range(159))
        chat(http, first)
        chat(http, second)  # pushes every block of the first out
        chat(http, first)
        assert _metric(http, "vllm:prefix_cache_hits_total") == 0
        chat(http, first)
        assert _metric(http, "vllm:prefix_cache_hits_total") == 160


def test_a_break_stream_fault_cuts_a_streamed_reply_off(client: httpx.Client, url: str) -> None:
    assert client.put("/admin/faults", json={"model": ZERO, "break_stream_next": 1}).status_code == 200
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    pieces: list[str] = []
    with pytest.raises((httpx.RemoteProtocolError, openai.APIConnectionError)):
        stream = sdk.chat.completions.create(
            model=ZERO, messages=[{"role": "user", "content": "[echo] one two three four five"}], stream=True
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces).split() == ["one", "two"]
    # the fault was for one stream: the next one ends properly
    stream = sdk.chat.completions.create(
        model=ZERO, messages=[{"role": "user", "content": "[echo] one two three"}], stream=True
    )
    assert [c.choices[0].finish_reason for c in stream if c.choices][-1] == "stop"
