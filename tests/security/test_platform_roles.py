"""The hostile tenant against the real API: cluster operations are the platform's, key grants stay in their
lane, bad credentials are cheap and throttled, and /metrics names no tenant to a stranger."""

import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from api.app import create_app
from api.keys import PREFIX
from lab.prometheus import ScrapeTarget, prometheus_url, start_prometheus, stop_prometheus, wait_ready
from settings import Settings
from store import crud
from tests.api.conftest import MintKey
from tests.http_server import free_port, serve_in_thread
from tests.waiting import eventually

# The role logic is the same on either database: one is enough here.
pytestmark = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)

PLATFORM_ONLY = "only a platform admin can grant platform roles"
SCRAPE_TOKEN = "scrape-" + "s3cr3t" * 4
MODEL_CANARY = {"target": "model", "service": "sim-llama-8b", "version": "v2"}
# Every route a tenant's SRE key reached in the adversarial pass (issue 15, item 4), and the rest of the
# operations routes, as (method, path template, body).
OPS_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/rollouts", None),
    ("GET", "/v1/rollouts/{namespace}/{service}", None),
    ("POST", "/v1/rollouts", {"service": "tenant-a-svc", "image": "evil:1", "version": "v9"}),
    ("POST", "/v1/rollouts", MODEL_CANARY),  # a model canary on a model every tenant shares
    ("POST", "/v1/rollouts/{namespace}/{service}/pause", {"reason": "mine now"}),
    ("POST", "/v1/rollouts/{namespace}/{service}/resume", {}),
    ("POST", "/v1/rollouts/{namespace}/{service}/promote", {"full": True}),
    ("POST", "/v1/rollouts/{namespace}/{service}/abort", {}),
    ("GET", "/v1/scaling", None),
    ("GET", "/v1/scaling/{namespace}/{deployment}", None),
    ("GET", "/v1/scaling/{namespace}/{deployment}/decisions", None),
    ("POST", "/v1/scaling", {"deployment": "tenant-a-deploy", "capacity_rps": 10}),
    ("POST", "/v1/scaling/{namespace}/{deployment}/mode", {"mode": "active"}),
    ("POST", "/v1/scaling/{namespace}/{deployment}/stop", {"reason": "mine now"}),
    ("GET", "/v1/chaos", None),
    ("GET", "/v1/chaos/catalogue", None),
    ("POST", "/v1/chaos", {"experiment": "pod-delete"}),
    ("GET", "/v1/chaos/{experiment}/{run}", None),
    ("POST", "/v1/chaos/{experiment}/{run}/abort", {}),
    ("GET", "/v1/chaos/schedules", None),
    ("POST", "/v1/chaos/schedules", {"experiment": "pod-delete", "every_s": 3600}),
    ("DELETE", "/v1/chaos/schedules/{schedule_id}", None),
    ("GET", "/v1/chaos/scenarios", None),
    ("GET", "/v1/chaos/scenarios/catalogue", None),
    ("POST", "/v1/chaos/scenarios", {"scenario": "chat-api-degraded"}),
    ("GET", "/v1/chaos/scenarios/{scenario}/{run}", None),
    ("POST", "/v1/chaos/scenarios/{scenario}/{run}/abort", {}),
    ("GET", "/v1/chaos/scenarios/schedules", None),
    ("POST", "/v1/chaos/scenarios/schedules", {"scenario": "chat-api-degraded", "every_s": 3600}),
    ("DELETE", "/v1/chaos/scenarios/schedules/{schedule_id}", None),
]
TENANT_A = {
    "namespace": "default",
    "service": "tenant-a-svc",
    "deployment": "tenant-a-deploy",
    "experiment": "pod-delete",
    "scenario": "chat-api-degraded",
    "run": "run-1",
    "schedule_id": "tenant-a-gameday",
}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _message(response: httpx.Response) -> str:
    return str(response.json()["error"]["message"])


def _labels(exposition: str, sample: str) -> list[dict[str, str]]:
    """The label sets of the samples named `sample` in a Prometheus text exposition."""
    return [
        found.labels
        for family in text_string_to_metric_families(exposition)
        for found in family.samples
        if found.name == sample
    ]


def _random_key() -> str:
    """A key of the right shape that was never minted."""
    return f"{PREFIX}{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The key ids the API looks up in the database (the served app runs in this process)."""
    seen: list[str] = []
    real = crud.get_api_key

    async def counted(session: Any, *, key_id: str) -> Any:
        seen.append(key_id)
        return await real(session, key_id=key_id)

    monkeypatch.setattr(crud, "get_api_key", counted)
    return seen


# ---- platform roles -------------------------------------------------------------------------------------


async def test_a_tenant_admin_cannot_grant_platform_roles_or_reach_another_tenant(
    api_url: str, mint_key: MintKey
) -> None:
    tenant_a = await mint_key(tenant="tenant-a", roles=("admin",))
    async with httpx.AsyncClient(base_url=api_url, timeout=30, headers=_auth(tenant_a)) as http:
        a_client = (await http.post("/v1/admin/keys", json={"name": "a-app", "roles": ["client"]})).json()
    tenant_b = await mint_key(tenant="tenant-b", roles=("admin", "client"))
    async with httpx.AsyncClient(base_url=api_url, timeout=30, headers=_auth(tenant_b)) as http:
        for roles in (["sre"], ["platform"], ["client", "sre"], ["admin", "platform"]):
            refused = await http.post("/v1/admin/keys", json={"name": "escalate", "roles": roles})
            assert refused.status_code == 403, (roles, refused.text)
            assert PLATFORM_ONLY in _message(refused)
        elsewhere = await http.post(
            "/v1/admin/keys", json={"name": "x", "roles": ["client"], "tenant": "tenant-a"}
        )
        assert elsewhere.status_code == 403 and "own tenant" in _message(elsewhere)
        assert (await http.get("/v1/admin/keys", params={"tenant": "tenant-a"})).status_code == 403
        assert (await http.delete(f"/v1/admin/keys/{a_client['id']}")).status_code == 404
        mine = (await http.get("/v1/admin/keys")).json()["data"]
        assert {k["tenant"] for k in mine} == {"tenant-b"}
        assert not [k for k in mine if {"sre", "platform"} & set(k["roles"])]  # nothing was minted
        # A tenant roles key it may still mint, and it works.
        made = await http.post("/v1/admin/keys", json={"name": "app", "roles": ["admin", "client"]})
        assert made.status_code == 201 and made.json()["tenant"] == "tenant-b"

    # A platform key kept in tenant B (minted by the deployer) is out of B's admin's reach.
    platform_in_b = await mint_key(tenant="tenant-b", roles=("sre",))
    async with httpx.AsyncClient(base_url=api_url, timeout=30, headers=_auth(tenant_b)) as http:
        listed = (await http.get("/v1/admin/keys")).json()["data"]
        kept = next(k for k in listed if k["roles"] == ["sre"])  # B's admin sees it is there...
        refused = await http.delete(f"/v1/admin/keys/{kept['id']}")  # ...but cannot take it away
        assert refused.status_code == 403 and "platform admin" in _message(refused)
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        assert (await http.get("/v1/rollouts", headers=_auth(platform_in_b))).status_code == 200


async def test_a_tenant_admin_gets_403_on_every_operations_route(api_url: str, mint_key: MintKey) -> None:
    tenant_admin = await mint_key(tenant="tenant-b", roles=("admin", "client"))
    client = await mint_key(tenant="tenant-b", roles=("client",))
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        spec = (await http.get("/openapi.json")).json()
        ops = {
            (method.upper(), path)
            for path, methods in spec["paths"].items()
            if path.startswith(("/v1/rollouts", "/v1/scaling", "/v1/chaos"))
            for method in methods
        }
        tried = {(method, template) for method, template, _ in OPS_ROUTES}
        assert ops <= tried, f"operations routes this test does not try: {sorted(ops - tried)}"
        for method, template, body in OPS_ROUTES:
            path = template.format(**TENANT_A)
            for key in (tenant_admin, client):
                response = await http.request(method, path, json=body, headers=_auth(key))
                assert response.status_code == 403, (method, path, response.text)
                assert "needs the 'sre' role (a platform role" in _message(response), (method, path)


async def test_a_platform_admin_mints_an_sre_key_for_any_tenant(api_url: str, mint_key: MintKey) -> None:
    platform = await mint_key(tenant="platform", roles=("platform",))
    tenant_b = await mint_key(tenant="tenant-b", roles=("client",))
    async with httpx.AsyncClient(base_url=api_url, timeout=30, headers=_auth(platform)) as http:
        made = await http.post("/v1/admin/keys", json={"name": "oncall", "roles": ["sre"], "tenant": "ops"})
        assert made.status_code == 201, made.text
        sre = made.json()
        assert (sre["tenant"], sre["roles"]) == ("ops", ["sre"])
        # It sees and revokes across tenants.
        everyone = {k["tenant"] for k in (await http.get("/v1/admin/keys")).json()["data"]}
        assert {"platform", "tenant-b", "ops"} <= everyone
        only_ops = (await http.get("/v1/admin/keys", params={"tenant": "ops"})).json()["data"]
        assert [k["id"] for k in only_ops] == [sre["id"]]
        b_key = next(
            k for k in (await http.get("/v1/admin/keys", params={"tenant": "tenant-b"})).json()["data"]
        )
        assert (await http.delete(f"/v1/admin/keys/{b_key['id']}")).status_code == 200
        assert (await http.get("/v1/models", headers=_auth(tenant_b))).status_code == 401
        # The platform admin itself runs operations.
        assert (await http.get("/v1/rollouts")).status_code == 200
    async with httpx.AsyncClient(base_url=api_url, timeout=30, headers=_auth(sre["key"])) as http:
        assert (await http.get("/v1/rollouts")).status_code == 200
        assert (await http.get("/v1/chaos/schedules")).status_code == 200
        # An SRE runs the cluster; it reads no tenant's conversations and mints no keys.
        assert (await http.get("/v1/conversations")).status_code == 403
        assert (await http.post("/v1/admin/keys", json={"name": "x", "roles": ["sre"]})).status_code == 403


# ---- authentication: size, cost and throttling --------------------------------------------------------


async def test_an_oversized_authorization_header_is_refused_unread(api_url: str, lookups: list[str]) -> None:
    secret = secrets.token_urlsafe(24)
    async with httpx.AsyncClient(base_url=api_url, timeout=60) as http:
        for size in (9_000, 1_000_000):
            credential = f"{PREFIX}{secrets.token_hex(6)}_{secret}" + "A" * size
            response = await http.get("/v1/conversations", headers={"Authorization": f"Bearer {credential}"})
            assert response.status_code == 431, response.text[:300]
            assert response.json()["error"]["type"] == "AuthorizationTooLarge"
            assert secret not in response.text and len(response.content) < 2_000
    assert lookups == []


async def test_bad_keys_cost_one_lookup_at_most_and_malformed_ones_none(
    api_url: str, lookups: list[str]
) -> None:
    unknown = _random_key()
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        for _ in range(3):
            assert (await http.get("/v1/conversations", headers=_auth(unknown))).status_code == 401
        for malformed in ("lcp_nope_notakey", unknown + "x", unknown[:-1], unknown.replace("_", "-", 2)):
            assert (await http.get("/v1/conversations", headers=_auth(malformed))).status_code == 401
    assert lookups == [unknown.split("_")[1]]  # the unknown key once, then from the negative cache


async def test_repeated_failed_authentication_from_one_address_gets_429(
    api_url: str, settings: Settings, mint_key: MintKey, lookups: list[str]
) -> None:
    valid = await mint_key(tenant="tenant-b")
    burst = settings.auth.failures_burst
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        assert (await http.get("/v1/models", headers=_auth(valid))).status_code == 200
        # Credentials refused on their shape alone cost nothing and do not count: a client sending
        # garbage does not lock out the address it shares.
        for garbage in ("Bearer", "Bearer x", "Basic dXNlcjpwYXNz", "Bearer lcp_nope_notakey", "Bearer a.b"):
            for _ in range(burst):
                assert (await http.get("/v1/models", headers={"Authorization": garbage})).status_code == 401
        guesses = [_random_key() for _ in range(burst + 5)]
        answers = [(await http.get("/v1/models", headers=_auth(key))).status_code for key in guesses]
        assert answers == [401] * burst + [429] * 5
        throttled = await http.get("/v1/conversations", headers=_auth(_random_key()))
        assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
        assert "too many failed authentications" in _message(throttled)
        assert all(key.split("_", 2)[2] not in throttled.text for key in guesses)
        # An address that is throttled is throttled whatever it sends, a valid key included, until it
        # has earned an attempt back.
        assert (await http.get("/v1/models", headers=_auth(valid))).status_code == 429
    assert len(lookups) == 1 + burst  # the valid key once, each guess once, nothing while throttled


# ---- /metrics -----------------------------------------------------------------------------------------


@pytest.fixture
async def metered_url(settings: Settings) -> AsyncIterator[str]:
    """The API with a metrics scrape token set."""
    settings.conversation.task_queue = f"conversations-{uuid.uuid4().hex[:8]}"
    settings.api.with_worker = True
    settings.metrics.token = SecretStr(SCRAPE_TOKEN)
    with serve_in_thread(create_app(settings)) as url:
        yield url


async def _one_chat(api_url: str, key: str) -> None:
    body = {"model": "sim-zero", "messages": [{"role": "user", "content": "[echo] a b c"}]}
    async with httpx.AsyncClient(base_url=api_url, timeout=60, headers=_auth(key)) as http:
        response = await http.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text


async def test_open_metrics_name_no_tenant(api_url: str, mint_key: MintKey) -> None:
    await _one_chat(api_url, await mint_key(tenant="tenant-secretive"))
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        exposed = await http.get("/metrics")
    assert exposed.status_code == 200
    assert "tenant-secretive" not in exposed.text and 'tenant="' not in exposed.text
    assert "lcp_tokens_total" not in exposed.text
    # What model canaries judge stays open.
    canary_reads = {"model": "sim-zero", "version": "stable", "outcome": "ok"}
    assert canary_reads in _labels(exposed.text, "lcp_gateway_requests_total")
    assert _labels(exposed.text, "lcp_http_requests_total")


async def test_with_a_scrape_token_metrics_need_it(metered_url: str, mint_key: MintKey) -> None:
    await _one_chat(metered_url, await mint_key(tenant="tenant-secretive"))
    async with httpx.AsyncClient(base_url=metered_url, timeout=30) as http:
        for headers in ({}, _auth("wrong"), _auth(SCRAPE_TOKEN + "x"), {"Authorization": SCRAPE_TOKEN}):
            refused = await http.get("/metrics", headers=headers)
            assert refused.status_code == 401 and "tenant" not in refused.text
            assert SCRAPE_TOKEN not in refused.text
        scraped = await http.get("/metrics", headers=_auth(SCRAPE_TOKEN))
    assert scraped.status_code == 200
    tokens = {"tenant": "tenant-secretive", "model": "sim-zero", "kind": "completion"}
    assert tokens in _labels(scraped.text, "lcp_tokens_total")


async def test_the_lab_prometheus_scrapes_with_the_token(
    metered_url: str, mint_key: MintKey, prometheus_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Given the token in its scrape config (as `lcp dev` does when LCP_METRICS__TOKEN is set), the lab's
    Prometheus reads every series; without it, it reads none."""
    await _one_chat(metered_url, await mint_key(tenant="tenant-secretive"))
    address = metered_url.removeprefix("http://")
    targets = [
        ScrapeTarget("lcp-api", address, bearer_token=SCRAPE_TOKEN),
        ScrapeTarget("lcp-api-tokenless", address),
    ]
    data_dir, port = tmp_path_factory.mktemp("prometheus"), free_port()
    process = start_prometheus(targets, data_dir, port=port, scrape_interval_s=1)
    try:
        url = prometheus_url("127.0.0.1", port)
        wait_ready(url, process=process, log_file=data_dir / "prometheus.log")
        with httpx.Client(base_url=url, timeout=10) as prometheus:
            up = await _query_until(prometheus, 'up{job=~"lcp-api.*"}', lambda found: len(found) == 2)
            assert {r["metric"]["job"]: r["value"][1] for r in up} == {
                "lcp-api": "1",
                "lcp-api-tokenless": "0",
            }
            await _query_until(prometheus, 'lcp_tokens_total{tenant="tenant-secretive",job="lcp-api"}', bool)
    finally:
        stop_prometheus(process)


async def _query_until(prometheus: httpx.Client, query: str, done: Any) -> list[Any]:
    """The answer to `query` once `done(answer)` holds."""
    return await eventually(
        lambda: prometheus.get("/api/v1/query", params={"query": query}).json()["data"]["result"],
        until=done,
        what=f"Prometheus to answer {query}",
        within=30,
        interval=0.3,
    )
