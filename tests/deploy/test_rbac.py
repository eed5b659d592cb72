"""The ops worker's ClusterRole grants exactly the Kubernetes calls its activities make: a table of those
calls, checked three ways — against the client methods the activities' source calls, against the requests
the lab's API server receives while every activity runs every path, and against the Role's rules."""

import ast
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp.web
import pytest
from kubernetes import client, config

import activities.argo as argo_activities
import activities.kubernetes as kubernetes_activities
import activities.litmus as litmus_activities
from activities.argo import ArgoActivities
from activities.contracts.argo import StopWorkflowInput, SubmitScenarioInput
from activities.contracts.kubernetes import (
    DeploymentRef,
    EnsureCanaryInput,
    PromoteInput,
    RollbackInput,
    ScaleDeploymentInput,
    SetWeightInput,
)
from activities.contracts.litmus import CreateEngineInput, ResultRef, TargetRef
from activities.kubernetes import KubernetesActivities
from activities.litmus import LitmusActivities
from chaos.experiments import load_experiments, render_engine
from chaos.scenarios import load_scenarios
from lab.controllers import ControllerManager, default_controllers
from lab.kube import KINDS, LabEmulator, LabKubernetes
from lab.server import DEMO_NAMESPACE as NS
from lab.server import DEMO_SERVICE as SVC
from lab.server import demo_objects
from tests.deploy.render import OVERLAYS, REPO, render
from tests.http_server import free_port
from tests.waiting import settle

Call = tuple[str, str, str]  # (verb, API group, resource[/subresource])

# Every call the ops worker makes, with where it makes it. The Role must grant exactly these.
CALLS: dict[Call, str] = {
    ("get", "apps", "deployments"): "every KubernetesActivities activity reads its Deployments",
    ("create", "apps", "deployments"): "ensure_canary creates the canary; promote re-creates the stable",
    ("update", "apps", "deployments"): "ensure_canary updates the canary; promote updates the stable",
    ("patch", "apps", "deployments"): "set_weight/promote record the total replicas (an annotation)",
    ("delete", "apps", "deployments"): "ensure_canary (a new version) and promote delete a Deployment",
    ("patch", "apps", "deployments/scale"): "scale_deployment, set_weight, rollback, promote",
    ("get", "", "services"): "set_weight with the Gateway API router reads the service's port",
    ("list", "", "pods"): "litmus.target_state counts the target's ready pods",
    ("get", "networking.istio.io", "virtualservices"): "the Istio router reads the route",
    ("create", "networking.istio.io", "virtualservices"): "... creates it",
    ("patch", "networking.istio.io", "virtualservices"): "... and weights it",
    ("get", "gateway.networking.k8s.io", "httproutes"): "the Gateway API router reads the route",
    ("create", "gateway.networking.k8s.io", "httproutes"): "... creates it",
    ("patch", "gateway.networking.k8s.io", "httproutes"): "... and weights it",
    ("create", "litmuschaos.io", "chaosengines"): "litmus.create_engine",
    ("patch", "litmuschaos.io", "chaosengines"): "litmus.stop_engine (engineState: stop)",
    ("delete", "litmuschaos.io", "chaosengines"): "litmus.delete_engine",
    ("get", "litmuschaos.io", "chaosresults"): "litmus.read_result",
    ("create", "argoproj.io", "workflows"): "argo.submit_scenario",
    ("get", "argoproj.io", "workflows"): "argo.read_workflow",
    ("patch", "argoproj.io", "workflows"): "argo.stop_workflow (spec.shutdown)",
    ("delete", "argoproj.io", "workflows"): "argo.delete_workflow",
}

# The typed client's methods the activities may call: (verb, group, resource). Custom objects' methods
# carry only the verb; their group and resource are the activities' constants (ROUTED below).
TYPED: dict[str, Call] = {
    "read_namespaced_deployment": ("get", "apps", "deployments"),
    "create_namespaced_deployment": ("create", "apps", "deployments"),
    "replace_namespaced_deployment": ("update", "apps", "deployments"),
    "patch_namespaced_deployment": ("patch", "apps", "deployments"),
    "delete_namespaced_deployment": ("delete", "apps", "deployments"),
    "patch_namespaced_deployment_scale": ("patch", "apps", "deployments/scale"),
    "read_namespaced_service": ("get", "", "services"),
    "list_namespaced_pod": ("list", "", "pods"),
}
CUSTOM_VERBS = {
    "get_namespaced_custom_object": "get",
    "create_namespaced_custom_object": "create",
    "patch_namespaced_custom_object": "patch",
    "delete_namespaced_custom_object": "delete",
}
CUSTOM_RESOURCES = {
    kubernetes_activities: [
        (kubernetes_activities.ISTIO[0], kubernetes_activities.ISTIO[2]),
        (kubernetes_activities.GATEWAY_API[0], kubernetes_activities.GATEWAY_API[2]),
    ],
    litmus_activities: [
        (litmus_activities.LITMUS[0], litmus_activities.ENGINES),
        (litmus_activities.LITMUS[0], litmus_activities.RESULTS),
    ],
    argo_activities: [(argo_activities.ARGO[0], argo_activities.WORKFLOWS)],
}


def role_grants() -> set[Call]:
    """Every (verb, group, resource) the lcp-ops ClusterRole grants, in both overlays (they must agree)."""
    found: list[set[Call]] = []
    for overlay in OVERLAYS:
        (role,) = [
            o for o in render(overlay) if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "lcp-ops"
        ]
        grants = set()
        for rule in role["rules"]:
            assert set(rule) == {"apiGroups", "resources", "verbs"}, f"{overlay}: no resourceNames, no URLs"
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert "*" not in (group, resource, verb), f"{overlay}: a wildcard grants too much"
                        grants.add((verb, group, resource))
        found.append(grants)
    assert all(grants == found[0] for grants in found)
    return found[0]


def test_the_role_grants_exactly_the_listed_calls() -> None:
    grants = role_grants()
    assert grants - set(CALLS) == set(), "the Role grants calls the ops worker never makes"
    assert set(CALLS) - grants == set(), "the ops worker makes calls the Role does not grant"


def test_the_role_is_bound_only_to_the_ops_worker_outside_lcps_namespace() -> None:
    for overlay in OVERLAYS:
        objs = render(overlay)
        bindings = [o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
        assert bindings and all(b["kind"] == "RoleBinding" for b in bindings), "no cluster-wide grant"
        allowed = {
            o["data"]["LCP_CHAOS__ALLOWED_NAMESPACES"]
            for o in objs
            if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("lcp-settings-")
        }
        for binding in bindings:
            assert binding["roleRef"] == {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "lcp-ops",
            }
            assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "lcp-ops", "namespace": "lcp"}]
            assert binding["metadata"]["namespace"] != "lcp"
            assert f'"{binding["metadata"]["namespace"]}"' in allowed.pop(), overlay


def _client_calls(module: Any) -> set[Call]:
    """The calls `module`'s source makes through the typed and custom-object clients."""
    tree = ast.parse(Path(module.__file__).read_text())
    found: set[Call] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        if not (isinstance(owner, ast.Attribute) and owner.attr in ("_apps", "_core", "_custom")):
            continue
        method = node.func.attr
        if method in TYPED:
            found.add(TYPED[method])
        elif method in CUSTOM_VERBS:
            # Which of the module's resources a custom-object call names is decided at run time (the
            # router, engine or result): the lab's record below checks that; here the verb must be
            # listed for at least one of them.
            verb = CUSTOM_VERBS[method]
            listed = {(verb, g, r) for g, r in CUSTOM_RESOURCES[module]} & set(CALLS)
            assert listed, f"{module.__name__} calls {method} on none of the resources CALLS lists"
            found |= listed
        else:
            pytest.fail(
                f"{module.__name__} calls {owner.attr}.{method}: add it to TYPED (or CUSTOM_VERBS), to CALLS "
                "and to the lcp-ops ClusterRole (deploy/base/rbac.yaml)"
            )
    return found


def test_every_client_call_in_the_activities_source_is_listed() -> None:
    calls = _client_calls(kubernetes_activities) | _client_calls(litmus_activities)
    calls |= _client_calls(argo_activities)
    assert calls == set(CALLS)


# --- the calls the lab's API server receives ------------------------------------------------------------


class RecordingEmulator(LabEmulator):
    """The lab's API server, keeping each request's (method, path, query) as it arrives."""

    def __init__(self) -> None:
        super().__init__(KINDS)
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        self.requests.append((raw_request.method, raw_request.path, dict(raw_request.query)))
        return await super().__call__(raw_request)


def as_call(method: str, path: str, query: dict[str, str]) -> Call | None:
    """A request as RBAC sees it (verb, group, resource[/subresource]); None for discovery."""
    parts = [part for part in path.split("/") if part]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if not rest:
        return None
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]  # a namespaced resource; a bare /namespaces[/name] is the namespaces resource
    resource, name, subresource = (
        rest[0],
        rest[1] if len(rest) > 1 else None,
        rest[2] if len(rest) > 2 else None,
    )
    if method == "GET":
        verb = "get" if name else "watch" if query.get("watch") in ("1", "true") else "list"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method) or (
            "delete" if name else "deletecollection"
        )
    return verb, group, f"{resource}/{subresource}" if subresource else resource


def test_requests_map_to_rbac_verbs_as_the_api_server_maps_them() -> None:
    assert as_call("GET", "/apis/apps/v1/namespaces/lab/deployments/web", {}) == (
        "get",
        "apps",
        "deployments",
    )
    assert as_call("GET", "/api/v1/namespaces/lab/pods", {}) == ("list", "", "pods")
    assert as_call("GET", "/api/v1/namespaces/lab/pods", {"watch": "true"}) == ("watch", "", "pods")
    assert as_call("PATCH", "/apis/apps/v1/namespaces/lab/deployments/web/scale", {}) == (
        "patch",
        "apps",
        "deployments/scale",
    )
    assert as_call("PUT", "/apis/apps/v1/namespaces/lab/deployments/web", {})[0] == "update"  # type: ignore[index]
    assert as_call("DELETE", "/api/v1/namespaces/lab/pods", {}) == ("deletecollection", "", "pods")
    assert as_call("GET", "/api/v1/namespaces/lab", {}) == ("get", "", "namespaces")
    assert as_call("GET", "/apis", {}) is None and as_call("GET", "/version", {}) is None


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[tuple[RecordingEmulator, client.ApiClient]]:
    kube = LabKubernetes()
    kube.api = recording = RecordingEmulator()
    await kube.start("127.0.0.1", free_port())
    controllers = ControllerManager(default_controllers(kube, pod_startup_delay=0.05, interval=0.05))
    await controllers.start()
    for kind, body in zip(
        ("v1/namespaces", "v1/services", "apps/v1/deployments"), demo_objects(), strict=True
    ):
        kube.api.create_object(kind, body)
    api = config.new_client_from_config(config_file=str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
    try:
        yield recording, api
    finally:
        api.close()
        await controllers.stop()
        await kube.stop()


async def test_every_call_the_activities_make_is_granted_and_every_grant_is_used(
    lab: tuple[RecordingEmulator, client.ApiClient],
) -> None:
    """Every activity the ops worker registers (workers/main.py), down each of its code paths that talks
    to the API: every router, a new canary version, an update in place, a promotion, Litmus' lifecycle, a
    scenario's Argo Workflow."""
    recording, api = lab
    kube, litmus = KubernetesActivities(api), LitmusActivities(api)
    canary = f"{SVC}-canary"
    await settle(kube.read_deployment, DeploymentRef(NS, SVC))
    await settle(kube.scale_deployment, ScaleDeploymentInput(NS, SVC, 4))
    await settle(kube.ensure_canary, EnsureCanaryInput(NS, SVC, SVC, "v2", "lab.local/chat-api:v2"))
    await settle(kube.ensure_canary, EnsureCanaryInput(NS, SVC, SVC, "v2", "lab.local/chat-api:v2.1"))
    await settle(kube.ensure_canary, EnsureCanaryInput(NS, SVC, SVC, "v3", "lab.local/chat-api:v3"))
    await settle(kube.set_weight, SetWeightInput(NS, SVC, SVC, canary, 50, total_replicas=6))
    await settle(kube.rollback, RollbackInput(NS, SVC, SVC, canary))
    for router in ("istio", "gateway-api"):
        for percent in (20, 40):
            await settle(kube.set_weight, SetWeightInput(NS, SVC, SVC, canary, percent, router=router))
        await settle(kube.rollback, RollbackInput(NS, SVC, SVC, canary, router=router))
    await settle(kube.set_weight, SetWeightInput(NS, SVC, SVC, canary, 100))
    await settle(kube.promote, PromoteInput(NS, SVC, SVC, canary, "lab.local/chat-api:v3", "v3"))

    (experiment, *_) = load_experiments(REPO / "chaos" / "catalogue.yaml")
    engine = render_engine(experiment, "rbac")
    ref = await settle(litmus.create_engine, CreateEngineInput(engine))
    await settle(litmus.read_result, ResultRef(ref.namespace, f"{ref.name}-{experiment.fault.kind}"))
    await settle(litmus.target_state, TargetRef(NS, experiment.target.app_label))
    await settle(litmus.stop_engine, ref)
    await settle(litmus.delete_engine, ref)

    argo = ArgoActivities(api)
    (scenario, *_) = load_scenarios(REPO / "chaos" / "scenarios.yaml")
    workflow = await settle(argo.submit_scenario, SubmitScenarioInput(scenario, "rbac"))
    await settle(argo.read_workflow, workflow)
    await settle(argo.stop_workflow, StopWorkflowInput(workflow))
    await settle(argo.delete_workflow, workflow)

    made = {call for request in recording.requests if (call := as_call(*request)) is not None}
    assert made - role_grants() == set(), "calls the Role does not grant (they would be 403 in a cluster)"
    assert made == set(CALLS), "the table lists calls no code path made, or misses one"
