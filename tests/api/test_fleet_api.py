"""A model served by a fleet of simulator replicas, through the served API: the openai SDK's requests
spread over the replicas, a replica killed mid-run costs the client nothing, and GET /v1/fleet (role
sre) shows each deployment's state."""

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from api.app import create_app
from lab.llm_simulator import create_app as simulator_app
from settings import Settings
from tests.api.conftest import MintKey
from tests.http_server import serve_in_thread
from tests.lcp_cli import run_lcp


@pytest.fixture
def replicas() -> Iterator[tuple[list[str], contextlib.ExitStack]]:
    """Three replicas; the second one can be stopped (killed) on its own."""
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(serve_in_thread(simulator_app(seed=1)))
        killable = stack.enter_context(contextlib.ExitStack())
        second = killable.enter_context(serve_in_thread(simulator_app(seed=2)))
        third = stack.enter_context(serve_in_thread(simulator_app(seed=3)))
        yield [first, second, third], killable


@pytest.fixture
async def api_url(
    settings: Settings, tmp_path: Path, replicas: tuple[list[str], contextlib.ExitStack]
) -> AsyncIterator[str]:
    urls, _ = replicas
    deployments = [{"name": f"replica-{i}", "base_url": f"{url}/v1"} for i, url in enumerate(urls)]
    policy = {
        "models": [
            {
                "name": name,
                "owned_by": "lcp-simulator",
                "upstream_model": "sim-zero",
                # a cooldown that outlasts the test: it is read through a CLI that takes seconds to start
                # on a loaded machine, and a 5 s one had ended by then
                "routing": {"strategy": strategy, "cooldown": {"cooldown_s": 300}},
                "deployments": deployments,
            }
            for name, strategy in (("fleet-zero", "round_robin"), ("fleet-cached", "cache_aware"))
        ]
    }
    settings.models_file = tmp_path / "models.yaml"
    settings.models_file.write_text(yaml.safe_dump(policy))
    settings.conversation.task_queue = f"conversations-{uuid.uuid4().hex[:8]}"
    settings.api.with_worker = True
    with serve_in_thread(create_app(settings)) as url:
        yield url


def served(url: str) -> int:
    return int(httpx.get(f"{url}/admin/stats").json()["received"])


async def test_a_fleet_behind_the_openai_sdk(
    api_url: str, mint_key: MintKey, replicas: tuple[list[str], contextlib.ExitStack]
) -> None:
    urls, killable = replicas
    sdk = openai.AsyncOpenAI(base_url=f"{api_url}/v1", api_key=await mint_key(), max_retries=0)
    for _ in range(6):
        reply = await sdk.chat.completions.create(
            model="fleet-zero", messages=[{"role": "user", "content": "[echo] hi"}]
        )
        assert reply.choices[0].message.content == "hi"
    assert [served(url) for url in urls] == [2, 2, 2]
    models = await sdk.models.list()
    assert sorted(m.id for m in models.data) == [
        "fleet-cached",
        "fleet-zero",
    ]  # a model each, not a deployment

    killable.close()  # replica-1 dies: no client request fails
    for _ in range(6):
        stream = await sdk.chat.completions.create(
            model="fleet-zero", messages=[{"role": "user", "content": "[echo] still here"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "still here"

    sre = {"Authorization": f"Bearer {await mint_key(roles=('sre',))}"}
    async with httpx.AsyncClient(base_url=api_url, headers=sre) as http:
        view = (await http.get("/v1/fleet")).json()
        client = {"Authorization": f"Bearer {await mint_key()}"}
        assert (await http.get("/v1/fleet", headers=client)).status_code == 403
        metrics = (await http.get("/metrics")).text
    assert view["simulated"] is True
    model = next(m for m in view["models"] if m["model"] == "fleet-zero")
    assert (model["model"], model["strategy"], model["discovered"]) == ("fleet-zero", "round_robin", False)
    states = {d["deployment"]: d for d in model["deployments"]}
    assert states["replica-1"]["state"] == "cooling_down"
    assert states["replica-1"]["cooling_down_because"] == "unreachable"
    assert states["replica-0"]["state"] == states["replica-2"]["state"] == "healthy"
    assert states["replica-0"]["recent_calls"] >= 4 and states["replica-1"]["recent_errors"] >= 1
    assert (
        'lcp_gateway_deployment_state{deployment="replica-1",model="fleet-zero",state="cooling_down",'
        'version="stable"} 1.0' in metrics
    )

    # the same through the CLI, piped
    code, out, err = await run_lcp(api_url, sre["Authorization"].removeprefix("Bearer "), "models", "status")
    assert code == 0, err
    assert "a simulated fleet" in out and "fleet-zero stable · round_robin · listed" in out
    assert "replica-1" in out and "cooling" in out and "replica-1 cools down: unreachable" in out
    code, out, err = await run_lcp(
        api_url, client["Authorization"].removeprefix("Bearer "), "models", "status"
    )
    assert code == 1 and "needs the 'sre' role" in err


async def test_a_durable_conversation_stays_on_the_replica_that_holds_its_prefix(
    api_url: str, mint_key: MintKey, replicas: tuple[list[str], contextlib.ExitStack]
) -> None:
    urls, _ = replicas
    headers = {"Authorization": f"Bearer {await mint_key()}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=60) as http:
        created = await http.post(
            "/v1/conversations", json={"model": "fleet-cached", "message": {"content": "[echo] one"}}
        )
        assert created.status_code == 201, created.text
        conversation = created.json()["conversation"]["id"]
        for text in ("two", "three", "four"):
            sent = await http.post(
                f"/v1/conversations/{conversation}/messages", json={"content": f"[echo] {text}"}
            )
            assert sent.status_code == 200, sent.text
    counts = sorted(served(url) for url in urls)
    assert counts == [0, 0, 4]  # every turn went where the previous one was served


async def test_a_replica_that_dies_mid_stream_during_a_durable_turn(
    api_url: str, mint_key: MintKey, replicas: tuple[list[str], contextlib.ExitStack]
) -> None:
    """The turn's activity breaks off on the first replica after two tokens; Temporal's next attempt goes
    to another replica (the first is cooling down), the client's stream goes on, and the reply is
    recorded once."""
    urls, _ = replicas
    async with httpx.AsyncClient() as admin:
        fault = {"model": "sim-zero", "break_stream_next": 1}
        (await admin.put(f"{urls[0]}/admin/faults", json=fault)).raise_for_status()
    conversation = f"fleet-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {await mint_key()}", "X-Conversation-Id": conversation}
    body = {
        "model": "fleet-zero",
        "stream": True,
        "messages": [{"role": "user", "content": "[echo] a b c d e f"}],
    }
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=60) as http:
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            lines = [line async for line in response.aiter_lines() if line.startswith("data: {")]
        chunks = [json.loads(line.removeprefix("data: ")) for line in lines]
        assert not [c for c in chunks if "error" in c]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
        assert text.split() == ["a", "b", "c", "d", "e", "f"]
        transcript = (await http.get(f"/v1/conversations/{conversation}")).json()
    replies = [m for m in transcript["messages"] if m["role"] == "assistant"]
    assert [m["content"] for m in replies] == ["a b c d e f"]  # recorded once
    counts = [served(url) for url in urls]
    assert counts[0] == 1 and sum(counts) == 2  # the broken attempt, then the retry on another replica
