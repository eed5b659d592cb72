"""A hostile tenant against the check of a tool call's arguments, on the real stack. The arguments are the
model's, which a user steers (the simulator calls a tool with the arguments the message names), and the
check runs on the worker's event loop, which in lcp dev and here is the API's own: arguments that make it
slow freeze every tenant's requests, and arguments that make it raise are a failure of unknown outcome."""

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from tests.api.conftest import MintKey
from tests.security.tool_turns import tool_turn

pytestmark = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)


async def _turn(
    api_url: str, mint_key: MintKey, parameters: dict[str, Any], arguments: str
) -> dict[str, Any]:
    """Publish an assistant whose calculator takes `parameters`, have the model call it with `arguments`,
    and return the call as the conversation recorded it."""
    key = await mint_key(tenant="vandelay", roles=("admin", "client"))
    async with httpx.AsyncClient(
        base_url=api_url, timeout=120, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        tool = {"name": "calc", "kind": "builtin", "builtin": "calculator", "parameters": parameters}
        return await tool_turn(http, tool, arguments)


async def test_unique_items_over_many_objects_do_not_freeze_the_api(api_url: str, mint_key: MintKey) -> None:
    """2,500 distinct objects (30 KB) under uniqueItems: jsonschema compared them pairwise, about 14 s
    during which the API answered nothing, not even /healthz."""
    parameters = {
        "type": "object",
        "properties": {"expression": {"type": "string"}, "items": {"type": "array", "uniqueItems": True}},
    }
    arguments = json.dumps({"expression": "6*7", "items": [{"k": i} for i in range(2500)]})
    slowest_health = 0.0
    turn = asyncio.create_task(_turn(api_url, mint_key, parameters, arguments))
    async with httpx.AsyncClient(base_url=api_url, timeout=60) as http:
        while not turn.done():
            started = time.monotonic()
            assert (await http.get("/healthz")).status_code == 200
            slowest_health = max(slowest_health, time.monotonic() - started)
            await asyncio.sleep(0.05)  # not a wait: how often /healthz is timed meanwhile
    call = await turn
    assert call["ok"] and json.loads(call["result"])["result"] == 42, call["result"]
    assert call["duration_ms"] < 2000
    assert slowest_health < 2.0, f"/healthz took {slowest_health:.1f} s while the arguments were checked"


async def test_arguments_that_break_the_check_are_invalid_arguments(api_url: str, mint_key: MintKey) -> None:
    """A 4,000-digit integer against multipleOf 0.1 raised OverflowError out of the activity: a failure
    'of unknown outcome', retried for an idempotent tool. It is the arguments' fault, and says so."""
    parameters = {
        "type": "object",
        "properties": {"expression": {"type": "string"}, "n": {"type": "integer", "multipleOf": 0.1}},
    }
    call = await _turn(api_url, mint_key, parameters, '{"expression": "1", "n": ' + "9" * 4000 + "}")
    assert not call["ok"]
    assert "invalid arguments" in call["result"] and "unknown" not in call["result"], call["result"]
