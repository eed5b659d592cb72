"""The workload simulator's view of the cluster, read through the official kubernetes client (the
lab's API emulator or a real cluster): which Deployments back a Service, and router weights."""

import asyncio
from typing import Any, cast

from kubernetes import client

from lab.workload import VersionState

VERSION_LABEL = "lcp.dev/version"
ISTIO = ("networking.istio.io", "v1beta1", "virtualservices")
GATEWAY_API = ("gateway.networking.k8s.io", "v1", "httproutes")


class KubernetesClusterView:
    """The ClusterView contract of lab.workload, over a kubernetes ApiClient (blocking calls in threads)."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api_client)
        self._apps = client.AppsV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)

    async def versions(self, namespace: str, service: str) -> list[VersionState]:
        return await asyncio.to_thread(self._versions, namespace, service)

    async def weights(self, namespace: str, service: str) -> dict[str, float] | None:
        return await asyncio.to_thread(self._weights, namespace, service)

    def _deployments(self, namespace: str, service: str) -> list[Any]:
        try:
            spec = self._core.read_namespaced_service(service, namespace).spec
            selector = (spec.selector if spec is not None else None) or {}
        except client.ApiException as err:
            if err.status == 404:
                return []
            raise
        if not selector:
            return []
        deployments = self._apps.list_namespaced_deployment(namespace).items
        return [
            d
            for d in deployments
            if selector.items()
            <= ((d.spec.template.metadata.labels or {}) if d.spec.template.metadata else {}).items()
        ]

    def _versions(self, namespace: str, service: str) -> list[VersionState]:
        states: list[VersionState] = []
        for deployment in self._deployments(namespace, service):
            template_labels = (
                (deployment.spec.template.metadata.labels or {}) if deployment.spec.template.metadata else {}
            )
            version = (
                template_labels.get(VERSION_LABEL)
                or (deployment.metadata.labels or {}).get(VERSION_LABEL)
                or deployment.metadata.name
            )
            ready = (deployment.status.ready_replicas if deployment.status else None) or 0
            states.append(
                VersionState(name=version, deployment=deployment.metadata.name, ready_replicas=ready)
            )
        return states

    def _weights(self, namespace: str, service: str) -> dict[str, float] | None:
        hosts = {service, f"{service}.{namespace}", f"{service}.{namespace}.svc.cluster.local"}
        for vs in self._list(ISTIO, namespace):
            if hosts & set(vs.get("spec", {}).get("hosts") or []):
                routes = vs["spec"].get("http") or []
                destinations = routes[0].get("route") or [] if routes else []
                if not destinations or any(
                    "subset" not in (d.get("destination") or {}) for d in destinations
                ):
                    return None
                only = len(destinations) == 1
                return {
                    d["destination"]["subset"]: float(d.get("weight", 100 if only else 0))
                    for d in destinations
                }
        names = {d.metadata.name for d in self._deployments(namespace, service)}
        for route in self._list(GATEWAY_API, namespace):
            rules = route.get("spec", {}).get("rules") or []
            refs = (rules[0].get("backendRefs") or []) if rules else []
            if refs and names & {ref.get("name") for ref in refs}:
                return {ref["name"]: float(ref.get("weight", 1)) for ref in refs}
        return None

    def _list(self, kind: tuple[str, str, str], namespace: str) -> list[dict[str, Any]]:
        group, version, plural = kind
        try:
            found = self._custom.list_namespaced_custom_object(group, version, namespace, plural)
        except client.ApiException as err:
            if err.status == 404:  # the router's resource is not installed in this cluster
                return []
            raise
        return list(cast(dict[str, Any], found).get("items") or [])
