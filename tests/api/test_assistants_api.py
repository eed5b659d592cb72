"""Assistants over real HTTP: versions, publish, rollback, sticky A/B experiments, and conversations that
record the version (and arm) serving them."""

import uuid
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from policies.assignment import Arm, assign
from tests.api.test_conversations_api import error
from tests.workflows.saved_histories import save_history

sqlite_only = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)


def _id() -> str:
    return f"helper-{uuid.uuid4().hex[:8]}"


async def _create(admin: httpx.AsyncClient, assistant_id: str, **fields: Any) -> dict[str, Any]:
    body = {"id": assistant_id, "name": "Helper", "model": "sim-zero", "instructions": "Be brief.", **fields}
    response = await admin.post("/v1/assistants", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _converse(api: httpx.AsyncClient, assistant: dict[str, Any], user: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"assistant": assistant, "message": {"content": "[echo] hi"}}
    if user:
        body["user"] = user
    response = await api.post("/v1/conversations", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_versions_are_immutable_and_a_running_conversation_keeps_its_version(
    admin: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    assistant_id = _id()
    created = await _create(admin, assistant_id)
    assert created["state"] == "Draft" and [v["version"] for v in created["versions"]] == ["v1"]
    error(await api.post("/v1/conversations", json={"assistant": {"id": assistant_id}}), 409, "NotPublished")

    await _ok(await admin.post(f"/v1/assistants/{assistant_id}/publish", json={"version": "v1"}))
    first = await _converse(api, {"id": assistant_id})
    conversation = first["conversation"]
    assert (conversation["assistant_version"], conversation["model"]) == ("v1", "sim-zero")
    assert conversation["system_prompt"] == "Be brief."
    assert first["turn"]["reply"]["assistant_version"] == "v1"

    edited = await _ok(
        await admin.patch(
            f"/v1/assistants/{assistant_id}", json={"instructions": "Be thorough.", "note": "tone"}
        )
    )
    assert [v["version"] for v in edited["versions"]] == ["v1", "v2"]
    assert edited["versions"][1]["changed"] == ["instructions"] and edited["live_version"] == "v1"
    versions = (await api.get(f"/v1/assistants/{assistant_id}/versions")).json()["data"]
    assert versions[0]["spec"]["instructions"] == "Be brief."  # v1 as it was
    assert versions[1]["spec"]["instructions"] == "Be thorough." and versions[1]["note"] == "tone"

    stale = await admin.patch(f"/v1/assistants/{assistant_id}", json={"name": "X", "expected_version": "v1"})
    error(stale, 409, "VersionConflict")
    same = await admin.patch(f"/v1/assistants/{assistant_id}", json={"instructions": "Be thorough."})
    error(same, 409, "NothingChanged")
    bad_tool = {"tools": [{"name": "lookup", "url": "ftp://example"}]}
    assert (
        "url must be an http(s) URL"
        in error(await admin.patch(f"/v1/assistants/{assistant_id}", json=bad_tool), 422, "InvalidSpec")[
            "message"
        ]
    )

    octal = {"tools": [{"name": "lookup", "url": "http://0177.0.0.1:8999/a"}]}  # the client parses no octal
    refused = await admin.patch(f"/v1/assistants/{assistant_id}", json=octal)
    assert refused.status_code == 422 and "cannot be called: Invalid IPv4 address" in refused.text

    await _ok(await admin.post(f"/v1/assistants/{assistant_id}/publish", json={"version": "v2"}))
    conversation_id = conversation["id"]
    turn = await api.post(f"/v1/conversations/{conversation_id}/messages", json={"content": "[echo] again"})
    assert (await _ok(turn))["reply"]["assistant_version"] == "v1"  # started on v1, stays on v1
    assert (await _converse(api, {"id": assistant_id}))["conversation"]["assistant_version"] == "v2"
    pinned = await _converse(api, {"id": assistant_id, "version": "v1"})
    assert pinned["conversation"]["assistant_version"] == "v1"


@sqlite_only
async def test_an_experiment_assigns_users_stickily_and_rollback_ends_it(
    admin: httpx.AsyncClient, api: httpx.AsyncClient, client: Client
) -> None:
    assistant_id = _id()
    await _create(admin, assistant_id, publish=True)
    await _ok(await admin.patch(f"/v1/assistants/{assistant_id}", json={"instructions": "v2 words"}))
    arms: list[dict[str, Any]] = [
        {"name": "control", "version": "v1", "share": 50},
        {"name": "treatment", "version": "v2", "share": 50},
    ]
    started = await admin.post(
        f"/v1/assistants/{assistant_id}/experiments", json={"id": "tone", "arms": arms}
    )
    assert (await _ok(started))["state"] == "Experimenting"

    policy_arms = [Arm(a["name"], a["version"], a["share"]) for a in arms]
    for n in range(12):
        user = f"user-{n}"
        served = (await _converse(api, {"id": assistant_id}, user))["conversation"]
        expected = assign(policy_arms, assistant_id, "tone", user)
        assert (served["arm"], served["assistant_version"], served["experiment_id"]) == (
            expected.name,
            expected.version,
            "tone",
        )
        again = (await _converse(api, {"id": assistant_id}, user))["conversation"]
        assert again["arm"] == served["arm"]  # sticky

    found = [e.id async for e in client.list_workflows(
        "LcpKind = 'assistant' AND LcpTenant = 'default' AND LcpPhase = 'Experimenting'"
    )]  # fmt: skip
    assert f"assistant/default/{assistant_id}" in found

    everyone = [{**arms[0], "share": 0}, {**arms[1], "share": 100}]
    adjust = f"/v1/assistants/{assistant_id}/experiments/tone/adjust"
    await _ok(await admin.post(adjust, json={"arms": everyone}))
    assert (await _converse(api, {"id": assistant_id}, "user-0"))["conversation"]["assistant_version"] == "v2"
    swapped = [arms[1], arms[0]]
    error(await admin.post(adjust, json={"arms": swapped}), 422, "InvalidArms")
    error(await admin.post(f"/v1/assistants/{assistant_id}/publish", json={"version": "v2"}), 409)

    rolled = await _ok(await admin.post(f"/v1/assistants/{assistant_id}/rollback", json={"to_version": "v1"}))
    assert rolled["state"] == "Published" and rolled["live_version"] == "v1" and rolled["experiment"] is None
    assert rolled["past_experiments"][0]["state"] == "aborted"
    served = (await _converse(api, {"id": assistant_id}, "user-0"))["conversation"]
    assert (served["assistant_version"], served["arm"]) == ("v1", None)


@sqlite_only
async def test_stopping_an_experiment_promotes_the_winner(admin: httpx.AsyncClient, client: Client) -> None:
    assistant_id = _id()
    await _create(admin, assistant_id, publish=True)
    await _ok(await admin.patch(f"/v1/assistants/{assistant_id}", json={"model": "sim-llama-8b"}))
    arms = [{"name": "a", "version": "v1", "share": 90}, {"name": "b", "version": "v2", "share": 10}]
    await _ok(await admin.post(f"/v1/assistants/{assistant_id}/experiments", json={"id": "m", "arms": arms}))
    stop = f"/v1/assistants/{assistant_id}/experiments/m/stop"
    error(await admin.post(stop, json={"promote": "v9"}), 422, "InvalidArms")
    error(
        await admin.post(f"/v1/assistants/{assistant_id}/experiments/other/stop", json={}),
        409,
        "NoExperiment",
    )
    view = await _ok(await admin.post(stop, json={"promote": "b", "reason": "faster"}))
    assert view["live_version"] == "v2" and view["past_experiments"][0]["winner"] == "v2"
    rolled = await _ok(await admin.post(f"/v1/assistants/{assistant_id}/rollback", json={}))
    assert rolled["live_version"] == "v1"  # one step back
    assert [event["kind"] for event in rolled["history"]][-3:] == [
        "experiment-started", "experiment-promoted", "rolled-back",
    ]  # fmt: skip
    await _ok(await admin.post(f"/v1/assistants/{assistant_id}/archive", json={"reason": "done"}))
    await save_history(client.get_workflow_handle(f"assistant/default/{assistant_id}"), "assistant")


@sqlite_only
async def test_roles_unknown_assistants_and_archiving(
    admin: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    assistant_id = _id()
    error(await api.post("/v1/assistants", json={"id": assistant_id, "name": "x", "model": "m"}), 403)
    await _create(admin, assistant_id, publish=True)
    error(
        await admin.post("/v1/assistants", json={"id": assistant_id, "name": "x", "model": "sim-zero"}), 409
    )
    error(await api.post("/v1/conversations", json={"assistant": {"id": "nope"}}), 404, "AssistantNotFound")
    both = {"assistant": {"id": assistant_id}, "model": "sim-zero"}
    error(await api.post("/v1/conversations", json=both), 422)
    listed = (await api.get("/v1/assistants")).json()["data"]
    assert any(a["id"] == assistant_id and a["live_version"] == "v1" for a in listed)

    archived = await _ok(await admin.post(f"/v1/assistants/{assistant_id}/archive", json={"reason": "old"}))
    assert archived["state"] == "Archived"
    error(
        await api.post("/v1/conversations", json={"assistant": {"id": assistant_id}}),
        409,
        "AssistantArchived",
    )
    assert (await api.get(f"/v1/assistants/{assistant_id}")).json()["state"] == "Archived"  # still readable


async def test_per_version_stats_and_feedback_match_the_turns_that_were_sent(
    admin: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    assistant_id = _id()
    await _create(admin, assistant_id, publish=True)
    await _ok(await admin.patch(f"/v1/assistants/{assistant_id}", json={"instructions": "v2"}))
    arms = [
        {"name": "control", "version": "v1", "share": 50},
        {"name": "treatment", "version": "v2", "share": 50},
    ]
    await _ok(await admin.post(f"/v1/assistants/{assistant_id}/experiments", json={"id": "ab", "arms": arms}))

    # Five users per arm, chosen with the server's own assignment, so both arms have turns to report on.
    policy_arms = [Arm("control", "v1", 50), Arm("treatment", "v2", 50)]
    arm_of = {f"user-{n}": assign(policy_arms, assistant_id, "ab", f"user-{n}").name for n in range(200)}
    users = [u for u in arm_of if arm_of[u] == "control"][:5]
    users += [u for u in arm_of if arm_of[u] == "treatment"][:5]
    sent: dict[str, dict[str, int]] = {}  # arm -> turns, tokens, ups, downs
    for n, user in enumerate(users):
        created = await _converse(api, {"id": assistant_id}, user)
        conversation, reply = created["conversation"], created["turn"]["reply"]
        more = await _ok(
            await api.post(
                f"/v1/conversations/{conversation['id']}/messages", json={"content": "[echo] more"}
            )
        )
        tally = sent.setdefault(conversation["arm"], {"turns": 0, "tokens": 0, "up": 0, "down": 0})
        tally["turns"] += 2
        tally["tokens"] += reply["completion_tokens"] + more["reply"]["completion_tokens"]
        rating = "up" if n % 3 else "down"
        path = f"/v1/conversations/{conversation['id']}/messages/{reply['id']}/feedback"
        assert (await api.post(path, json={"rating": "up", "user": user})).status_code == 200
        assert (await api.post(path, json={"rating": rating, "user": user})).status_code == 200  # replaces
        tally[rating] += 1
    user_message = created["turn"]["message"]["id"]
    bad = f"/v1/conversations/{conversation['id']}/messages/{user_message}/feedback"
    error(await api.post(bad, json={"rating": "up"}), 422, "InvalidFeedback")
    error(await api.post(bad.replace(user_message, "nope"), json={"rating": "up"}), 404, "MessageNotFound")

    stats = await _ok(await api.get(f"/v1/assistants/{assistant_id}/stats"))
    experiment = stats["experiments"][0]
    assert experiment["id"] == "ab" and experiment["control"] == "control"
    for arm in experiment["arms"]:
        expected = sent[arm["arm"]]
        assert expected["turns"] == 10 and arm["turns"] == 10 and arm["conversations"] == 5
        assert arm["completion_tokens"] == expected["tokens"]
        assert (arm["thumbs_up"], arm["thumbs_down"]) == (expected["up"], expected["down"])
        assert arm["errors"] == 0 and arm["latency_p50_ms"] is not None
    by_version = {v["version"]: v for v in stats["versions"]}
    assert sum(v["turns"] for v in by_version.values()) == 20
    assert by_version["v1"]["turns"] == sent.get("control", {"turns": 0})["turns"]
    metrics = {d["metric"] for d in experiment["differences"]}
    assert metrics == {"satisfaction", "error_rate", "latency_mean_ms"}
    satisfaction = next(d for d in experiment["differences"] if d["metric"] == "satisfaction")
    if satisfaction["value"] is not None:
        assert satisfaction["low"] <= satisfaction["value"] <= satisfaction["high"]
