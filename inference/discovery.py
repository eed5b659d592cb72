"""Deployments discovered from Kubernetes: the ready endpoints of a Service, from its EndpointSlices (as a
Gateway API InferencePool selects its pods), listed and then watched through the official client, so a
replica that is scaled up, killed or comes back joins or leaves the fleet within seconds."""

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from inference.fleet import Fleet
from policies.errors import PermanentError
from policies.models import Deployment, KubernetesDiscovery, ModelRoute

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
WATCH_TIMEOUT_S = 30  # the server ends each watch after this; the loop lists and watches again
RETRY_AFTER_S = 1.0  # after a failed list or watch


def ready_deployments(slices: Iterable[dict[str, Any]], spec: KubernetesDiscovery) -> list[Deployment]:
    """The ready endpoints of a Service's EndpointSlices as deployments, at the port `spec` names."""
    deployments: dict[str, Deployment] = {}
    for slice_ in slices:
        port = next(
            (
                p.get("port")
                for p in slice_.get("ports") or []
                if (p.get("name") == spec.port if isinstance(spec.port, str) else p.get("port") == spec.port)
            ),
            None,
        )
        if port is None:
            continue
        for endpoint in slice_.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            if conditions.get("ready") is False or conditions.get("terminating"):
                continue  # an unknown readiness (None) counts as ready, as the API documents
            for address in endpoint.get("addresses") or []:
                host = f"[{address}]" if ":" in address else address
                name = (endpoint.get("targetRef") or {}).get("name") or f"{host}:{port}"
                url = f"{spec.scheme}://{host}:{port}{spec.path}"
                deployments[name] = Deployment(name, url, upstream_model="")
    return [deployments[name] for name in sorted(deployments)]


class _ServiceWatch(threading.Thread):
    """Lists and watches one Service's EndpointSlices on a thread (the official client blocks)."""

    def __init__(
        self, api: Any, spec: KubernetesDiscovery, publish: Callable[[list[Deployment]], None]
    ) -> None:
        super().__init__(name=f"discovery-{spec.namespace}-{spec.service}", daemon=True)
        self._api, self._spec, self._publish = api, spec, publish
        self._stopped = threading.Event()
        self._watch: Any = None

    def stop(self) -> None:
        self._stopped.set()
        if self._watch is not None:
            self._watch.stop()

    def run(self) -> None:
        from kubernetes import watch

        spec, failing = self._spec, False
        selector = f"{SERVICE_NAME_LABEL}={spec.service}"
        while not self._stopped.is_set():
            try:
                listed = self._api.list_namespaced_endpoint_slice(spec.namespace, label_selector=selector)
                slices = {s.metadata.name: self._plain(s) for s in listed.items}
                self._publish(ready_deployments(slices.values(), spec))
                if failing:
                    log.warning("discovery of %s/%s works again", spec.namespace, spec.service)
                failing = False
                self._watch = watch.Watch()
                for event in self._watch.stream(
                    self._api.list_namespaced_endpoint_slice,
                    spec.namespace,
                    label_selector=selector,
                    resource_version=listed.metadata.resource_version,
                    timeout_seconds=WATCH_TIMEOUT_S,
                ):
                    name = event["object"].metadata.name
                    if event["type"] == "DELETED":
                        slices.pop(name, None)
                    else:
                        slices[name] = self._plain(event["object"])
                    self._publish(ready_deployments(slices.values(), spec))
            except Exception as err:  # any API failure: keep the last known endpoints, try again
                if not failing:
                    log.warning(
                        "cannot watch the endpoints of %s/%s (%s): keeping the last known, retrying",
                        spec.namespace,
                        spec.service,
                        err,
                    )
                failing = True
                self._stopped.wait(RETRY_AFTER_S)

    def _plain(self, obj: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._api.api_client.sanitize_for_serialization(obj)
        return result


class DiscoveryError(PermanentError, RuntimeError):
    """Discovery cannot start: no way to reach the Kubernetes API."""


class Discovery:
    """The watches of every model with `discovery:` in the models policy, feeding the fleet."""

    def __init__(self, watches: list[_ServiceWatch]) -> None:
        self._watches = watches

    def stop(self) -> None:
        for w in self._watches:
            w.stop()


def start_discovery(
    fleet: Fleet, routes: Iterable[ModelRoute], kubeconfig: Path, context: str | None = None
) -> Discovery:
    """Watch the Services the routes discover their deployments from (none: nothing starts). The client
    is the kubeconfig's when that file exists, else the pod's service account (in the cluster)."""
    wanted = [(route.name, route.discovery) for route in routes if route.discovery is not None]
    if not wanted:
        return Discovery([])
    from kubernetes import client, config

    if kubeconfig.exists():
        api_client = config.new_client_from_config(config_file=str(kubeconfig), context=context)
    else:
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException as err:
            models = ", ".join(m for m, _ in wanted)
            raise DiscoveryError(
                f"the models policy discovers the deployments of {models} from Kubernetes, but there is no "
                f"kubeconfig at {kubeconfig} and this process is not in a pod ({err}): set "
                "LCP_ROLLOUT__KUBECONFIG, or list the deployments in the policy file"
            ) from None
        api_client = client.ApiClient(configuration)
    api = client.DiscoveryV1Api(api_client)
    loop = asyncio.get_running_loop()
    watches = []
    for model, spec in wanted:

        def publish(deployments: list[Deployment], model: str = model) -> None:
            loop.call_soon_threadsafe(fleet.discovered, model, deployments)

        watch = _ServiceWatch(api, spec, publish)
        watch.start()
        watches.append(watch)
    log.info("discovering the deployments of %s from Kubernetes", ", ".join(m for m, _ in wanted))
    return Discovery(watches)
