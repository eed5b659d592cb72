"""Chaos experiments end to end in the lab: real Temporal, the emulated Kubernetes API with the lab's
Litmus operator (a simulation of its ChaosEngine/ChaosResult behaviour), real Prometheus probes."""

import time
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from chaos.experiments import Experiment, Fault, Hypothesis, Target, engine_name
from policies.canary import Pause, SetWeight
from policies.chaos import FROM_FAULT_END, FROM_LAST_REPLACED_POD
from settings import Settings
from temporal.constants import KIND, PHASE, SERVICE
from tests import chaos_runs
from tests.chaos_runs import ALL_STEPS, engines, lab, settings, steady, success_rate, worker, worker_processes
from tests.rollout_lab import NAMESPACE, RolloutLab, rollout_input
from tests.waiting import eventually
from tests.workflows.saved_histories import save_history
from workflows.canary import CanaryRolloutWorkflow
from workflows.canary import workflow_id as rollout_id
from workflows.chaos import (
    FAILED,
    PASSED,
    REFUSED,
    ChaosExperimentWorkflow,
    ChaosInput,
    ChaosView,
    workflow_id,
)

__all__ = ["lab", "settings", "worker"]  # fixtures, shared with the chaos scenarios' tests

Handle = WorkflowHandle[ChaosExperimentWorkflow, ChaosView]


def experiment(service: str, fault: Fault, **options: float) -> Experiment:
    return Experiment(
        name=f"{service}-{fault.kind}",
        target=Target(NAMESPACE, f"app.kubernetes.io/name={service}"),
        fault=fault,
        hypothesis=Hypothesis(probes=(success_rate(service),), interval_s=2.0),
        recover_within_s=options.get("recover_within_s", 30.0),
    )


async def start(client: Client, settings: Settings, request: ChaosInput) -> Handle:
    experiment = request.experiment
    return await chaos_runs.start(
        client,
        settings,
        ChaosExperimentWorkflow.run,
        request,
        workflow_id=workflow_id(experiment.name, request.run),
        kind="chaos",
        target=experiment.target,
    )


async def finished(handle: Handle, within: float = 120) -> ChaosView:
    return await chaos_runs.finished(handle, ChaosExperimentWorkflow.state, "experiment", within)


@pytest.mark.usefixtures("worker")
async def test_a_pod_delete_with_a_steady_workload_passes_and_cleans_up(
    client: Client, settings: Settings, lab: RolloutLab
) -> None:
    service = lab.add_service(replicas=4)
    await steady(lab, service)
    fault = Fault(
        "pod-delete", (("TOTAL_CHAOS_DURATION", "4"), ("CHAOS_INTERVAL", "2"), ("PODS_AFFECTED_PERC", "25"))
    )
    request = ChaosInput(experiment(service, fault), run="r1", requested_by="test")
    view = await finished(await start(client, settings, request))

    assert view.phase == PASSED, view.message
    assert view.verdict == "Pass" and view.injected and view.cleaned_up
    assert [e.step for e in view.journal] == ALL_STEPS
    assert all(e.status == "succeeded" and e.duration_s is not None for e in view.journal)
    assert {p.when for p in view.probes} == {"before", "during", "after"} and all(
        p.passed for p in view.probes
    )
    assert view.probe_success_percentage == 100.0 and view.resilience_score == 100.0
    # Measured from the last pod the fault deleted (its replacement's creation) to every pod ready: during
    # the fault, not after the cleanup, when the pods had long been back.
    assert view.time_to_recover_s is not None and view.recovery_measured_from == FROM_LAST_REPLACED_POD
    assert "after the last disruption" in view.message
    assert not [e for e in engines(lab) if e["metadata"]["name"] == view.engine]  # deleted
    # what `lcp chaos run --watch` shows: the fault's length and the pods Litmus deleted (25 %: one each 2 s)
    assert view.fault_duration_s == 4.0
    assert view.pods_hit and all(pod.startswith(service) for pod in view.pods_hit), view.pods_hit
    assert view.pods_total == 4 and view.pods_ready is not None and 0 <= view.pods_ready <= 4  # last read


@pytest.mark.usefixtures("worker")
async def test_a_network_loss_that_breaches_the_slo_is_stopped_at_once_and_the_workload_recovers(
    client: Client, settings: Settings, lab: RolloutLab
) -> None:
    service = lab.add_service(replicas=4)
    await steady(lab, service)
    fault = Fault(
        "pod-network-loss",
        (
            ("TOTAL_CHAOS_DURATION", "60"),
            ("NETWORK_PACKET_LOSS_PERCENTAGE", "100"),
            ("PODS_AFFECTED_PERC", "50"),
        ),
    )
    request = ChaosInput(experiment(service, fault), run="r1", requested_by="test")
    began = time.monotonic()
    handle = await start(client, settings, request)
    view = await finished(handle)
    await save_history(handle, "chaos_experiment")

    assert view.phase == FAILED and "breached" in view.message, view.message
    assert time.monotonic() - began < 45  # stopped long before the fault's 60 s
    during = [p for p in view.probes if p.when == "during"]
    assert during and not during[-1].passed and all(p.passed for p in during[:-1])
    cleanup = next(e for e in view.journal if e.step == "cleanup")
    # The breach stopped the engine at once: cleanup began within one probe interval of the failed probe.
    assert (cleanup.started_at - during[-1].at).total_seconds() < request.experiment.hypothesis.interval_s
    assert view.cleaned_up and view.time_to_recover_s is not None
    assert view.recovery_measured_from == FROM_FAULT_END  # no pod replaced: the fault was the disruption
    assert [p.passed for p in view.probes if p.when == "after"][-1]
    assert lab.lab.workload is not None
    assert lab.lab.workload.service_status(NAMESPACE, service)["faults"] == {}
    assert view.resilience_score is not None and view.resilience_score < 100


@pytest.mark.usefixtures("worker")
async def test_an_experiment_against_a_service_mid_rollout_is_refused(
    client: Client, settings: Settings, lab: RolloutLab
) -> None:
    service = lab.add_service(replicas=4)
    rollout = await client.start_workflow(
        CanaryRolloutWorkflow.run,
        rollout_input(service, [SetWeight(25), Pause(None)]),
        id=rollout_id(NAMESPACE, service),
        task_queue=settings.rollout.task_queue,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(KIND, "rollout"),
                SearchAttributePair(SERVICE, f"{NAMESPACE}/{service}"),
                SearchAttributePair(PHASE, "Progressing"),
            ]
        ),
    )
    try:
        fault = Fault("pod-delete", (("TOTAL_CHAOS_DURATION", "4"),))

        async def a_run() -> ChaosView:
            run = uuid.uuid4().hex[:6]
            return await finished(
                await start(client, settings, ChaosInput(experiment(service, fault), run=run))
            )

        # visibility lists the rollout within a moment of its start
        view = await eventually(a_run, until=lambda view: view.phase == REFUSED, what="a refusal", within=30)
        assert rollout.id in view.message, view.message
        assert not view.injected and view.resilience_score is None
        assert [e.step for e in view.journal] == ["safety", "report"]
        assert not [e for e in engines(lab) if e["metadata"]["name"] == view.engine]
    finally:
        await rollout.terminate("test done")
    # A service whose deployment would lose more than the blast-radius limit is refused as well.
    small = lab.add_service(replicas=1)
    view = await finished(await start(client, settings, ChaosInput(experiment(small, fault), run="r1")))
    assert view.phase == REFUSED and "50" in view.message, view.message


async def test_a_worker_killed_during_injection_still_cleans_up(
    client: Client, settings: Settings, lab: RolloutLab, tmp_path: Path
) -> None:
    """The worker runs as `lcp worker --queue ops`; SIGKILLed while the fault runs, a new one stops and
    deletes the engine and checks recovery."""
    service = lab.add_service(replicas=4)
    await steady(lab, service)
    with worker_processes(client, lab, tmp_path) as workers:
        workers.spawn()
        fault = Fault(
            "pod-network-loss", (("TOTAL_CHAOS_DURATION", "10"), ("NETWORK_PACKET_LOSS_PERCENTAGE", "2"))
        )
        request = ChaosInput(experiment(service, fault), run="r1", requested_by="test")
        handle = await start(client, workers.settings(settings), request)
        name = engine_name(request.experiment, request.run)
        # A new worker process, the safety policy and the steady-state probes come first: on a loaded
        # machine that took over 60 s.
        await eventually(
            lambda: [e for e in engines(lab) if e["metadata"]["name"] == name],
            what="the engine to be created",
            within=180,
            interval=0.2,
        )
        workers.kill_and_replace()
        view = await finished(handle)
    assert view.cleaned_up and view.phase == PASSED, view.message
    assert not [e for e in engines(lab) if e["metadata"]["name"] == name]
    assert lab.lab.workload is not None
    assert lab.lab.workload.service_status(NAMESPACE, service)["faults"] == {}
