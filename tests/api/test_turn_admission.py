"""Turn admission through the real API (api/turn_gate.py): with a tenant's turn holding the only slot, its
next turn, whole or streamed, waits its turn and past max_wait_s is a 503 with Retry-After that reached no
workflow (the retry records it once), while another tenant, with nothing in flight, is let in at once; the
slots all come back."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bench.neighbours import measure
from settings import Settings, TurnAdmissionSettings
from tests.api.conftest import MintKey

# The gate is the API's, before any database: one kind of read model is enough.
pytestmark = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)


@pytest.fixture
def one_slot(settings: Settings) -> Settings:
    """Request before `api_url`: the API lets one turn in at a time, and a turn waits 1 s at most."""
    settings.conversation.admission = TurnAdmissionSettings(
        initial_limit=1, min_limit=1, max_limit=1, max_wait_s=1.0
    )
    return settings


@pytest.fixture
async def slow_model(simulator: str) -> AsyncIterator[None]:
    """sim-zero answers after 6 s while the test runs."""
    async with httpx.AsyncClient(base_url=simulator.removesuffix("/v1"), timeout=10) as http:
        (await http.put("/admin/faults", json={"model": "sim-zero", "latency_ms": 6000})).raise_for_status()
        try:
            yield
        finally:
            await http.delete("/admin/faults")


def _gauge(exposition: str, name: str) -> float:
    values = [float(line.split()[1]) for line in exposition.splitlines() if line.startswith(f"{name} ")]
    assert len(values) == 1, exposition
    return values[0]


async def _in_flight(http: httpx.AsyncClient) -> float:
    return _gauge((await http.get("/metrics")).text, "lcp_api_turns_in_flight")


async def _until_in_flight(http: httpx.AsyncClient, turns: int) -> None:
    deadline = time.monotonic() + 30
    while await _in_flight(http) != turns:
        assert time.monotonic() < deadline, f"the API never had {turns} turns in flight"
        await asyncio.sleep(0.05)


async def test_a_tenant_past_the_limit_waits_then_gets_a_503_sent_nowhere_while_another_goes_in(
    one_slot: Settings, api_url: str, mint_key: MintKey, slow_model: None, simulator: str
) -> None:
    def client(key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=api_url, timeout=60, headers={"Authorization": f"Bearer {key}"})

    async def conversation(http: httpx.AsyncClient) -> str:
        return str(
            (await http.post("/v1/conversations", json={"model": "sim-zero"})).json()["conversation"]["id"]
        )

    async with (
        client(await mint_key(tenant="noisy")) as noisy,
        client(await mint_key(tenant="quiet")) as quiet,
    ):
        holder, second, quiets = (
            await conversation(noisy),
            await conversation(noisy),
            await conversation(quiet),
        )
        held = asyncio.create_task(
            noisy.post(f"/v1/conversations/{holder}/messages", json={"content": "slow"})
        )
        await _until_in_flight(noisy, 1)
        let_in = asyncio.create_task(
            quiet.post(f"/v1/conversations/{quiets}/messages", json={"content": "hi"})
        )
        await _until_in_flight(noisy, 2)  # the quiet tenant held nothing: in past the limit

        body: dict[str, Any] = {"content": "wait for me"}
        keyed = {"Idempotency-Key": "wait-for-me"}  # a refused turn's key is free for its retry
        refused = await noisy.post(f"/v1/conversations/{second}/messages", json=body, headers=keyed)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "2"
        error = refused.json()["error"]
        assert error["type"] == "ConversationsBusy"
        assert "was not sent (it waited 1 s for its turn)" in error["message"]
        streamed = await noisy.post(
            "/v1/chat/completions",
            json={"model": "sim-zero", "stream": True, "messages": [{"role": "user", "content": "wait"}]},
            headers={"X-Conversation-Id": uuid.uuid4().hex},
        )
        assert streamed.status_code == 503 and streamed.headers["content-type"].startswith("application/json")

        assert (await held).status_code == 200 and (await let_in).status_code == 200
        await _until_in_flight(noisy, 0)
        async with httpx.AsyncClient(base_url=simulator.removesuffix("/v1"), timeout=10) as sim:
            await sim.delete("/admin/faults")
        sent = await noisy.post(f"/v1/conversations/{second}/messages", json=body, headers=keyed)
        assert sent.status_code == 200, sent.text
        again = await noisy.post(f"/v1/conversations/{second}/messages", json=body, headers=keyed)
        assert again.json()["reply"]["id"] == sent.json()["reply"]["id"]
        detail = (await noisy.get(f"/v1/conversations/{second}")).json()
        assert [m["content"] for m in detail["messages"] if m["role"] == "user"] == ["wait for me"]
        assert detail["conversation"]["message_count"] == 2
        assert await _in_flight(noisy) == 0


async def test_the_neighbours_benchmark_measures_both_tenants_and_reads_the_gate(
    api_url: str, mint_key: MintKey
) -> None:
    """`lcp bench neighbours`' measurement, against this test's API (the command starts stacks of its own)."""
    result = await measure(api_url, await mint_key(tenant="quiet"), await mint_key(tenant="noisy"), 4, 3)
    assert result["quiet_alone"]["turns"] == result["quiet_beside_burst"]["turns"] == 3
    assert result["burst_turns_per_s"] > 0 and result["burst_refused"] == 0
    assert set(result["gate_at_the_end"]) == {"limit", "in_flight", "waiting"}
