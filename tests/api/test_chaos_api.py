"""The chaos routes over real HTTP: the app served by uvicorn, the ops worker in the test's loop, the
rollout lab with its Litmus operator (a simulation), and `lcp chaos` run as a subprocess."""

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from temporalio.client import Client

from api.app import create_app
from cli.keys_db import mint
from settings import Settings, TemporalSettings
from tests.chaos_runs import lab, success_rate_query
from tests.http_server import serve_in_thread
from tests.lcp_cli import run_lcp
from tests.rollout_lab import NAMESPACE, RolloutLab
from tests.waiting import eventually
from workers.main import ops_worker

__all__ = ["lab"]  # the chaos runs' lab fixture, shared


@pytest.fixture(scope="module")
def chaos_settings(lab: RolloutLab, tmp_path_factory: pytest.TempPathFactory, client: Client) -> Settings:
    home = tmp_path_factory.mktemp("lcp-chaos")
    base = Settings(
        home=home,
        database_url=f"sqlite+aiosqlite:///{home / 'lcp.db'}",
        temporal=TemporalSettings(address=client.service_client.config.target_host),
    )
    return lab.settings(base, f"ops-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
async def worker(client: Client, chaos_settings: Settings) -> AsyncIterator[None]:
    async with ops_worker(client, chaos_settings) as running, running:
        yield


@pytest.fixture(scope="module")
def api_url(chaos_settings: Settings) -> Iterator[str]:
    with serve_in_thread(create_app(chaos_settings)) as url:
        yield url


@pytest.fixture(scope="module")
async def key(api_url: str, chaos_settings: Settings) -> str:
    _, minted = await mint(
        chaos_settings.resolved_database_url(), tenant="default", name="chaos", roles=["sre"]
    )
    return minted


@pytest.fixture(scope="module")
async def sre(api_url: str, key: str, worker: None) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=api_url, timeout=60, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        yield http


def definition(service: str, kind: str, env: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "name": f"{service}-{kind}",
        "target": {"namespace": NAMESPACE, "app_label": f"app.kubernetes.io/name={service}"},
        "fault": {"kind": kind, "env": env},
        "hypothesis": {
            "interval_s": 2,
            "probes": [
                {
                    "name": "success-rate",
                    "type": "prometheus",
                    "query": success_rate_query(service),
                    "comparator": ">=",
                    "value": 0.95,
                }
            ],
        },
        "recover_within_s": 30,
    } | extra


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


async def until(
    http: httpx.AsyncClient, path: str, check: Callable[[dict[str, Any]], bool], within: float = 90
) -> dict[str, Any]:
    async def view() -> dict[str, Any]:
        response = await http.get(path)
        if response.status_code != 200:
            pytest.fail(response.text)
        found: dict[str, Any] = response.json()
        return found

    return await eventually(view, until=check, what=f"{path} to get there", within=within, interval=0.2)


async def test_run_watch_and_list_an_experiment_over_rest_and_the_cli(
    sre: httpx.AsyncClient, lab: RolloutLab, api_url: str, key: str
) -> None:
    service = lab.add_service(replicas=4)
    await lab.measured(success_rate_query(service))  # the probe can read the service's traffic
    body = {"definition": definition(service, "pod-delete", {"TOTAL_CHAOS_DURATION": "3"}), "run": "r1"}
    response = await sre.post("/v1/chaos", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["journal"][0]["step"] == "safety"
    path = f"/v1/chaos/{service}-pod-delete/r1"
    view = await until(sre, path, lambda v: v["phase"] in ("Passed", "Failed", "Error"))
    assert view["phase"] == "Passed" and view["resilience_score"] == 100.0, view["message"]

    again = _error(await sre.post("/v1/chaos", json=body), 409)
    assert again["type"] == "RunExists"
    listed = (await sre.get("/v1/chaos")).json()["data"]
    assert f"chaos/{service}-pod-delete/r1" in [r["id"] for r in listed]

    code, out, err = await run_lcp(api_url, key, "chaos", "status", f"{service}-pod-delete", "r1")
    assert code == 0, err
    assert "Passed" in out and "steady-state-after" in out and "resilience score 100" in out
    code, out, err = await run_lcp(api_url, key, "chaos", "catalogue")
    assert code == 0 and "chat-api-pod-delete" in out, err
    code, out, err = await run_lcp(api_url, key, "chaos", "list")
    assert code == 0 and f"{service}-pod-delete" in out, err


async def test_a_rollout_is_refused_while_chaos_runs_and_an_abort_still_cleans_up(
    sre: httpx.AsyncClient, lab: RolloutLab
) -> None:
    service = lab.add_service(replicas=4)
    await lab.measured(success_rate_query(service))
    env = {"TOTAL_CHAOS_DURATION": "60", "NETWORK_PACKET_LOSS_PERCENTAGE": "2"}
    response = await sre.post("/v1/chaos", json={"definition": definition(service, "pod-network-loss", env)})
    assert response.status_code == 201, response.text
    run = response.json()["run"]
    path = f"/v1/chaos/{service}-pod-network-loss/{run}"
    await until(sre, path, lambda v: v["phase"] == "Injecting")

    rollout = {
        "service": service,
        "namespace": NAMESPACE,
        "image": f"lab.local/{service}:v2",
        "version": "v2",
    }
    refused = _error(await sre.post("/v1/rollouts", json=rollout), 409)
    assert (
        refused["type"] == "ChaosRunning" and f"chaos/{service}-pod-network-loss/{run}" in refused["message"]
    )

    response = await sre.post(f"{path}/abort", json={"reason": "enough"})
    assert response.status_code == 200, response.text
    view = await until(sre, path, lambda v: v["finished_at"] is not None)
    assert view["phase"] == "Aborted" and "enough" in view["message"] and view["cleaned_up"]
    assert (
        lab.lab.workload is not None and lab.lab.workload.service_status(NAMESPACE, service)["faults"] == {}
    )
    assert "no running" in _error(await sre.post(f"{path}/abort", json={}), 404)["message"]


async def test_bad_requests_say_what_is_wrong(sre: httpx.AsyncClient, lab: RolloutLab) -> None:
    neither = _error(await sre.post("/v1/chaos", json={}), 422)
    assert "experiment" in neither["message"]
    unknown = _error(await sre.post("/v1/chaos", json={"experiment": "nope"}), 404)
    assert "chat-api-pod-delete" in unknown["message"]
    bad = definition("x", "pod-explode", {})
    invalid = _error(await sre.post("/v1/chaos", json={"definition": bad}), 422)
    assert "definition.fault.kind" in invalid["message"]
    small = lab.add_service(replicas=1)
    response = await sre.post("/v1/chaos", json={"definition": definition(small, "pod-delete", {})})
    refused = _error(response, 409)
    assert refused["type"] == "ChaosRefused" and "50" in refused["message"]
    _error(await sre.get("/v1/chaos/nope/r1"), 404)


async def test_a_game_day_schedule_runs_the_experiment_and_can_be_deleted(
    sre: httpx.AsyncClient, lab: RolloutLab, api_url: str, key: str, client: Client, tmp_path: Path
) -> None:
    service = lab.add_service(replicas=4)
    await lab.measured(success_rate_query(service))
    file = tmp_path / "experiments.yaml"
    file.write_text(
        yaml.safe_dump({"experiments": [definition(service, "pod-delete", {"TOTAL_CHAOS_DURATION": "2"})]})
    )
    name = f"{service}-pod-delete"
    code, out, err = await run_lcp(
        api_url, key, "chaos", "schedule", name, "--file", str(file), "--every", "3600"
    )
    assert code == 0, err
    assert f"chaos-gameday-{name}" in out and "every 3600 s" in out

    await client.get_schedule_handle(f"chaos-gameday-{name}").trigger()  # the next game day, now

    async def runs_of_the_experiment() -> list[dict[str, Any]]:
        return [r for r in (await sre.get("/v1/chaos")).json()["data"] if r["experiment"] == name]

    runs = await eventually(
        runs_of_the_experiment,
        until=lambda runs: runs and runs[0]["phase"] in ("Passed", "Failed", "Error", "Refused", "NotSteady"),
        what="the scheduled run to finish",
        within=90,
        interval=0.2,
    )
    assert runs[0]["phase"] == "Passed" and runs[0]["run"].startswith("gameday-")
    view = (await sre.get(f"/v1/chaos/{name}/{runs[0]['run']}")).json()
    assert view["requested_by"].startswith("schedule by") and view["cleaned_up"]

    code, out, err = await run_lcp(api_url, key, "chaos", "schedules")
    assert code == 0 and runs[0]["id"] in out.replace("\n", ""), err
    both = {"experiment": name, "cron": "0 14 * * WED", "every_s": 3600}
    assert "one of them" in _error(await sre.post("/v1/chaos/schedules", json=both), 422)["message"]
    code, out, err = await run_lcp(api_url, key, "chaos", "unschedule", f"chaos-gameday-{name}")
    assert code == 0, err
    _error(await sre.delete(f"/v1/chaos/schedules/chaos-gameday-{name}"), 404)
