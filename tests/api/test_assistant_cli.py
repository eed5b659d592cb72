"""`lcp assistants` run as a person would, against a served API: the same verbs as the REST routes."""

import json
import uuid
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import MintKey
from tests.lcp_cli import run_lcp

sqlite_only = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)

SPEC = """
name: Support
model: sim-zero
instructions: Answer briefly.
params: {temperature: 0.2}
tools:
  - name: calculator
    kind: builtin
    builtin: calculator
    parameters:
      type: object
      properties: {expression: {type: string}}
      required: [expression]
"""


@sqlite_only
async def test_the_assistant_lifecycle_from_the_cli(
    api_url: str, mint_key: MintKey, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    key = await mint_key(roles=("admin",))
    assistant = f"cli-{uuid.uuid4().hex[:8]}"
    spec = tmp_path / "support.yaml"
    spec.write_text(SPEC)

    async def lcp(*args: str) -> str:
        code, out, err = await run_lcp(api_url, key, "assistants", *args)
        assert code == 0, f"lcp assistants {' '.join(args)}: {err}"
        return out

    out = await lcp("create", assistant, "--file", str(spec), "--note", "first cut", "--publish")
    assert assistant in out and "Published" in out and "calculator" in out
    out = await lcp("edit", assistant, "--instructions", "Answer in detail.", "--param", "temperature=0.7")
    assert "v2" in out and "instructions, params" in out
    assert "live v1" in await lcp("show", assistant)
    arms = ("--arm", "control=v1:50", "--arm", "treatment=v2:50")
    out = await lcp("experiment", "start", assistant, "tone", *arms, "--reason", "try detail")
    assert "Experimenting" in out and "control=v1 50, treatment=v2 50" in out
    assert assistant in await lcp("list")

    for n in range(6):  # conversations from six users, split between the arms
        body = {"assistant": {"id": assistant}, "user": f"u{n}", "message": {"content": f"[echo] hi {n}"}}
        created = await api.post("/v1/conversations", json=body)
        assert created.status_code == 201, created.text
        reply = created.json()["turn"]["reply"]
        rating = {"rating": "up" if n % 2 else "down", "user": f"u{n}"}
        conversation_id = created.json()["conversation"]["id"]
        feedback = await api.post(
            f"/v1/conversations/{conversation_id}/messages/{reply['id']}/feedback", json=rating
        )
        assert feedback.status_code == 200, feedback.text

    stats = json.loads(await lcp("stats", assistant, "--json"))
    assert sum(v["turns"] for v in stats["versions"]) == 6
    assert sum(v["thumbs_up"] for v in stats["versions"]) == 3
    [experiment] = stats["experiments"]
    assert {a["arm"] for a in experiment["arms"]} <= {"control", "treatment"}
    out = await lcp("stats", assistant)
    assert "per version" in out and "experiment tone" in out and "satisfied" in out

    out = await lcp("experiment", "stop", assistant, "tone", "--promote", "treatment")
    assert "live v2" in out and "past experiment tone: promoted, winner v2" in out
    out = await lcp("rollback", assistant, "--reason", "too long")
    assert "live v1" in out and "rolled-back" in out
    out = await lcp("versions", assistant)
    assert "v1" in out and "v2" in out and "first cut" in out
    assert "Archived" in await lcp("archive", assistant)


@sqlite_only
async def test_cli_mistakes_are_one_clear_line(api_url: str, mint_key: MintKey, tmp_path: Path) -> None:
    key = await mint_key(roles=("admin",))
    code, _, err = await run_lcp(api_url, key, "assistants", "show", "nobody")
    assert code == 1 and "lcp assistants show: no assistant nobody" in err
    code, _, err = await run_lcp(
        api_url, key, "assistants", "experiment", "start", "x", "e", "--arm", "control=v1", "--arm", "t=v2:5"
    )
    assert code == 1 and "expected NAME=VERSION:SHARE" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: sim-zero\ncolour: blue\n")
    code, _, err = await run_lcp(api_url, key, "assistants", "create", "x", "--file", str(bad))
    assert code == 1 and "unknown field(s) colour" in err
    client_key = await mint_key(roles=("client",))
    code, _, err = await run_lcp(
        api_url, client_key, "assistants", "create", "x", "--name", "X", "--model", "m"
    )
    assert code == 1 and "lcp assistants create:" in err and "admin" in err
