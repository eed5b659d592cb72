"""LibreChat's request shapes (docs/librechat.md) replayed against lcp: model list, streamed turns
re-sending the whole history, title requests, edits and regenerations."""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from lab.llm_simulator import create_app as create_simulator
from policies.models import DEFAULT_POLICY_FILE
from settings import Settings
from tests.api.conftest import MintKey
from tests.http_server import serve_in_thread

LIBRECHAT_USER = "6650f1c2a1b2c3d4e5f60718"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """The test stack's settings, with sim-zero served by a fleet of two simulator replicas: LibreChat's
    turns go through the gateway's picker, whichever replica answers."""
    policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    with serve_in_thread(create_simulator(seed=2)) as second:
        for entry in policy["models"]:
            if entry["name"] == "sim-zero":
                base_url = entry.pop("base_url")
                entry["deployments"] = [
                    {"name": "one", "base_url": base_url},
                    {"name": "two", "base_url": f"{second}/v1"},
                ]
                entry["routing"] = {"strategy": "round_robin"}
        settings.models_file = tmp_path / "models.yaml"
        settings.models_file.write_text(yaml.safe_dump(policy))
        yield settings
        answered = httpx.get(f"{second}/admin/stats").json()["received"]
        assert answered > 0, "the second replica answered nothing"


@pytest.fixture
async def librechat(api_url: str, mint_key: MintKey) -> httpx.AsyncClient:
    """An HTTP client configured as librechat.yaml says: baseURL .../v1 and a Bearer key."""
    key = await mint_key(tenant="librechat-tenant")
    return httpx.AsyncClient(base_url=f"{api_url}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60)


async def _turn(http: httpx.AsyncClient, conversation_id: str, messages: list[dict[str, str]]) -> str:
    """One streamed chat turn as LibreChat sends it; returns the text it would show."""
    body = {"model": "sim-zero", "stream": True, "user": LIBRECHAT_USER, "messages": messages}
    text = []
    async with http.stream(
        "POST", "/chat/completions", json=body, headers={"X-Conversation-Id": conversation_id}
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in response.aiter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        chunk = json.loads(line.removeprefix("data: "))
        assert chunk["object"] == "chat.completion.chunk" and "usage" not in chunk  # none asked for
        text.append(chunk["choices"][0]["delta"].get("content") or "")
    return "".join(text)


async def _transcript(http: httpx.AsyncClient, conversation_id: str) -> dict:  # type: ignore[type-arg]
    response = await http.get(f"{str(http.base_url).removesuffix('/v1/')}/v1/conversations/{conversation_id}")
    return response.json() if response.status_code == 200 else {"status": response.status_code}


async def test_librechat_conversation(librechat: httpx.AsyncClient) -> None:
    async with librechat as http:
        models = await http.get("/models")
        assert models.status_code == 200
        assert "sim-zero" in [m["id"] for m in models.json()["data"]]

        conversation_id = str(uuid.uuid4())  # LibreChat's conversation ids are UUIDs
        history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "[echo] Hello!"}]
        assert await _turn(http, conversation_id, history) == "Hello!"

        title = await http.post(
            "/chat/completions",
            headers={"X-Conversation-Id": conversation_id},
            json={
                "model": "sim-zero",
                "stream": False,
                "user": LIBRECHAT_USER,
                "messages": [
                    {
                        "role": "user",
                        "content": "Provide a concise, 5-word-or-less title for the conversation, using "
                        "title case conventions. Only return the title itself.\n\nConversation:\n"
                        "User: Hello!\nAI: Hello!",
                    }
                ],
            },
        )
        assert title.status_code == 200 and title.json()["choices"][0]["message"]["content"]
        older_title = await http.post(  # LibreChat up to v0.7.8: one system message
            "/chat/completions",
            headers={"X-Conversation-Id": conversation_id},
            json={
                "model": "sim-zero",
                "temperature": 0.2,
                "presence_penalty": 0,
                "frequency_penalty": 0,
                "max_tokens": 16,
                "messages": [{"role": "system", "content": "Please generate a title ... ||>Title:"}],
            },
        )
        assert older_title.status_code == 200 and older_title.headers["x-lcp-mode"] == "one-shot"

        history += [{"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "[echo] More."}]
        assert await _turn(http, conversation_id, history) == "More."
        recorded = await _transcript(http, conversation_id)
        assert [m["content"] for m in recorded["messages"]] == [
            "[echo] Hello!",
            "Hello!",
            "[echo] More.",
            "More.",
        ]
        assert recorded["conversation"]["system_prompt"] == "Be brief."

        # Regenerate: the same history again -> a new variant of the last reply
        await _turn(http, conversation_id, history)
        recorded = await _transcript(http, conversation_id)
        assert recorded["conversation"]["message_count"] == 5
        assert recorded["messages"][-1]["variants"] == 2

        # The user edits the assistant's first reply in LibreChat and writes on
        edited = [
            history[0],
            history[1],
            {"role": "assistant", "content": "Hello, edited!"},
            {"role": "user", "content": "[echo] After the edit."},
        ]
        assert await _turn(http, conversation_id, edited) == "After the edit."
        recorded = await _transcript(http, conversation_id)
        assert [m["content"] for m in recorded["messages"]] == [
            "[echo] Hello!",
            "Hello, edited!",
            "[echo] After the edit.",
            "After the edit.",
        ]
        assert recorded["conversation"]["message_count"] == 8  # 5 before + edit + user + reply

        # An older LibreChat leaves the placeholder unfilled: that is no conversation id at all
        unfilled = await http.post(
            "/chat/completions",
            headers={"X-Conversation-Id": "{{LIBRECHAT_BODY_CONVERSATIONID}}"},
            json={"model": "sim-zero", "messages": [{"role": "user", "content": "[echo] hi"}]},
        )
        assert unfilled.status_code == 200 and unfilled.headers["x-lcp-mode"] == "one-shot"
