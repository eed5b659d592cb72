"""The clients other than the openai SDK that users bring, in their own virtualenv (tests/sdk_clients.py):
examples/clients/*.py run against the API, each through one-shot, streamed, tool and structured-output
requests and durable turns (the conversation id as a header and in the body)."""

import asyncio
import json
import os
import uuid
from asyncio.subprocess import PIPE
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import MintKey
from tests.sdk_clients import clients_python

EXAMPLES = Path(__file__).parents[2] / "examples" / "clients"


@pytest.fixture(scope="session")
def python() -> Path:
    return clients_python()


@pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)
@pytest.mark.parametrize("script", ["langchain_client.py", "litellm_client.py"])
async def test_a_client_gets_every_kind_of_turn(
    api_url: str, mint_key: MintKey, python: Path, script: str
) -> None:
    key, conversation = await mint_key(), f"{script.split('_')[0]}-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "LCP_URL": api_url,
        "LCP_KEY": key,
        "LCP_CONVERSATION": conversation,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download at import
        "LITELLM_TELEMETRY": "False",
    }
    ran = await asyncio.create_subprocess_exec(
        str(python), str(EXAMPLES / script), env=env, stdout=PIPE, stderr=PIPE
    )
    stdout, stderr = await asyncio.wait_for(ran.communicate(), 600)
    assert ran.returncode == 0, stderr.decode()[-3000:]
    out = json.loads(stdout.decode().strip().splitlines()[-1])
    assert (out["one_shot"], out["streamed"]) == ("hello", "streamed words")
    assert out["tool_calls"] == ["lookup"]
    assert set(out["structured"]) == {"title", "priority"}
    assert out["durable"] == ["kept", "kept too"]
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"}) as http:
        for suffix, text in (("-h", "kept"), ("-b", "kept too")):
            recorded = (await http.get(f"/v1/conversations/{conversation}{suffix}")).json()
            assert [m["content"] for m in recorded["messages"]] == [f"[echo] {text}", text]
