"""lcp dev opens the lab workload to chaos HTTP probes only, never to tenants' tools. Found by the
adversarial pass on the platform side: lcp dev put the workload in LCP_EGRESS__ALLOW, which tools share,
so tenant B's admin declared a tool `PUT http://127.0.0.1:<workload>/admin/faults` and, through one chat
completion, made every request of the lab's chat-api fail (the fault every rollout and scaling decision
then saw)."""

import ipaddress
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

import cli.dev as dev
from activities.egress import AddressNotAllowed, fenced_client
from settings import Settings
from tests.http_server import free_port, serve_in_thread
from workers.conversations import tool_egress_rules
from workers.main import probe_egress_rules


def _workload(hits: list[str]) -> FastAPI:
    """Stands in for the lab workload: a health route probes read, and the admin route that injects faults."""
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        hits.append("GET /healthz")
        return JSONResponse({"ok": True})

    @app.put("/admin/faults")
    async def faults(request: Request) -> JSONResponse:
        hits.append("PUT /admin/faults")
        return JSONResponse({"faults": [await request.json()]})

    return app


async def test_lcp_dev_children_let_probes_reach_the_workload_and_tools_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LCP_EGRESS__ALLOW", raising=False)
    monkeypatch.delenv("LCP_EGRESS__PROBE_ALLOW", raising=False)
    hits: list[str] = []
    port = free_port()
    stack = dev.Stack(tmp_path, dev.Ports("127.0.0.1", 1, 2, 3, 4, 5, port, 7))
    for name, value in stack.child_env().items():
        if name.startswith("LCP_"):
            monkeypatch.setenv(name, value)
    settings = Settings()
    with serve_in_thread(_workload(hits), port=port) as url:
        async with fenced_client(tool_egress_rules(settings)) as tools:
            with pytest.raises(AddressNotAllowed):
                await tools.put(f"{url}/admin/faults", json={"service": "chat-api", "error_share": 1.0})
        async with fenced_client(probe_egress_rules(settings)) as probes:
            assert (await probes.get(f"{url}/healthz")).status_code == 200
            with pytest.raises(AddressNotAllowed):  # the stack's other ports stay shut to probes too
                await probes.get("http://127.0.0.1:5/")  # the lab's Kubernetes API (kube port 5)
    assert hits == ["GET /healthz"]


def test_the_probe_only_entries_are_a_setting_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LCP_EGRESS__ALLOW", '["tools.internal"]')
    monkeypatch.setenv("LCP_EGRESS__PROBE_ALLOW", '["10.0.0.7:8080"]')
    settings = Settings()
    inside = ipaddress.ip_address("10.0.0.7")
    assert tool_egress_rules(settings).refusal("10.0.0.7", inside, 8080) == "private"
    assert probe_egress_rules(settings).refusal("10.0.0.7", inside, 8080) is None
    named = ipaddress.ip_address("10.9.9.9")
    assert tool_egress_rules(settings).refusal("tools.internal", named, 443) is None
    assert probe_egress_rules(settings).refusal("tools.internal", named, 443) is None
