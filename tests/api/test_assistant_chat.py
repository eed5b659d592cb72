"""Assistants through OpenAI's chat API (the official `openai` client, model `assistant:ID`), and a running
conversation moved to another version only when its user asks."""

import uuid
from typing import Any

import httpx
import openai
import pytest
from temporalio.client import Client

from tests.api.test_assistants_api import _create, _ok
from tests.api.test_conversations_api import error
from tests.workflows.saved_histories import save_history

sqlite_only = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)


@pytest.fixture
def sdk(api: httpx.AsyncClient) -> openai.AsyncOpenAI:
    key = api.headers["Authorization"].removeprefix("Bearer ")
    return openai.AsyncOpenAI(base_url=f"{str(api.base_url).rstrip('/')}/v1", api_key=key, max_retries=0)


def _id() -> str:
    return f"chat-{uuid.uuid4().hex[:8]}"


async def _conversation(api: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    return await _ok(await api.get(f"/v1/conversations/{conversation_id}"))


@sqlite_only
async def test_an_assistant_answers_openai_clients_durably_and_keeps_its_version(
    admin: httpx.AsyncClient, api: httpx.AsyncClient, sdk: openai.AsyncOpenAI
) -> None:
    assistant_id = _id()
    await _create(admin, assistant_id, publish=True)
    assert f"assistant:{assistant_id}" in [m.id for m in (await sdk.models.list()).data]
    assert (await sdk.models.retrieve(f"assistant:{assistant_id}")).owned_by.startswith("lcp assistant")

    history: list[Any] = [
        {"role": "system", "content": "the client's own prompt: replaced by the assistant's"},
        {"role": "user", "content": "[echo] hello there"},
    ]
    raw = await sdk.chat.completions.with_raw_response.create(
        model=f"assistant:{assistant_id}", messages=history
    )
    reply = raw.parse()
    conversation_id = raw.headers["X-Conversation-Id"]  # no id given: a new durable conversation
    assert raw.headers["X-Assistant-Version"] == "v1" and raw.headers["X-Lcp-Mode"] == "durable"
    assert reply.choices[0].message.content == "hello there"
    assert reply.model == f"assistant:{assistant_id}"  # the name asked for; the version is the header
    detail = await _conversation(api, conversation_id)
    assert detail["conversation"]["assistant_id"] == assistant_id
    assert detail["conversation"]["system_prompt"] == "Be brief."
    assert [m["assistant_version"] for m in detail["messages"]] == [None, "v1"]

    await _ok(await admin.patch(f"/v1/assistants/{assistant_id}", json={"instructions": "Be thorough."}))
    await _ok(await admin.post(f"/v1/assistants/{assistant_id}/publish", json={"version": "v2"}))
    history += [{"role": "assistant", "content": "hello there"}, {"role": "user", "content": "[echo] more"}]
    stream = await sdk.chat.completions.create(
        model=f"assistant:{assistant_id}",
        messages=history,
        stream=True,
        extra_headers={"X-Conversation-Id": conversation_id},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join([chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices]) == "more"
    assert {chunk.model for chunk in chunks} == {f"assistant:{assistant_id}"}
    detail = await _conversation(api, conversation_id)
    assert detail["conversation"]["assistant_version"] == "v1"  # editing never moves it by itself
    assert [m["assistant_version"] for m in detail["messages"]] == [None, "v1", None, "v1"]

    switched = await _ok(await api.put(f"/v1/conversations/{conversation_id}/assistant", json={}))
    assert switched["assistant_version"] == "v2" and switched["system_prompt"] == "Be thorough."
    history += [{"role": "assistant", "content": "more"}, {"role": "user", "content": "[echo] after"}]
    raw = await sdk.chat.completions.with_raw_response.create(
        model=f"assistant:{assistant_id}",
        messages=history,
        extra_headers={"X-Conversation-Id": conversation_id},
    )
    assert raw.headers["X-Assistant-Version"] == "v2"
    detail = await _conversation(api, conversation_id)
    assert [m["assistant_version"] for m in detail["messages"]][1::2] == ["v1", "v1", "v2"]
    back = await api.put(f"/v1/conversations/{conversation_id}/assistant", json={"version": "v1"})
    assert (await _ok(back))["assistant_version"] == "v1"


@sqlite_only
async def test_assistant_requests_that_cannot_be_served_are_refused_clearly(
    admin: httpx.AsyncClient, api: httpx.AsyncClient, sdk: openai.AsyncOpenAI
) -> None:
    assistant_id = _id()
    await _create(admin, assistant_id, publish=True)
    ask = [{"role": "user", "content": "[echo] x"}]
    follow_up = [*ask, {"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]

    with pytest.raises(openai.BadRequestError) as bad:
        await sdk.chat.completions.create(model="assistant:Not An Id", messages=ask)  # type: ignore[arg-type]
    assert "assistant:ID or assistant:ID@vN" in bad.value.message
    both = {"model": "sim-zero", "assistant": {"id": assistant_id}, "messages": ask}
    assert "not both" in error(await api.post("/v1/chat/completions", json=both), 400)["message"]
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.chat.completions.create(model="assistant:nobody", messages=ask)  # type: ignore[arg-type]
    assert "GET /v1/assistants" in missing.value.message
    unknown_version = {"assistant": {"id": assistant_id, "version": "v7"}, "messages": ask}
    error(await api.post("/v1/chat/completions", json=unknown_version), 404)
    tool = {"type": "function", "function": {"name": "lookup"}}  # the client's own: not on a recorded turn
    with_tools = {"model": f"assistant:{assistant_id}", "messages": ask, "tools": [tool]}
    refused = error(await api.post("/v1/chat/completions", json=with_tools), 400)
    assert refused["code"] == "ToolsNotDurable" and "an assistant's turn" in refused["message"]

    title = {"model": f"assistant:{assistant_id}", "messages": [{"role": "system", "content": "[echo] t"}]}
    one_shot = await api.post("/v1/chat/completions", json=title)  # no user message: not a turn
    assert one_shot.status_code == 200 and one_shot.headers["X-Lcp-Mode"] == "one-shot", one_shot.text
    assert "X-Conversation-Id" not in one_shot.headers

    plain_id = uuid.uuid4().hex  # a conversation on a bare model is not an assistant's
    headers = {"X-Conversation-Id": plain_id}
    await sdk.chat.completions.create(model="sim-zero", messages=ask, extra_headers=headers)  # type: ignore[arg-type]
    with pytest.raises(openai.ConflictError) as mismatch:
        await sdk.chat.completions.create(
            model=f"assistant:{assistant_id}",
            messages=follow_up,  # type: ignore[arg-type]
            extra_headers=headers,
        )
    assert "served by model sim-zero" in mismatch.value.message
    error(await api.put(f"/v1/conversations/{plain_id}/assistant", json={}), 409, "AssistantMismatch")

    raw = await sdk.chat.completions.with_raw_response.create(
        model=f"assistant:{assistant_id}",
        messages=ask,  # type: ignore[arg-type]
    )
    mine = {"X-Conversation-Id": raw.headers["X-Conversation-Id"]}
    with pytest.raises(openai.ConflictError) as overridden:  # a bare model cannot take over its turns
        await sdk.chat.completions.create(
            model="sim-llama-8b",
            messages=follow_up,  # type: ignore[arg-type]
            extra_headers=mine,
        )
    assert f"ask for model 'assistant:{assistant_id}'" in overridden.value.message
    await _ok(await api.post(f"/v1/conversations/{mine['X-Conversation-Id']}/archive"))
    with pytest.raises(openai.ConflictError) as closed:
        await sdk.chat.completions.create(
            model=f"assistant:{assistant_id}",
            messages=follow_up,  # type: ignore[arg-type]
            extra_headers=mine,
        )
    assert "is archived" in closed.value.message

    await _ok(await admin.post(f"/v1/assistants/{assistant_id}/archive", json={}))
    assert f"assistant:{assistant_id}" not in [m.id for m in (await sdk.models.list()).data]
    with pytest.raises(openai.NotFoundError):
        await sdk.models.retrieve(f"assistant:{assistant_id}")
    with pytest.raises(openai.ConflictError):
        await sdk.chat.completions.create(model=f"assistant:{assistant_id}", messages=ask)  # type: ignore[arg-type]


@sqlite_only
async def test_an_assistant_with_a_tool_calls_it_for_an_openai_client(
    admin: httpx.AsyncClient, api: httpx.AsyncClient, sdk: openai.AsyncOpenAI, client: Client
) -> None:
    assistant_id = _id()
    calculator = {
        "name": "calculator",
        "kind": "builtin",
        "builtin": "calculator",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    }
    await _create(admin, assistant_id, publish=True, tools=[calculator])
    raw = await sdk.chat.completions.with_raw_response.create(
        model=f"assistant:{assistant_id}",
        messages=[{"role": "user", "content": 'calculator {"expression": "6 * 7"}'}],
    )
    answer = raw.parse().choices[0].message.content
    assert answer == 'Tool results: calculator → {"expression": "6 * 7", "result": 42}'
    detail = await _conversation(api, raw.headers["X-Conversation-Id"])
    calls = detail["messages"][-1]["tool_calls"]
    assert [(c["name"], c["ok"], c["result"]) for c in calls] == [
        ("calculator", True, '{"expression": "6 * 7", "result": 42}')
    ]

    await _ok(await admin.patch(f"/v1/assistants/{assistant_id}", json={"instructions": "v2"}))
    conversation_id = raw.headers["X-Conversation-Id"]
    switched = await api.put(f"/v1/conversations/{conversation_id}/assistant", json={"version": "v2"})
    assert (await _ok(switched))["assistant_version"] == "v2"  # a draft, asked for by name
    later = await api.post(f"/v1/conversations/{conversation_id}/messages", json={"content": "[echo] ok"})
    assert (await _ok(later))["reply"]["assistant_version"] == "v2"
    handle = client.get_workflow_handle(f"conversation/default/{conversation_id}")
    await save_history(handle, "conversation", "assistant_tools")
