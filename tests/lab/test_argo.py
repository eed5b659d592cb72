"""The lab's simulated Argo Workflows controller running rendered chaos scenarios against the simulated Litmus
operator: steps in sequence and in parallel, resource conditions, status as Argo writes it, shutdown."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from activities.argo_workflow import render_workflow
from chaos.experiments import Experiment, Fault, Target
from chaos.scenarios import Scenario, scenario_engine_name, workflow_name
from lab.argo import COMPLETED_LABEL, PHASE_LABEL, WORKFLOWS, condition_holds, json_path, node_id
from lab.litmus import ENGINES
from lab.server import DEMO_NAMESPACE, DEMO_SERVICE, Lab, LabOptions
from lab.traces import Constant
from lab.workload import ServiceSpec
from tests.http_server import free_port
from tests.waiting import eventually

TARGET = Target(DEMO_NAMESPACE, f"app.kubernetes.io/name={DEMO_SERVICE}")


def fault(name: str, kind: str, seconds: int) -> Experiment:
    return Experiment(name, TARGET, Fault(kind, (("TOTAL_CHAOS_DURATION", str(seconds)),)))


SCENARIO = Scenario(
    "two-steps",
    (
        (fault("kill", "pod-delete", 1),),
        (fault("hog", "pod-cpu-hog", 2), fault("loss", "pod-network-loss", 2)),
    ),
)


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    options = LabOptions(
        home=tmp_path, kube_port=free_port(), workload_port=free_port(), pod_startup_delay_s=0.2
    )
    lab = Lab(options)
    await lab.start()
    assert lab.workload is not None
    lab.workload.add_service(ServiceSpec(DEMO_NAMESPACE, DEMO_SERVICE, Constant(100.0)))
    yield lab
    await lab.stop()


def submit(lab: Lab, scenario: Scenario, run: str) -> str:
    lab.kube.api.create_object(WORKFLOWS, render_workflow(scenario, run))
    return workflow_name(scenario, run)


def workflow(lab: Lab, name: str) -> dict[str, Any]:
    found = lab.kube.api.get_object(WORKFLOWS, DEMO_NAMESPACE, name)
    assert found is not None
    return found


def engines(lab: Lab) -> dict[str, dict[str, Any]]:
    return {e["metadata"]["name"]: e for e in lab.kube.api.list_objects(ENGINES, DEMO_NAMESPACE)}


async def ended(lab: Lab, name: str) -> dict[str, Any]:
    return await eventually(
        lambda: workflow(lab, name),
        until=lambda wf: (wf.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Error"),
        what=f"Workflow {name} to end",
        within=60,
    )


def nodes_by_name(wf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {node["name"]: node for node in wf["status"]["nodes"].values()}


async def test_a_two_step_scenario_runs_its_faults_in_order_and_in_parallel_and_succeeds(lab: Lab) -> None:
    name = submit(lab, SCENARIO, "r1")
    wf = await ended(lab, name)
    status = wf["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["progress"] == "6/6" and status["startedAt"] <= status["finishedAt"]
    assert wf["metadata"]["labels"][PHASE_LABEL] == "Succeeded"
    assert wf["metadata"]["labels"][COMPLETED_LABEL] == "true"
    nodes = nodes_by_name(wf)
    root = nodes[name]
    assert root["id"] == name and root["type"] == "Steps" and root["phase"] == "Succeeded"
    assert nodes[f"{name}[0]"]["type"] == nodes[f"{name}[1]"]["type"] == "StepGroup"
    pods = {n: node for n, node in nodes.items() if node["type"] == "Pod"}
    assert len(pods) == 6 and all(node["phase"] == "Succeeded" for node in pods.values())
    # The second step began once the first had ended; its two faults ran side by side.
    first = nodes[f"{name}[0].kill"]
    hog, loss = nodes[f"{name}[1].hog"], nodes[f"{name}[1].loss"]
    assert first["finishedAt"] <= hog["startedAt"] and hog["startedAt"] == loss["startedAt"]
    assert nodes[f"{name}[1]"]["id"] in first["children"]
    assert all(node["id"] == node_id(name, n) for n, node in nodes.items())
    # Each engine was created by the Workflow, owned by it, and ran to a Pass.
    made = engines(lab)
    for each in SCENARIO.faults:
        engine = made[scenario_engine_name(SCENARIO, each, "r1")]
        assert [ref["uid"] for ref in engine["metadata"]["ownerReferences"]] == [wf["metadata"]["uid"]]
        assert engine["status"]["engineStatus"] == "completed"


async def test_terminate_fails_every_running_node_and_starts_nothing_more(lab: Lab) -> None:
    long = Scenario("long", ((fault("loss", "pod-network-loss", 60),), (fault("kill", "pod-delete", 1),)))
    name = submit(lab, long, "r1")
    engine = scenario_engine_name(long, long.faults[0], "r1")
    await eventually(
        lambda: engines(lab).get(engine, {}).get("status", {}).get("engineStatus"),
        until=lambda state: state == "initialized",
        what="the first fault to run",
    )
    lab.kube.api.patch_object(WORKFLOWS, DEMO_NAMESPACE, name, {"spec": {"shutdown": "Terminate"}})
    wf = await ended(lab, name)
    assert wf["status"]["phase"] == "Failed"
    assert wf["status"]["message"] == "Stopped with strategy 'Terminate'"
    stopped = [n for n in nodes_by_name(wf).values() if n.get("message") == wf["status"]["message"]]
    assert {n["displayName"] for n in stopped} >= {"loss", "inject"}
    assert scenario_engine_name(long, long.faults[1], "r1") not in engines(lab)  # the second step never ran


async def test_a_stopped_engine_meets_the_failure_condition_and_fails_the_workflow(lab: Lab) -> None:
    long = Scenario("stopped", ((fault("loss", "pod-network-loss", 60),),))
    name = submit(lab, long, "r1")
    engine = scenario_engine_name(long, long.faults[0], "r1")
    await eventually(lambda: engines(lab).get(engine), what="the engine to be created")
    lab.kube.api.patch_object(ENGINES, DEMO_NAMESPACE, engine, {"spec": {"engineState": "stop"}})
    wf = await ended(lab, name)
    assert wf["status"]["phase"] == "Failed"
    inject = nodes_by_name(wf)[f"{name}[0].loss[0].inject"]
    assert (
        inject["phase"] == "Failed"
        and inject["message"] == "failed condition: status.engineStatus == stopped"
    )
    assert wf["status"]["message"].startswith("child '")


async def test_deleting_the_workflow_deletes_its_engines_and_their_faults(lab: Lab) -> None:
    long = Scenario("deleted", ((fault("loss", "pod-network-loss", 60),),))
    name = submit(lab, long, "r1")
    engine = scenario_engine_name(long, long.faults[0], "r1")
    workload = lab.workload
    assert workload is not None

    def faults() -> dict[str, Any]:
        return cast(dict[str, Any], workload.service_status(DEMO_NAMESPACE, DEMO_SERVICE)["faults"])

    await eventually(faults, what="the network loss to be injected")
    lab.kube.api.delete_object(WORKFLOWS, DEMO_NAMESPACE, name)
    assert engine not in engines(lab)
    await eventually(faults, until=lambda found: found == {}, what="the faults to be reverted")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("status.engineStatus", "completed"),
        ("status.experiments.0.verdict", "Pass"),
        ("status.experiments.1.verdict", None),
        ("status.missing.deeper", None),
    ],
)
def test_json_paths_read_as_gjson_reads_them(path: str, expected: str | None) -> None:
    obj = {"status": {"engineStatus": "completed", "experiments": [{"verdict": "Pass"}]}}
    assert json_path(obj, path) == expected


@pytest.mark.parametrize(
    ("condition", "holds"),
    [
        ("status.engineStatus == completed", True),
        ("status.engineStatus = completed", True),
        ("status.engineStatus == stopped", False),
        ("status.experimentStatus.verdict in (Fail,Error,Stopped)", False),
        ("status.experimentStatus.verdict in (Pass)", True),
        ("status.engineStatus == completed,status.experimentStatus.verdict == Fail", False),
        ("status.nothing == x", False),
    ],
)
def test_resource_conditions_are_label_selectors_over_the_object(condition: str, holds: bool) -> None:
    obj = {"status": {"engineStatus": "completed", "experimentStatus": {"verdict": "Pass"}}}
    assert condition_holds(condition, obj) is holds


def test_node_ids_are_the_workflow_name_then_fnv1a_of_the_node_name() -> None:
    assert node_id("wf", "wf") == "wf"
    assert node_id("wf", "a") == f"wf-{0xE40C292C}"  # FNV-1a 32 of "a"
