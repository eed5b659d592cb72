"""The tool-call activity against a real HTTP tool, its built-ins, and the gateway's side of tool calls."""

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.contracts.tools import ToolCallInput, ToolCallResult
from activities.egress import EgressRules, fenced_client
from activities.inference import ChatCompletionInput, ChatMessage, InferenceActivities
from activities.tools import ToolActivities, calculate, host_allowed
from inference.gateway import Gateway, make_http_client
from inference.token_relay import MemoryRelay
from policies.assistants import ToolSpec
from policies.models import ModelRoute
from tests.http_server import serve_in_thread

ORDER_SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "items": {"type": "array", "items": {"type": "integer"}}},
    "required": ["order_id"],
    "additionalProperties": False,
}


TENANT = "acme"


@dataclass
class ToolServer:
    """A tool endpoint that records every request it gets."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def address(self) -> str:
        """host:port, as the egress allow-list opens it: the server is on loopback, refused by default."""
        return self.url.removeprefix("http://")


def _tool_app(requests: list[dict[str, Any]]) -> FastAPI:
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def anything(path: str, request: Request) -> Any:
        body = await request.body()
        requests.append(
            {
                "path": path,
                "method": request.method,
                "query": dict(request.query_params),
                "body": json.loads(body) if body else None,
                "authorization": request.headers.get("authorization"),
                "idempotency_key": request.headers.get("idempotency-key"),
            }
        )
        if path.startswith("status/"):
            return PlainTextResponse(f"status {path} says no", status_code=int(path.split("/")[1]))
        if path == "slow":
            await asyncio.sleep(2)  # not a wait: the slow tool under test
        if path == "big":
            return PlainTextResponse("x" * 500)
        return JSONResponse({"order": "A1", "state": "shipped"})

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[ToolServer]:
    requests: list[dict[str, Any]] = []
    with serve_in_thread(_tool_app(requests)) as url:
        yield ToolServer(url, requests)


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    """The secrets folder, with the tenant's own secret in its folder."""
    (tmp_path / TENANT).mkdir()
    (tmp_path / TENANT / "orders-token").write_text("Bearer s3cret\n")
    return tmp_path


@pytest.fixture
async def tools(secrets: Path, server: ToolServer) -> AsyncIterator[ToolActivities]:
    async with fenced_client(EgressRules([server.address])) as http:
        yield ToolActivities(http, secrets, max_result_chars=200)


def _http_tool(server: ToolServer, path: str = "orders", **overrides: Any) -> ToolSpec:
    spec = {"name": "lookup_order", "parameters": ORDER_SCHEMA, "url": f"{server.url}/{path}", **overrides}
    return ToolSpec(**spec)


async def _call(
    tools: ToolActivities, tool: ToolSpec, arguments: str, key: str = "wf/call_1", tenant: str = TENANT
) -> ToolCallResult:
    request = ToolCallInput(
        tool=tool, call_id="call_1", arguments=arguments, idempotency_key=key, tenant=tenant
    )
    result: ToolCallResult = await ActivityEnvironment().run(tools.call, request)
    return result


def _error(result: ToolCallResult) -> str:
    assert not result.ok
    return str(json.loads(result.content)["error"])


# ---- arguments -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"order_id": ', "invalid arguments: not JSON"),
        ('["A1"]', "invalid arguments: expected a JSON object, not list"),
        ("{}", "invalid arguments: 'order_id' is a required property (at $)"),
        ('{"order_id": 5}', "invalid arguments: 5 is not of type 'string' (at $.order_id)"),
        ('{"order_id": "A1", "items": [1, "two"]}', "'two' is not of type 'integer' (at $.items[1])"),
        (
            '{"order_id": "A1", "color": "red"}',
            "Additional properties are not allowed ('color' was unexpected",
        ),
    ],
)
async def test_a_bad_call_is_an_error_result_and_the_tool_is_not_called(
    tools: ToolActivities, server: ToolServer, arguments: str, expected: str
) -> None:
    before = len(server.requests)
    result = await _call(tools, _http_tool(server), arguments)
    assert expected in _error(result)
    assert result.error_type == "InvalidArguments"
    assert len(server.requests) == before


async def test_the_schema_can_name_its_own_draft(tools: ToolActivities, server: ToolServer) -> None:
    draft4 = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {"n": {"type": "number", "minimum": 0, "exclusiveMinimum": True}},
    }
    result = await _call(tools, _http_tool(server, parameters=draft4), '{"n": 0}')
    assert "less than or equal to the minimum of 0" in _error(result)


async def test_an_invalid_schema_is_reported_not_raised(tools: ToolActivities, server: ToolServer) -> None:
    broken = {"type": "object", "properties": {"n": {"type": "no-such-type"}}}
    result = await _call(tools, _http_tool(server, parameters=broken), '{"n": 1}')
    assert "invalid parameters schema" in _error(result) and result.error_type == "InvalidToolSchema"


# ---- HTTP tools ------------------------------------------------------------------------------------


async def test_post_sends_json_with_the_secret_and_the_idempotency_key(
    tools: ToolActivities, server: ToolServer
) -> None:
    tool = _http_tool(server, auth_secret="orders-token")
    result = await _call(tools, tool, '{"order_id": "A1", "items": [1, 2]}', key="conversation/t/c/call_9")
    assert result.ok and json.loads(result.content) == {"order": "A1", "state": "shipped"}
    assert result.duration_ms > 0
    request = server.requests[-1]
    assert request["method"] == "POST" and request["body"] == {"order_id": "A1", "items": [1, 2]}
    assert request["authorization"] == "Bearer s3cret"  # the file's contents, stripped
    assert request["idempotency_key"] == "conversation/t/c/call_9"


async def test_a_secret_may_be_a_symlink_as_kubernetes_mounts_them(
    tools: ToolActivities, server: ToolServer, secrets: Path
) -> None:
    (secrets / TENANT / "..data").mkdir()
    (secrets / TENANT / "..data" / "mounted").write_text("Bearer mounted\n")
    (secrets / TENANT / "mounted").symlink_to(secrets / TENANT / "..data" / "mounted")
    result = await _call(tools, _http_tool(server, auth_secret="mounted"), '{"order_id": "A1"}')
    assert result.ok and server.requests[-1]["authorization"] == "Bearer mounted"


async def test_get_sends_the_arguments_as_query_parameters(tools: ToolActivities, server: ToolServer) -> None:
    result = await _call(tools, _http_tool(server, method="GET"), '{"order_id": "A1", "items": [3]}')
    assert result.ok
    request = server.requests[-1]
    assert request["method"] == "GET" and request["body"] is None
    assert request["query"] == {"order_id": "A1", "items": "[3]"}
    assert request["authorization"] is None and request["idempotency_key"] == "wf/call_1"


async def test_a_missing_secret_is_an_error_result_and_no_call(
    tools: ToolActivities, server: ToolServer
) -> None:
    before = len(server.requests)
    for secret in ("no-such-secret", ".."):
        result = await _call(tools, _http_tool(server, auth_secret=secret), '{"order_id": "A1"}')
        assert f"needs the secret {secret!r}" in _error(result) and result.error_type == "MissingSecret"
    assert len(server.requests) == before


async def test_a_host_outside_the_allowed_ones_is_never_called(secrets: Path, server: ToolServer) -> None:
    before = len(server.requests)
    async with fenced_client(EgressRules([server.address])) as http:
        fenced = ToolActivities(http, secrets, allowed_hosts=["api.example.com", "*.internal.example"])
        result = await _call(fenced, _http_tool(server, auth_secret="orders-token"), '{"order_id": "A1"}')
        assert result.error_type == "ToolNotAllowed" and "LCP_TOOLS__ALLOWED_HOSTS" in _error(result)
        assert len(server.requests) == before  # not called, and the secret not sent
        allowed = ToolActivities(http, secrets, allowed_hosts=["127.0.0.1"])
        assert (await _call(allowed, _http_tool(server), '{"order_id": "A1"}')).ok


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("api.example.com", True),
        ("orders.internal.example", True),
        ("internal.example", False),  # `*.` names subdomains only
        ("evilinternal.example", False),
        ("169.254.169.254", False),
        ("example.com", False),
    ],
)
def test_host_patterns(host: str, allowed: bool) -> None:
    assert host_allowed(host, ["api.example.com", "*.internal.example"]) is allowed
    assert host_allowed(host, [])  # nothing configured: any host


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_a_refusal_is_an_error_result_with_status_and_body(
    tools: ToolActivities, server: ToolServer, status: int
) -> None:
    result = await _call(tools, _http_tool(server, f"status/{status}"), '{"order_id": "A1"}')
    assert f"answered HTTP {status}: status status/{status} says no" in _error(result)
    assert result.error_type == "ToolRejected"


async def test_a_server_error_raises_so_it_can_be_retried(tools: ToolActivities, server: ToolServer) -> None:
    with pytest.raises(ApplicationError) as caught:
        await _call(tools, _http_tool(server, "status/503"), '{"order_id": "A1"}')
    assert caught.value.type == "ToolError" and not caught.value.non_retryable
    assert "HTTP 503" in caught.value.message


async def test_a_slow_tool_times_out_and_raises(tools: ToolActivities, server: ToolServer) -> None:
    with pytest.raises(ApplicationError) as caught:
        await _call(tools, _http_tool(server, "slow", timeout_s=0.3), '{"order_id": "A1"}')
    assert caught.value.type == "ToolTimeout" and "within 0.3 s" in caught.value.message


async def test_an_unreachable_tool_raises(secrets: Path) -> None:
    tool = ToolSpec(name="gone", url="http://127.0.0.1:9/nothing")
    async with fenced_client(EgressRules(["127.0.0.1:9"])) as http:
        with pytest.raises(ApplicationError) as caught:
            await _call(ToolActivities(http, secrets), tool, "{}")
    assert caught.value.type == "ToolUnavailable"


async def test_a_long_result_is_cut_to_the_limit(tools: ToolActivities, server: ToolServer) -> None:
    result = await _call(tools, _http_tool(server, "big"), '{"order_id": "A1"}')
    assert result.ok and result.content == "x" * 200 + "\n[truncated: the result had 500 characters]"


# ---- a hostile tenant's tools ----------------------------------------------------------------------


async def test_a_tool_at_an_internal_address_is_an_error_result_and_its_secret_not_sent(
    secrets: Path, server: ToolServer
) -> None:
    before = len(server.requests)
    tool = _http_tool(server, auth_secret="orders-token", url=server.url.replace("127.0.0.1", "localhost"))
    async with fenced_client(EgressRules()) as http:  # nothing opened: loopback stays closed
        result = await _call(ToolActivities(http, secrets), tool, '{"order_id": "A1"}')
    assert result.error_type == "AddressNotAllowed"
    assert "was not called" in _error(result) and "LCP_EGRESS__ALLOW" in _error(result)
    assert len(server.requests) == before


async def test_a_tool_whose_url_the_client_cannot_parse_is_an_error_result_not_an_unknown_outcome(
    secrets: Path,
) -> None:
    """A tool saved before the API checked its URL as the HTTP client parses it: nothing was sent, so the
    model is told so, not that the outcome is unknown."""
    tool = ToolSpec(name="octal", url="http://0177.0.0.1:9/a")
    async with fenced_client(EgressRules()) as http:
        result = await _call(ToolActivities(http, secrets), tool, "{}")
    assert result.error_type == "InvalidUrl" and "was not called" in _error(result)


@pytest.mark.parametrize(
    ("tenant", "why"),
    [
        ("globex", "another tenant naming acme's secret"),
        ("", "a call without a tenant (scheduled before tenants reached tools)"),
        ("..", "a tenant named to climb out of the secrets folder"),
        ("acme/../acme", "a tenant with a path in it"),
        ("acme\n", "a tenant with a newline"),
    ],
)
async def test_a_secret_is_read_only_from_the_calling_tenants_own_folder(
    tools: ToolActivities, server: ToolServer, secrets: Path, tenant: str, why: str
) -> None:
    (secrets / "orders-token").write_text("Bearer flat-layout\n")  # the old, shared layout: never read
    before = len(server.requests)
    tool = _http_tool(server, auth_secret="orders-token")
    result = await _call(tools, tool, '{"order_id": "A1"}', tenant=tenant)
    assert result.error_type == "MissingSecret", why
    assert "not configured for this tenant" in _error(result)
    assert len(server.requests) == before


async def test_each_tenant_sends_its_own_secret(
    tools: ToolActivities, server: ToolServer, secrets: Path
) -> None:
    (secrets / "globex").mkdir()
    (secrets / "globex" / "orders-token").write_text("Bearer globex\n")
    tool = _http_tool(server, auth_secret="orders-token")
    assert (await _call(tools, tool, '{"order_id": "A1"}', tenant="globex")).ok
    assert server.requests[-1]["authorization"] == "Bearer globex"
    assert (await _call(tools, tool, '{"order_id": "A1"}', tenant=TENANT)).ok
    assert server.requests[-1]["authorization"] == "Bearer s3cret"


def _schema_with(reference: str) -> dict[str, Any]:
    return {"type": "object", "properties": {"order_id": {"$ref": reference}}}


async def test_a_remote_reference_in_a_schema_is_never_fetched(
    tools: ToolActivities, server: ToolServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = len(server.requests)
    tool = _http_tool(server, parameters=_schema_with(f"{server.url}/schema.json"))
    result = await _call(tools, tool, '{"order_id": "A1"}')
    assert result.error_type == "InvalidToolSchema" and "nothing is fetched" in _error(result)
    # The spec check aside, the validator itself has nothing to fetch with.
    monkeypatch.setattr("activities.tools.parameters_problem", lambda schema: None)
    result = await _call(tools, tool, '{"order_id": "A1"}')
    assert result.error_type == "InvalidToolSchema" and "invalid parameters schema" in _error(result)
    assert len(server.requests) == before


async def test_a_local_reference_still_works(tools: ToolActivities, server: ToolServer) -> None:
    schema = {**_schema_with("#/$defs/order_id"), "$defs": {"order_id": {"type": "string"}}}
    tool = _http_tool(server, parameters=schema)
    assert (await _call(tools, tool, '{"order_id": "A1"}')).ok
    assert "is not of type 'string'" in _error(await _call(tools, tool, '{"order_id": 5}'))


def _branching(levels: int) -> dict[str, Any]:
    """A small schema whose check would branch 2**levels ways: each level is anyOf two refs to the next."""
    defs: dict[str, Any] = {
        f"l{i}": {"anyOf": [{"$ref": f"#/$defs/l{i + 1}"}, {"$ref": f"#/$defs/l{i + 1}"}]}
        for i in range(levels)
    }
    defs[f"l{levels}"] = {"type": "string"}
    return {"type": "object", "$defs": defs, "properties": {"order_id": {"$ref": "#/$defs/l0"}}}


def _nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"anyOf": [schema]}
    return schema


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        (_branching(40), "follows more than 2000 references"),
        (
            {
                "type": "object",
                "$defs": {"loop": {"anyOf": [{"$ref": "#/$defs/loop"}]}},
                "properties": {"order_id": {"$ref": "#/$defs/loop"}},
            },
            "lead back to themselves",
        ),
        (
            {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(3000)}},
            "more than 5000 values",
        ),
        ({"type": "object", "properties": {"order_id": _nested(40)}}, "deeper than 32 levels"),
    ],
)
async def test_a_schema_that_would_take_long_to_check_is_refused_quickly(
    tools: ToolActivities, server: ToolServer, schema: dict[str, Any], reason: str
) -> None:
    started = asyncio.get_running_loop().time()
    result = await _call(tools, _http_tool(server, parameters=schema), '{"order_id": 1}')
    assert result.error_type == "InvalidToolSchema" and reason in _error(result)
    assert asyncio.get_running_loop().time() - started < 2


BACKTRACKS = "^(a|aa)+$"  # exponential in re against a run of a's that ends in something else


@pytest.mark.parametrize(
    "parameters",
    [
        {"type": "object", "properties": {"order_id": {"type": "string", "pattern": BACKTRACKS}}},
        {"type": "object", "patternProperties": {BACKTRACKS: {"type": "string"}}},
        {"type": "object", "patternProperties": {BACKTRACKS: {}}, "additionalProperties": False},
        {"type": "object", "propertyNames": {"pattern": BACKTRACKS}},
    ],
)
async def test_a_pattern_that_backtracks_is_stopped_within_the_pattern_time(
    tools: ToolActivities, server: ToolServer, parameters: dict[str, Any]
) -> None:
    arguments = json.dumps({"a" * 40 + "!": "x", "order_id": "a" * 40 + "!"})
    started = asyncio.get_running_loop().time()
    result = await _call(tools, _http_tool(server, parameters=parameters), arguments)
    assert result.error_type == "InvalidToolSchema" and "patterns take longer than 0.5 s" in _error(result)
    assert asyncio.get_running_loop().time() - started < 5  # in re: 2**40 steps


async def test_patterns_still_check_arguments(tools: ToolActivities, server: ToolServer) -> None:
    parameters = {
        "type": "object",
        "properties": {"order_id": {"type": "string", "pattern": "^A[0-9]+$"}},
        "patternProperties": {"^x-": {"type": "integer"}},
        "additionalProperties": False,
    }
    tool = _http_tool(server, parameters=parameters)
    assert (await _call(tools, tool, '{"order_id": "A1", "x-count": 2}')).ok
    assert "'B1' does not match '^A[0-9]+$'" in _error(await _call(tools, tool, '{"order_id": "B1"}'))
    assert "is not of type 'integer'" in _error(await _call(tools, tool, '{"order_id": "A1", "x-n": "2"}'))
    assert "'color' does not match any of the regexes: '^x-'" in _error(
        await _call(tools, tool, '{"order_id": "A1", "color": "red"}')
    )


# ---- built-ins -------------------------------------------------------------------------------------

CLOCK = ToolSpec(
    name="clock",
    kind="builtin",
    builtin="clock",
    parameters={"type": "object", "properties": {"timezone": {"type": "string"}}},
)
CALCULATOR = ToolSpec(
    name="calculator",
    kind="builtin",
    builtin="calculator",
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    },
)


async def test_clock_tells_utc_or_the_named_time_zone(tools: ToolActivities) -> None:
    utc = json.loads((await _call(tools, CLOCK, "{}")).content)
    assert utc["timezone"] == "UTC" and datetime.fromisoformat(utc["time"]).utcoffset() == timedelta(0)
    tokyo = json.loads((await _call(tools, CLOCK, '{"timezone": "Asia/Tokyo"}')).content)
    assert tokyo["time"].endswith("+09:00")
    for zone in ("Mars/Olympus", "Europe", "../etc/passwd"):
        assert "unknown timezone" in _error(await _call(tools, CLOCK, json.dumps({"timezone": zone})))


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("-2 ** 2", -4),
        ("7 // 2 + 7 % 2", 4),
        ("1 / 4", 0.25),
        ("2 ** 10", 1024),
    ],
)
async def test_calculator_does_arithmetic(tools: ToolActivities, expression: str, value: float) -> None:
    result = await _call(tools, CALCULATOR, json.dumps({"expression": expression}))
    assert result.ok and json.loads(result.content) == {"expression": expression, "result": value}


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("1 / 0", "division by zero"),
        ("9 ** 9 ** 9", "too big"),
        ("2.0 ** 99999", "too big"),
        ("(-8) ** 0.5", "not a real number"),
        ("__import__('os').getcwd()", "only numbers"),
        ("x + 1", "only numbers"),
        ("True + 1", "only numbers"),
        ("1 +", "not an arithmetic expression"),
        ("1" * 2000, "longer than 1000 characters"),
    ],
)
async def test_calculator_refuses_what_is_not_plain_arithmetic(
    tools: ToolActivities, expression: str, problem: str
) -> None:
    result = await _call(tools, CALCULATOR, json.dumps({"expression": expression}))
    assert problem in _error(result) and result.error_type == "InvalidExpression"


def test_calculate_stays_quick_on_nested_powers() -> None:
    with pytest.raises(ValueError, match="too big"):
        calculate("(2 ** 5000) ** 3")
    assert calculate("(2 ** 100) ** 2") == 2**200


# ---- the gateway and the inference activity with tools -------------------------------------------

LOOKUP = ToolSpec(name="lookup_order", parameters=ORDER_SCHEMA, url="http://tools.invalid/orders")


@pytest.fixture
async def inference(simulator: str) -> AsyncIterator[tuple[InferenceActivities, MemoryRelay]]:
    relay = MemoryRelay()
    async with make_http_client() as http:
        routes = {"sim-zero": ModelRoute("sim-zero", simulator, "sim-zero")}
        yield InferenceActivities(Gateway(http, routes), relay), relay


def _ask(text: str, stream_channel: str | None = None, **extra: Any) -> ChatCompletionInput:
    return ChatCompletionInput(
        model="sim-zero",
        messages=[ChatMessage("user", text)],
        params={"seed": 1},
        stream_channel=stream_channel,
        tools=[LOOKUP.openai_tool()],
        **extra,
    )


@pytest.mark.parametrize("streamed", [False, True])
async def test_tool_calls_come_back_whole_or_streamed_and_relay_no_text(
    inference: tuple[InferenceActivities, MemoryRelay], streamed: bool
) -> None:
    activities, relay = inference
    channel = "tool-round" if streamed else None
    async with relay.subscribe("tool-round") as deltas:
        result = await ActivityEnvironment().run(
            activities.chat_completion, _ask('please lookup_order {"order_id": "A1"}', channel)
        )
    assert result.finish_reason == "tool_calls" and result.content == ""
    assert result.tool_calls is not None and len(result.tool_calls) == 1
    call = result.tool_calls[0]
    assert call["name"] == "lookup_order" and json.loads(call["arguments"]) == {"order_id": "A1"}
    assert call["id"].startswith("call_") and result.completion_tokens > 0
    assert deltas.empty()  # a round relays only its text, and the simulator writes none before calls


async def test_tool_results_go_back_to_the_model_in_openai_format(
    inference: tuple[InferenceActivities, MemoryRelay],
) -> None:
    activities, relay = inference
    call = {"id": "call_1", "name": "lookup_order", "arguments": '{"order_id": "A1"}'}
    messages = [
        ChatMessage("user", "please lookup_order"),
        ChatMessage("assistant", "", tool_calls=[call]),
        ChatMessage("tool", '{"state": "shipped"}', tool_call_id="call_1"),
    ]
    async with relay.subscribe("answer") as deltas:
        request = ChatCompletionInput(
            "sim-zero", messages, {"seed": 1}, stream_channel="answer", tools=[LOOKUP.openai_tool()]
        )
        result = await ActivityEnvironment().run(activities.chat_completion, request)
    assert result.tool_calls is None
    assert result.content == 'Tool results: lookup_order → {"state": "shipped"}'
    relayed = []
    while not deltas.empty():
        relayed.append(deltas.get_nowait().text)
    assert "".join(relayed) == result.content  # the text round streams as before


async def test_tool_choice_none_makes_the_model_answer_in_text(
    inference: tuple[InferenceActivities, MemoryRelay],
) -> None:
    activities, _ = inference
    result = await ActivityEnvironment().run(
        activities.chat_completion, _ask("please lookup_order", tool_choice="none")
    )
    assert result.tool_calls is None and result.content and result.finish_reason in ("stop", "length")
