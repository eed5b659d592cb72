"""One assistant turn that calls a tool, as a hostile tenant drives it: the simulator calls the tool the
user's message names, with the arguments the message gives."""

import uuid
from typing import Any

import httpx


async def tool_turn(http: httpx.AsyncClient, tool: dict[str, Any], arguments: str) -> dict[str, Any]:
    """Publish an assistant with `tool`, have the model call it with `arguments` (JSON text), and return
    the call as the conversation recorded it."""
    assistant_id = f"a-{uuid.uuid4().hex[:8]}"
    body = {"id": assistant_id, "name": "Probe", "model": "sim-zero", "tools": [tool], "publish": True}
    created = await http.post("/v1/assistants", json=body)
    assert created.status_code == 201, created.text
    message = {"role": "user", "content": f"{tool['name']} {arguments}"}
    turn = await http.post(
        "/v1/chat/completions", json={"model": f"assistant:{assistant_id}", "messages": [message]}
    )
    assert turn.status_code == 200, turn.text
    detail = await http.get(f"/v1/conversations/{turn.headers['X-Conversation-Id']}")
    [call] = detail.json()["messages"][-1]["tool_calls"]
    return dict(call)
