"""Simulated cluster controllers that give the lab's Kubernetes objects life: pods start, Deployments roll."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterable
from typing import Any, ClassVar

import httpx

from lab.kube import SIMULATED_LABEL, Kind, LabEmulator, LabKubernetes, Obj

log = logging.getLogger(__name__)

DEFAULT_POD_STARTUP_DELAY = 3.0  # seconds from a pod's creation to Running and Ready
DEFAULT_INTERVAL = 0.2  # seconds between reconciles when nothing changes (time-driven steps)
LAB_NODE = "lcp-lab-node"


class Controller:
    """A level-triggered control loop: `reconcile()` runs after every change to a kind in `watches`, and
    at least every `interval` seconds. A new controller is a subclass with `watches` and `reconcile()`."""

    watches: ClassVar[tuple[str, ...]] = ()

    def __init__(self, kube: LabKubernetes, *, interval: float = DEFAULT_INTERVAL) -> None:
        self.api: LabEmulator = kube.api
        self.interval = interval

    def reconcile(self) -> None:
        """Move the objects one step towards what their specs ask for. Synchronous: atomic on the loop."""
        raise NotImplementedError

    async def run(self) -> None:
        """Reconcile until cancelled."""
        wake = asyncio.Event()
        watched = {self.api.kind(ref) for ref in self.watches}

        def changed(kind: Kind, event_type: str, obj: Obj) -> None:
            if kind in watched:
                wake.set()

        unsubscribe = self.api.on_change(changed)
        try:
            while True:
                wake.clear()
                try:
                    self.reconcile()
                except Exception:
                    log.exception("lab: the simulated %s failed to reconcile", type(self).__name__)
                # Not asyncio.wait_for: on 3.11 it swallows a cancel that lands as `wake` is set.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        await wake.wait()
        finally:
            unsubscribe()


class ControllerManager:
    """Runs controllers as asyncio tasks next to the lab's Kubernetes API server."""

    def __init__(self, controllers: Iterable[Controller]) -> None:
        self.controllers = list(controllers)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self._tasks:
            raise RuntimeError("the lab controllers are already running")
        self._tasks = [
            asyncio.create_task(controller.run(), name=f"lab-{type(controller).__name__}")
            for controller in self.controllers
        ]
        log.info(
            "lab: simulated controllers running: %s", ", ".join(type(c).__name__ for c in self.controllers)
        )

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def default_controllers(
    kube: LabKubernetes,
    *,
    pod_startup_delay: float = DEFAULT_POD_STARTUP_DELAY,
    interval: float = DEFAULT_INTERVAL,
) -> list[Controller]:
    """The controllers a lab cluster runs by default."""
    return [
        Kubelet(kube, pod_startup_delay=pod_startup_delay, interval=interval),
        ReadinessProbes(kube),
        DeploymentController(kube, interval=interval),
        EndpointSliceController(kube, interval=interval),
    ]


# ---------------------------------------------------------------------------------------------------------
# Pods


def is_ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _pod_status(pod: Obj, *, ready: bool, ip: str, running: bool | None = None) -> Obj:
    running = ready if running is None else running
    created = pod["metadata"]["creationTimestamp"]
    since = _timestamp() if running else created
    flag = "True" if ready else "False"
    containers = (pod.get("spec") or {}).get("containers") or []
    conditions = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": created},
        {"type": "Initialized", "status": "True", "lastTransitionTime": created},
        {"type": "ContainersReady", "status": flag, "lastTransitionTime": since},
        {"type": "Ready", "status": flag, "lastTransitionTime": since},
    ]
    if not ready:
        for condition in conditions[2:]:
            condition["reason"] = "ContainersNotReady"
    state = {"running": {"startedAt": since}} if running else {"waiting": {"reason": "ContainerCreating"}}
    statuses = [
        {
            "name": container.get("name", ""),
            "image": container.get("image", ""),
            "imageID": f"lab-simulated://{container.get('image', '')}",
            "containerID": f"lab-simulated://{pod['metadata']['uid']}/{container.get('name', '')}",
            "ready": ready,
            "started": running,
            "restartCount": 0,
            "state": state,
        }
        for container in containers
    ]
    return {
        "phase": "Running" if running else "Pending",
        "conditions": conditions,
        "hostIP": "10.0.0.1",
        "podIP": ip,
        "startTime": created,
        "containerStatuses": statuses,
    }


def _timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


POD_IP_ANNOTATION = "lab.lcp.dev/pod-ip"  # where a simulated pod's process really listens (127.0.0.1)


def readiness_probe(pod: Obj) -> Obj | None:
    """The first container's readinessProbe.httpGet, if it has one (the only kind the lab runs)."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        probe = (container.get("readinessProbe") or {}).get("httpGet")
        if probe:
            return dict(probe, _ports=container.get("ports") or [])
    return None


class Kubelet(Controller):
    """The node's kubelet: every pod is Pending as soon as it exists, then Running once
    `pod_startup_delay` seconds have passed: Ready at once, or, with an HTTP readiness probe, when the
    probe says so (ReadinessProbes). After that, the pod's status is left to others (probes, chaos)."""

    watches = ("v1/pods",)

    def __init__(
        self,
        kube: LabKubernetes,
        *,
        pod_startup_delay: float = DEFAULT_POD_STARTUP_DELAY,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        super().__init__(kube, interval=interval)
        self.pod_startup_delay = pod_startup_delay
        self._ready_at: dict[str, float] = {}  # pod uid → when it becomes ready (time.monotonic)
        self._started: set[str] = set()
        self._ips = 0

    def reconcile(self) -> None:
        now = time.monotonic()
        live = set()
        for pod in self.api.list_objects("pods"):
            meta = pod["metadata"]
            uid = meta["uid"]
            live.add(uid)
            if uid in self._started or meta.get("deletionTimestamp"):
                continue
            ready_at = self._ready_at.setdefault(uid, now + self.pod_startup_delay)
            if now >= ready_at:
                self._set_status(pod, ready=readiness_probe(pod) is None, running=True)
                self._started.add(uid)
                log.info("lab: simulated pod %s/%s is Running and Ready", meta["namespace"], meta["name"])
            elif "phase" not in (pod.get("status") or {}):
                self._set_status(pod, ready=False)
        self._ready_at = {uid: at for uid, at in self._ready_at.items() if uid in live}
        self._started &= live

    def _set_status(self, pod: Obj, *, ready: bool, running: bool | None = None) -> None:
        ip = (pod.get("status") or {}).get("podIP") or (pod["metadata"].get("annotations") or {}).get(
            POD_IP_ANNOTATION
        )
        if ip is None:
            self._ips += 1
            ip = f"10.244.{self._ips // 250 % 250}.{self._ips % 250 + 2}"
        pod["status"] = _pod_status(pod, ready=ready, ip=ip, running=running)
        self.api.replace_object("pods", pod, subresource="status")


class ReadinessProbes(Controller):
    """The kubelet's HTTP readiness probes: every `period` seconds each running pod with a
    readinessProbe.httpGet is asked for its path; a 2xx or 3xx makes it Ready, anything else (refused,
    timed out, 5xx) not Ready. A replica that dies leaves its Service's endpoints within a period or two,
    and comes back when it answers again."""

    def __init__(self, kube: LabKubernetes, *, period: float = 0.5, timeout: float = 0.5) -> None:
        super().__init__(kube, interval=period)
        self.timeout = timeout

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout, trust_env=False) as http:
            while True:
                await self.probe_all(http)
                await asyncio.sleep(self.interval)

    async def probe_all(self, http: httpx.AsyncClient) -> None:
        pods = [
            pod
            for pod in self.api.list_objects("pods")
            if readiness_probe(pod) is not None
            and (pod.get("status") or {}).get("phase") == "Running"
            and not pod["metadata"].get("deletionTimestamp")
        ]
        answers = await asyncio.gather(*(self._probe(http, pod) for pod in pods))
        for pod, ready in zip(pods, answers, strict=True):
            current = self.api.get_object("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
            if current is None or is_ready(current) == ready:
                continue
            ip = current["status"].get("podIP", "")
            current["status"] = _pod_status(current, ready=ready, ip=ip, running=True)
            self.api.replace_object("pods", current, subresource="status")
            meta = current["metadata"]
            log.info(
                "lab: simulated pod %s/%s is %s",
                meta["namespace"],
                meta["name"],
                "Ready" if ready else "not Ready",
            )

    async def _probe(self, http: httpx.AsyncClient, pod: Obj) -> bool:
        probe = readiness_probe(pod) or {}
        port = _container_port(probe.get("port"), probe["_ports"])
        host = probe.get("host") or (pod.get("status") or {}).get("podIP")
        if port is None or not host:
            return False
        try:
            response = await http.get(
                f"{probe.get('scheme', 'HTTP').lower()}://{host}:{port}{probe.get('path', '/')}"
            )
        except httpx.HTTPError:
            return False
        return 200 <= response.status_code < 400


def _container_port(port: Any, ports: list[Obj]) -> int | None:
    """A port number, or the number of the container port with that name."""
    if isinstance(port, int):
        return port
    named = next((p.get("containerPort") for p in ports if p.get("name") == port), None)
    return int(named) if named is not None else (int(port) if str(port).isdigit() else None)


# ---------------------------------------------------------------------------------------------------------
# EndpointSlices

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"


class EndpointSliceController(Controller):
    """Kubernetes' EndpointSlice controller: each Service with a selector gets EndpointSlices listing its
    pods (address, ready/serving/terminating, the pod as targetRef) and their ports. Pods that resolve a
    named targetPort to different numbers go in different slices, as on a real cluster."""

    watches = ("v1/pods", "v1/services")

    def reconcile(self) -> None:
        wanted: dict[tuple[str, str], Obj] = {}
        for service in self.api.list_objects("services"):
            selector = (service.get("spec") or {}).get("selector")
            if selector:
                for slice_ in self._slices(service, selector):
                    wanted[(slice_["metadata"]["namespace"], slice_["metadata"]["name"])] = slice_
        existing = self.api.list_objects("endpointslices", label_selector={MANAGED_BY_LABEL: MANAGED_BY})
        for current in existing:
            key = (current["metadata"]["namespace"], current["metadata"]["name"])
            body: Obj | None = wanted.pop(key, None)
            if body is None:
                self.api.delete_object("endpointslices", key[0], key[1])
            elif (body["endpoints"], body["ports"]) != (current.get("endpoints"), current.get("ports")):
                current["endpoints"], current["ports"] = body["endpoints"], body["ports"]
                self.api.replace_object("endpointslices", current)
        for (namespace, _), body in wanted.items():
            self.api.create_object("endpointslices", body, namespace)

    def _slices(self, service: Obj, selector: dict[str, str]) -> list[Obj]:
        meta = service["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        service_ports = (service.get("spec") or {}).get("ports") or []
        groups: dict[tuple[int | None, ...], list[dict[str, Any]]] = {}
        for pod in self.api.list_objects("pods", namespace, label_selector=selector):
            ip = (pod.get("status") or {}).get("podIP")
            if not ip:
                continue
            container_ports = [p for c in pod["spec"].get("containers") or [] for p in c.get("ports") or []]
            resolved = tuple(
                _container_port(port.get("targetPort", port.get("port")), container_ports)
                for port in service_ports
            )
            ready = is_ready(pod) and not pod["metadata"].get("deletionTimestamp")
            endpoint: dict[str, Any] = {
                "addresses": [ip],
                "conditions": {
                    "ready": ready,
                    "serving": ready,
                    "terminating": bool(pod["metadata"].get("deletionTimestamp")),
                },
                "targetRef": {
                    "kind": "Pod",
                    "namespace": namespace,
                    "name": pod["metadata"]["name"],
                    "uid": pod["metadata"]["uid"],
                },
            }
            groups.setdefault(resolved, []).append(endpoint)
        slices: list[Obj] = []
        for resolved, endpoints in sorted(groups.items(), key=lambda item: str(item[0])):
            ports = [
                {"name": port.get("name", ""), "port": number, "protocol": port.get("protocol", "TCP")}
                for port, number in zip(service_ports, resolved, strict=True)
                if number is not None
            ]
            suffix = hashlib.sha256(json.dumps(resolved).encode()).hexdigest()[:5]
            slices.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": f"{name}-{suffix}",
                        "namespace": namespace,
                        "labels": {
                            SERVICE_NAME_LABEL: name,
                            MANAGED_BY_LABEL: MANAGED_BY,
                            SIMULATED_LABEL: "true",
                        },
                        "ownerReferences": [
                            {
                                "apiVersion": "v1",
                                "kind": "Service",
                                "name": name,
                                "uid": meta["uid"],
                                "controller": True,
                            }
                        ],
                    },
                    "addressType": "IPv4",
                    "endpoints": sorted(endpoints, key=lambda e: str(e["targetRef"]["name"])),
                    "ports": ports,
                }
            )
        return slices


# ---------------------------------------------------------------------------------------------------------
# Deployments


def template_hash(template: Any) -> str:
    """A short, stable hash of a pod template: the `pod-template-hash` label of its pods."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _condition(old: list[Obj], kind: str, status: str, reason: str, message: str, now: str) -> Obj:
    """A Deployment condition that keeps its timestamps while nothing about it changes."""
    previous = next((c for c in old if c.get("type") == kind), {})
    changed = previous.get("status") != status
    updated = changed or previous.get("reason") != reason or previous.get("message") != message
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now if changed else previous.get("lastTransitionTime", now),
        "lastUpdateTime": now if updated else previous.get("lastUpdateTime", now),
    }


def _victims(pods: list[Obj], count: int) -> list[Obj]:
    """Which `count` pods a scale-down removes: not-ready ones first, then the newest."""
    if count <= 0:
        return []
    newest_first = sorted(pods, key=lambda p: int(p["metadata"]["resourceVersion"]), reverse=True)
    return sorted(newest_first, key=is_ready)[:count]


class DeploymentController(Controller):
    """The ReplicaSet and Deployment controllers in one: each Deployment gets `spec.replicas` pods of its
    current template, and its status follows them.

    Scaling creates or deletes pods at once. A new template surges: all its pods are created at once,
    and each old pod is deleted as a new one becomes ready, so readiness never drops during a rollout.
    Pods are owned by the Deployment itself (a real cluster puts a ReplicaSet between them)."""

    watches = ("apps/v1/deployments", "v1/pods")

    def reconcile(self) -> None:
        pods_by_owner: dict[str, list[Obj]] = {}
        for pod in self.api.list_objects("pods"):
            for owner in pod["metadata"].get("ownerReferences") or []:
                if owner.get("kind") == "Deployment" and owner.get("controller"):
                    pods_by_owner.setdefault(owner["uid"], []).append(pod)
        for deployment in self.api.list_objects("deployments"):
            if not deployment["metadata"].get("deletionTimestamp"):
                self._sync(deployment, pods_by_owner.get(deployment["metadata"]["uid"], []))

    def _sync(self, deployment: Obj, pods: list[Obj]) -> None:
        spec = deployment.get("spec") or {}
        desired = spec.get("replicas", 1)
        current_hash = template_hash(spec.get("template") or {})
        pods = [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]
        current = [
            pod for pod in pods if pod["metadata"].get("labels", {}).get("pod-template-hash") == current_hash
        ]
        old = [pod for pod in pods if pod not in current]

        for _ in range(desired - len(current)):
            current.append(self._create_pod(deployment, current_hash))
        for pod in _victims(current, len(current) - desired):
            current.remove(self._delete_pod(pod))
        keep_old = max(0, desired - sum(map(is_ready, current)))
        for pod in _victims(old, len(old) - keep_old):
            old.remove(self._delete_pod(pod))

        self._set_status(deployment, desired, current, old, current_hash)

    def _create_pod(self, deployment: Obj, pod_hash: str) -> Obj:
        meta = deployment["metadata"]
        template = deployment["spec"].get("template") or {}
        template_meta = template.get("metadata") or {}
        labels = {
            **(template_meta.get("labels") or {}),
            "pod-template-hash": pod_hash,
            SIMULATED_LABEL: "true",
        }
        owner = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{meta['name']}-{pod_hash}-",
                "labels": labels,
                "annotations": dict(template_meta.get("annotations") or {}),
                "ownerReferences": [owner],
            },
            "spec": {**(template.get("spec") or {}), "nodeName": LAB_NODE},
        }
        created = self.api.create_object("pods", pod, meta["namespace"])
        log.info(
            "lab: simulated pod %s/%s created for its deployment",
            meta["namespace"],
            created["metadata"]["name"],
        )
        return created

    def _delete_pod(self, pod: Obj) -> Obj:
        meta = pod["metadata"]
        self.api.delete_object("pods", meta["namespace"], meta["name"])
        log.info("lab: simulated pod %s/%s deleted by its deployment", meta["namespace"], meta["name"])
        return pod

    def _set_status(
        self, deployment: Obj, desired: int, current: list[Obj], old: list[Obj], pod_hash: str
    ) -> None:
        meta = deployment["metadata"]
        total = len(current) + len(old)
        ready = sum(map(is_ready, current + old))
        complete = not old and len(current) == desired and ready >= desired
        counts = {
            "replicas": total,
            "updatedReplicas": len(current),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(0, total - ready),
        }
        old_status = deployment.get("status") or {}
        old_conditions = old_status.get("conditions") or []
        now = _timestamp()
        replica_set = f"{meta['name']}-{pod_hash}"
        available = ready >= desired
        conditions = [
            _condition(
                old_conditions,
                "Available",
                "True" if available else "False",
                "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
                now,
            ),
            _condition(
                old_conditions,
                "Progressing",
                "True",
                "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                f'ReplicaSet "{replica_set}" has successfully progressed.'
                if complete
                else f'ReplicaSet "{replica_set}" is progressing.',
                now,
            ),
        ]
        # Like the real API, zero counts are left out: clients must read a missing count as 0.
        status: Obj = {"observedGeneration": meta.get("generation", 1)}
        status.update({key: value for key, value in counts.items() if value})
        status["conditions"] = conditions
        if status != old_status:
            deployment["status"] = status
            self.api.replace_object("deployments", deployment, subresource="status")
