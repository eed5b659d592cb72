"""`lcp lab serve`: the simulated cluster in one process — the Kubernetes API, its controllers and the
workload simulator — seeded with a demo service. A simulation: everything it makes says so."""

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from kubernetes import client, config

from lab.argo import ArgoWorkflowController
from lab.cluster_view import VERSION_LABEL, KubernetesClusterView
from lab.controllers import POD_IP_ANNOTATION, ControllerManager, default_controllers
from lab.fleet import FLEET_NAMESPACE, FLEET_SERVICE
from lab.kube import SIMULATED_LABEL, LabKubernetes
from lab.litmus import ChaosOperator
from lab.traces import Constant, Replay, TrafficSource
from lab.workload import ServiceSpec, Workload, create_app

log = logging.getLogger(__name__)

DEMO_NAMESPACE = "lab"
DEMO_SERVICE = "chat-api"
NAME_LABEL = "app.kubernetes.io/name"
# The shared traffic traces sit beside the repository; the lab replays the conversation trace when
# it is there (one trace minute per 10 s, its busiest minute at 120 requests/s), else a constant 60
# requests/s: enough that a canary's share fills an analysis window with a hundred requests or more.
DEFAULT_TRACE = Path(__file__).resolve().parents[1].parent / (
    "shared/data/traces/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
)


@dataclass
class LabOptions:
    home: Path
    host: str = "127.0.0.1"
    kube_port: int = 8600
    workload_port: int = 8601
    pod_startup_delay_s: float = 3.0
    trace: Path | None = None  # None: DEFAULT_TRACE when present, else a constant 60 requests/s
    demo: bool = True
    # The LLM simulator's replicas (their ports on `host`): the lab gives them pods behind the Service
    # FLEET_SERVICE, so their EndpointSlices list them, as a cluster's would list vLLM pods.
    llm_replica_ports: tuple[int, ...] = ()


def demo_objects(
    version: str = "v1",
    replicas: int = 4,
    name: str = DEMO_SERVICE,
    namespace_name: str = DEMO_NAMESPACE,
) -> tuple[dict, dict, dict]:  # type: ignore[type-arg]
    """A lab service (the demo's by default): its namespace, a Service and its stable Deployment."""
    labels = {NAME_LABEL: name, SIMULATED_LABEL: "true"}
    namespace = {"metadata": {"name": namespace_name, "labels": {SIMULATED_LABEL: "true"}}}
    service = {
        "metadata": {"name": name, "namespace": namespace_name, "labels": labels},
        "spec": {"selector": {NAME_LABEL: name}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    pod_labels = {**labels, VERSION_LABEL: version}
    deployment = {
        "metadata": {"name": name, "namespace": namespace_name, "labels": pod_labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {NAME_LABEL: name, VERSION_LABEL: version}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"containers": [{"name": "app", "image": f"lab.local/{name}:{version}"}]},
            },
        },
    }
    return namespace, service, deployment


def fleet_objects(host: str, ports: tuple[int, ...]) -> list[tuple[str, dict[str, Any]]]:
    """The simulated LLM fleet as Kubernetes objects: a namespace, a Service, and a pod per replica
    whose process really listens on host:port (the kubelet probes its /healthz for readiness)."""
    labels = {NAME_LABEL: FLEET_SERVICE, SIMULATED_LABEL: "true"}
    objects: list[tuple[str, dict[str, Any]]] = [
        ("v1/namespaces", {"metadata": {"name": FLEET_NAMESPACE, "labels": {SIMULATED_LABEL: "true"}}}),
        (
            "v1/services",
            {
                "metadata": {"name": FLEET_SERVICE, "namespace": FLEET_NAMESPACE, "labels": labels},
                "spec": {"selector": labels, "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]},
            },
        ),
    ]
    for index, port in enumerate(ports):
        container = {
            "name": "vllm",
            "image": "lab.local/lcp-llm-simulator",
            "ports": [{"name": "http", "containerPort": port}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
        }
        pod = {
            "metadata": {
                "name": f"{FLEET_SERVICE}-{index}",
                "namespace": FLEET_NAMESPACE,
                "labels": labels,
                "annotations": {POD_IP_ANNOTATION: host},
            },
            "spec": {"containers": [container]},
        }
        objects.append(("v1/pods", pod))
    return objects


def traffic_source(trace: Path | None) -> TrafficSource:
    path = trace or (DEFAULT_TRACE if DEFAULT_TRACE.exists() else None)
    if path is None:
        return Constant(60.0)
    return Replay.from_file(path, speedup=6.0, peak_rps=120.0)


class Lab:
    """The lab's parts, started in order and stopped in reverse."""

    def __init__(self, options: LabOptions) -> None:
        self.options = options
        self.kube = LabKubernetes()
        self.controllers: ControllerManager | None = None
        self.chaos: ControllerManager | None = None  # the Litmus operator, started once the workload exists
        self.workload: Workload | None = None
        self._api_client: client.ApiClient | None = None
        self._http: uvicorn.Server | None = None
        self._serving: asyncio.Task[None] | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.options.home / "kubeconfig"

    async def start(self) -> None:
        options = self.options
        options.home.mkdir(parents=True, exist_ok=True)
        await self.kube.start(options.host, options.kube_port)
        self.kube.write_kubeconfig(self.kubeconfig)
        self.controllers = ControllerManager(
            default_controllers(self.kube, pod_startup_delay=options.pod_startup_delay_s)
        )
        await self.controllers.start()
        if options.demo:
            self._seed_demo()
        if options.llm_replica_ports:
            self._create(fleet_objects(options.host, options.llm_replica_ports))
        self._api_client = config.new_client_from_config(config_file=str(self.kubeconfig))
        self.workload = Workload(KubernetesClusterView(self._api_client))
        if options.demo:
            source = await asyncio.to_thread(traffic_source, options.trace)
            self.workload.add_service(ServiceSpec(DEMO_NAMESPACE, DEMO_SERVICE, source))
        self.chaos = ControllerManager(
            [ChaosOperator(self.kube, self.workload), ArgoWorkflowController(self.kube)]
        )
        await self.chaos.start()
        server_config = uvicorn.Config(
            create_app(self.workload),
            host=options.host,
            port=options.workload_port,
            log_level="warning",
            lifespan="on",
        )
        self._http = uvicorn.Server(server_config)
        self._serving = asyncio.create_task(self._http.serve())
        while not self._http.started:
            if self._serving.done():
                await self._serving  # raises what stopped it (e.g. a busy port)
                raise RuntimeError(f"the workload simulator did not start on port {options.workload_port}")
            await asyncio.sleep(0.05)
        log.warning(
            "lab (a simulation) ready: kubernetes API %s, workload http://%s:%d/metrics, kubeconfig %s",
            self.kube.url,
            options.host,
            options.workload_port,
            self.kubeconfig,
        )

    def _seed_demo(self) -> None:
        namespace, service, deployment = demo_objects()
        self._create(
            [("v1/namespaces", namespace), ("v1/services", service), ("apps/v1/deployments", deployment)]
        )

    def _create(self, objects: list[tuple[str, dict]]) -> None:  # type: ignore[type-arg]
        for kind, body in objects:
            name = body["metadata"]["name"]
            ns = body["metadata"].get("namespace")
            if self.kube.api.get_object(kind, ns, name) is None:
                self.kube.api.create_object(kind, body, ns)

    async def stop(self) -> None:
        if self._http is not None and self._serving is not None:
            self._http.should_exit = True
            await self._serving
        if self._api_client is not None:
            self._api_client.close()
        if self.chaos is not None:
            await self.chaos.stop()
        if self.controllers is not None:
            await self.controllers.stop()
        await self.kube.stop()


async def serve(options: LabOptions) -> None:
    """Run the lab until SIGINT/SIGTERM."""
    lab = Lab(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await lab.start()
    try:
        await stop.wait()
    finally:
        await lab.stop()
