"""The conversations API over real HTTP: uvicorn, a real worker, Temporal dev server, simulator."""

import base64
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from settings import Settings
from tests.waiting import eventually
from workflows.conversation import ConversationWorkflow, workflow_id

# Tests where the read model (and so the database) matters run on SQLite and PostgreSQL;
# the rest run once, on SQLite.
sqlite_only = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)

SetFaults = Callable[..., Awaitable[None]]


# ---- helpers -----------------------------------------------------------------------------


def error(response: httpx.Response, status: int, type_: str | None = None) -> dict[str, Any]:
    """Assert the response is an error of `status` in the API's shape; return its `error`."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err["type"], str) and err["type"], body
    assert isinstance(err["message"], str) and err["message"], body
    if type_ is not None:
        assert err["type"] == type_, body
    return dict(err)


async def create(api: httpx.AsyncClient, content: str | None = "hello", **body: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": "sim-zero", **body}
    if content is not None:
        payload["message"] = {"content": content}
    response = await api.post("/v1/conversations", json=payload)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def detail(api: httpx.AsyncClient, conversation_id: str, **params: str) -> dict[str, Any]:
    response = await api.get(f"/v1/conversations/{conversation_id}", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def send(api: httpx.AsyncClient, conversation_id: str, content: str, **body: Any) -> httpx.Response:
    return await api.post(f"/v1/conversations/{conversation_id}/messages", json={"content": content, **body})


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


# ---- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def small_messages(settings: Settings) -> Settings:
    """Request before `api`: the API and the conversations it starts take 40 characters at most."""
    settings.conversation.max_message_chars = 40
    return settings


@pytest.fixture
def one_turn_per_run(settings: Settings) -> Settings:
    """Request before `api`: every conversation continues as new after each turn."""
    settings.conversation.max_turns_per_run = 1
    return settings


@pytest.fixture
async def faults(simulator: str) -> AsyncIterator[SetFaults]:
    """Set simulator faults at runtime; they are cleared when the test ends."""
    root = simulator.removesuffix("/v1")
    async with httpx.AsyncClient(base_url=root, timeout=10) as http:

        async def set_faults(**body: Any) -> None:
            response = await http.put("/admin/faults", json=body)
            assert response.status_code == 200, response.text

        try:
            yield set_faults
        finally:
            await http.delete("/admin/faults")


# ---- create, read, list ------------------------------------------------------------------


async def test_create_with_first_message_then_read_your_writes(api: httpx.AsyncClient) -> None:
    created = await create(api, "[echo] hello there", title="greeting")
    conversation, turn = created["conversation"], created["turn"]
    assert conversation["status"] == "active"
    assert (conversation["version"], conversation["message_count"]) == (1, 2)
    assert conversation["model"] == "sim-zero"
    assert conversation["title"] == "greeting"
    assert turn["conversation_id"] == conversation["id"]
    assert turn["message"]["role"] == "user"
    assert turn["message"]["content"] == "[echo] hello there"
    assert turn["reply"]["role"] == "assistant"
    assert turn["reply"]["content"] == "hello there"
    assert turn["reply"]["parent_id"] == turn["message"]["id"]
    assert turn["reply"]["model"] == "sim-zero"

    shown = await detail(api, conversation["id"])  # no waiting: the turn is already stored
    assert shown["conversation"]["version"] == 1
    assert shown["conversation"]["message_count"] == 2
    assert [(m["id"], m["role"]) for m in shown["messages"]] == [
        (turn["message"]["id"], "user"),
        (turn["reply"]["id"], "assistant"),
    ]
    assert shown["messages"][1]["content"] == "hello there"
    assert shown["branch"] == turn["reply"]["id"]
    assert [(b["leaf_id"], b["length"], b["active"]) for b in shown["branches"]] == [
        (turn["reply"]["id"], 2, True)
    ]

    second = await send(api, conversation["id"], "[echo] and again")
    assert second.status_code == 200, second.text
    assert second.json()["version"] == 2
    assert second.json()["message"]["parent_id"] == turn["reply"]["id"]
    shown = await detail(api, conversation["id"])
    assert [m["content"] for m in shown["messages"]] == [
        "[echo] hello there",
        "hello there",
        "[echo] and again",
        "and again",
    ]
    assert shown["conversation"]["message_count"] == 4


async def test_list_is_newest_first_and_pages_with_a_cursor(api: httpx.AsyncClient) -> None:
    ids = [(await create(api, None, title=f"c{i}"))["conversation"]["id"] for i in range(3)]
    newest_first = ids[::-1]

    first = await api.get("/v1/conversations", params={"limit": 2})
    assert first.status_code == 200, first.text
    assert [c["id"] for c in first.json()["data"]] == newest_first[:2]
    cursor = first.json()["next_cursor"]
    assert cursor

    second = await api.get("/v1/conversations", params={"limit": 2, "cursor": cursor})
    assert second.status_code == 200, second.text
    assert [c["id"] for c in second.json()["data"]] == newest_first[2:]
    assert second.json()["next_cursor"] is None

    everything = await api.get("/v1/conversations")
    assert [c["id"] for c in everything.json()["data"]] == newest_first
    assert everything.json()["next_cursor"] is None
    shown = await detail(api, ids[0])  # created without a message, yet readable
    assert (shown["messages"], shown["branch"], shown["branches"]) == ([], None, [])


@sqlite_only
async def test_a_bad_cursor_is_a_clear_422(api: httpx.AsyncClient) -> None:
    for cursor in [
        "not-a-cursor",
        "abc",
        cursor_of({"created": "2026-01-01"}),
        cursor_of(["2026-01-01T00:00:00+00:00"]),
        cursor_of([None, "x"]),
        cursor_of(["yesterday", "x"]),
        cursor_of(12),
    ]:
        response = await api.get("/v1/conversations", params={"cursor": cursor})
        err = error(response, 422, "InvalidCursor")
        assert "next_cursor" in err["message"], cursor


# ---- validation --------------------------------------------------------------------------


@sqlite_only
async def test_invalid_messages_are_rejected_and_nothing_is_added(
    small_messages: Settings, api: httpx.AsyncClient
) -> None:
    created = await create(api, "hello")
    conversation_id = created["conversation"]["id"]
    cases = {
        "empty": ({"content": ""}, "empty"),
        "whitespace only": ({"content": " \n\t "}, "whitespace"),
        "over the limit": ({"content": "x" * 41}, "over the limit of 40"),
        "role assistant": ({"content": "hi", "role": "assistant"}, "cannot be sent"),
        "unknown role": ({"content": "hi", "role": "wizard"}, "unknown role 'wizard'"),
    }
    for case, (body, says) in cases.items():
        response = await api.post(f"/v1/conversations/{conversation_id}/messages", json=body)
        err = error(response, 422, "InvalidMessage")
        assert says in err["message"], (case, err)

    shown = await detail(api, conversation_id)
    assert (shown["conversation"]["version"], shown["conversation"]["message_count"]) == (1, 2)
    assert len(shown["messages"]) == 2

    ok = await send(api, conversation_id, "x" * 40)  # exactly at the limit is fine
    assert ok.status_code == 200, ok.text


@sqlite_only
async def test_invalid_first_message_creates_nothing(
    small_messages: Settings, api: httpx.AsyncClient
) -> None:
    for message, says in [
        ({"content": "   "}, "empty"),
        ({"content": "y" * 41}, "over the limit of 40"),
        ({"content": "hi", "role": "assistant"}, "cannot be sent"),
    ]:
        response = await api.post("/v1/conversations", json={"model": "sim-zero", "message": message})
        assert says in error(response, 422, "InvalidMessage")["message"]
    listed = await api.get("/v1/conversations")
    assert listed.json()["data"] == []


@sqlite_only
async def test_unknown_model_and_unknown_fields_are_422(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/conversations", json={"model": "gpt-nope", "message": {"content": "hi"}})
    err = error(response, 422, "UnknownModel")
    assert "gpt-nope" in err["message"]
    assert "sim-zero" in err["message"] and "sim-llama-8b" in err["message"]

    response = await api.post("/v1/conversations", json={"model": "sim-zero", "colour": "red"})
    err = error(response, 422, "InvalidRequest")
    assert "colour" in err["message"]

    conversation_id = (await create(api))["conversation"]["id"]
    response = await send(api, conversation_id, "hi", colour="red")
    assert "colour" in error(response, 422, "InvalidRequest")["message"]
    response = await api.post(f"/v1/conversations/{conversation_id}/messages", json={})
    assert "content" in error(response, 422, "InvalidRequest")["message"]
    assert len((await detail(api, conversation_id))["messages"]) == 2
    assert len((await api.get("/v1/conversations")).json()["data"]) == 1


@sqlite_only
async def test_unknown_conversation_is_404(api: httpx.AsyncClient) -> None:
    for response in [
        await api.get("/v1/conversations/nope"),
        await send(api, "nope", "hi"),
        await api.post("/v1/conversations/nope/archive"),
        await api.post("/v1/conversations/nope/messages/m1/regenerate"),
        await api.post("/v1/conversations/nope/messages/m1/edit", json={"content": "x"}),
    ]:
        err = error(response, 404, "ConversationNotFound")
        assert "nope" in err["message"]


# ---- versions, edits, regenerations, archive ---------------------------------------------


@sqlite_only
async def test_expected_version(api: httpx.AsyncClient) -> None:
    conversation_id = (await create(api))["conversation"]["id"]

    stale = await send(api, conversation_id, "hi", expected_version=0)
    err = error(stale, 409, "VersionConflict")
    assert err["current_version"] == 1
    assert "stale" in err["message"]
    assert (await detail(api, conversation_id))["conversation"]["message_count"] == 2

    ok = await send(api, conversation_id, "hi", expected_version=1)
    assert ok.status_code == 200, ok.text
    assert ok.json()["version"] == 2
    stale = await send(api, conversation_id, "hi", expected_version=1)
    assert error(stale, 409, "VersionConflict")["current_version"] == 2


async def test_edit_makes_a_new_branch(api: httpx.AsyncClient) -> None:
    turn = (await create(api, "[echo] first try"))["turn"]
    conversation_id = turn["conversation_id"]
    old_user, old_reply = turn["message"], turn["reply"]

    response = await api.post(
        f"/v1/conversations/{conversation_id}/messages/{old_user['id']}/edit",
        json={"content": "[echo] second try", "expected_version": 1},
    )
    assert response.status_code == 200, response.text
    edit = response.json()
    assert edit["version"] == 2
    assert edit["message"]["content"] == "[echo] second try"
    assert edit["message"]["parent_id"] == old_user["parent_id"]
    assert edit["message"]["version"] == 2
    assert edit["reply"]["content"] == "second try"
    assert edit["reply"]["parent_id"] == edit["message"]["id"]

    shown = await detail(api, conversation_id)
    assert shown["branch"] == edit["reply"]["id"]
    assert [m["content"] for m in shown["messages"]] == ["[echo] second try", "second try"]
    edited = shown["messages"][0]
    assert (edited["id"], edited["version"], edited["variants"]) == (edit["message"]["id"], 2, 2)
    assert shown["conversation"]["message_count"] == 4
    branches = {b["leaf_id"]: b for b in shown["branches"]}
    assert set(branches) == {old_reply["id"], edit["reply"]["id"]}
    assert branches[edit["reply"]["id"]]["active"] is True
    assert branches[old_reply["id"]]["active"] is False
    assert all(b["length"] == 2 for b in branches.values())

    old = await detail(api, conversation_id, branch=old_reply["id"])
    assert old["branch"] == old_reply["id"]
    assert [m["id"] for m in old["messages"]] == [old_user["id"], old_reply["id"]]
    assert [m["content"] for m in old["messages"]] == ["[echo] first try", "first try"]
    assert (old["messages"][0]["version"], old["messages"][0]["variants"]) == (1, 2)

    missing = await api.get(f"/v1/conversations/{conversation_id}", params={"branch": "nope"})
    error(missing, 404, "MessageNotFound")


@sqlite_only
async def test_editing_a_reply_or_unknown_message_is_rejected(api: httpx.AsyncClient) -> None:
    turn = (await create(api))["turn"]
    conversation_id = turn["conversation_id"]
    base = f"/v1/conversations/{conversation_id}/messages"

    response = await api.post(f"{base}/{turn['reply']['id']}/edit", json={"content": "x"})
    assert "only 'user' messages" in error(response, 422, "InvalidMessage")["message"]
    response = await api.post(f"{base}/nope/edit", json={"content": "x"})
    error(response, 404, "MessageNotFound")
    response = await api.post(f"{base}/{turn['message']['id']}/edit", json={"content": " "})
    error(response, 422, "InvalidMessage")
    assert (await detail(api, conversation_id))["conversation"]["version"] == 1


@sqlite_only
async def test_edit_response_counts_the_variants(api: httpx.AsyncClient) -> None:
    turn = (await create(api))["turn"]
    response = await api.post(
        f"/v1/conversations/{turn['conversation_id']}/messages/{turn['message']['id']}/edit",
        json={"content": "hello, edited"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["message"]["version"] == 2
    assert response.json()["message"]["variants"] == 2


@sqlite_only
async def test_one_idempotency_key_on_two_messages_regenerates_each_not_the_first_twice(
    api: httpx.AsyncClient,
) -> None:
    """The key is bound to the request's path, which names the message: the second message's regeneration
    is a request of its own (it got the first message's reply back, and was charged again)."""
    first = (await create(api))["turn"]
    conversation_id = first["conversation_id"]
    base = f"/v1/conversations/{conversation_id}/messages"
    second = (await api.post(base, json={"content": "and another"})).json()
    headers = {"Idempotency-Key": "regenerate-once"}
    one = (await api.post(f"{base}/{first['reply']['id']}/regenerate", headers=headers)).json()
    two = (await api.post(f"{base}/{second['reply']['id']}/regenerate", headers=headers)).json()
    assert one["message"]["id"] == first["message"]["id"]
    assert two["message"]["id"] == second["message"]["id"] and two["reply"]["id"] != one["reply"]["id"]
    again = (await api.post(f"{base}/{second['reply']['id']}/regenerate", headers=headers)).json()
    assert again["reply"]["id"] == two["reply"]["id"]  # the same request again: its first answer


@sqlite_only
async def test_regenerate_a_reply(api: httpx.AsyncClient) -> None:
    turn = (await create(api))["turn"]
    conversation_id, user, old_reply = turn["conversation_id"], turn["message"], turn["reply"]
    base = f"/v1/conversations/{conversation_id}/messages"

    response = await api.post(f"{base}/{old_reply['id']}/regenerate")
    assert response.status_code == 200, response.text
    regenerated = response.json()
    assert regenerated["version"] == 2
    assert regenerated["message"]["id"] == user["id"]
    reply = regenerated["reply"]
    assert reply["id"] != old_reply["id"]
    assert (reply["role"], reply["parent_id"], reply["version"]) == ("assistant", user["id"], 2)
    assert reply["content"] != old_reply["content"]  # asked again, the model answers anew

    shown = await detail(api, conversation_id)
    assert shown["branch"] == reply["id"]
    assert [m["id"] for m in shown["messages"]] == [user["id"], reply["id"]]
    assert (shown["messages"][1]["version"], shown["messages"][1]["variants"]) == (2, 2)
    assert {b["leaf_id"] for b in shown["branches"]} == {old_reply["id"], reply["id"]}
    assert shown["conversation"]["message_count"] == 3

    response = await api.post(f"{base}/{user['id']}/regenerate")
    err = error(response, 422, "InvalidMessage")
    assert "only 'assistant' messages" in err["message"]
    response = await api.post(f"{base}/nope/regenerate", json={"expected_version": 2})
    error(response, 404, "MessageNotFound")
    response = await api.post(f"{base}/{reply['id']}/regenerate", json={"expected_version": 1})
    assert error(response, 409, "VersionConflict")["current_version"] == 2
    assert (await detail(api, conversation_id))["conversation"]["message_count"] == 3


async def test_archive(api: httpx.AsyncClient) -> None:
    conversation_id = (await create(api))["conversation"]["id"]

    stale = await api.post(f"/v1/conversations/{conversation_id}/archive", json={"expected_version": 0})
    error(stale, 409, "VersionConflict")

    response = await api.post(f"/v1/conversations/{conversation_id}/archive")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "archived"
    assert response.json()["version"] == 2

    response = await send(api, conversation_id, "still there?")
    err = error(response, 409, "ConversationClosed")
    assert "archived" in err["message"]
    response = await api.post(f"/v1/conversations/{conversation_id}/archive")
    assert "archived" in error(response, 409, "ConversationClosed")["message"]

    shown = await detail(api, conversation_id)  # still readable, unchanged
    assert shown["conversation"]["status"] == "archived"
    assert len(shown["messages"]) == 2
    listed = (await api.get("/v1/conversations")).json()["data"]
    assert [(c["id"], c["status"]) for c in listed] == [(conversation_id, "archived")]


# ---- idempotency -------------------------------------------------------------------------


@sqlite_only
async def test_idempotency_key_on_send(api: httpx.AsyncClient) -> None:
    conversation_id = (await create(api))["conversation"]["id"]
    headers = {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    path = f"/v1/conversations/{conversation_id}/messages"

    first = await api.post(path, json={"content": "only once"}, headers=headers)
    again = await api.post(path, json={"content": "only once"}, headers=headers)
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert again.json()["reply"]["id"] == first.json()["reply"]["id"]
    assert again.json()["message"]["id"] == first.json()["message"]["id"]

    shown = await detail(api, conversation_id)
    assert [m["content"] for m in shown["messages"]].count("only once") == 1
    assert (shown["conversation"]["version"], shown["conversation"]["message_count"]) == (2, 4)

    other = await api.post(path, json={"content": "only once"}, headers={"Idempotency-Key": "k2"})
    assert other.status_code == 200
    assert other.json()["reply"]["id"] != first.json()["reply"]["id"]


async def test_idempotency_key_on_create(api: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": f"create-{uuid.uuid4().hex}"}
    body = {"model": "sim-zero", "message": {"content": "just one conversation"}}

    first = await api.post("/v1/conversations", json=body, headers=headers)
    again = await api.post("/v1/conversations", json=body, headers=headers)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.json()["conversation"]["id"] == first.json()["conversation"]["id"]
    assert again.json()["turn"]["reply"]["id"] == first.json()["turn"]["reply"]["id"]

    listed = (await api.get("/v1/conversations")).json()["data"]
    assert [c["id"] for c in listed] == [first.json()["conversation"]["id"]]
    shown = await detail(api, first.json()["conversation"]["id"])
    assert len(shown["messages"]) == 2
    assert shown["conversation"]["version"] == 1


@sqlite_only
async def test_create_with_a_taken_id_is_409(api: httpx.AsyncClient) -> None:
    conversation_id = f"mine-{uuid.uuid4().hex[:8]}"
    await create(api, id=conversation_id)
    response = await api.post("/v1/conversations", json={"id": conversation_id, "model": "sim-zero"})
    assert conversation_id in error(response, 409, "ConversationExists")["message"]
    assert len((await detail(api, conversation_id))["messages"]) == 2


@sqlite_only
async def test_the_id_of_an_archived_conversation_is_taken_for_good(api: httpx.AsyncClient) -> None:
    conversation_id = f"gone-{uuid.uuid4().hex[:8]}"
    await create(api, id=conversation_id)
    assert (await api.post(f"/v1/conversations/{conversation_id}/archive")).status_code == 200
    for headers in ({}, {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}):
        response = await api.post(
            "/v1/conversations", json={"id": conversation_id, "model": "sim-zero"}, headers=headers
        )
        assert conversation_id in error(response, 409, "ConversationExists")["message"]


@sqlite_only
async def test_one_idempotency_key_for_different_changes_applies_each(api: httpx.AsyncClient) -> None:
    """A client that reuses a key across kinds of change gets each change, never a 500."""
    headers = {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    created = await api.post(
        "/v1/conversations", json={"model": "sim-zero", "message": {"content": "one"}}, headers=headers
    )
    assert created.status_code == 201, created.text
    conversation_id = created.json()["conversation"]["id"]
    base = f"/v1/conversations/{conversation_id}"

    sent = await api.post(f"{base}/messages", json={"content": "two"}, headers=headers)
    assert sent.status_code == 200, sent.text
    reply_id = sent.json()["reply"]["id"]
    regenerated = await api.post(f"{base}/messages/{reply_id}/regenerate", headers=headers)
    assert regenerated.status_code == 200, regenerated.text
    edited = await api.post(
        f"{base}/messages/{sent.json()['message']['id']}/edit", json={"content": "2"}, headers=headers
    )
    assert edited.status_code == 200, edited.text
    assert (await api.post(f"{base}/archive", headers=headers)).status_code == 200
    assert (await detail(api, conversation_id))["conversation"]["version"] == 5


async def _wait_for_new_run(client: Client, conversation_id: str, message_count: int) -> None:
    """Wait until the conversation has continued as new with `message_count` messages."""
    handle = client.get_workflow_handle(workflow_id("default", conversation_id))
    await eventually(
        lambda: handle.query(ConversationWorkflow.status),
        until=lambda status: status.turns_this_run == 0 and status.message_count == message_count,
        what=f"the conversation to continue as new with {message_count} messages",
        interval=0.02,
    )


@sqlite_only
async def test_idempotency_key_survives_continue_as_new(
    one_turn_per_run: Settings, api: httpx.AsyncClient, client: Client
) -> None:
    conversation_id = (await create(api))["conversation"]["id"]
    await _wait_for_new_run(client, conversation_id, 2)
    headers = {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    path = f"/v1/conversations/{conversation_id}/messages"

    first = await api.post(path, json={"content": "only once"}, headers=headers)
    assert first.status_code == 200, first.text
    await _wait_for_new_run(client, conversation_id, 4)  # the client's retry comes after CAN
    again = await api.post(path, json={"content": "only once"}, headers=headers)

    assert again.status_code == 200, again.text
    shown = await detail(api, conversation_id)
    assert [m["content"] for m in shown["messages"]].count("only once") == 1
    assert again.json()["reply"]["id"] == first.json()["reply"]["id"]


# ---- inference failures ------------------------------------------------------------------


@sqlite_only
async def test_a_retryable_inference_failure_is_retried(api: httpx.AsyncClient, faults: SetFaults) -> None:
    conversation_id = (await create(api))["conversation"]["id"]
    await faults(fail_next=1, fail_next_status=500)

    response = await send(api, conversation_id, "[echo] through a 500")
    assert response.status_code == 200, response.text
    assert response.json()["reply"]["content"] == "through a 500"

    shown = await detail(api, conversation_id)
    replies = [m for m in shown["messages"] if m["role"] == "assistant"]
    assert [r["content"] for r in replies][-1] == "through a 500"
    assert len(shown["messages"]) == 4
    assert (shown["conversation"]["version"], shown["conversation"]["message_count"]) == (2, 4)


@sqlite_only
async def test_a_rejected_inference_request_is_502_and_stores_nothing(
    api: httpx.AsyncClient, faults: SetFaults
) -> None:
    conversation_id = (await create(api))["conversation"]["id"]
    await faults(fail_next=1, fail_next_status=400)

    response = await send(api, conversation_id, "this one fails")
    err = error(response, 502, "InferenceFailed")
    assert "HTTP 400" in err["message"]
    assert "simulated fault: injected HTTP 400" in err["message"]  # the endpoint's own words

    shown = await detail(api, conversation_id)
    assert "this one fails" not in [m["content"] for m in shown["messages"]]
    assert (shown["conversation"]["version"], shown["conversation"]["message_count"]) == (1, 2)

    response = await send(api, conversation_id, "[echo] works again", expected_version=1)
    assert response.status_code == 200, response.text
    assert response.json()["reply"]["content"] == "works again"
    assert response.json()["message"]["parent_id"] == shown["messages"][-1]["id"]
    shown = await detail(api, conversation_id)
    assert len(shown["messages"]) == 4


@sqlite_only
async def test_a_failed_first_message_names_the_conversation_to_retry_into(
    api: httpx.AsyncClient, faults: SetFaults
) -> None:
    await faults(fail_next=1, fail_next_status=400)
    response = await api.post(
        "/v1/conversations", json={"model": "sim-zero", "message": {"content": "first try"}}
    )
    err = error(response, 502, "InferenceFailed")
    conversation_id = err["conversation_id"]
    assert (await detail(api, conversation_id))["messages"] == []

    retry = await send(api, conversation_id, "[echo] second try")
    assert retry.status_code == 200, retry.text
    assert [m["content"] for m in (await detail(api, conversation_id))["messages"]] == [
        "[echo] second try",
        "second try",
    ]


# ---- operations endpoints ----------------------------------------------------------------


@sqlite_only
async def test_health_readiness_metrics_docs_and_unknown_routes(api: httpx.AsyncClient) -> None:
    healthz = await api.get("/healthz")
    assert healthz.status_code == 200
    assert healthz.json() == {"status": "ok"}

    readyz = await api.get("/readyz")
    assert readyz.status_code == 200, readyz.text
    assert readyz.json() == {"ready": True, "checks": {"temporal": "ok", "database": "ok"}}

    metrics = await api.get("/metrics")
    assert metrics.status_code == 200
    assert "lcp_http_requests_total" in metrics.text
    assert 'route="/healthz"' in metrics.text

    docs = await api.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    assert "cdn" not in docs.text  # served from the package: the docs work on offline machines
    assets = re.findall(r'(?:src|href)="(/static[^"]+)"', docs.text)
    assert any(asset.endswith("swagger-ui-bundle.js") for asset in assets)
    for asset in assets:
        assert (await api.get(asset)).status_code == 200, asset
    openapi = await api.get("/openapi.json")
    assert "/v1/conversations" in openapi.json()["paths"]

    missing = await api.get("/v1/nothing-here")
    assert "/docs" in error(missing, 404, "HTTPError")["message"]
    wrong_method = await api.delete("/v1/conversations")
    error(wrong_method, 405, "HTTPError")


@sqlite_only
async def test_metrics_count_changes_by_kind_and_outcome(api: httpx.AsyncClient) -> None:
    conversation_id = (await create(api))["conversation"]["id"]
    assert (await send(api, conversation_id, "fine")).status_code == 200
    error(await send(api, conversation_id, "   "), 422, "InvalidMessage")
    assert (await api.post(f"/v1/conversations/{conversation_id}/archive")).status_code == 200

    metrics = (await api.get("/metrics")).text
    for change, outcome in [
        ("create", "ok"),
        ("send_message", "ok"),
        ("send_message", "InvalidMessage"),
        ("archive", "ok"),
    ]:
        assert f'lcp_conversation_changes_total{{change="{change}",outcome="{outcome}"}}' in metrics
