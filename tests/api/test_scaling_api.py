"""The predictive-scaling routes over real HTTP: the app served by uvicorn, the ops and forecasting workers
in the test's loop, the rollout lab (emulated Kubernetes API, workload simulator, real Prometheus), and
`lcp scaling` run as a subprocess against the served app."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from temporalio.client import Client

from api.app import create_app
from cli.keys_db import mint
from settings import Settings, TemporalSettings
from tests.http_server import serve_in_thread
from tests.lcp_cli import run_lcp
from tests.rollout_lab import NAMESPACE, RolloutLab, rollout_lab
from tests.waiting import eventually
from tests.workflows.saved_histories import save_history
from workers.main import forecasting_worker, ops_worker


@pytest.fixture(scope="module")
async def lab(tmp_path_factory: pytest.TempPathFactory, prometheus_bin: str) -> AsyncIterator[RolloutLab]:
    async with rollout_lab(tmp_path_factory.mktemp("scaling-lab")) as running:
        yield running


@pytest.fixture(scope="module")
def scaling_settings(lab: RolloutLab, tmp_path_factory: pytest.TempPathFactory, client: Client) -> Settings:
    home = tmp_path_factory.mktemp("lcp-scaling")
    base = Settings(
        home=home,
        database_url=f"sqlite+aiosqlite:///{home / 'lcp.db'}",
        temporal=TemporalSettings(address=client.service_client.config.target_host),
    )
    base.scaling.forecast_task_queue = f"forecast-{uuid.uuid4().hex[:8]}"
    return lab.settings(base, f"ops-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
async def workers(client: Client, scaling_settings: Settings) -> AsyncIterator[None]:
    async with (
        ops_worker(client, scaling_settings) as ops,
        forecasting_worker(client, scaling_settings) as forecasting,
        ops,
        forecasting,
    ):
        yield


@pytest.fixture(scope="module")
def api_url(scaling_settings: Settings) -> Iterator[str]:
    with serve_in_thread(create_app(scaling_settings)) as url:
        yield url


@pytest.fixture(scope="module")
async def keys(api_url: str, scaling_settings: Settings) -> dict[str, str]:
    minted = {}
    for role in ("client", "sre"):
        _, minted[role] = await mint(
            scaling_settings.resolved_database_url(), tenant="default", name=f"scaling-{role}", roles=[role]
        )
    return minted


@pytest.fixture(scope="module")
async def sre(api_url: str, keys: dict[str, str], workers: None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {keys['sre']}"}
    async with httpx.AsyncClient(base_url=api_url, timeout=60, headers=headers) as http:
        yield http


def _body(deployment: str, **options: Any) -> dict[str, Any]:
    body = {
        "namespace": NAMESPACE,
        "deployment": deployment,
        "capacity_rps": 110.0,
        "min_replicas": 2,
        "max_replicas": 10,
        "interval_s": 1.0,
        "startup_s": 1.0,
        "horizon_s": 10.0,
        "step_s": 1.0,
        "lookback_s": 120.0,
        "season_s": [60.0],
        # The default query's 1-minute rate reads a series younger than that low (Prometheus divides by
        # the whole window), and these services are seconds old.
        "query": 'sum(rate(http_requests_total{namespace="{{namespace}}",service="{{deployment}}"}[5s]))',
    }
    return body | options


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


async def until(
    http: httpx.AsyncClient, deployment: str, check: Callable[[dict[str, Any]], bool], within: float = 30
) -> dict[str, Any]:
    async def view() -> dict[str, Any]:
        response = await http.get(f"/v1/scaling/{NAMESPACE}/{deployment}")
        if response.status_code != 200:
            pytest.fail(response.text)
        found: dict[str, Any] = response.json()
        return found

    return await eventually(
        view, until=check, what=f"the scaling of {deployment} to get there", within=within, interval=0.25
    )


async def test_start_read_switch_mode_and_stop_over_rest(
    sre: httpx.AsyncClient, lab: RolloutLab, client: Client
) -> None:
    # 400 requests/s at 110 per replica and 80% utilisation (88): the reactive need is 5 replicas (from
    # 353 to 440 requests/s), reached from 2 in two steps (at most ×2 a decision).
    deployment = lab.add_service(replicas=2)
    response = await sre.post("/v1/scaling", json=_body(deployment))
    assert response.status_code == 201, response.text
    view = response.json()
    assert view["id"] == f"scaling/{NAMESPACE}/{deployment}"
    assert view["phase"] == "ForecastOnly" and view["decisions"] >= 1
    assert view["settings"]["bounds"]["capacity_rps"] == 110.0

    # A [5s] rate of 400/s reads a few percent either way: wait for a reading in the band that needs 5.
    view = await until(sre, deployment, lambda v: v["last"] and 360 < (v["last"]["observed_rps"] or 0) < 440)
    last = view["last"]
    assert last["status"] == "recorded" and last["reactive_need"] == 5, str(last)
    assert last["target"] == 4 and last["limited_by"] == "step-up"
    assert lab.deployment(deployment)["spec"]["replicas"] == 2  # type: ignore[index]

    conflict = _error(await sre.post("/v1/scaling", json=_body(deployment)), 409)
    assert conflict["type"] == "ScalingRunning" and deployment in conflict["message"]

    response = await sre.post(f"/v1/scaling/{NAMESPACE}/{deployment}/mode", json={"mode": "active"})
    assert response.status_code == 200, response.text
    assert response.json()["phase"] == "Active"
    await until(
        sre, deployment, lambda v: v["last"]["status"] in ("scaled", "unchanged") and v["mode"] == "active"
    )
    await eventually(
        lambda: lab.deployment(deployment)["spec"]["replicas"] >= 5,  # type: ignore[index]
        what="active mode to scale the Deployment to 5",
        within=30,
    )

    stored = await sre.get(f"/v1/scaling/{NAMESPACE}/{deployment}/decisions", params={"limit": 500})
    assert stored.status_code == 200, stored.text
    decisions = stored.json()["data"]
    seqs = [d["seq"] for d in decisions]
    assert seqs == sorted(seqs, reverse=True) and len(seqs) == len(set(seqs))
    assert {"recorded", "scaled"} <= {d["status"] for d in decisions}

    listed = await sre.get("/v1/scaling", params={"namespace": NAMESPACE})
    assert deployment in [t["deployment"] for t in listed.json()["data"]]

    response = await sre.post(f"/v1/scaling/{NAMESPACE}/{deployment}/stop", json={"reason": "test done"})
    assert response.status_code == 200, response.text
    view = await until(sre, deployment, lambda v: v["phase"] == "Stopped")
    assert view["message"] == "test done" and view["history"][-1]["kind"] == "stopped"
    replicas = lab.deployment(deployment)["spec"]["replicas"]  # type: ignore[index]
    await asyncio.sleep(2)  # not a wait: two intervals pass, and nothing scales it any more
    assert lab.deployment(deployment)["spec"]["replicas"] == replicas  # type: ignore[index]
    gone = _error(await sre.post(f"/v1/scaling/{NAMESPACE}/{deployment}/mode", json={"mode": "active"}), 404)
    assert "no running scaling" in gone["message"]
    await save_history(client.get_workflow_handle(view["id"]), "predictive_scaling")


async def test_bad_requests_are_refused_with_what_is_wrong(
    sre: httpx.AsyncClient, keys: dict[str, str], api_url: str, lab: RolloutLab
) -> None:
    missing = _error(await sre.post("/v1/scaling", json=_body("no-such-deployment")), 404)
    assert missing["type"] == "TargetNotFound" and "no-such-deployment" in missing["message"]

    deployment = lab.add_service(replicas=1)
    short = _error(await sre.post("/v1/scaling", json=_body(deployment, horizon_s=1.0)), 422)
    assert "horizon_s" in short["message"]
    inverted = _error(
        await sre.post("/v1/scaling", json=_body(deployment, min_replicas=5, max_replicas=3)), 422
    )
    assert "max_replicas" in inverted["message"]
    zero = _error(await sre.post("/v1/scaling", json=_body(deployment, min_replicas=0)), 422)
    assert "min_replicas" in zero["message"]
    mode = _error(await sre.post("/v1/scaling", json=_body(deployment, mode="yolo")), 422)
    assert "mode" in mode["message"]
    unknown = _error(await sre.get(f"/v1/scaling/{NAMESPACE}/nothing-here"), 404)
    assert unknown["type"] == "ScalingNotFound"

    client = {"Authorization": f"Bearer {keys['client']}"}
    async with httpx.AsyncClient(base_url=api_url, timeout=30, headers=client) as http:
        _error(await http.get("/v1/scaling"), 403)


async def test_missing_data_nan_and_a_vanished_target_take_no_action(
    sre: httpx.AsyncClient, lab: RolloutLab
) -> None:
    """No series, NaN, a Deployment deleted mid-run: each decision says so, nothing is scaled (never to
    zero), and the metric shows the data missing."""
    nothing = lab.add_service(replicas=3)
    query = 'sum(rate(no_such_metric_total{service="{{deployment}}"}[5s]))'
    response = await sre.post("/v1/scaling", json=_body(nothing, mode="active", query=query))
    assert response.status_code == 201, response.text
    view = await until(sre, nothing, lambda v: v["last"] and v["last"]["status"] == "no-data")
    assert view["health"] == "no-data" and view["last"]["target"] is None
    assert "no_such_metric_total" in view["message"]

    nan = lab.add_service(replicas=3)
    response = await sre.post("/v1/scaling", json=_body(nan, mode="active", query="0/0"))
    assert response.status_code == 201, response.text
    view = await until(sre, nan, lambda v: v["last"] and v["last"]["data_status"] == "nan")
    assert view["last"]["status"] == "no-data" and view["health"] == "nan"

    vanishing = lab.add_service(replicas=3)
    response = await sre.post("/v1/scaling", json=_body(vanishing, mode="active"))
    assert response.status_code == 201, response.text
    lab.lab.kube.api.delete_object("apps/v1/deployments", NAMESPACE, vanishing)
    view = await until(sre, vanishing, lambda v: v["last"] and v["last"]["status"] == "target-missing")
    assert view["health"] == "target-missing" and view["phase"] == "Active"
    assert f"Deployment {NAMESPACE}/{vanishing}" in view["message"]

    for deployment in (nothing, nan):
        assert lab.deployment(deployment)["spec"]["replicas"] == 3  # type: ignore[index]
        labels = {"namespace": NAMESPACE, "deployment": deployment}
        assert REGISTRY.get_sample_value("lcp_scaling_data_ok", labels) == 0
    for deployment in (nothing, nan, vanishing):
        response = await sre.post(f"/v1/scaling/{NAMESPACE}/{deployment}/stop", json={})
        assert response.status_code == 200, response.text


async def _lcp(api_url: str, key: str, *args: str) -> tuple[int, str, str]:
    return await run_lcp(api_url, key, "scaling", *args)


async def test_the_cli_starts_shows_switches_and_stops(
    api_url: str, keys: dict[str, str], sre: httpx.AsyncClient, lab: RolloutLab
) -> None:
    deployment = lab.add_service(replicas=2)
    common = ["-n", NAMESPACE]
    code, out, err = await _lcp(
        api_url, keys["sre"], "start", deployment, *common, "--capacity", "110", "--min", "2",
        "--interval", "1", "--startup", "1", "--horizon", "10", "--step", "1", "--lookback", "3600",
        "--query", _body("")["query"],
    )  # fmt: skip
    assert code == 0, err
    assert f"{NAMESPACE}/{deployment}" in out and "ForecastOnly" in out

    await until(sre, deployment, lambda v: v["last"] and (v["last"]["observed_rps"] or 0) > 360)
    code, out, err = await _lcp(api_url, keys["sre"], "status", deployment, *common)
    assert code == 0, err
    assert "recorded" in out and "decisions (newest first)" in out and "2 → 4" in out

    code, out, err = await _lcp(api_url, keys["sre"], "status", deployment, *common, "--stored")
    assert code == 0, err
    assert "recorded" in out

    code, out, err = await _lcp(api_url, keys["sre"], "mode", deployment, "active", *common)
    assert code == 0, err
    assert "Active" in out
    code, out, err = await _lcp(api_url, keys["sre"], "list", *common)
    assert code == 0 and deployment in out
    code, out, err = await _lcp(api_url, keys["sre"], "stop", deployment, *common)
    assert code == 0, err
    assert "Stopped" in out

    code, out, err = await _lcp(api_url, keys["sre"], "status", "nothing-here", *common)
    assert code == 1 and "lcp scaling status: no scaling" in err
    code, out, err = await _lcp(api_url, keys["client"], "list")
    assert code == 1 and "lcp scaling list:" in err
