"""Chaos experiments end to end in the lab: real Temporal, the emulated Kubernetes API with the lab's
Litmus operator (a simulation of its ChaosEngine/ChaosResult behaviour), real Prometheus probes."""

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from chaos.experiments import Experiment, Fault, Hypothesis, PromProbe, Target, engine_name
from policies.canary import Pause, SetWeight
from policies.chaos import FROM_FAULT_END, FROM_LAST_REPLACED_POD
from settings import Settings
from temporal.constants import KIND, PHASE, SERVICE
from tests.rollout_lab import NAMESPACE, RolloutLab, rollout_input, rollout_lab
from tests.waiting import eventually
from tests.workflows.saved_histories import save_history
from workers.main import ops_worker
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

Handle = WorkflowHandle[ChaosExperimentWorkflow, ChaosView]
ENGINES = "litmuschaos.io/v1alpha1/chaosengines"


@pytest.fixture(scope="module")
async def lab(tmp_path_factory: pytest.TempPathFactory, prometheus_bin: str) -> AsyncIterator[RolloutLab]:
    async with rollout_lab(tmp_path_factory.mktemp("chaos-lab")) as running:
        yield running


@pytest.fixture(scope="module")
def settings(lab: RolloutLab, tmp_path_factory: pytest.TempPathFactory, client: Client) -> Settings:
    base = Settings(home=tmp_path_factory.mktemp("lcp"))
    base = base.model_copy(
        update={"temporal": base.temporal.model_copy(update={"address": _address(client)})}
    )
    return lab.settings(base, f"ops-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
async def worker(client: Client, settings: Settings) -> AsyncIterator[None]:
    async with ops_worker(client, settings) as running, running:
        yield


def _address(client: Client) -> str:
    return client.service_client.config.target_host


def success_rate(service: str) -> PromProbe:
    selector = f'namespace="{NAMESPACE}",service="{service}"'
    return PromProbe(
        name="success-rate",
        query=f'sum(rate(http_requests_total{{{selector},code!~"5.."}}[5s])) '
        f"/ sum(rate(http_requests_total{{{selector}}}[5s]))",
        comparator=">=",
        value=0.95,
    )


def experiment(service: str, fault: Fault, **options: float) -> Experiment:
    return Experiment(
        name=f"{service}-{fault.kind}",
        target=Target(NAMESPACE, f"app.kubernetes.io/name={service}"),
        fault=fault,
        hypothesis=Hypothesis(probes=(success_rate(service),), interval_s=2.0),
        recover_within_s=options.get("recover_within_s", 30.0),
    )


async def start(client: Client, settings: Settings, request: ChaosInput) -> Handle:
    target = request.experiment.target
    return await client.start_workflow(
        ChaosExperimentWorkflow.run,
        request,
        id=workflow_id(request.experiment.name, request.run),
        task_queue=settings.rollout.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(KIND, "chaos"),
                SearchAttributePair(SERVICE, f"{target.namespace}/{target.service}"),
                SearchAttributePair(PHASE, "Checking"),
            ]
        ),
    )


async def finished(handle: Handle, within: float = 120) -> ChaosView:
    try:
        return await asyncio.wait_for(asyncio.shield(handle.result()), within)
    except TimeoutError:
        view = await handle.query(ChaosExperimentWorkflow.state)
        pytest.fail(f"experiment {view.id} did not finish: {view.phase}, {view.message}")


def engines(lab: RolloutLab) -> list[dict]:  # type: ignore[type-arg]
    found: list[dict] = lab.lab.kube.api.list_objects(ENGINES, NAMESPACE)  # type: ignore[type-arg]
    return found


async def steady(lab: RolloutLab, service: str) -> None:
    """Wait until the probes can read a new service's traffic: Prometheus has it in the probes' window."""
    await lab.measured(success_rate(service).query)


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
    assert [e.step for e in view.journal] == [
        "safety",
        "steady-state-before",
        "inject",
        "cleanup",
        "steady-state-after",
        "report",
    ]
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
    queue = f"ops-kill-{uuid.uuid4().hex[:6]}"
    env = dict(
        os.environ,
        LCP_HOME=str(tmp_path),
        LCP_TEMPORAL__ADDRESS=_address(client),
        LCP_ROLLOUT__KUBECONFIG=str(lab.lab.kubeconfig),
        LCP_ROLLOUT__PROMETHEUS_URL=lab.prometheus_url,
        LCP_ROLLOUT__TASK_QUEUE=queue,
    )

    def spawn() -> subprocess.Popen[bytes]:
        log = open(tmp_path / "worker.log", "ab")  # noqa: SIM115
        return subprocess.Popen(
            [sys.executable, "-m", "cli", "worker", "--queue", "ops"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    await steady(lab, service)
    first = spawn()
    second: subprocess.Popen[bytes] | None = None
    try:
        fault = Fault(
            "pod-network-loss", (("TOTAL_CHAOS_DURATION", "10"), ("NETWORK_PACKET_LOSS_PERCENTAGE", "2"))
        )
        request = ChaosInput(experiment(service, fault), run="r1", requested_by="test")
        killable = settings.model_copy(
            update={"rollout": settings.rollout.model_copy(update={"task_queue": queue})}
        )
        handle = await start(client, killable, request)
        name = engine_name(request.experiment, request.run)
        # A new worker process, the safety policy and the steady-state probes come first: on a loaded
        # machine that took over 60 s.
        await eventually(
            lambda: [e for e in engines(lab) if e["metadata"]["name"] == name],
            what="the engine to be created",
            within=180,
            interval=0.2,
        )
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = spawn()
        view = await finished(handle)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(30)
    assert view.cleaned_up and view.phase == PASSED, view.message
    assert not [e for e in engines(lab) if e["metadata"]["name"] == name]
    assert lab.lab.workload is not None
    assert lab.lab.workload.service_status(NAMESPACE, service)["faults"] == {}
