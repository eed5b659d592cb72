"""A hostile tenant against the egress fence, on the real stack: tools aimed at internal services, another
tenant's secret, a cookie left by another tenant's call, a schema `$ref` to an internal URL, and chaos
probes that would write or would name their own Prometheus."""

import copy
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from settings import Settings
from tests.api.conftest import MintKey
from tests.http_server import serve_in_thread
from tests.security.tool_turns import tool_turn

pytestmark = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)

VICTIM, ATTACKER = "acme", "globex"
VICTIM_SECRET = "Bearer acme-crm-token"
LOOKUP = {"type": "object", "properties": {"q": {"type": "string"}}}


@dataclass
class Server:
    """A local HTTP server that records every request: an internal service, or the attacker's endpoint."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.url.removeprefix("http://")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def _recording_app(requests: list[dict[str, Any]]) -> FastAPI:
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST", "DELETE"])
    async def anything(path: str, request: Request) -> Response:
        requests.append(
            {
                "path": path,
                "method": request.method,
                "authorization": request.headers.get("authorization"),
                "cookie": request.headers.get("cookie"),
            }
        )
        response = JSONResponse({"history": "tenant acme's workflow history, message text included"})
        response.set_cookie("session", f"for-{request.headers.get('x-tenant', 'whoever-called-first')}")
        return response

    return app


@pytest.fixture(scope="module")
def internal() -> Iterator[Server]:
    """Plays the Temporal UI, the Kubernetes API or Prometheus: on loopback, never to be reached."""
    requests: list[dict[str, Any]] = []
    with serve_in_thread(_recording_app(requests)) as url:
        yield Server(url, requests)


@pytest.fixture(scope="module")
def collector() -> Iterator[Server]:
    """The attacker's own endpoint. It is on loopback here, so the allow-list opens it, as a public
    address would be."""
    requests: list[dict[str, Any]] = []
    with serve_in_thread(_recording_app(requests)) as url:
        yield Server(url, requests)


@pytest.fixture
def settings(settings: Settings, collector: Server) -> Settings:
    """The stack's settings: the collector opened, nothing else; the victim's secret in its folder."""
    settings.egress.allow = [collector.address]
    victim_secrets = settings.resolved_secrets_dir() / VICTIM
    victim_secrets.mkdir(parents=True)
    (victim_secrets / "crm-token").write_text(VICTIM_SECRET + "\n")
    return settings


@pytest.fixture
def tenant(api_url: str, mint_key: MintKey) -> Callable[..., Any]:
    """`async with tenant("globex") as http:` a client of that tenant with the admin and client roles."""

    @asynccontextmanager
    async def _client(
        name: str, roles: tuple[str, ...] = ("admin", "client")
    ) -> AsyncIterator[httpx.AsyncClient]:
        headers = {"Authorization": f"Bearer {await mint_key(tenant=name, roles=roles)}"}
        async with httpx.AsyncClient(base_url=api_url, timeout=60, headers=headers) as http:
            yield http

    return _client


def _tool(url: str, **fields: Any) -> dict[str, Any]:
    return {"name": "lookup", "url": url, "method": "POST", "parameters": LOOKUP, "timeout_s": 5, **fields}


async def _tool_turn(http: httpx.AsyncClient, tool: dict[str, Any]) -> dict[str, Any]:
    return await tool_turn(http, tool, '{"q": "everything"}')


# ---- 1. tools aimed at internal services -----------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::ffff:127.0.0.1]"])
async def test_a_tool_aimed_at_an_internal_service_is_not_called(
    tenant: Callable[..., Any], internal: Server, host: str
) -> None:
    before = len(internal.requests)
    async with tenant(ATTACKER) as attacker:
        url = f"http://{host}:{internal.port}/api/v1/namespaces/default/workflows"
        call = await _tool_turn(attacker, _tool(url))
    assert not call["ok"] and "was not called" in call["result"] and "LCP_EGRESS__ALLOW" in call["result"]
    assert "acme" not in call["result"]
    assert len(internal.requests) == before


# ---- 2. another tenant's secret --------------------------------------------------------------------


async def test_a_tenant_cannot_have_another_tenants_secret_sent_to_its_endpoint(
    tenant: Callable[..., Any], collector: Server
) -> None:
    before = len(collector.requests)
    async with tenant(ATTACKER) as attacker:
        call = await _tool_turn(attacker, _tool(f"{collector.url}/steal", auth_secret="crm-token"))
    assert not call["ok"] and "not configured for this tenant" in call["result"]
    assert len(collector.requests) == before  # not called at all, so nothing of acme's went out

    async with tenant(VICTIM) as victim:  # the same tool in the secret's own tenant sends it
        assert (await _tool_turn(victim, _tool(f"{collector.url}/crm", auth_secret="crm-token")))["ok"]
    assert collector.requests[-1]["authorization"] == VICTIM_SECRET


# ---- 3. cookies ------------------------------------------------------------------------------------


async def test_a_cookie_set_on_one_tenants_call_is_not_sent_on_anothers(
    tenant: Callable[..., Any], collector: Server
) -> None:
    async with tenant(VICTIM) as victim:
        assert (await _tool_turn(victim, _tool(f"{collector.url}/login")))["ok"]
    assert collector.requests[-1]["path"] == "login"  # it answered with Set-Cookie
    async with tenant(ATTACKER) as attacker:
        assert (await _tool_turn(attacker, _tool(f"{collector.url}/whoami")))["ok"]
    assert collector.requests[-1]["path"] == "whoami" and collector.requests[-1]["cookie"] is None


# ---- 7. schema references --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "parameters",
    [
        {"type": "object", "properties": {"q": {"$ref": "{internal}/schema.json"}}},
        {"type": "object", "$defs": {"deep": {"items": {"$ref": "{internal}/x#/y"}}}},
        {"type": "object", "properties": {"q": {"$dynamicRef": "{internal}/meta"}}},
        {"type": "object", "allOf": [{"$ref": "//127.0.0.1:1/protocol-relative"}]},
    ],
)
async def test_a_schema_reference_to_an_internal_url_is_refused_at_once_and_never_fetched(
    tenant: Callable[..., Any], internal: Server, parameters: dict[str, Any]
) -> None:
    before = len(internal.requests)
    parameters = _filled(parameters, internal.url)
    async with tenant(ATTACKER) as attacker:
        started = time.monotonic()
        body = {"id": f"r-{uuid.uuid4().hex[:8]}", "name": "Ref", "model": "sim-zero"}
        response = await attacker.post(
            "/v1/assistants", json={**body, "tools": [_tool(internal.url, parameters=parameters)]}
        )
        assert time.monotonic() - started < 5
        assert response.status_code == 422, response.text
        assert "invalid parameters schema" in response.text and "nothing is fetched" in response.text
    assert len(internal.requests) == before


async def test_a_schema_too_big_to_check_is_refused(tenant: Callable[..., Any], collector: Server) -> None:
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(3000)}}
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(40):
        deep = {"anyOf": [deep]}
    async with tenant(ATTACKER) as attacker:
        for parameters, reason in (
            (wide, "more than 5000 values"),
            ({"type": "object", "properties": {"q": deep}}, "deeper than 32"),
        ):
            body = {"id": f"s-{uuid.uuid4().hex[:8]}", "name": "Big", "model": "sim-zero"}
            response = await attacker.post(
                "/v1/assistants", json={**body, "tools": [_tool(collector.url, parameters=parameters)]}
            )
            assert response.status_code == 422 and reason in response.text, response.text


def _filled(value: Any, internal: str) -> Any:
    if isinstance(value, str):
        return value.replace("{internal}", internal)
    if isinstance(value, dict):
        return {key: _filled(inner, internal) for key, inner in value.items()}
    if isinstance(value, list):
        return [_filled(inner, internal) for inner in value]
    return value


# ---- 5. chaos probes -------------------------------------------------------------------------------


async def _catalogue_experiment(sre: httpx.AsyncClient) -> dict[str, Any]:
    """An experiment of the catalogue that has an HTTP probe, as the API lists it."""
    catalogue = await sre.get("/v1/chaos/catalogue")
    assert catalogue.status_code == 200, catalogue.text
    probed = (
        e for e in catalogue.json()["data"] if any(p["type"] == "http" for p in e["hypothesis"]["probes"])
    )
    return copy.deepcopy(next(probed))


@pytest.mark.parametrize("method", ["DELETE", "POST", "PUT", "PATCH", "OPTIONS"])
async def test_a_chaos_http_probe_may_only_read(
    tenant: Callable[..., Any], internal: Server, method: str
) -> None:
    before = len(internal.requests)
    async with tenant("platform", ("sre",)) as sre:
        experiment = await _catalogue_experiment(sre)
        probe = next(p for p in experiment["hypothesis"]["probes"] if p["type"] == "http")
        probe.update(method=method, url=f"{internal.url}/apis/apps/v1/namespaces/other/deployments/web")
        response = await sre.post("/v1/chaos", json={"definition": experiment})
    assert response.status_code == 422, response.text
    assert "must be GET or HEAD" in response.json()["error"]["message"]
    assert len(internal.requests) == before


async def test_a_promql_probe_cannot_name_its_own_prometheus(
    tenant: Callable[..., Any], internal: Server
) -> None:
    async with tenant("platform", ("sre",)) as sre:
        experiment = await _catalogue_experiment(sre)
        experiment["hypothesis"]["probes"] = [
            {
                "name": "up",
                "type": "prometheus",
                "query": "up",
                "comparator": ">=",
                "value": 1,
                "url": internal.url,
            }
        ]
        response = await sre.post("/v1/chaos", json={"definition": experiment})
    assert response.status_code == 422, response.text
    assert "unknown key 'url'" in response.json()["error"]["message"]
