"""Kubernetes side effects of a canary rollout: the canary Deployment, replica counts and router weights."""

import contextlib
import copy
import json
from collections.abc import Iterator
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.contracts import kubernetes as contract
from activities.contracts.kubernetes import (
    ROUTERS,
    DeploymentRef,
    DeploymentState,
    EnsureCanaryInput,
    PromoteInput,
    RollbackInput,
    Router,
    ScaleDeploymentInput,
    SetWeightInput,
    WeightState,
    canary_name,
)

__all__ = [
    "DeploymentRef",
    "DeploymentState",
    "EnsureCanaryInput",
    "KubernetesActivities",
    "PromoteInput",
    "RollbackInput",
    "Router",
    "ScaleDeploymentInput",
    "SetWeightInput",
    "WeightState",
    "canary_name",
    "replica_split",
    "router_canary_replicas",
]

VERSION_LABEL = "lcp.dev/version"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "lcp"
CANARY_OF_LABEL = "lcp.dev/canary-of"
# The rollout's replica total, kept on the canary Deployment from one step to the next (see set_weight).
TOTAL_ANNOTATION = "lcp.dev/total-replicas"

ISTIO = ("networking.istio.io", "v1beta1", "virtualservices")
GATEWAY_API = ("gateway.networking.k8s.io", "v1", "httproutes")


# Error types; TargetNotFound and InvalidSpec are permanent, NotReady asks Temporal to try again later.
TARGET_NOT_FOUND = "TargetNotFound"
INVALID_SPEC = "InvalidSpec"
NOT_READY = "NotReady"
# 4xx answers that retrying cannot change; 404 is TargetNotFound, 409 is retried, the rest is transient.
PERMANENT_STATUSES = frozenset({400, 403, 405, 415, 422})

Obj = dict[str, Any]


_RouterInput = SetWeightInput | RollbackInput | PromoteInput  # the requests that weight a route


def replica_split(total: int, percent: int) -> tuple[int, int]:
    """(stable, canary) replicas for the replica router: the canary gets the nearest whole share of
    `total` (a tie to the larger canary), at least one replica while percent > 0 and at most total - 1
    while percent < 100 — as Argo Rollouts' basic canary without surge rounds a setWeight
    (approximateWeightedCanaryStableReplicaCounts). 4 replicas at 10% give the canary 1, so 25% of the
    traffic: the rollout's history says so, and a plan with `exact_weights` asks for a total that splits
    exactly (policies/canary.py replicas_for_exact_weights)."""
    if percent <= 0:
        return total, 0
    if percent >= 100:
        return 0, total
    if total < 2:
        raise _invalid(
            f"{total} replica(s) cannot carry a {percent}% split: the replica router needs at least 2 "
            "(set total_replicas, or use a traffic router)"
        )
    canary = min(max((total * percent + 50) // 100, 1), total - 1)
    return total - canary, canary


def router_canary_replicas(total: int, percent: int) -> int:
    """Canary replicas behind a traffic router: enough for its share of `total`, rounded up; 0 at 0%.
    The stable keeps all `total` replicas, so an abort needs no scale-up."""
    if percent <= 0:
        return 0
    return max(1, -(-total * percent // 100))


class KubernetesActivities(contract.KubernetesActivities):
    """Blocking kubernetes-client calls: plain `def` activities that run on the worker's thread pool.
    Each converges to the state it is asked for, so a retried call repeats nothing and undoes nothing."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._api = api_client
        self._apps = client.AppsV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)

    # --- activities ---------------------------------------------------------------------------------------

    @activity.defn(name="kubernetes.read_deployment")
    def read_deployment(self, ref: DeploymentRef) -> DeploymentState:
        with permanent_errors():
            return _state(self._require(ref.namespace, ref.name, "deployment"))

    @activity.defn(name="kubernetes.scale_deployment")
    def scale_deployment(self, request: ScaleDeploymentInput) -> DeploymentState:
        if request.replicas < 0:
            raise _invalid(f"replicas must not be negative, not {request.replicas}")
        with permanent_errors():
            deployment = self._require(request.namespace, request.name, "deployment")
            self._scale(deployment, request.replicas)
            return _state(self._require(request.namespace, request.name, "deployment"))

    @activity.defn(name="kubernetes.ensure_canary")
    def ensure_canary(self, request: EnsureCanaryInput) -> DeploymentState:
        """Create the canary `<stable>-canary` from the stable Deployment's spec with `image` and the
        version label on its template and selector, or bring an existing one to them. A new version
        re-creates it (a Deployment's selector cannot change); the same version updates it in place and
        keeps its replicas, so that a retry after set_weight does not undo the split."""
        if request.replicas < 0:
            raise _invalid(f"replicas must not be negative, not {request.replicas}")
        if not request.image or not request.canary_version:
            raise _invalid("ensure_canary needs an image and a canary_version")
        with permanent_errors():
            stable = self._require(request.namespace, request.stable_deployment, "stable deployment")
            name = canary_name(request.stable_deployment)
            for attempt in (1, 2):  # one more try, from a fresh read, after a conflict
                existing = self._find(request.namespace, name)
                try:
                    return _state(self._write_canary(request, stable, existing))
                except ApiException as err:
                    if err.status != 409 or attempt == 2:
                        raise
                    activity.logger.info(
                        "canary %s/%s changed under us; reading it again", request.namespace, name
                    )
            raise AssertionError("unreachable")

    @activity.defn(name="kubernetes.set_weight")
    def set_weight(self, request: SetWeightInput) -> WeightState:
        """Send `canary_percent` of the service's traffic to the canary, make before break: whatever
        grows is scaled up first, and nothing shrinks (nor does a router give the canary more traffic)
        until the grown side is ready — until then the call fails with a retryable, benign NotReady.

        - "replicas": no router; the service's endpoints split traffic by ready pods, so the total is
          divided by `replica_split` (stable + canary = total).
        - "istio": a VirtualService named after the service, first http route weighted to the stable and
          canary subsets (their version labels); "gateway-api": an HTTPRoute named after the service, its
          first rule's backendRefs weighted to the stable and canary (named like their Deployments). The
          stable keeps `total` replicas; the canary gets `router_canary_replicas` (rounded up), scaled up
          before its weight rises and down after it falls.

        The total: `total_replicas` when given, else the one recorded on the canary (annotation
        lcp.dev/total-replicas, written by ensure_canary from the stable's replicas when it creates the
        canary, and by set_weight whenever it uses another), else the stable's replicas (plus the canary's
        with the replica router). Every step thus divides the same total, however earlier steps left it.
        """
        if not 0 <= request.canary_percent <= 100:
            raise _invalid(f"canary_percent must be within 0..100, not {request.canary_percent}")
        _check_router(request.router)
        with permanent_errors():
            stable = self._require(request.namespace, request.stable_deployment, "stable deployment")
            canary = self._require(
                request.namespace,
                request.canary_deployment,
                "canary deployment (ensure_canary makes it)",
            )
            total = self._total(request.total_replicas, request.router, stable, canary)
            self._record_total(canary, total)  # before any scaling changes what the fallback would count
            percent = request.canary_percent
            if request.router == "replicas":
                stable_target, canary_target = replica_split(total, percent)
                self._grow(stable, stable_target)
                self._grow(canary, canary_target)
                if stable_target < _desired(stable):
                    self._require_serving(request.namespace, request.canary_deployment, canary_target)
                if canary_target < _desired(canary):
                    self._require_serving(request.namespace, request.stable_deployment, stable_target)
                self._shrink(stable, stable_target)
                self._shrink(canary, canary_target)
            else:
                canary_target = router_canary_replicas(total, percent)
                self._grow(stable, total)
                self._grow(canary, canary_target)
                route = self._route(request, stable, canary)
                if percent > route.canary_percent():
                    self._require_serving(request.namespace, request.canary_deployment, canary_target)
                route.set(percent)
                self._shrink(canary, canary_target)
            return self._weights(request, total, stable, canary)

    @activity.defn(name="kubernetes.rollback")
    def rollback(self, request: RollbackInput) -> WeightState:
        """All traffic to the stable at once: the router's weights to 100/0 (kept as a route, so that a
        frozen canary gets nothing), the stable back to the total, the canary to 0 replicas — or kept with
        `freeze`; with the replica router a frozen canary still takes its pods' share. Nothing waits for
        readiness here. A missing canary is fine: there is less to undo."""
        _check_router(request.router)
        with permanent_errors():
            stable = self._require(request.namespace, request.stable_deployment, "stable deployment")
            canary = self._find(request.namespace, request.canary_deployment)
            total = self._total(request.total_replicas, request.router, stable, canary)
            if request.router != "replicas":
                self._route(request, stable, canary).set(0)
            self._grow(stable, total)
            if canary is not None and not request.freeze:
                self._shrink(canary, 0)
            return self._weights(request, total, stable, canary)

    @activity.defn(name="kubernetes.promote")
    def promote(self, request: PromoteInput) -> WeightState:
        """The last step, once the canary carries all the traffic: the stable takes the canary's image and
        version, and the canary goes. Make before break: the stable gets `total` ready replicas of the new
        template before the router moves traffic back to it and before the canary is deleted; until then
        the call fails with a retryable, benign NotReady and the canary keeps serving.

        A stable whose selector leaves the version out (or already has this one) is updated in place and
        rolled by its controller. One whose selector holds the old version cannot be (a Deployment's
        selector is immutable): it is deleted and re-created from the canary's spec under its own name,
        labels and annotations (lcp's canary markers left out). A stable found missing is a retry after a
        crash between that delete and create: it is created from the canary, with the canary's labels.

        The total resolves as set_weight's does, before anything changes (and is recorded on the canary,
        so that a retry divides the same one); with the canary gone the stable's replicas. Each retry
        converges: a canary found gone, with the stable at `version`, is a promotion already done."""
        _check_router(request.router)
        if not request.image or not request.version:
            raise _invalid("promote needs an image and a version")
        namespace = request.namespace
        with permanent_errors():
            stable = self._find(namespace, request.stable_deployment)
            canary = self._find(namespace, request.canary_deployment)
            if canary is None:
                if stable is None:
                    raise _not_found("stable deployment", namespace, request.stable_deployment)
                if _version(stable) != request.version:
                    raise _not_found(
                        "canary deployment (nothing to promote)", namespace, request.canary_deployment
                    )
                activity.logger.info(
                    "%s/%s already promoted to %s", namespace, request.stable_deployment, request.version
                )
                return self._weights(request, _desired(stable), stable, None)
            _require_managed(canary)
            if (
                stable is None
                and (canary["metadata"].get("labels") or {}).get(CANARY_OF_LABEL) != request.stable_deployment
            ):
                raise _not_found("stable deployment", namespace, request.stable_deployment)
            # With the stable gone, the canary (at 100%) holds the whole total, whatever the router.
            router = request.router if stable is not None else "replicas"
            total = self._total(request.total_replicas, router, stable, canary)
            self._record_total(canary, total)  # before any write changes what the fallback would count
            stable = self._promote_stable(request, stable, canary, total)
            self._require_serving(namespace, request.stable_deployment, total, rolled_out=True)
            if request.router != "replicas":
                self._route(request, stable, None).set(0)
            self._delete(canary)
            return self._weights(request, total, stable, None)

    # --- deployments --------------------------------------------------------------------------------------

    def _find(self, namespace: str, name: str) -> Obj | None:
        try:
            found = self._apps.read_namespaced_deployment(name, namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return _plain(self._api, found)

    def _require(self, namespace: str, name: str, what: str) -> Obj:
        found = self._find(namespace, name)
        if found is None:
            raise _not_found(what, namespace, name)
        return found

    def _delete(self, deployment: Obj) -> None:
        """Delete the Deployment read (a precondition on its uid), its pods in the background; 404 is fine."""
        name, namespace = _name_and_namespace(deployment)
        options = client.V1DeleteOptions(
            propagation_policy="Background",
            preconditions=client.V1Preconditions(uid=deployment["metadata"]["uid"]),
        )
        try:
            self._apps.delete_namespaced_deployment(name, namespace, body=options)
        except ApiException as err:
            if err.status != 404:
                raise
            return
        activity.logger.info("deleted %s/%s", namespace, name)

    def _scale(self, deployment: Obj, replicas: int) -> None:
        if _desired(deployment) == replicas:
            return  # nothing to write; a no-op write would also leave it unchanged
        name, namespace = _name_and_namespace(deployment)
        self._apps.patch_namespaced_deployment_scale(name, namespace, {"spec": {"replicas": replicas}})
        activity.logger.info("scaled %s/%s from %d to %d", namespace, name, _desired(deployment), replicas)
        deployment["spec"]["replicas"] = replicas

    def _grow(self, deployment: Obj, replicas: int) -> None:
        if replicas > _desired(deployment):
            self._scale(deployment, replicas)

    def _shrink(self, deployment: Obj, replicas: int) -> None:
        if replicas < _desired(deployment):
            self._scale(deployment, replicas)

    def _require_serving(self, namespace: str, name: str, replicas: int, *, rolled_out: bool = False) -> None:
        """At least `replicas` ready pods of the current template; with `rolled_out`, also no pod of an older
        one left (during a rollout, `serving` may count an old pod's readiness for a new one's)."""
        state = _state(self._require(namespace, name, "deployment"))
        if state.serving < replicas:
            message = f"{state.serving} of the {replicas} ready replicas this step needs before traffic moves"
            raise _not_ready(message, namespace, name)
        if rolled_out and not state.rolled_out:
            message = (
                f"{state.current - state.updated} pod(s) of the old template left, {state.desired} wanted"
            )
            raise _not_ready(message, namespace, name)

    def _total(self, requested: int | None, router: str, stable: Obj | None, canary: Obj | None) -> int:
        if requested is not None:
            if requested < 0:
                raise _invalid(f"total_replicas must not be negative, not {requested}")
            return requested
        if canary is not None:
            recorded = (canary["metadata"].get("annotations") or {}).get(TOTAL_ANNOTATION, "")
            if recorded.isdigit():
                return int(recorded)
        extra = _desired(canary) if canary is not None and router == "replicas" else 0
        return _desired(stable) + extra

    def _record_total(self, canary: Obj, total: int) -> None:
        if (canary["metadata"].get("annotations") or {}).get(TOTAL_ANNOTATION) == str(total):
            return
        name, namespace = _name_and_namespace(canary)
        patch = {"metadata": {"annotations": {TOTAL_ANNOTATION: str(total)}}}
        self._apps.patch_namespaced_deployment(name, namespace, patch)  # metadata only: no new pods

    def _weights(self, request: _RouterInput, total: int, stable: Obj, canary: Obj | None) -> WeightState:
        namespace, router = request.namespace, request.router
        stable_state = _state(self._require(namespace, request.stable_deployment, "stable deployment"))
        found = self._find(namespace, request.canary_deployment) if canary is not None else None
        canary_state = _state(found) if found is not None else None
        canary_replicas = canary_state.desired if canary_state else 0
        if router == "replicas":
            replicas = stable_state.desired + canary_replicas
            canary_percent = 100.0 * canary_replicas / replicas if replicas else 0.0
            stable_percent = 100.0 - canary_percent if replicas else 0.0
        else:
            stable_weight, canary_weight = self._route(request, stable, canary).weights()
            weight_sum = stable_weight + canary_weight
            canary_percent = 100.0 * canary_weight / weight_sum if weight_sum else 0.0
            stable_percent = 100.0 * stable_weight / weight_sum if weight_sum else 0.0
        return WeightState(
            router=router,
            stable_percent=stable_percent,
            canary_percent=canary_percent,
            total_replicas=total,
            stable_replicas=stable_state.desired,
            canary_replicas=canary_replicas,
            stable_ready=stable_state.ready,
            canary_ready=canary_state.ready if canary_state else 0,
        )

    def _write_canary(self, request: EnsureCanaryInput, stable: Obj, existing: Obj | None) -> Obj:
        namespace, name = request.namespace, canary_name(request.stable_deployment)
        if existing is None:
            return self._create_canary(request, _canary_body(request, stable, None))
        _require_managed(existing)
        if existing["metadata"].get("deletionTimestamp"):
            raise _not_ready(f"the old canary {namespace}/{name} is still being deleted", namespace, name)
        desired = _canary_body(request, stable, existing)
        if existing["spec"].get("selector") != desired["spec"]["selector"]:
            # A new version: a Deployment's selector cannot change, so the old canary goes first.
            self._delete(existing)
            return self._create_canary(request, _canary_body(request, stable, None))
        if _owned(existing) == _owned(desired):
            return existing  # already as asked: no write, and the resourceVersion stays
        replaced = self._apps.replace_namespaced_deployment(name, namespace, _body(desired))
        activity.logger.info("updated canary %s/%s to %s", namespace, name, request.image)
        return _plain(self._api, replaced)

    def _create_canary(self, request: EnsureCanaryInput, body: Obj) -> Obj:
        created = self._apps.create_namespaced_deployment(request.namespace, _body(body))
        activity.logger.info(
            "created canary %s/%s at %s", request.namespace, body["metadata"]["name"], request.canary_version
        )
        return _plain(self._api, created)

    def _promote_stable(self, request: PromoteInput, stable: Obj | None, canary: Obj, total: int) -> Obj:
        """The stable at the new image and version with `total` replicas: as it is when a retry finds it so,
        else updated in place or re-created (see promote)."""
        namespace, name = request.namespace, request.stable_deployment
        if stable is not None and stable["metadata"].get("deletionTimestamp"):
            raise _not_ready("the old stable is still being deleted", namespace, name)
        if stable is not None and _runs(stable, request.version, request.image, request.container):
            self._scale(stable, total)
            return stable
        if stable is not None:
            selector = (stable["spec"].get("selector") or {}).get("matchLabels") or {}
            if selector.get(VERSION_LABEL, request.version) == request.version:  # the selector stays valid
                body = _updated_stable(request, stable, total)
                # The read's resourceVersion makes it a compare-and-swap: a 409 is retried from a fresh read.
                replaced = self._apps.replace_namespaced_deployment(name, namespace, _body(body))
                activity.logger.info("updated %s/%s in place to %s", namespace, name, request.version)
                return _plain(self._api, replaced)
            self._delete(stable)  # the canary keeps serving all the traffic meanwhile
        try:
            created = self._apps.create_namespaced_deployment(
                namespace, _body(_promoted_body(request, canary, stable, total))
            )
        except ApiException as err:
            if err.status != 409:
                raise
            raise _not_ready("the old stable is still being deleted", namespace, name) from err
        activity.logger.info("re-created %s/%s from the canary at %s", namespace, name, request.version)
        return _plain(self._api, created)

    def _route(self, request: _RouterInput, stable: Obj, canary: Obj | None) -> "_Route":
        return _Route(request, self._custom, self._core, stable, canary)


class _Route:
    """The router object of one service: an Istio VirtualService or a Gateway API HTTPRoute named after
    the service, whose first http route (rule) lcp weights between the stable and the canary. The rest of
    an existing one is left as it is."""

    def __init__(
        self,
        request: _RouterInput,
        custom: client.CustomObjectsApi,
        core: client.CoreV1Api,
        stable: Obj,
        canary: Obj | None,
    ) -> None:
        self.namespace = request.namespace
        self.service = request.service
        self.kind = ISTIO if request.router == "istio" else GATEWAY_API
        self._custom = custom
        self._core = core
        self._port_number: int | None = None
        # Istio routes to subsets named after the versions; the Gateway API to backends named like the
        # Deployments (one Service per version), as lab.cluster_view reads them.
        self.stable_key = request.stable_deployment
        self.canary_key: str | None = request.canary_deployment
        if request.router == "istio" and isinstance(request, PromoteInput):
            # Both Deployments run the one version now: its subset alone takes all the traffic.
            self.stable_key, self.canary_key = request.version, None
        elif request.router == "istio" and not isinstance(request, PromoteInput):
            self.stable_key = request.stable_version or _version(stable) or ""
            self.canary_key = request.canary_version or (_version(canary) if canary is not None else None)
            if not self.stable_key or (canary is not None and not self.canary_key):
                raise _invalid(
                    f"Istio subsets are versions: label the pod templates {VERSION_LABEL} or pass them"
                )

    def weights(self) -> tuple[float, float]:
        """(stable, canary) weights of the route as it stands; (0, 0) when there is none."""
        found = self._get()
        entries = self._entries(found) if found is not None else []
        weights = dict(self._weight(entry) for entry in entries)
        return weights.get(self.stable_key, 0.0), weights.get(self.canary_key or "", 0.0)

    def canary_percent(self) -> float:
        stable, canary = self.weights()
        return 100.0 * canary / (stable + canary) if stable + canary else 0.0

    def set(self, percent: int) -> None:
        for attempt in (1, 2):  # one more try, from a fresh read, after a conflict
            try:
                self._set(percent)
                return
            except ApiException as err:
                if err.status != 409 or attempt == 2:
                    raise
                activity.logger.info("%s/%s changed under us; reading it again", self.namespace, self.service)

    def _set(self, percent: int) -> None:
        group, version, plural = self.kind
        wanted = self._wanted(percent)
        found = self._get()
        if found is None:
            body = {
                "apiVersion": f"{group}/{version}",
                "kind": "VirtualService" if self.kind == ISTIO else "HTTPRoute",
                "metadata": {"name": self.service, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
                "spec": self._new_spec(wanted),
            }
            self._custom.create_namespaced_custom_object(group, version, self.namespace, plural, body)
        elif self._entries(found) != wanted:
            spec = copy.deepcopy(found.get("spec") or {})
            self._put_entries(spec, wanted)
            # The resourceVersion makes it a compare-and-swap: a change in between answers 409.
            patch = {"metadata": {"resourceVersion": found["metadata"]["resourceVersion"]}, "spec": spec}
            self._custom.patch_namespaced_custom_object(
                group, version, self.namespace, plural, self.service, patch
            )
        else:
            return  # already so: no write
        activity.logger.info("%s %s/%s: %d%% to the canary", plural, self.namespace, self.service, percent)

    def _get(self) -> Obj | None:
        group, version, plural = self.kind
        try:
            found = self._custom.get_namespaced_custom_object(
                group, version, self.namespace, plural, self.service
            )
        except ApiException as err:
            if err.status == 404 and _is_object_not_found(err):
                return None
            raise  # a 404 for the resource type: the router is not installed (TargetNotFound)
        if not isinstance(found, dict):
            raise TypeError(f"expected a {plural} object, got {type(found).__name__}")
        return found

    def _wanted(self, percent: int) -> list[Obj]:
        entries = [self._entry(self.stable_key, 100 - percent)]
        if self.canary_key:
            entries.append(self._entry(self.canary_key, percent))
        return entries

    def _entry(self, key: str, weight: int) -> Obj:
        if self.kind == ISTIO:
            return {"destination": {"host": self.service, "subset": key}, "weight": weight}
        return {"name": key, "port": self._port(), "weight": weight}

    def _weight(self, entry: Obj) -> tuple[str, float]:
        if self.kind == ISTIO:
            return (entry.get("destination") or {}).get("subset", ""), float(entry.get("weight", 0))
        return entry.get("name", ""), float(entry.get("weight", 1))

    def _entries(self, obj: Obj) -> list[Obj]:
        spec = obj.get("spec") or {}
        first = (spec.get("http") if self.kind == ISTIO else spec.get("rules")) or [{}]
        return list(first[0].get("route" if self.kind == ISTIO else "backendRefs") or [])

    def _put_entries(self, spec: Obj, entries: list[Obj]) -> None:
        field, entry_field = ("http", "route") if self.kind == ISTIO else ("rules", "backendRefs")
        if self.kind == ISTIO:
            spec.setdefault("hosts", [self.service])
        first = spec.get(field) or [{}]
        first[0][entry_field] = entries
        spec[field] = first

    def _new_spec(self, entries: list[Obj]) -> Obj:
        if self.kind == ISTIO:
            return {"hosts": [self.service], "http": [{"route": entries}]}
        # GAMMA (the Gateway API for service meshes): the route attaches to the service it splits.
        parent = {"group": "", "kind": "Service", "name": self.service}
        return {"parentRefs": [parent], "rules": [{"backendRefs": entries}]}

    def _port(self) -> int:
        """The service's first port: a backendRef to a Service must name one."""
        if self._port_number is None:
            service = self._core.read_namespaced_service(self.service, self.namespace)
            ports = service.spec.ports if service.spec else None
            self._port_number = int(ports[0].port) if ports else 80
        return self._port_number


# --- helpers -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def permanent_errors() -> Iterator[None]:
    """API answers that no retry can change become non-retryable ApplicationErrors; the rest raise as is."""
    try:
        yield
    except ApiException as err:
        message = _message(err)
        if err.status == 404:
            raise ApplicationError(message, type=TARGET_NOT_FOUND, non_retryable=True) from err
        if err.status in PERMANENT_STATUSES:
            raise ApplicationError(
                message, {"status": err.status}, type=INVALID_SPEC, non_retryable=True
            ) from err
        raise


def _message(err: ApiException) -> str:
    try:
        return str(json.loads(err.body or "")["message"])
    except (ValueError, KeyError, TypeError):
        return f"{err.status} {err.reason}"


def _is_object_not_found(err: ApiException) -> bool:
    """A 404 for a missing object, as against one for a resource type the cluster does not serve."""
    try:
        return bool((json.loads(err.body or "").get("details") or {}).get("name"))
    except (ValueError, AttributeError):
        return False


def _not_found(what: str, namespace: str, name: str) -> ApplicationError:
    return ApplicationError(
        f"{what} {namespace}/{name} not found",
        {"namespace": namespace, "name": name},
        type=TARGET_NOT_FOUND,
        non_retryable=True,
    )


def _require_managed(deployment: Obj) -> None:
    """lcp writes over (and deletes) only the canaries it made."""
    if (deployment["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
        name, namespace = _name_and_namespace(deployment)
        raise _invalid(f"deployment {namespace}/{name} exists and is not managed by lcp: not touching it")


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type=INVALID_SPEC, non_retryable=True)


def _not_ready(message: str, namespace: str, name: str) -> ApplicationError:
    """Not yet: a retryable error that Temporal logs and counts as benign, not as a failure."""
    return ApplicationError(
        f"{namespace}/{name}: {message}; try again",
        {"namespace": namespace, "name": name},
        type=NOT_READY,
        category=ApplicationErrorCategory.BENIGN,
    )


def _plain(api: client.ApiClient, model: Any) -> Obj:
    """A kubernetes model as the API's JSON (camelCase keys): what lcp reads, compares and writes."""
    plain: Obj = api.sanitize_for_serialization(model)
    return plain


def _body(obj: Obj) -> Any:
    """The API's JSON as a request body: the client takes it in place of any model."""
    return obj


def _check_router(router: str) -> None:
    if router not in ROUTERS:
        raise _invalid(f"router must be one of {', '.join(ROUTERS)}, not {router!r}")


def _name_and_namespace(obj: Obj) -> tuple[str, str]:
    return obj["metadata"]["name"], obj["metadata"]["namespace"]


def _desired(obj: Obj | None) -> int:
    return int(((obj or {}).get("spec") or {}).get("replicas", 0) or 0)


def _version(obj: Obj) -> str | None:
    template_labels = ((obj["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
    return template_labels.get(VERSION_LABEL) or (obj["metadata"].get("labels") or {}).get(VERSION_LABEL)


def _state(obj: Obj) -> DeploymentState:
    meta, status = obj["metadata"], obj.get("status") or {}
    containers = ((obj["spec"].get("template") or {}).get("spec") or {}).get("containers") or [{}]
    return DeploymentState(
        namespace=meta["namespace"],
        name=meta["name"],
        desired=_desired(obj),
        current=status.get("replicas") or 0,
        updated=status.get("updatedReplicas") or 0,
        ready=status.get("readyReplicas") or 0,
        available=status.get("availableReplicas") or 0,
        image=containers[0].get("image") or "",
        version=_version(obj),
        generation=meta.get("generation") or 0,
        observed_generation=status.get("observedGeneration") or 0,
        resource_version=meta.get("resourceVersion") or "",
    )


def _canary_body(request: EnsureCanaryInput, stable: Obj, existing: Obj | None) -> Obj:
    """The canary as lcp wants it: the stable's spec with the new image and version, lcp's labels. An
    existing canary of the same version keeps its replicas, its recorded total and whatever else others
    put on it."""
    version = request.canary_version
    spec = copy.deepcopy(stable["spec"])
    _set_version(spec, version, request.image, request.container, "the stable deployment", selector=True)
    selector = spec["selector"]
    labels = {
        **(stable["metadata"].get("labels") or {}),
        VERSION_LABEL: version,
        MANAGED_BY_LABEL: MANAGED_BY,
        CANARY_OF_LABEL: request.stable_deployment,
    }
    if existing is None or existing["spec"].get("selector") != selector:
        spec["replicas"] = request.replicas
        metadata = {
            "name": canary_name(request.stable_deployment),
            "namespace": request.namespace,
            "labels": labels,
            "annotations": {TOTAL_ANNOTATION: str(_desired(stable))},
        }
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec}
    body = copy.deepcopy(existing)
    body.pop("status", None)
    spec["replicas"] = _desired(existing)
    body["spec"] = spec
    meta = body["metadata"]
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    meta["annotations"] = {TOTAL_ANNOTATION: str(_desired(stable)), **(meta.get("annotations") or {})}
    return body


def _owned(obj: Obj) -> tuple[Any, ...]:
    """What ensure_canary sets on the canary: whether two versions of it differ in that."""
    meta = obj["metadata"]
    return (meta.get("labels"), meta.get("annotations"), obj["spec"])


def _container(template: Obj, name: str | None) -> Obj | None:
    """The pod template's container called `name`; None: the first one."""
    containers = (template.get("spec") or {}).get("containers") or []
    return next((c for c in containers if name in (None, c.get("name"))), None)


def _set_version(
    spec: Obj, version: str, image: str, container: str | None, what: str, *, selector: bool
) -> None:
    """A Deployment spec at `version` (its pod template's label, and its selector's with `selector`) with
    `image` on the chosen container."""
    if selector:
        found = spec.setdefault("selector", {})
        found["matchLabels"] = {**(found.get("matchLabels") or {}), VERSION_LABEL: version}
    template = spec.setdefault("template", {})
    template_meta = template.setdefault("metadata", {})
    template_meta["labels"] = {**(template_meta.get("labels") or {}), VERSION_LABEL: version}
    chosen = _container(template, container)
    if chosen is None:
        raise _invalid(f"{what} has no container {container!r} for {image}")
    chosen["image"] = image


def _runs(deployment: Obj, version: str, image: str, container: str | None) -> bool:
    """Whether the Deployment's pod template is at `version` with `image` (what promote makes of it)."""
    template = deployment["spec"].get("template") or {}
    chosen = _container(template, container)
    labels = (template.get("metadata") or {}).get("labels") or {}
    return labels.get(VERSION_LABEL) == version and chosen is not None and chosen.get("image") == image


def _relabelled(labels: dict[str, str] | None, version: str) -> dict[str, str]:
    """Metadata labels with their version label, if they have one, at `version`."""
    labels = dict(labels or {})
    if VERSION_LABEL in labels:
        labels[VERSION_LABEL] = version
    return labels


def _updated_stable(request: PromoteInput, stable: Obj, total: int) -> Obj:
    """The stable promoted in place: its selector as it is, its template and labels at the new version."""
    body = copy.deepcopy(stable)
    body.pop("status", None)
    body["spec"]["replicas"] = total
    _set_version(
        body["spec"],
        request.version,
        request.image,
        request.container,
        "the stable deployment",
        selector=False,
    )
    body["metadata"]["labels"] = _relabelled(body["metadata"].get("labels"), request.version)
    return body


def _promoted_body(request: PromoteInput, canary: Obj, stable: Obj | None, total: int) -> Obj:
    """The stable re-created from the canary's spec (selector and template at the new version) with `total`
    replicas, under the stable's name, labels and annotations (the canary's with the stable gone) less
    lcp's canary markers."""
    spec = copy.deepcopy(canary["spec"])
    spec["replicas"] = total
    _set_version(spec, request.version, request.image, request.container, "the canary", selector=True)
    source = (stable or canary)["metadata"]
    labels = {
        key: value
        for key, value in _relabelled(source.get("labels"), request.version).items()
        if key != CANARY_OF_LABEL and (key, value) != (MANAGED_BY_LABEL, MANAGED_BY)
    }
    annotations = {k: v for k, v in (source.get("annotations") or {}).items() if k != TOTAL_ANNOTATION}
    metadata = {
        "name": request.stable_deployment,
        "namespace": request.namespace,
        "labels": labels,
        "annotations": annotations,
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec}
