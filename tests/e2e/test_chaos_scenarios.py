"""Chaos scenarios end to end in the lab: real Temporal, the emulated Kubernetes API with the lab's Argo
Workflows controller and Litmus operator (simulations of their behaviour), real Prometheus probes."""

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle

from chaos.experiments import Experiment, Fault, Hypothesis, Target
from chaos.scenarios import Scenario, workflow_name
from lab.argo import WORKFLOWS
from settings import Settings
from tests import chaos_runs
from tests.chaos_runs import ALL_STEPS, engines, lab, settings, steady, success_rate, worker, worker_processes
from tests.rollout_lab import NAMESPACE, RolloutLab
from tests.waiting import eventually
from tests.workflows.saved_histories import save_history
from workflows.chaos import FAILED, PASSED
from workflows.chaos_scenario import ChaosScenarioWorkflow, ScenarioInput, ScenarioView, workflow_id

__all__ = ["lab", "settings", "worker"]  # the chaos runs' fixtures, shared

Handle = WorkflowHandle[ChaosScenarioWorkflow, ScenarioView]
INTERVAL_S = 2.0


def fault(name: str, service: str, kind: str, **env: str) -> Experiment:
    return Experiment(
        name, Target(NAMESPACE, f"app.kubernetes.io/name={service}"), Fault(kind, tuple(env.items()))
    )


def scenario(name: str, services: list[str], *steps: tuple[Experiment, ...]) -> Scenario:
    probes = tuple(replace(success_rate(service), name=f"success-rate-{service}") for service in services)
    return Scenario(name, steps, Hypothesis(probes, interval_s=INTERVAL_S), recover_within_s=30.0)


async def start(client: Client, settings: Settings, request: ScenarioInput) -> Handle:
    return await chaos_runs.start(
        client,
        settings,
        ChaosScenarioWorkflow.run,
        request,
        workflow_id=workflow_id(request.scenario.name, request.run),
        kind="chaos-scenario",
        target=request.scenario.faults[0].target,
    )


async def finished(handle: Handle, within: float = 180) -> ScenarioView:
    return await chaos_runs.finished(handle, ChaosScenarioWorkflow.state, "scenario", within)


def leftovers(lab: RolloutLab, name: str) -> list[Any]:
    """The scenario's engines and its Argo Workflow, where they still exist."""
    api = lab.lab.kube.api
    mine = [e for e in engines(lab) if e["metadata"].get("labels", {}).get("lcp.dev/scenario") == name]
    return mine + [
        w for w in api.list_objects(WORKFLOWS, NAMESPACE) if w["metadata"]["name"].startswith(name)
    ]


def assert_stopped_within_one_interval(view: ScenarioView) -> None:
    assert view.phase == FAILED and "breached" in view.message, view.message
    during = [p for p in view.probes if p.when == "during"]
    assert during and not during[-1].passed
    cleanup = next(e for e in view.journal if e.step == "cleanup")
    assert cleanup.status == "succeeded", cleanup.error
    assert (cleanup.started_at - during[-1].at).total_seconds() < INTERVAL_S
    assert cleanup.output["workflow_stopped"] and cleanup.output["workflow_deleted"]


@pytest.mark.usefixtures("worker")
async def test_a_scenario_of_faults_in_parallel_then_in_sequence_passes_and_cleans_up(
    client: Client, settings: Settings, lab: RolloutLab
) -> None:
    api, models = lab.add_service(replicas=4), lab.add_service(replicas=4)
    await steady(lab, api)
    await steady(lab, models)
    short = {"TOTAL_CHAOS_DURATION": "4", "PODS_AFFECTED_PERC": "25"}
    two_faults = scenario(
        "api-and-models",
        [api, models],
        (
            fault("api-pod-delete", api, "pod-delete", CHAOS_INTERVAL="2", **short),
            fault(
                "models-network-loss", models, "pod-network-loss", NETWORK_PACKET_LOSS_PERCENTAGE="2", **short
            ),
        ),
        (fault("models-pod-delete", models, "pod-delete", **short),),
    )
    request = ScenarioInput(two_faults, run="r1", poll_s=0.5, requested_by="test")
    view = await finished(await start(client, settings, request))

    assert view.phase == PASSED, view.message
    assert view.verdict == "Succeeded" and view.progress == "6/6"
    assert [(f.name, f.step, f.phase) for f in view.faults] == [
        ("api-pod-delete", 0, "Succeeded"),
        ("models-network-loss", 0, "Succeeded"),
        ("models-pod-delete", 1, "Succeeded"),
    ]
    assert [e.step for e in view.journal] == ALL_STEPS
    assert all(e.status == "succeeded" for e in view.journal)
    assert {p.when for p in view.probes} == {"before", "during", "after"} and all(
        p.passed for p in view.probes
    )
    assert view.resilience_score == 100.0 and view.cleaned_up
    assert view.workflow == f"{NAMESPACE}/{workflow_name(two_faults, 'r1')}"
    # Every engine ran (above) and is gone, and so is the Workflow.
    assert leftovers(lab, two_faults.name) == []
    assert lab.lab.workload is not None
    assert lab.lab.workload.service_status(NAMESPACE, models)["faults"] == {}


@pytest.mark.usefixtures("worker")
async def test_a_breaching_scenario_is_stopped_within_one_probe_interval_and_cleaned_up(
    client: Client, settings: Settings, lab: RolloutLab
) -> None:
    api, models = lab.add_service(replicas=4), lab.add_service(replicas=4)
    await steady(lab, api)
    await steady(lab, models)
    long = {"TOTAL_CHAOS_DURATION": "60"}
    breaching = scenario(
        "breaching",
        [api, models],
        (
            fault("api-pod-delete", api, "pod-delete", PODS_AFFECTED_PERC="25", **long),
            fault("models-loss", models, "pod-network-loss", PODS_AFFECTED_PERC="50", **long),
        ),
        (fault("never", api, "pod-delete"),),
    )
    request = ScenarioInput(breaching, run="r1", poll_s=0.5, requested_by="test")
    handle = await start(client, settings, request)
    view = await finished(handle)
    await save_history(handle, "chaos_scenario")

    assert_stopped_within_one_interval(view)
    # As last read, before the stop: the second step never began.
    assert [f.phase for f in view.faults] == ["Running", "Running", "Pending"]
    assert leftovers(lab, breaching.name) == []
    assert lab.lab.workload is not None
    assert lab.lab.workload.service_status(NAMESPACE, models)["faults"] == {}
    assert view.time_to_recover_s is not None and view.resilience_score is not None
    assert view.resilience_score < 100


async def test_a_worker_killed_mid_scenario_still_stops_the_breach_and_cleans_up(
    client: Client, settings: Settings, lab: RolloutLab, tmp_path: Path
) -> None:
    """The worker runs as `lcp worker --queue ops`; SIGKILLed once the Workflow has created its first
    engines, a new one sees the breach, stops the Workflow and every engine, and deletes them."""
    api, models = lab.add_service(replicas=4), lab.add_service(replicas=4)
    await steady(lab, api)
    await steady(lab, models)
    breaching = scenario(
        "killed",
        [api, models],
        (
            fault("api-pod-delete", api, "pod-delete", TOTAL_CHAOS_DURATION="60", PODS_AFFECTED_PERC="25"),
            fault(
                "models-loss", models, "pod-network-loss", TOTAL_CHAOS_DURATION="60", PODS_AFFECTED_PERC="50"
            ),
        ),
    )
    with worker_processes(client, lab, tmp_path) as workers:
        workers.spawn()
        request = ScenarioInput(breaching, run="r1", poll_s=0.5, requested_by="test")
        handle = await start(client, workers.settings(settings), request)
        # A new worker process, the safety policy and the steady-state probes come first.
        await eventually(
            lambda: leftovers(lab, breaching.name),
            until=lambda found: len(found) == 3,  # the Workflow and its two engines
            what="the Workflow's engines",
            within=180,
            interval=0.2,
        )
        workers.kill_and_replace()
        view = await finished(handle, within=240)
    assert_stopped_within_one_interval(view)
    assert leftovers(lab, breaching.name) == []
    assert lab.lab.workload is not None
    assert lab.lab.workload.service_status(NAMESPACE, models)["faults"] == {}
