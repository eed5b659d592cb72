"""The lab's simulated Litmus operator, driven through ChaosEngines with the official client: pods deleted
and replaced, traffic faults for the chaos duration, ChaosResults in Litmus' schema, stop and delete."""

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from lab.controllers import DeploymentController, Kubelet
from lab.kube import SIMULATED_LABEL, LabKubernetes
from lab.litmus import ENGINES, RESULTS, ChaosOperator, cpu_hog_fault, network_loss_fault, pods_affected
from lab.server import DEMO_NAMESPACE, DEMO_SERVICE, Lab, LabOptions, demo_objects
from lab.traces import Constant
from lab.workload import InMemoryCluster, ServiceSpec, Workload
from tests.http_server import free_port
from tests.waiting import eventually

LITMUS = ("litmuschaos.io", "v1alpha1", DEMO_NAMESPACE)
APP_LABEL = f"app.kubernetes.io/name={DEMO_SERVICE}"
REPLICAS = 4  # the demo Deployment's
T = TypeVar("T")


def engine(name: str, experiment: str, app_label: str = APP_LABEL, **env: str | int) -> dict[str, Any]:
    return {
        "apiVersion": "litmuschaos.io/v1alpha1",
        "kind": "ChaosEngine",
        "metadata": {"name": name},
        "spec": {
            "engineState": "active",
            "appinfo": {"appns": DEMO_NAMESPACE, "applabel": app_label, "appkind": "deployment"},
            "chaosServiceAccount": "litmus-admin",
            "experiments": [
                {
                    "name": experiment,
                    "spec": {"components": {"env": [{"name": k, "value": str(v)} for k, v in env.items()]}},
                }
            ],
        },
    }


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    options = LabOptions(
        home=tmp_path, kube_port=free_port(), workload_port=free_port(), pod_startup_delay_s=0.5
    )
    lab = Lab(options)
    await lab.start()
    assert lab.workload is not None
    lab.workload.add_service(ServiceSpec(DEMO_NAMESPACE, DEMO_SERVICE, Constant(100.0)))
    yield lab
    await lab.stop()


@pytest.fixture
def api(lab: Lab) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(lab.kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture
async def ready(api: client.ApiClient) -> None:
    """The demo Deployment has all its replicas ready."""
    apps = client.AppsV1Api(api)
    await eventually(
        lambda: asyncio.to_thread(ready_replicas, apps),
        until=lambda ready: ready == REPLICAS,
        what="the demo Deployment to be ready",
    )


def ready_replicas(apps: client.AppsV1Api) -> int | None:
    status = apps.read_namespaced_deployment(DEMO_SERVICE, DEMO_NAMESPACE).status
    assert status is not None
    return status.ready_replicas


def create(api: client.ApiClient, body: dict[str, Any]) -> Any:
    return asyncio.to_thread(
        client.CustomObjectsApi(api).create_namespaced_custom_object, *LITMUS, "chaosengines", body
    )


def getter(api: client.ApiClient, plural: str, name: str) -> Callable[[], dict[str, Any] | None]:
    custom = client.CustomObjectsApi(api)

    def get() -> dict[str, Any] | None:
        try:
            return cast(dict[str, Any], custom.get_namespaced_custom_object(*LITMUS, plural, name))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    return get


def experiment_status(obj: dict[str, Any] | None) -> dict[str, Any]:
    return ((obj or {}).get("status") or {}).get("experimentStatus") or {}


def demo_faults(lab: Lab) -> dict[str, dict[str, Any]]:
    assert lab.workload is not None
    return {
        cast(str, fault["version"]): fault
        for fault in lab.workload.faults()
        if (fault["namespace"], fault["service"]) == (DEMO_NAMESPACE, DEMO_SERVICE)
    }


async def test_pod_delete_makes_ready_replicas_dip_and_recover_and_passes(
    lab: Lab, api: client.ApiClient, ready: None
) -> None:
    apps = client.AppsV1Api(api)
    await create(
        api, engine("kill", "pod-delete", TOTAL_CHAOS_DURATION=2, CHAOS_INTERVAL=1, PODS_AFFECTED_PERC=50)
    )
    result = getter(api, "chaosresults", "kill-pod-delete")
    lowest = REPLICAS

    async def verdict() -> str | None:  # and the fewest ready replicas seen meanwhile
        nonlocal lowest
        ready = await asyncio.to_thread(ready_replicas, apps)
        lowest = min(lowest, ready or 0)
        return experiment_status(await asyncio.to_thread(result)).get("verdict")

    await eventually(
        verdict, until=lambda found: found not in (None, "Awaited"), what="the pod-delete to end"
    )
    assert lowest <= REPLICAS // 2  # two of four pods deleted at once

    finished = await asyncio.to_thread(result)
    assert finished is not None
    assert finished["status"]["experimentStatus"] == {
        "phase": "Completed",
        "verdict": "Pass",
        "probeSuccessPercentage": "100",
    }
    history = finished["status"]["history"]
    assert (history["passedRuns"], history["failedRuns"], history["stoppedRuns"]) == (1, 0, 0)
    assert history["targets"] and {t["chaosStatus"] for t in history["targets"]} == {"targeted"}
    assert finished["metadata"]["labels"][SIMULATED_LABEL] == "true"
    chaos_engine = await asyncio.to_thread(getter(api, "chaosengines", "kill"))
    assert chaos_engine is not None
    assert chaos_engine["status"]["engineStatus"] == "completed"
    assert chaos_engine["spec"]["engineState"] == "stop"  # as the real operator leaves a finished engine
    (experiment,) = chaos_engine["status"]["experiments"]
    assert (experiment["name"], experiment["status"], experiment["verdict"]) == (
        "pod-delete",
        "Completed",
        "Pass",
    )
    assert finished["metadata"]["labels"]["chaosUID"] == chaos_engine["metadata"]["uid"]

    await eventually(
        lambda: asyncio.to_thread(ready_replicas, apps),
        until=lambda ready: ready == REPLICAS,
        what="the Deployment to recover",
    )


async def test_network_loss_fails_requests_for_its_duration_and_awaits_its_verdict_meanwhile(
    lab: Lab, api: client.ApiClient, ready: None
) -> None:
    assert lab.workload is not None
    await create(api, engine("loss", "pod-network-loss", TOTAL_CHAOS_DURATION=3, PODS_AFFECTED_PERC=100))
    result = getter(api, "chaosresults", "loss-pod-network-loss")
    running = await eventually(lambda: asyncio.to_thread(result), what="the ChaosResult to be written")
    assert experiment_status(running) == {
        "phase": "Running",
        "verdict": "Awaited",
        "probeSuccessPercentage": "Awaited",
    }
    chaos_engine = await asyncio.to_thread(getter(api, "chaosengines", "loss"))
    assert chaos_engine is not None and chaos_engine["status"]["engineStatus"] == "initialized"
    (experiment,) = chaos_engine["status"]["experiments"]
    assert (experiment["status"], experiment["verdict"]) == ("Running", "Awaited")
    assert experiment["runner"] == "loss-runner" and experiment["lastUpdateTime"].endswith("Z")

    assert demo_faults(lab)["v1"]["error_share"] == 1.0  # every pod loses every packet
    workload = lab.workload

    def errors() -> int:
        versions = cast(
            list[dict[str, Any]], workload.service_status(DEMO_NAMESPACE, DEMO_SERVICE)["versions"]
        )
        return sum(v["requests"]["500"] for v in versions)

    errors_before = errors()
    await eventually(lambda: errors() > errors_before, what="requests to fail under the network loss")

    finished = await eventually(
        lambda: asyncio.to_thread(result),
        until=lambda found: experiment_status(found).get("verdict") == "Pass",
        what="the network loss to end",
    )
    assert experiment_status(finished)["probeSuccessPercentage"] == "100"
    assert demo_faults(lab) == {}
    assert {t["chaosStatus"] for t in finished["status"]["history"]["targets"]} == {"reverted"}  # type: ignore[index]


async def test_cpu_hog_saturates_until_stopped_and_a_stop_is_verdict_stopped(
    lab: Lab, api: client.ApiClient, ready: None
) -> None:
    await create(api, engine("hog", "pod-cpu-hog", TOTAL_CHAOS_DURATION=60, PODS_AFFECTED_PERC=50))
    await eventually(lambda: "v1" in demo_faults(lab), what="the CPU hog to start")
    # half the pods at twice the service time: capacity 1/2 + 1/4, saturation 4/3
    assert demo_faults(lab)["v1"]["cpu_saturation"] == pytest.approx(4 / 3)

    await asyncio.to_thread(
        client.CustomObjectsApi(api).patch_namespaced_custom_object,
        *LITMUS,
        "chaosengines",
        "hog",
        {"spec": {"engineState": "stop"}},
    )
    stopped = await eventually(
        lambda: asyncio.to_thread(getter(api, "chaosengines", "hog")),
        until=lambda found: (found or {}).get("status", {}).get("engineStatus") == "stopped",
        what="the engine to stop",
        within=5,
    )
    assert demo_faults(lab) == {}
    (experiment,) = stopped["status"]["experiments"]  # type: ignore[index]
    assert (experiment["status"], experiment["verdict"]) == ("Forcefully Aborted", "Stopped")
    result = await asyncio.to_thread(getter(api, "chaosresults", "hog-pod-cpu-hog"))
    assert result is not None
    status = result["status"]
    assert status["experimentStatus"]["phase"] == "Completed"
    assert status["experimentStatus"]["verdict"] == "Stopped"
    assert status["experimentStatus"]["probeSuccessPercentage"] == "0"
    assert status["experimentStatus"]["failureOutput"]["errorCode"] == "EXPERIMENT_ABORTED"
    assert status["history"]["stoppedRuns"] == 1 and status["history"]["passedRuns"] == 0


async def test_deleting_a_running_engine_clears_its_faults(
    lab: Lab, api: client.ApiClient, ready: None
) -> None:
    await create(api, engine("gone", "pod-network-loss", TOTAL_CHAOS_DURATION=60))
    await eventually(lambda: "v1" in demo_faults(lab), what="the network loss to start")
    assert demo_faults(lab)["v1"]["error_share"] == pytest.approx(
        0.25
    )  # one pod of four: PODS_AFFECTED_PERC 0

    await asyncio.to_thread(
        client.CustomObjectsApi(api).delete_namespaced_custom_object, *LITMUS, "chaosengines", "gone"
    )
    await eventually(lambda: demo_faults(lab) == {}, what="the faults to be cleared", within=2)
    # the ChaosResult is owned by its engine in the lab, and so collected with it
    await eventually(
        lambda: asyncio.to_thread(getter(api, "chaosresults", "gone-pod-network-loss")),
        until=lambda found: found is None,
        what="the ChaosResult to be collected with its engine",
    )


# --- in process, on a fake clock -------------------------------------------------------------------------


class Cluster:
    """The demo service in a lab API without a server, its controllers stepped by hand."""

    def __init__(self, *, simulated: bool = True) -> None:
        self.kube = LabKubernetes()
        for kind, body in zip(
            ("v1/namespaces", "v1/services", "apps/v1/deployments"), demo_objects(), strict=True
        ):
            self.kube.api.create_object(kind, body, body["metadata"].get("namespace"))
        self.controllers = [Kubelet(self.kube, pod_startup_delay=0), DeploymentController(self.kube)]
        self.settle()
        self.workload = Workload(InMemoryCluster())
        if simulated:
            self.workload.add_service(ServiceSpec(DEMO_NAMESPACE, DEMO_SERVICE, Constant(50)))
        self.now = 1_700_000_000.0

    def settle(self) -> None:
        for _ in range(3):
            for controller in self.controllers:
                controller.reconcile()

    def operator(self) -> ChaosOperator:
        return ChaosOperator(self.kube, self.workload, clock=lambda: self.now)

    def engine(self, name: str) -> dict[str, Any]:
        found = self.kube.api.get_object(ENGINES, DEMO_NAMESPACE, name)
        assert found is not None
        return found

    def result(self, name: str) -> dict[str, Any]:
        found = self.kube.api.get_object(RESULTS, DEMO_NAMESPACE, name)
        assert found is not None
        return found

    def pods(self) -> set[str]:
        return {pod["metadata"]["name"] for pod in self.kube.api.list_objects("v1/pods", DEMO_NAMESPACE)}


def test_a_new_operator_finishes_the_run_an_old_one_began() -> None:
    cluster = Cluster()
    cluster.kube.api.create_object(
        ENGINES, engine("restart", "pod-cpu-hog", TOTAL_CHAOS_DURATION=30), DEMO_NAMESPACE
    )
    cluster.operator().reconcile()
    assert cluster.workload.faults()[0]["cpu_saturation"] == pytest.approx(8 / 7)  # one pod of four hogged

    cluster.now += 10
    successor = cluster.operator()  # the first one's memory is gone
    successor.reconcile()
    assert cluster.engine("restart")["status"]["engineStatus"] == "initialized"
    assert len(cluster.workload.faults()) == 1
    cluster.now += 20
    successor.reconcile()
    assert cluster.workload.faults() == []
    assert cluster.engine("restart")["status"]["engineStatus"] == "completed"
    assert experiment_status(cluster.result("restart-pod-cpu-hog"))["verdict"] == "Pass"


def test_a_new_operator_cleans_up_a_run_stopped_while_none_ran() -> None:
    cluster = Cluster()
    cluster.kube.api.create_object(ENGINES, engine("orphan", "pod-network-loss"), DEMO_NAMESPACE)
    cluster.operator().reconcile()
    assert len(cluster.workload.faults()) == 1
    cluster.kube.api.patch_object(ENGINES, DEMO_NAMESPACE, "orphan", {"spec": {"engineState": "stop"}})

    cluster.operator().reconcile()
    assert cluster.workload.faults() == []
    assert cluster.engine("orphan")["status"]["engineStatus"] == "stopped"
    assert experiment_status(cluster.result("orphan-pod-network-loss"))["verdict"] == "Stopped"


def test_pod_delete_rounds_follow_chaos_interval_and_wait_for_the_application() -> None:
    cluster = Cluster(simulated=False)  # pod-delete needs no workload
    cluster.kube.api.create_object(
        ENGINES, engine("rounds", "pod-delete", TOTAL_CHAOS_DURATION=25, CHAOS_INTERVAL=10), DEMO_NAMESPACE
    )
    operator = cluster.operator()
    original = cluster.pods()
    operator.reconcile()
    assert len(original - cluster.pods()) == 1  # PODS_AFFECTED_PERC 0: one pod
    cluster.settle()
    cluster.now += 9
    operator.reconcile()
    assert len(original - cluster.pods()) == 1
    cluster.now += 1
    before = cluster.pods()
    operator.reconcile()
    assert len(before - cluster.pods()) == 1  # any one pod, the first round's replacement too (random)
    cluster.now += 10
    cluster.kube.api.patch_object(  # a pod that is not ready holds back the next round
        "v1/pods",
        DEMO_NAMESPACE,
        sorted(cluster.pods())[0],
        {"status": {"conditions": []}},
        subresource="status",
    )
    before = cluster.pods()
    operator.reconcile()
    assert cluster.pods() == before
    cluster.now += 5
    operator.reconcile()
    assert experiment_status(cluster.result("rounds-pod-delete"))["verdict"] == "Pass"
    assert len(cluster.result("rounds-pod-delete")["status"]["history"]["targets"]) == 2


def test_a_target_the_workload_does_not_simulate_gets_no_traffic_fault() -> None:
    cluster = Cluster(simulated=False)
    cluster.kube.api.create_object(ENGINES, engine("quiet", "pod-network-loss"), DEMO_NAMESPACE)
    cluster.operator().reconcile()
    assert cluster.workload.faults() == []
    assert cluster.engine("quiet")["status"]["engineStatus"] == "initialized"


def test_a_target_without_pods_fails_and_an_unknown_experiment_is_not_found() -> None:
    cluster = Cluster()
    api = cluster.kube.api
    api.create_object(
        ENGINES, engine("nobody", "pod-delete", app_label="app.kubernetes.io/name=none"), DEMO_NAMESPACE
    )
    api.create_object(ENGINES, engine("odd", "node-drain"), DEMO_NAMESPACE)
    cluster.operator().reconcile()

    failed = cluster.result("nobody-pod-delete")["status"]
    assert failed["experimentStatus"]["verdict"] == "Fail" and failed["history"]["failedRuns"] == 1
    assert failed["experimentStatus"]["failureOutput"]["errorCode"] == "TARGET_SELECTION_ERROR"
    (experiment,) = cluster.engine("odd")["status"]["experiments"]
    assert (experiment["status"], experiment["verdict"]) == ("ChaosExperiment Not Found", "Fail")
    assert api.get_object(RESULTS, DEMO_NAMESPACE, "odd-node-drain") is None


def test_an_engine_set_active_again_runs_again_and_its_history_adds_up() -> None:
    cluster = Cluster()
    cluster.kube.api.create_object(
        ENGINES, engine("again", "pod-cpu-hog", TOTAL_CHAOS_DURATION=5), DEMO_NAMESPACE
    )
    operator = cluster.operator()
    operator.reconcile()
    cluster.now += 5
    operator.reconcile()
    cluster.kube.api.patch_object(ENGINES, DEMO_NAMESPACE, "again", {"spec": {"engineState": "active"}})
    operator.reconcile()
    assert experiment_status(cluster.result("again-pod-cpu-hog"))["verdict"] == "Awaited"
    cluster.now += 5
    operator.reconcile()
    history = cluster.result("again-pod-cpu-hog")["status"]["history"]
    assert history["passedRuns"] == 2


def test_the_traffic_models() -> None:
    assert [pods_affected(perc, 4) for perc in (0, 10, 25, 50, 100)] == [1, 1, 1, 2, 4]
    assert network_loss_fault(100, 0.25).error_share == 0.25
    assert network_loss_fault(50, 1.0).error_share == 0.5
    assert cpu_hog_fault(1, 100, 1.0).cpu_saturation == 2.0
    assert cpu_hog_fault(2, 50, 1.0).cpu_saturation == 2.0
    assert cpu_hog_fault(1, 100, 0.5).cpu_saturation == pytest.approx(4 / 3)
    assert cpu_hog_fault(1, 0, 1.0).cpu_saturation == 1.0
