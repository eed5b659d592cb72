"""Crash safety beyond the drills: a worker SIGKILLed while tokens stream to the client, with API and
worker in separate processes on PostgreSQL (streamed tokens cross over LISTEN/NOTIFY)."""

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cli.drills import DrillStack
from tests.conftest import fresh_postgres_database


@pytest.fixture
async def pg_stack(tmp_path: Path, postgres_url: str) -> AsyncIterator[DrillStack]:
    stack = DrillStack(tmp_path, database_url=await fresh_postgres_database(postgres_url))
    try:
        await stack.start()
        yield stack
    finally:
        await asyncio.to_thread(stack.close)


async def test_worker_killed_mid_stream_the_client_still_gets_the_reply_once(pg_stack: DrillStack) -> None:
    stack = pg_stack
    conversation_id = "streamed-through-a-crash"
    words = [f"w{i}" for i in range(400)]
    said = "[echo] " + " ".join(words)
    body = {"model": "sim-llama-8b", "stream": True, "messages": [{"role": "user", "content": said}]}
    headers = {"Authorization": f"Bearer {stack.key}", "X-Conversation-Id": conversation_id}
    texts: list[str] = []
    killed = False
    stats = f"{stack.simulator_url}/admin/stats"
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=120, headers=headers) as http:
        before = (await http.get(stats)).json()["received"]
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line.removeprefix("data: "))
                assert "error" not in chunk, chunk
                texts.append(chunk["choices"][0]["delta"].get("content") or "")
                if "".join(texts).strip() and not killed:
                    stack.kill("conversation-worker")  # tokens are flowing: the worker dies mid-reply
                    stack.start_process("conversation-worker")
                    killed = True
        after = (await http.get(stats)).json()["received"]
        detail = (await http.get(f"/v1/conversations/{conversation_id}")).json()
    assert killed
    assert after == before + 2  # killed mid-reply: the call ran again
    assert "".join(texts) == " ".join(words)  # what was streamed, then the rest from the record
    stored = [(m["role"], m["content"]) for m in detail["messages"]]
    assert stored == [("user", said), ("assistant", " ".join(words))]
