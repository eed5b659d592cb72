"""A hostile tenant admin against the regular expressions in a tool's parameter schema, on the real stack.
The regex module that matches them (with a timeout) compiles a bounded repeat by unrolling it, before the
timeout applies: ((a{1000}){1000}){1000} took 12 s and more than 4 GiB on the worker's event loop (in lcp
dev, the API's) at the first call. Such a schema is refused when the assistant is saved."""

import time
import uuid
from typing import Any

import httpx
import pytest

from activities.tools import _Refused, parse_arguments
from policies.assistants import MAX_PATTERN_SIZE, ToolSpec, pattern_size

on_sqlite = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)

BOMBS = ["((a{1000}){1000}){1000}", "(?:a{65535}){65535}", "(x{400}){400}"]
FINE = ["^[a-z]{1,64}$", r"^\d{3}-\d{4}$", "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"]


def _assistant(pattern: str, where: str) -> dict[str, Any]:
    if where == "pattern":
        parameters = {"type": "object", "properties": {"q": {"type": "string", "pattern": pattern}}}
    else:
        parameters = {"type": "object", "patternProperties": {pattern: {"type": "string"}}}
    tool = {"name": "lookup", "url": "https://tools.example.com/lookup", "parameters": parameters}
    return {"id": f"a-{uuid.uuid4().hex[:8]}", "name": "Regex", "model": "sim-zero", "tools": [tool]}


@on_sqlite
@pytest.mark.parametrize("where", ["pattern", "patternProperties"])
async def test_a_pattern_that_unrolls_too_far_is_refused_when_saved(
    admin: httpx.AsyncClient, where: str
) -> None:
    for pattern in BOMBS:
        refused = await admin.post("/v1/assistants", json=_assistant(pattern, where))
        assert refused.status_code == 422, (pattern, refused.text)  # before: 201, a bomb for the first call
        assert "patterns expand" in refused.json()["error"]["message"]
    many = {
        f"^k{i}(v{{90}}){{10}}$": {"type": "string"} for i in range(200)
    }  # 200 x 901 steps: too many in all
    body = _assistant("x", where)
    body["tools"][0]["parameters"] = {"type": "object", "patternProperties": many}
    assert (await admin.post("/v1/assistants", json=body)).status_code == 422
    for pattern in FINE:
        saved = await admin.post("/v1/assistants", json=_assistant(pattern, where))
        assert saved.status_code == 201, (pattern, saved.text)


def test_a_stored_schema_with_such_a_pattern_is_refused_before_compiling() -> None:
    """A version saved before this check: the activity refuses it without compiling the pattern."""
    parameters = {"type": "object", "properties": {"q": {"type": "string", "pattern": BOMBS[0]}}}
    started = time.monotonic()
    with pytest.raises(_Refused) as refused:
        parse_arguments(ToolSpec(name="lookup", parameters=parameters), '{"q": "aaa"}')
    assert refused.value.error_type == "InvalidToolSchema"
    assert time.monotonic() - started < 1


def test_pattern_size_counts_unrolled_repeats() -> None:
    assert pattern_size("((a{1000}){1000}){1000}") > 10**9
    assert pattern_size("(a|aa)+") < 10  # open-ended repeats are not unrolled
    assert pattern_size("[") == 0  # unreadable: the check's own error says so later
    assert all(pattern_size(pattern) < MAX_PATTERN_SIZE // 100 for pattern in FINE)
