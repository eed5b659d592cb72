"""A hostile tenant against what a tool answers, on the real stack: a tool's server chooses how much it
sends back, and one worker (in lcp dev, the API's own process) reads the answers of every tenant's tools.
An endless or huge answer, or a small gzip that inflates to gigabytes, must be cut where the model's share
of it ends, never read whole."""

import asyncio
import gzip
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from settings import Settings
from tests.api.conftest import MintKey
from tests.http_server import serve_in_thread

pytestmark = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)

CHUNK = b"A" * 65_536
BOMB = gzip.compress(b"B" * 64_000_000)  # 64 MB of text in about 60 KB


def _hostile_app(sent: dict[str, int]) -> FastAPI:
    app = FastAPI()

    @app.post("/endless")
    async def endless() -> StreamingResponse:
        """Answers for ever, a little at a time (as a slow link would), until the caller hangs up."""

        async def body() -> AsyncIterator[bytes]:
            while True:
                sent["endless"] = sent.get("endless", 0) + len(CHUNK)
                yield CHUNK
                await asyncio.sleep(0.01)  # not a wait: a slow link's pace

        return StreamingResponse(body(), media_type="text/plain")

    @app.post("/bomb")
    async def bomb(request: Request) -> Response:
        """A gzip bomb, sent compressed whatever the caller asked for."""
        return Response(BOMB, media_type="text/plain", headers={"Content-Encoding": "gzip"})

    return app


@pytest.fixture(scope="module")
def hostile() -> Iterator[tuple[str, dict[str, int]]]:
    """The tenant's own server (on loopback here, so the allow-list opens it, as a public address is)."""
    sent: dict[str, int] = {}
    with serve_in_thread(_hostile_app(sent)) as url:
        yield url, sent


@pytest.fixture
def settings(settings: Settings, hostile: tuple[str, dict[str, int]]) -> Settings:
    settings.egress.allow = [hostile[0].removeprefix("http://")]
    return settings


async def _call(
    api_url: str,
    mint_key: MintKey,
    url: str,
    tool: dict[str, Any] | None = None,
    arguments: str = '{"q": "x"}',
) -> tuple[dict[str, Any], float]:
    """Publish an assistant whose tool is `url` (or `tool`), have the model call it with `arguments`, and
    return the call as recorded and how long the turn took."""
    key = await mint_key(tenant="initech", roles=("admin", "client"))
    async with httpx.AsyncClient(
        base_url=api_url, timeout=60, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        assistant_id = f"a-{uuid.uuid4().hex[:8]}"
        tool = tool or {
            "name": "fetch",
            "url": url,
            "method": "POST",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            "timeout_s": 20,
        }
        body = {"id": assistant_id, "name": "Hog", "model": "sim-zero", "tools": [tool], "publish": True}
        created = await http.post("/v1/assistants", json=body)
        assert created.status_code == 201, created.text
        started = time.monotonic()
        message = {"role": "user", "content": f"{tool['name']} {arguments}"}
        turn = await http.post(
            "/v1/chat/completions", json={"model": f"assistant:{assistant_id}", "messages": [message]}
        )
        took = time.monotonic() - started
        assert turn.status_code == 200, turn.text
        detail = await http.get(f"/v1/conversations/{turn.headers['X-Conversation-Id']}")
        [call] = detail.json()["messages"][-1]["tool_calls"]
        return dict(call), took


async def test_an_endless_tool_answer_is_cut_not_read_for_ever(
    api_url: str, mint_key: MintKey, hostile: tuple[str, dict[str, int]]
) -> None:
    url, sent = hostile
    call, took = await _call(api_url, mint_key, f"{url}/endless")
    # Before: the worker read until the tool's timeout (20 s, 300 s at most), holding all of it.
    assert call["ok"], call["result"]
    assert took < 10
    assert call["result"].startswith("AAAA") and "the rest was not read" in call["result"]
    assert len(call["result"]) < 17_000
    await asyncio.sleep(0.5)  # not a wait: time in which a connection still open would carry on
    assert sent["endless"] < 2_000_000  # the connection was dropped, not drained


async def test_a_gzip_bomb_is_not_inflated_whole(
    api_url: str, mint_key: MintKey, hostile: tuple[str, dict[str, int]]
) -> None:
    url, _ = hostile
    call, took = await _call(api_url, mint_key, f"{url}/bomb")
    # Before: 64 MB inflated in the worker for a 16,000-character result; now at most the limit is.
    assert call["ok"], call["result"]
    assert call["result"].startswith("BBBB") and "the rest was not read" in call["result"]
    assert len(call["result"]) < 17_000
    assert took < 10


async def test_a_calculator_expression_nested_too_deep_is_refused_as_such(
    api_url: str, mint_key: MintKey
) -> None:
    """998 unary minuses fit the calculator's 1,000 characters and parse, then overflowed the evaluator's
    recursion: a RecursionError out of the activity, reported as a failure whose outcome is unknown (and
    retried, for an idempotent tool)."""
    calculator = {
        "name": "calc",
        "kind": "builtin",
        "builtin": "calculator",
        "idempotent": True,
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
    }
    expression = "-" * 998 + "1"
    call, _ = await _call(api_url, mint_key, "", calculator, f'{{"expression": "{expression}"}}')
    assert not call["ok"]
    assert "nests too deeply" in call["result"] and "unknown" not in call["result"]
