"""The chaos scenario routes over real HTTP (the app served by uvicorn, the ops worker in the test's loop, the
rollout lab with its Argo and Litmus simulations) and `lcp chaos scenario` run as a subprocess."""

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from temporalio.client import Client

from tests.api.test_chaos_api import (
    _error,
    api_url,
    chaos_settings,
    key,
    lab,
    sre,
    until,
    worker,
)
from tests.chaos_runs import success_rate_query
from tests.lcp_cli import run_lcp
from tests.rollout_lab import NAMESPACE, RolloutLab
from tests.waiting import eventually

__all__ = ["api_url", "chaos_settings", "key", "lab", "sre", "worker"]  # the chaos routes' fixtures


def fault(name: str, service: str, kind: str, env: dict[str, str]) -> dict[str, Any]:
    target = {"namespace": NAMESPACE, "app_label": f"app.kubernetes.io/name={service}"}
    return {"name": name, "target": target, "fault": {"kind": kind, "env": env}}


def definition(name: str, services: list[str], *steps: list[dict[str, Any]]) -> dict[str, Any]:
    probes = [
        {
            "name": f"success-rate-{service}",
            "type": "prometheus",
            "query": success_rate_query(service),
            "comparator": ">=",
            "value": 0.95,
        }
        for service in services
    ]
    return {
        "name": name,
        "steps": list(steps),
        "hypothesis": {"interval_s": 2, "probes": probes},
        "recover_within_s": 30,
    }


async def test_run_watch_and_list_a_scenario_over_rest_and_the_cli(
    sre: httpx.AsyncClient, lab: RolloutLab, api_url: str, key: str
) -> None:
    api, models = lab.add_service(replicas=4), lab.add_service(replicas=4)
    await lab.measured(success_rate_query(api))
    await lab.measured(success_rate_query(models))
    short = {"TOTAL_CHAOS_DURATION": "3", "PODS_AFFECTED_PERC": "25"}
    run = f"r-{uuid.uuid4().hex[:8]}"  # the Temporal server is shared with other files' tests (their "r1")
    body = {
        "definition": definition(
            "api-and-models",
            [api, models],
            [
                fault("api-kill", api, "pod-delete", short),
                fault(
                    "models-loss", models, "pod-network-loss", short | {"NETWORK_PACKET_LOSS_PERCENTAGE": "2"}
                ),
            ],
        ),
        "run": run,
    }
    response = await sre.post("/v1/chaos/scenarios", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["journal"][0]["step"] == "safety"
    path = f"/v1/chaos/scenarios/api-and-models/{run}"
    view = await until(sre, path, lambda v: v["finished_at"] is not None)
    assert view["phase"] == "Passed" and view["verdict"] == "Succeeded", view["message"]
    assert [(f["name"], f["phase"]) for f in view["faults"]] == [
        ("api-kill", "Succeeded"),
        ("models-loss", "Succeeded"),
    ]

    assert _error(await sre.post("/v1/chaos/scenarios", json=body), 409)["type"] == "RunExists"
    listed = (await sre.get("/v1/chaos/scenarios")).json()["data"]
    assert f"chaos-scenario/api-and-models/{run}" in [r["id"] for r in listed]
    assert f"chaos-scenario/api-and-models/{run}" not in [
        r["id"] for r in (await sre.get("/v1/chaos")).json()["data"]
    ]

    code, out, err = await run_lcp(api_url, key, "chaos", "scenario", "status", "api-and-models", run)
    assert code == 0, err
    assert "Passed" in out and "models-loss" in out and "resilience score 100" in out
    code, out, err = await run_lcp(api_url, key, "chaos", "scenario", "catalogue")
    assert code == 0 and "chat-api-degraded" in out, err
    code, out, err = await run_lcp(api_url, key, "chaos", "scenario", "list")
    assert code == 0 and "api-and-models" in out, err


async def test_an_abort_stops_the_workflow_and_every_engine_and_cleans_up(
    sre: httpx.AsyncClient, lab: RolloutLab, api_url: str, key: str
) -> None:
    service = lab.add_service(replicas=4)
    await lab.measured(success_rate_query(service))
    env = {"TOTAL_CHAOS_DURATION": "60", "NETWORK_PACKET_LOSS_PERCENTAGE": "2", "PODS_AFFECTED_PERC": "25"}
    body = {"definition": definition("long", [service], [fault("loss", service, "pod-network-loss", env)])}
    response = await sre.post("/v1/chaos/scenarios", json=body)
    assert response.status_code == 201, response.text
    run = response.json()["run"]
    path = f"/v1/chaos/scenarios/long/{run}"
    await until(sre, path, lambda v: v["faults"][0]["phase"] == "Running")
    rollout = {
        "service": service,
        "namespace": NAMESPACE,
        "image": f"lab.local/{service}:v2",
        "version": "v2",
    }
    refused = _error(await sre.post("/v1/rollouts", json=rollout), 409)
    assert refused["type"] == "ChaosRunning" and f"chaos-scenario/long/{run}" in refused["message"]

    code, out, err = await run_lcp(
        api_url, key, "chaos", "scenario", "abort", "long", run, "--reason", "enough"
    )
    assert code == 0, err
    view = await until(sre, path, lambda v: v["finished_at"] is not None)
    assert view["phase"] == "Aborted" and "enough" in view["message"] and view["cleaned_up"]
    cleanup = next(e for e in view["journal"] if e["step"] == "cleanup")
    assert cleanup["output"] == {
        "workflow_stopped": True,
        "workflow_deleted": True,
        "engines_stopped": 1,
        "engines_deleted": 1,
    }
    assert lab.lab.workload is not None
    assert lab.lab.workload.service_status(NAMESPACE, service)["faults"] == {}
    assert "no running" in _error(await sre.post(f"{path}/abort", json={}), 404)["message"]


async def test_bad_scenarios_say_what_is_wrong(sre: httpx.AsyncClient, lab: RolloutLab) -> None:
    catalogue = (await sre.get("/v1/chaos/scenarios/catalogue")).json()["data"]
    assert [s["name"] for s in catalogue] == ["chat-api-degraded"]
    assert "scenario" in _error(await sre.post("/v1/chaos/scenarios", json={}), 422)["message"]
    unknown = _error(await sre.post("/v1/chaos/scenarios", json={"scenario": "nope"}), 404)
    assert "chat-api-degraded" in unknown["message"]
    empty = _error(await sre.post("/v1/chaos/scenarios", json={"definition": definition("e", [])}), 422)
    assert "definition.steps" in empty["message"]
    # Two faults at once on one service of four pods, half of them each: together all of it.
    service = lab.add_service(replicas=4)
    half = {"PODS_AFFECTED_PERC": "50"}
    both = definition(
        "both", [], [fault("a", service, "pod-delete", half), fault("b", service, "pod-cpu-hog", half)]
    )
    refused = _error(await sre.post("/v1/chaos/scenarios", json={"definition": both}), 409)
    assert refused["type"] == "ChaosRefused" and "4 of" in refused["message"], refused
    # One after the other, they are within the limit.
    apart = definition(
        "apart", [], [fault("a", service, "pod-delete", half)], [fault("b", service, "pod-cpu-hog", half)]
    )
    response = await sre.post("/v1/chaos/scenarios", json={"definition": apart, "run": "x"})
    assert response.status_code == 201, response.text
    await sre.post("/v1/chaos/scenarios/apart/x/abort", json={"reason": "only the safety check was wanted"})
    _error(await sre.get("/v1/chaos/scenarios/nope/r1"), 404)
    # Numbers out of range name the field, as for experiments.
    slow = definition("slow", [service], [fault("a", service, "pod-delete", {})])
    slow["hypothesis"]["interval_s"] = 0
    invalid = _error(await sre.post("/v1/chaos/scenarios", json={"definition": slow}), 422)
    assert "definition.hypothesis.interval_s" in invalid["message"]
    huge = definition("huge", [], [fault("a", service, "pod-delete", {"TOTAL_CHAOS_DURATION": "99999999"})])
    invalid = _error(await sre.post("/v1/chaos/scenarios", json={"definition": huge}), 422)
    assert "definition.steps[0][0].fault.env.TOTAL_CHAOS_DURATION" in invalid["message"]


async def test_a_game_day_schedule_runs_the_scenario_and_can_be_deleted(
    sre: httpx.AsyncClient, lab: RolloutLab, api_url: str, key: str, client: Client, tmp_path: Path
) -> None:
    service = lab.add_service(replicas=4)
    await lab.measured(success_rate_query(service))
    short = {"TOTAL_CHAOS_DURATION": "2", "PODS_AFFECTED_PERC": "25"}
    scenario = definition("gameday", [service], [fault("kill", service, "pod-delete", short)])
    file = tmp_path / "scenarios.yaml"
    file.write_text(yaml.safe_dump({"scenarios": [scenario]}))
    code, out, err = await run_lcp(
        api_url, key, "chaos", "scenario", "schedule", "gameday", "--file", str(file), "--every", "3600"
    )
    assert code == 0, err
    assert "chaos-scenario-gameday-gameday" in out and "every 3600 s" in out
    assert "chaos-scenario-gameday-gameday" not in (await sre.get("/v1/chaos/schedules")).text

    await client.get_schedule_handle("chaos-scenario-gameday-gameday").trigger()  # the next game day, now

    async def runs() -> list[dict[str, Any]]:
        return [
            r for r in (await sre.get("/v1/chaos/scenarios")).json()["data"] if r["scenario"] == "gameday"
        ]

    found = await eventually(
        runs,
        until=lambda found: found and found[0]["status"] != "RUNNING",
        what="the scheduled run to finish",
        within=120,
        interval=0.5,
    )
    assert found[0]["phase"] == "Passed" and found[0]["run"].startswith("gameday-")
    view = (await sre.get(f"/v1/chaos/scenarios/gameday/{found[0]['run']}")).json()
    assert view["requested_by"].startswith("schedule by") and view["cleaned_up"]

    code, out, err = await run_lcp(api_url, key, "chaos", "scenario", "schedules")
    assert code == 0 and "chaos-scenario-gameday-gameday" in out, err
    code, out, err = await run_lcp(
        api_url, key, "chaos", "scenario", "unschedule", "chaos-scenario-gameday-gameday"
    )
    assert code == 0, err
    _error(await sre.delete("/v1/chaos/scenarios/schedules/chaos-scenario-gameday-gameday"), 404)


@pytest.mark.parametrize("path", ["/v1/chaos/scenarios/schedules/chaos-gameday-x"])
async def test_an_experiment_schedule_is_not_a_scenario_schedule(sre: httpx.AsyncClient, path: str) -> None:
    assert _error(await sre.delete(path), 404)["type"] == "ScheduleNotFound"
