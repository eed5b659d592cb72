"""The rollout routes over real HTTP: the app served by uvicorn, the ops worker in the test's loop, the
rollout lab (emulated Kubernetes API, workload simulator, real Prometheus), and `lcp rollout` run as a
subprocess against the served app."""

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from api.app import create_app
from cli.keys_db import mint
from settings import Settings, TemporalSettings
from tests.http_server import serve_in_thread
from tests.lcp_cli import run_lcp
from tests.rollout_lab import NAMESPACE, RolloutLab, rollout_lab
from tests.waiting import eventually
from workers.main import ops_worker

FINISHED = ("Succeeded", "RolledBack", "Frozen", "Failed")
ROUTES = ("promote", "pause", "resume", "abort")


@pytest.fixture(scope="module")
async def lab(tmp_path_factory: pytest.TempPathFactory, prometheus_bin: str) -> AsyncIterator[RolloutLab]:
    async with rollout_lab(tmp_path_factory.mktemp("rollout-lab")) as running:
        yield running


@pytest.fixture(scope="module")
def rollout_settings(lab: RolloutLab, tmp_path_factory: pytest.TempPathFactory, client: Client) -> Settings:
    home = tmp_path_factory.mktemp("lcp-rollouts")
    base = Settings(
        home=home,
        database_url=f"sqlite+aiosqlite:///{home / 'lcp.db'}",
        temporal=TemporalSettings(address=client.service_client.config.target_host),
    )
    return lab.settings(base, f"ops-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
async def worker(client: Client, rollout_settings: Settings) -> AsyncIterator[None]:
    async with ops_worker(client, rollout_settings) as running, running:
        yield


@pytest.fixture(scope="module")
def api_url(rollout_settings: Settings) -> Iterator[str]:
    """The app on a real port (its own event loop, in a thread); no conversation worker in it."""
    with serve_in_thread(create_app(rollout_settings)) as url:
        yield url


@pytest.fixture(scope="module")
async def keys(api_url: str, rollout_settings: Settings) -> dict[str, str]:
    """A key per role of the default tenant (the served app has migrated the database by now)."""
    minted = {}
    for role in ("client", "sre", "admin", "platform"):
        _, minted[role] = await mint(
            rollout_settings.resolved_database_url(), tenant="default", name=f"rollouts-{role}", roles=[role]
        )
    return minted


@pytest.fixture(scope="module")
async def sre(api_url: str, keys: dict[str, str], worker: None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {keys['sre']}"}
    async with httpx.AsyncClient(base_url=api_url, timeout=60, headers=headers) as http:
        yield http


def _body(service: str, steps: list[dict[str, Any]] | None, **options: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "service": service,
        "namespace": NAMESPACE,
        "image": f"lab.local/{service}:v2",
        "version": "v2",
    }
    if steps is not None:
        body["steps"] = steps
    return body | options


def _weight(percent: int) -> dict[str, Any]:
    return {"kind": "set_weight", "percent": percent}


def _pause(seconds: float | None) -> dict[str, Any]:
    return {"kind": "pause", "duration_s": seconds}


WAIT_FOR_HUMAN = [_weight(25), _pause(None), _weight(100)]


async def until(
    http: httpx.AsyncClient, service: str, check: Callable[[dict[str, Any]], bool], within: float = 60
) -> dict[str, Any]:
    """GET the rollout until `check(view)` holds."""

    async def view() -> dict[str, Any]:
        response = await http.get(f"/v1/rollouts/{NAMESPACE}/{service}")
        if response.status_code != 200:
            pytest.fail(response.text)
        found: dict[str, Any] = response.json()
        return found

    return await eventually(
        view, until=check, what=f"the rollout of {service} to get there", within=within, interval=0.2
    )


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


async def _listed(http: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    response = await http.get("/v1/rollouts", params=params)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


# ---- a whole rollout, and the list -------------------------------------------------------------------------


async def test_a_rollout_started_over_rest_reaches_succeeded(
    sre: httpx.AsyncClient, lab: RolloutLab, keys: dict[str, str]
) -> None:
    service = lab.add_service()
    steps = [
        _weight(20),
        _pause(1),
        {"kind": "analyze", "templates": ["success-rate"], "interval_s": 3, "count": 2},
        _weight(100),
    ]
    response = await sre.post("/v1/rollouts", json=_body(service, steps))
    assert response.status_code == 201, response.text
    started = response.json()
    assert started["id"] == f"rollout/{NAMESPACE}/{service}" and started["phase"] == "Progressing"
    assert started["stable_version"] == "v1" and started["canary_deployment"] == f"{service}-canary"
    assert started["requested_by"].startswith("key:")
    assert lab.deployment(f"{service}-canary") is not None  # the 201 comes once the canary exists

    view = await until(sre, service, lambda v: v["phase"] in FINISHED)
    assert view["phase"] == "Succeeded", view["message"]
    assert view["weights"]["canary_percent"] == 0 and view["weights"]["stable_percent"] == 100
    (analysis,) = view["analyses"]
    assert analysis["phase"] == "Successful"  # 2 successful readings (a first one may find no data yet)
    assert [m["phase"] for m in analysis["measurements"]].count("Successful") == 2
    assert lab.deployment(service)["spec"]["template"]["metadata"]["labels"]["lcp.dev/version"] == "v2"  # type: ignore[index]

    # the list reads Temporal's visibility, which catches up with the phase shortly
    mine = await eventually(
        lambda: _listed(sre, namespace=NAMESPACE, service=service),
        until=lambda mine: mine and mine[0]["phase"] == "Succeeded",
        what="the list to show the rollout Succeeded",
        interval=0.2,
    )
    assert [(r["id"], r["phase"], r["status"]) for r in mine] == [(started["id"], "Succeeded", "COMPLETED")]
    assert started["id"] in [r["id"] for r in await _listed(sre, phase="Succeeded")]
    assert started["id"] in [r["id"] for r in await _listed(sre, service=service)]
    assert started["id"] not in [r["id"] for r in await _listed(sre, phase="RolledBack")]
    assert await _listed(sre, namespace="elsewhere", service=service) == []
    assert _error(await sre.get("/v1/rollouts", params={"phase": "not a phase"}), 422)


# ---- human actions and their conflicts --------------------------------------------------------------------


async def test_a_second_start_pause_resume_promote_and_abort(sre: httpx.AsyncClient, lab: RolloutLab) -> None:
    service = lab.add_service()
    steps = [_weight(25), _pause(None), _weight(50), _pause(3600), _weight(100)]
    response = await sre.post("/v1/rollouts", json=_body(service, steps))
    assert response.status_code == 201, response.text
    rollout_id = response.json()["id"]

    error = _error(await sre.post("/v1/rollouts", json=_body(service, steps)), 409)
    assert error["type"] == "RolloutRunning" and error["running"] == rollout_id
    assert f"{rollout_id} is already running" in error["message"] and "promote or abort" in error["message"]

    view = await until(sre, service, lambda v: v["awaiting_decision"])
    assert view["phase"] == "Paused" and view["step"] == 1 and view["desired_weight"] == 25
    error = _error(await sre.post(f"/v1/rollouts/{NAMESPACE}/{service}/resume", json={}), 409)
    assert error["type"] == "NothingToResume" and "not paused" in error["message"]

    response = await sre.post(f"/v1/rollouts/{NAMESPACE}/{service}/promote", json={"reason": "dashboards ok"})
    assert response.status_code == 200, response.text
    await until(sre, service, lambda v: v["step"] == 3 and v["desired_weight"] == 50)

    response = await sre.post(f"/v1/rollouts/{NAMESPACE}/{service}/pause", json={"reason": "reading logs"})
    assert response.status_code == 200, response.text
    paused = response.json()
    assert paused["phase"] == "Paused" and paused["paused_by"].startswith("key:")
    error = _error(await sre.post(f"/v1/rollouts/{NAMESPACE}/{service}/pause", json={}), 409)
    assert error["type"] == "AlreadyDone" and "already paused" in error["message"]
    response = await sre.post(f"/v1/rollouts/{NAMESPACE}/{service}/resume", json={})
    assert response.status_code == 200 and response.json()["phase"] == "Progressing", response.text

    response = await sre.post(f"/v1/rollouts/{NAMESPACE}/{service}/abort", json={"reason": "bad canary"})
    assert response.status_code == 200, response.text
    view = await until(sre, service, lambda v: v["phase"] in FINISHED)
    assert view["phase"] == "RolledBack" and view["message"].endswith(": bad canary")
    assert [e["kind"] for e in view["history"]].count("promote") == 1
    assert {"pause", "resume", "abort"} <= {e["kind"] for e in view["history"]}

    for action in ROUTES:  # nothing after the end
        error = _error(await sre.post(f"/v1/rollouts/{NAMESPACE}/{service}/{action}", json={}), 409)
        assert error["type"] == "RolloutFinished" and "finished" in error["message"], (action, error)


async def test_an_extra_field_in_an_action_is_422(sre: httpx.AsyncClient) -> None:
    error = _error(await sre.post(f"/v1/rollouts/{NAMESPACE}/x/promote", json={"fulll": True}), 422)
    assert "fulll" in error["message"]


# ---- what cannot start ------------------------------------------------------------------------------------


async def test_a_missing_deployment_is_404_and_so_is_an_unknown_rollout(sre: httpx.AsyncClient) -> None:
    error = _error(await sre.post("/v1/rollouts", json=_body("no-such-service", WAIT_FOR_HUMAN)), 404)
    assert error["type"] == "TargetNotFound" and f"{NAMESPACE}/no-such-service not found" in error["message"]

    error = _error(await sre.get(f"/v1/rollouts/{NAMESPACE}/never-started"), 404)
    assert error["type"] == "RolloutNotFound"
    assert f"no rollout rollout/{NAMESPACE}/never-started" in error["message"]
    for action in ROUTES:
        error = _error(await sre.post(f"/v1/rollouts/{NAMESPACE}/never-started/{action}", json={}), 404)
        assert error["type"] == "RolloutNotFound", action


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"steps": [{"kind": "jump", "percent": 10}]}, "'jump' found using 'kind' does not match"),
        (
            {"steps": [_weight(150)]},
            "steps.0.set_weight.percent: must be a whole percentage from 0 to 100, got 150",
        ),
        ({"steps": [_weight(50), _weight(20)]}, "weight goes down from 50% to 20%"),
        (
            {"steps": [{"kind": "analyze", "templates": ["no-such-metric"], "interval_s": 1, "count": 1}]},
            "unknown metric template 'no-such-metric' (known: ",
        ),
        (
            {
                "judge": "statistical",
                "steps": [
                    {"kind": "analyze", "templates": ["latency-p99-ratio"], "interval_s": 6, "count": 2}
                ],
            },
            "template 'latency-p99-ratio' compares with the baseline itself",
        ),
        ({"image": None}, "image: Input should be a valid string"),
        ({"router": "nginx"}, "router: Input should be 'replicas', 'istio' or 'gateway-api'"),
        ({"templates": {"mine": {"query": "up"}}, "steps": [_weight(10)]}, "mine"),
        (
            {"router": "istio", "exact_weights": True},
            "exact_weights is for a Deployment with the replica router: a traffic router's (or a model's) "
            "weights are exact already",
        ),
    ],
    ids=[
        "bad-step-kind",
        "weight-150",
        "weight-down",
        "unknown-template",
        "statistical-with-ratio",
        "no-image",
        "bad-router",
        "template-without-conditions",
        "exact-weights-behind-a-router",
    ],
)
async def test_an_invalid_rollout_is_422_saying_what_is_wrong(
    sre: httpx.AsyncClient, change: dict[str, Any], said: str
) -> None:
    body = _body("any-service", WAIT_FOR_HUMAN) | change
    error = _error(await sre.post("/v1/rollouts", json=body), 422)
    assert said in error["message"], error


# ---- roles ------------------------------------------------------------------------------------------------


async def test_client_and_tenant_admin_keys_get_403_on_every_rollout_route(
    api_url: str, keys: dict[str, str]
) -> None:
    calls = [
        ("POST", "/v1/rollouts", _body("any-service", WAIT_FOR_HUMAN)),
        ("GET", "/v1/rollouts", None),
        ("GET", f"/v1/rollouts/{NAMESPACE}/any-service", None),
        *[("POST", f"/v1/rollouts/{NAMESPACE}/any-service/{action}", {}) for action in ROUTES],
    ]
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        for method, path, body in calls:
            # a tenant admin is no SRE: rollouts are the platform's
            for key, status in ((keys["client"], 403), (keys["admin"], 403), ("", 401)):
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                response = await http.request(method, path, json=body, headers=headers)
                assert response.status_code == status, (method, path, response.text)
                if status == 403:
                    assert "needs the 'sre' role" in response.json()["error"]["message"]
        # the platform admin holds every role: it gets past the check to the answer
        admin = {"Authorization": f"Bearer {keys['platform']}"}
        response = await http.get(f"/v1/rollouts/{NAMESPACE}/never-started", headers=admin)
        assert response.status_code == 404, response.text
        response = await http.get("/v1/rollouts", headers=admin)
        assert response.status_code == 200, response.text


# ---- `lcp rollout` against the served app ---------------------------------------------------------------


async def _lcp(api_url: str, key: str, *args: str) -> tuple[int, str, str]:
    return await run_lcp(api_url, key, "rollout", *args)


async def test_the_cli_starts_shows_promotes_and_watches_a_rollout(
    api_url: str, keys: dict[str, str], sre: httpx.AsyncClient, lab: RolloutLab, tmp_path: Path
) -> None:
    service = lab.add_service()
    plan = tmp_path / "steps.yaml"
    plan.write_text(
        "- {kind: set_weight, percent: 25}\n- {kind: pause}\n- {kind: set_weight, percent: 100}\n"
    )
    key, where = keys["sre"], ("--namespace", NAMESPACE)

    code, out, err = await _lcp(
        api_url, key, "start", service, *where, "--image", f"lab.local/{service}:v2", "--version", "v2",
        "--steps", str(plan),
    )  # fmt: skip
    assert code == 0, err
    assert f"started {NAMESPACE}/{service}: Progressing" in out

    await until(sre, service, lambda v: v["awaiting_decision"])
    code, out, err = await _lcp(api_url, key, "status", service, *where)
    assert code == 0, err
    for shown in (f"rollout/{NAMESPACE}/{service}", "Paused", "waiting for a human", "pause until promoted",
                  "set canary weight 25%", f"lab.local/{service}:v2 as v2", "canary 1/1 ready"):  # fmt: skip
        assert shown in out, (shown, out)

    code, out, err = await _lcp(api_url, key, "promote", service, *where, "--full", "--reason", "ship it")
    assert code == 0 and f"{NAMESPACE}/{service}: " in out, err

    code, out, err = await _lcp(api_url, key, "status", service, *where, "--watch")
    assert code == 0, err  # 0: it succeeded
    assert (
        f"{NAMESPACE}/{service}: Succeeded, promoted fully at step 1/3 (pause until promoted): v2 is" in out
    )
    assert "set canary weight 100% (skipped)" in out

    code, out, err = await _lcp(api_url, key, "abort", service, *where)
    assert code == 1 and "Traceback" not in err
    assert f"lcp rollout abort: rollout/{NAMESPACE}/{service} has finished" in err

    code, out, err = await _lcp(api_url, key, "list", *where, "--service", service)
    assert code == 0 and f"{NAMESPACE}/{service}" in out, err

    code, out, err = await _lcp(api_url, keys["client"], "status", service, *where)
    assert code == 1 and "this route needs the 'sre' role" in err and "carry: client" in err, err
