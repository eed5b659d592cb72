"""Deployments discovered from the lab's Kubernetes API with the official client: a Service's ready
pods (simulator replicas behind readiness probes) join the fleet, a killed one leaves it, and it
returns when it answers again; a scaled-up pod joins."""

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from inference.discovery import start_discovery
from inference.gateway import Gateway
from inference.messages import ChatMessage
from lab.controllers import POD_IP_ANNOTATION, ControllerManager, default_controllers
from lab.fleet import FLEET_NAMESPACE, FLEET_SERVICE
from lab.kube import LabKubernetes
from lab.llm_simulator import create_app
from lab.server import Lab, LabOptions
from policies.models import parse_routes
from tests.http_server import free_port, serve_in_thread
from tests.waiting import eventually

NAMESPACE = "inference"
ASK = [ChatMessage("user", "[echo] hi")]


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[tuple[LabKubernetes, Path]]:
    kube = LabKubernetes()
    await kube.start("127.0.0.1", free_port())
    controllers = ControllerManager(default_controllers(kube, pod_startup_delay=0.1))
    await controllers.start()
    kube.api.create_object("namespaces", {"metadata": {"name": NAMESPACE}})
    kube.api.create_object(
        "services",
        {
            "metadata": {"name": "sim", "namespace": NAMESPACE},
            "spec": {
                "selector": {"app": "sim"},
                "ports": [{"name": "http", "port": 8000, "targetPort": "http"}],
            },
        },
    )
    yield kube, kube.write_kubeconfig(tmp_path / "kubeconfig")
    await controllers.stop()
    await kube.stop()


def replica_pod(kube: LabKubernetes, name: str, port: int) -> None:
    """A pod of the simulated fleet: its process listens on 127.0.0.1:port, and the kubelet probes it."""
    container = {
        "name": "vllm",
        "image": "lcp-simulator",
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
    }
    kube.api.create_object(
        "pods",
        {
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "labels": {"app": "sim"},
                "annotations": {POD_IP_ANNOTATION: "127.0.0.1"},
            },
            "spec": {"containers": [container]},
        },
    )


@contextlib.contextmanager
def replica(port: int) -> Iterator[str]:
    with serve_in_thread(create_app(seed=port), port=port) as url:
        yield url


async def test_a_service_s_ready_pods_are_the_model_s_deployments(kube: tuple[LabKubernetes, Path]) -> None:
    lab, kubeconfig = kube
    ports = [free_port() for _ in range(3)]
    document = {
        "models": [
            {
                "name": "m",
                "upstream_model": "sim-zero",
                "routing": {"strategy": "round_robin"},
                "discovery": {"kubernetes": {"namespace": NAMESPACE, "service": "sim", "port": "http"}},
            }
        ]
    }
    routes = parse_routes(document)
    with contextlib.ExitStack() as replicas:
        replicas.enter_context(replica(ports[0]))
        second = replicas.enter_context(contextlib.ExitStack())
        second.enter_context(replica(ports[1]))
        replica_pod(lab, "sim-0", ports[0])
        replica_pod(lab, "sim-1", ports[1])
        async with httpx.AsyncClient() as http:
            gateway = Gateway(http, routes)
            discovery = start_discovery(gateway.fleet, routes.values(), kubeconfig)
            try:

                def deployments() -> list[str]:
                    return sorted(r.deployment.id for r in gateway.fleet.replicas(routes["m"]))

                await eventually(
                    deployments, until=lambda d: d == ["sim-0", "sim-1"], what="both pods to join"
                )
                answered = {(await gateway.complete("m", ASK, {})).deployment for _ in range(4)}
                assert answered == {"sim-0", "sim-1"}
                urls = {r.deployment.base_url for r in gateway.fleet.replicas(routes["m"])}
                assert urls == {f"http://127.0.0.1:{port}/v1" for port in ports[:2]}

                # scale up: a third replica and its pod
                replicas.enter_context(replica(ports[2]))
                replica_pod(lab, "sim-2", ports[2])
                await eventually(deployments, until=lambda d: len(d) == 3, what="the new pod to join")

                # kill a replica: its readiness probe fails and it leaves
                second.close()
                await eventually(
                    deployments, until=lambda d: d == ["sim-0", "sim-2"], what="the dead pod to leave"
                )
                answered = {(await gateway.complete("m", ASK, {})).deployment for _ in range(4)}
                assert answered == {"sim-0", "sim-2"}

                # it comes back on the same port and rejoins
                replicas.enter_context(replica(ports[1]))
                await eventually(deployments, until=lambda d: len(d) == 3, what="the pod to return")

                # a deleted pod leaves too
                lab.api.delete_object("pods", NAMESPACE, "sim-0")
                await eventually(
                    deployments, until=lambda d: d == ["sim-1", "sim-2"], what="the deleted pod to leave"
                )
            finally:
                discovery.stop()
                await gateway.aclose()


async def test_the_lab_publishes_its_llm_replicas_behind_a_service(tmp_path: Path) -> None:
    """`lcp lab serve` with the simulator's replica ports: their pods and EndpointSlices, as `lcp dev`
    runs them for the dev stack's sim-llama-8b."""
    ports = (free_port(), free_port())
    with replica(ports[0]), replica(ports[1]):
        options = LabOptions(
            home=tmp_path,
            kube_port=free_port(),
            workload_port=free_port(),
            pod_startup_delay_s=0.1,
            demo=False,
            llm_replica_ports=ports,
        )
        lab = Lab(options)
        await lab.start()
        try:
            routes = parse_routes(
                {
                    "models": [
                        {
                            "name": "sim-llama-8b",
                            "discovery": {
                                "kubernetes": {
                                    "namespace": FLEET_NAMESPACE,
                                    "service": FLEET_SERVICE,
                                    "port": "http",
                                }
                            },
                        }
                    ]
                }
            )
            async with httpx.AsyncClient() as http:
                gateway = Gateway(http, routes)
                discovery = start_discovery(gateway.fleet, routes.values(), lab.kubeconfig)
                try:
                    found = await eventually(
                        lambda: sorted(
                            r.deployment.base_url for r in gateway.fleet.replicas(routes["sim-llama-8b"])
                        ),
                        until=lambda urls: len(urls) == 2,
                        what="both replicas to be ready",
                    )
                finally:
                    discovery.stop()
                    await gateway.aclose()
        finally:
            await lab.stop()
    assert found == sorted(f"http://127.0.0.1:{port}/v1" for port in ports)
