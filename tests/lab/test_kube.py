"""The lab's simulated Kubernetes cluster via the official client: Deployments live, objects round-trip."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import pytest
import yaml
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from lab.controllers import ControllerManager, default_controllers
from lab.kube import SIMULATED_LABEL, LabKubernetes
from tests.http_server import free_port
from tests.waiting import eventually

STARTUP_DELAY = 0.3  # seconds for a lab pod to become ready
T = TypeVar("T")


class HasMetadata(Protocol):
    """A Kubernetes object of the official client, whose types leave its metadata optional."""

    @property
    def metadata(self) -> client.V1ObjectMeta | None: ...


def metadata_of(obj: HasMetadata) -> client.V1ObjectMeta:
    """An object's metadata, which the API server always fills in."""
    assert obj.metadata is not None
    return obj.metadata


def name_of(obj: HasMetadata) -> str:
    name = metadata_of(obj).name
    assert name is not None
    return name


def labels_of(obj: HasMetadata) -> dict[str, str]:
    return metadata_of(obj).labels or {}


class HasPodSpec(Protocol):
    """A pod or a pod template of the official client."""

    @property
    def spec(self) -> client.V1PodSpec | None: ...


def pod_spec_of(obj: HasPodSpec) -> client.V1PodSpec:
    """A pod's or a pod template's spec, which the API server always fills in."""
    assert obj.spec is not None
    return obj.spec


@pytest.fixture(scope="module")
async def kube() -> AsyncIterator[LabKubernetes]:
    kube = LabKubernetes()
    await kube.start("127.0.0.1", free_port())
    controllers = ControllerManager(default_controllers(kube, pod_startup_delay=STARTUP_DELAY))
    await controllers.start()
    yield kube
    await controllers.stop()
    await kube.stop()


@pytest.fixture
def kubeconfig(kube: LabKubernetes, tmp_path: Path) -> Path:
    return kube.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def api(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture
async def namespace(api: client.ApiClient) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    body = client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
    await asyncio.to_thread(client.CoreV1Api(api).create_namespace, body)
    return name


def deployment(
    name: str, replicas: int, image: str = "lcp/chat:1", labels: dict[str, str] | None = None
) -> Any:
    return {
        "metadata": {"name": name, "labels": {"app": name, **(labels or {})}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}]},
            },
        },
    }


def pods_of(api: client.ApiClient, namespace: str, app: str) -> list[client.V1Pod]:
    return list(client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app={app}").items)


def ready(pod: client.V1Pod) -> bool:
    assert pod.status is not None
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


async def until_ready(api: client.ApiClient, namespace: str, name: str, replicas: int) -> Any:
    """The Deployment, once it has exactly `replicas` pods and all of them are ready."""
    apps = client.AppsV1Api(api)
    return await eventually(
        lambda: asyncio.to_thread(apps.read_namespaced_deployment, name, namespace),
        until=lambda d: (d.status.ready_replicas or 0) == replicas == (d.status.replicas or 0),
        what=f"{name} to have {replicas} ready replicas",
    )


async def create_ready_deployment(api: client.ApiClient, namespace: str, name: str, replicas: int) -> Any:
    await asyncio.to_thread(
        client.AppsV1Api(api).create_namespaced_deployment, namespace, deployment(name, replicas)
    )
    return await until_ready(api, namespace, name, replicas)


def readiness_since(
    api: client.ApiClient, namespace: str, name: str, version: str, done: Callable[[Any], bool]
) -> list[int]:
    """readyReplicas of each change to a Deployment after `version`, until `done(deployment)`."""
    seen: list[int] = []
    stream = watch.Watch()
    apps = client.AppsV1Api(api)
    for event in stream.stream(
        apps.list_namespaced_deployment,
        namespace,
        field_selector=f"metadata.name={name}",
        resource_version=version,
        timeout_seconds=20,
    ):
        seen.append(event["object"].status.ready_replicas or 0)
        if done(event["object"]):
            stream.stop()
    return seen


async def test_kubeconfig_points_the_official_client_at_a_simulated_cluster(
    kube: LabKubernetes, kubeconfig: Path, api: client.ApiClient
) -> None:
    written = yaml.safe_load(await asyncio.to_thread(kubeconfig.read_text))
    assert written["current-context"] == "lcp-lab"
    assert written["clusters"][0]["cluster"] == {"server": kube.url}
    assert kube.url.startswith("http://127.0.0.1:")
    assert written["users"][0]["user"]["token"]

    version = await asyncio.to_thread(client.VersionApi(api).get_code)
    assert "simulated" in version.git_version
    groups = await asyncio.to_thread(client.ApisApi(api).get_api_versions)
    assert {"apps", "argoproj.io", "networking.istio.io", "gateway.networking.k8s.io", "litmuschaos.io"} <= {
        g.name for g in groups.groups
    }
    apps = await asyncio.to_thread(client.AppsV1Api(api).get_api_resources)
    kinds = {r.name: r.kind for r in apps.resources}
    assert kinds["deployments"] == "Deployment" and kinds["deployments/scale"] == "Scale"
    core = await asyncio.to_thread(client.CoreV1Api(api).get_api_resources)
    namespaced = {r.name: r.namespaced for r in core.resources}
    assert namespaced["namespaces"] is False and namespaced["pods"] is True

    dynamic = await asyncio.to_thread(DynamicClient, api)
    rollouts = await asyncio.to_thread(
        dynamic.resources.get, api_version="argoproj.io/v1alpha1", kind="Rollout"
    )
    assert rollouts.namespaced and set(rollouts.subresources) == {"status", "scale"}
    namespaces = await asyncio.to_thread(client.CoreV1Api(api).list_namespace)
    assert {"default", "kube-system"} <= {name_of(n) for n in namespaces.items}


async def test_deployment_pods_become_ready_and_follow_the_scale_subresource(
    api: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(api)
    created = await asyncio.to_thread(apps.create_namespaced_deployment, namespace, deployment("web", 3))
    created_meta = metadata_of(created)
    assert created_meta.generation == 1 and created_meta.uid and created_meta.resource_version

    pods = await eventually(
        lambda: asyncio.to_thread(pods_of, api, namespace, "web"),
        until=lambda p: len(p) == 3,
        what="three pods to appear",
    )
    for pod in pods:
        assert name_of(pod).startswith("web-")
        assert labels_of(pod)[SIMULATED_LABEL] == "true" and labels_of(pod)["pod-template-hash"]
        (owner,) = metadata_of(pod).owner_references or []
        assert (owner.kind, owner.name, owner.uid, owner.controller) == (
            "Deployment",
            "web",
            created_meta.uid,
            True,
        )
    status = (await until_ready(api, namespace, "web", 3)).status
    assert status.available_replicas == status.updated_replicas == status.replicas == 3
    assert status.observed_generation == 1
    assert {c.type: c.status for c in status.conditions} == {"Available": "True", "Progressing": "True"}
    pods = await asyncio.to_thread(pods_of, api, namespace, "web")
    assert all(ready(p) and p.status is not None and p.status.phase == "Running" for p in pods)

    scale = await asyncio.to_thread(
        apps.patch_namespaced_deployment_scale, "web", namespace, {"spec": {"replicas": 5}}
    )
    assert scale.kind == "Scale" and scale.spec is not None and scale.spec.replicas == 5
    await until_ready(api, namespace, "web", 5)
    assert len(await asyncio.to_thread(pods_of, api, namespace, "web")) == 5

    await asyncio.to_thread(
        apps.patch_namespaced_deployment_scale, "web", namespace, {"spec": {"replicas": 1}}
    )
    await eventually(
        lambda: asyncio.to_thread(pods_of, api, namespace, "web"),
        until=lambda p: len(p) == 1,
        what="the Deployment to scale down to one pod",
    )
    scale = await eventually(
        lambda: asyncio.to_thread(apps.read_namespaced_deployment_scale, "web", namespace),
        until=lambda s: s.status is not None and s.status.replicas == 1,
        what="the scale status to follow",
    )
    assert scale.spec is not None and scale.status is not None
    assert scale.spec.replicas == 1 and scale.status.selector == "app=web"
    assert (await asyncio.to_thread(apps.read_namespaced_deployment, "web", namespace)).spec.replicas == 1


async def test_a_deleted_pod_is_replaced_and_readiness_dips_and_recovers(
    api: client.ApiClient, namespace: str
) -> None:
    ready_deployment = await create_ready_deployment(api, namespace, "chat", 3)
    victim = name_of((await asyncio.to_thread(pods_of, api, namespace, "chat"))[0])

    await asyncio.to_thread(client.CoreV1Api(api).delete_namespaced_pod, victim, namespace)
    # The watch resumes from the version read before the delete, so it sees every change since.
    seen = await asyncio.to_thread(
        readiness_since,
        api,
        namespace,
        "chat",
        ready_deployment.metadata.resource_version,
        lambda d: (d.status.ready_replicas or 0) == 3,
    )
    assert min(seen) == 2 and seen[-1] == 3, seen
    pods = await asyncio.to_thread(pods_of, api, namespace, "chat")
    assert len(pods) == 3 and victim not in {name_of(p) for p in pods} and all(map(ready, pods))


async def test_a_new_image_rolls_the_pods_without_losing_readiness(
    api: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(api)
    await create_ready_deployment(api, namespace, "api", 3)
    before = {name_of(p) for p in await asyncio.to_thread(pods_of, api, namespace, "api")}

    new_image = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "lcp/chat:2"}]}}}}
    patched = await asyncio.to_thread(apps.patch_namespaced_deployment, "api", namespace, new_image)
    (container,) = pod_spec_of(patched.spec.template).containers
    assert container.image == "lcp/chat:2"
    # a strategic merge keeps the container's other fields
    assert container.ports and container.ports[0].container_port == 8080
    patched_meta = metadata_of(patched)
    assert patched_meta.generation == 2 and patched_meta.resource_version is not None

    def rolled(d: client.V1Deployment) -> bool:
        s = d.status
        assert s is not None
        return s.observed_generation == 2 and s.updated_replicas == s.replicas == (s.ready_replicas or 0) == 3

    seen = await asyncio.to_thread(
        readiness_since, api, namespace, "api", patched_meta.resource_version, rolled
    )
    assert min(seen) == 3, seen  # the surge keeps every old pod until a new one is ready
    pods = await asyncio.to_thread(pods_of, api, namespace, "api")
    assert len(pods) == 3 and not before & {name_of(p) for p in pods}
    assert {pod_spec_of(p).containers[0].image for p in pods} == {"lcp/chat:2"} and all(map(ready, pods))
    assert len({labels_of(p)["pod-template-hash"] for p in pods}) == 1


async def test_deployments_list_by_label_and_field_selectors(api: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(api)
    for name, labels in [
        ("stable", {"tier": "web", "track": "stable", "suite": namespace}),
        ("canary", {"tier": "web", "track": "canary", "suite": namespace}),
        ("db", {"tier": "db", "suite": namespace}),
    ]:
        await asyncio.to_thread(
            apps.create_namespaced_deployment, namespace, deployment(name, 0, labels=labels)
        )

    async def names(selector: str, fields: str = "") -> set[str]:
        found = await asyncio.to_thread(
            apps.list_namespaced_deployment, namespace, label_selector=selector, field_selector=fields
        )
        return {name_of(d) for d in found.items}

    assert await names("tier=web") == {"stable", "canary"}
    assert await names("tier=web,track!=canary") == {"stable"}
    assert await names("tier in (db, cache)") == {"db"}
    assert await names("track") == {"stable", "canary"}
    assert await names("!track") == {"db"}
    assert await names("tier notin (web)") == {"db"}
    assert await names("", "metadata.name=canary") == {"canary"}
    everywhere = await asyncio.to_thread(
        apps.list_deployment_for_all_namespaces, label_selector=f"suite={namespace}"
    )
    assert len(everywhere.items) == 3
    with pytest.raises(ApiException) as bad:
        await names("tier in (web")
    assert bad.value.status == 400


CUSTOM_RESOURCES = [
    pytest.param(
        "argoproj.io",
        "v1alpha1",
        "rollouts",
        "Rollout",
        {"replicas": 2, "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}},
        {"phase": "Paused", "currentStepIndex": 1},
        id="rollout",
    ),
    pytest.param(
        "argoproj.io",
        "v1alpha1",
        "analysisruns",
        "AnalysisRun",
        {"metrics": [{"name": "error-rate", "provider": {"prometheus": {"query": "up"}}}]},
        {"phase": "Successful"},
        id="analysisrun",
    ),
    pytest.param(
        "networking.istio.io",
        "v1beta1",
        "virtualservices",
        "VirtualService",
        {
            "hosts": ["chat"],
            "http": [
                {
                    "route": [
                        {"destination": {"host": "chat", "subset": "stable"}, "weight": 80},
                        {"destination": {"host": "chat", "subset": "canary"}, "weight": 20},
                    ]
                }
            ],
        },
        {"conditions": [{"type": "Reconciled", "status": "True"}]},
        id="virtualservice",
    ),
    pytest.param(
        "gateway.networking.k8s.io",
        "v1",
        "httproutes",
        "HTTPRoute",
        {
            "parentRefs": [{"name": "gateway"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "chat-stable", "port": 80, "weight": 80},
                        {"name": "chat-canary", "port": 80},
                    ]
                }
            ],
        },
        {"parents": [{"parentRef": {"name": "gateway"}, "controllerName": "lab", "conditions": []}]},
        id="httproute",
    ),
    pytest.param(
        "litmuschaos.io",
        "v1alpha1",
        "chaosengines",
        "ChaosEngine",
        {
            "engineState": "active",
            "appinfo": {"appns": "default", "applabel": "app=chat", "appkind": "deployment"},
            "experiments": [{"name": "pod-delete"}],
        },
        {"engineStatus": "completed"},
        id="chaosengine",
    ),
    pytest.param(
        "litmuschaos.io",
        "v1alpha1",
        "chaosresults",
        "ChaosResult",
        {"engine": "chat-chaos", "experiment": "pod-delete"},
        {"experimentStatus": {"phase": "Completed", "verdict": "Pass"}},
        id="chaosresult",
    ),
]


@pytest.mark.parametrize(("group", "version", "plural", "kind", "spec", "status"), CUSTOM_RESOURCES)
async def test_custom_objects_round_trip(
    api: client.ApiClient,
    namespace: str,
    group: str,
    version: str,
    plural: str,
    kind: str,
    spec: dict[str, Any],
    status: dict[str, Any],
) -> None:
    custom = client.CustomObjectsApi(api)
    where = (group, version, namespace, plural)

    def call(method: Callable[..., T], *args: Any, **kwargs: Any) -> Any:
        return asyncio.to_thread(method, *where, *args, **kwargs)

    body = {
        "apiVersion": f"{group}/{version}",
        "kind": kind,
        "metadata": {"name": "one", "labels": {"suite": "crd"}},
        "spec": spec,
        "status": {"ignored": "on create"},
    }
    created = await call(custom.create_namespaced_custom_object, body)
    assert created["spec"] == spec and "status" not in created  # status is written through its subresource
    assert created["metadata"]["generation"] == 1 and created["metadata"]["namespace"] == namespace
    await call(custom.create_namespaced_custom_object, {**body, "metadata": {"name": "two"}})

    assert (await call(custom.get_namespaced_custom_object, "one"))["spec"] == spec
    listed = await call(custom.list_namespaced_custom_object, label_selector="suite=crd")
    assert [item["metadata"]["name"] for item in listed["items"]] == ["one"]
    assert listed["kind"] == f"{kind}List"

    patched = await call(
        custom.patch_namespaced_custom_object, "one", {"metadata": {"annotations": {"a": "b"}}}
    )
    assert patched["metadata"]["generation"] == 1  # metadata changes leave the generation alone
    patched = await call(
        custom.patch_namespaced_custom_object, "one", {"spec": {"lab": "x"}, "status": status}
    )
    assert patched["spec"] == {**spec, "lab": "x"} and patched["metadata"]["annotations"] == {"a": "b"}
    assert patched["metadata"]["generation"] == 2 and "status" not in patched  # status needs the subresource

    with_status = await call(
        custom.patch_namespaced_custom_object_status, "one", {"status": status, "spec": {}}
    )
    assert with_status["status"] == status and with_status["spec"] == {**spec, "lab": "x"}
    assert with_status["metadata"]["generation"] == 2
    assert (await call(custom.get_namespaced_custom_object_status, "one"))["status"] == status

    stale = {**with_status, "metadata": {**with_status["metadata"], "resourceVersion": "1"}}
    with pytest.raises(ApiException) as conflict:
        await call(custom.replace_namespaced_custom_object, "one", stale)
    assert conflict.value.status == 409
    replaced = await call(custom.replace_namespaced_custom_object, "one", {**with_status, "spec": spec})
    assert (
        replaced["spec"] == spec and replaced["status"] == status and replaced["metadata"]["generation"] == 3
    )

    deleted = await call(custom.delete_namespaced_custom_object, "one")
    assert deleted["metadata"]["name"] == "one"
    with pytest.raises(ApiException) as gone:
        await call(custom.get_namespaced_custom_object, "one")
    assert gone.value.status == 404
    remaining = await call(custom.list_namespaced_custom_object)
    assert [item["metadata"]["name"] for item in remaining["items"]] == ["two"]


async def test_a_rollout_scales_through_its_scale_subresource(api: client.ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(api)
    where = ("argoproj.io", "v1alpha1", namespace, "rollouts")
    body = {
        "metadata": {"name": "chat"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "chat"}}},
    }
    await asyncio.to_thread(custom.create_namespaced_custom_object, *where, body)

    scale = cast(
        dict[str, Any],
        await asyncio.to_thread(
            custom.patch_namespaced_custom_object_scale, *where, "chat", {"spec": {"replicas": 4}}
        ),
    )
    assert (
        scale["kind"] == "Scale"
        and scale["spec"]["replicas"] == 4
        and scale["status"]["selector"] == "app=chat"
    )
    rollout = cast(
        dict[str, Any], await asyncio.to_thread(custom.get_namespaced_custom_object, *where, "chat")
    )
    assert rollout["spec"]["replicas"] == 4 and rollout["metadata"]["generation"] == 2


async def test_errors_come_back_as_kubernetes_statuses(api: client.ApiClient, namespace: str) -> None:
    apps, custom = client.AppsV1Api(api), client.CustomObjectsApi(api)

    async def failure(method: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, str]:
        with pytest.raises(ApiException) as error:
            await asyncio.to_thread(method, *args, **kwargs)
        assert error.value.body is not None
        return error.value.status, json.loads(error.value.body)["reason"]

    assert await failure(apps.read_namespaced_deployment, "nope", namespace) == (404, "NotFound")
    await asyncio.to_thread(apps.create_namespaced_deployment, namespace, deployment("dup", 0))
    assert await failure(apps.create_namespaced_deployment, namespace, deployment("dup", 0)) == (
        409,
        "AlreadyExists",
    )
    assert await failure(apps.create_namespaced_deployment, "no-such-namespace", deployment("x", 0)) == (
        404,
        "NotFound",
    )
    mismatched = deployment("bad", 1)
    mismatched["spec"]["selector"]["matchLabels"] = {"app": "other"}
    assert await failure(apps.create_namespaced_deployment, namespace, mismatched) == (422, "Invalid")
    where = ("argoproj.io", "v1alpha1", namespace, "rollouts")
    await asyncio.to_thread(
        custom.create_namespaced_custom_object, *where, {"metadata": {"name": "r"}, "spec": {}}
    )
    strategic = {"_content_type": "application/strategic-merge-patch+json"}
    assert await failure(custom.patch_namespaced_custom_object, *where, "r", {"spec": {}}, **strategic) == (
        415,
        "UnsupportedMediaType",
    )


async def test_core_objects_and_json_patches(api: client.ApiClient, namespace: str) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    service = client.V1Service(
        metadata=client.V1ObjectMeta(name="chat"),
        spec=client.V1ServiceSpec(selector={"app": "chat"}, ports=[client.V1ServicePort(port=80)]),
    )
    await asyncio.to_thread(core.create_namespaced_service, namespace, service)
    config_map = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="flags"), data={"canary": "off"})
    await asyncio.to_thread(core.create_namespaced_config_map, namespace, config_map)
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(name="chat.1"),
        involved_object=client.V1ObjectReference(kind="Deployment", name="chat", namespace=namespace),
        reason="Rollout",
        message="canary at 20%",
        type="Normal",
    )
    await asyncio.to_thread(core.create_namespaced_event, namespace, event)

    flip = [{"op": "replace", "path": "/data/canary", "value": "on"}]
    patched = await asyncio.to_thread(core.patch_namespaced_config_map, "flags", namespace, flip)
    assert patched.data == {"canary": "on"}
    events = await asyncio.to_thread(core.list_namespaced_event, namespace)
    assert [e.message for e in events.items] == ["canary at 20%"]
    deleted = await asyncio.to_thread(core.delete_namespaced_service, "chat", namespace)
    assert isinstance(deleted, client.V1Service) and name_of(deleted) == "chat"

    await asyncio.to_thread(apps.create_namespaced_deployment, namespace, deployment("gc", 2))
    await eventually(
        lambda: asyncio.to_thread(pods_of, api, namespace, "gc"),
        until=lambda p: len(p) == 2,
        what="two pods to appear",
    )
    await asyncio.to_thread(apps.delete_namespaced_deployment, "gc", namespace)
    assert await asyncio.to_thread(pods_of, api, namespace, "gc") == []  # owned pods go with their owner

    await asyncio.to_thread(core.delete_namespace, namespace)
    namespaces = await asyncio.to_thread(core.list_namespace)
    assert namespace not in {name_of(n) for n in namespaces.items}
    everywhere = await asyncio.to_thread(
        core.list_config_map_for_all_namespaces, field_selector=f"metadata.namespace={namespace}"
    )
    assert everywhere.items == []


async def test_watches_resume_filter_and_expire(
    kube: LabKubernetes, api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    before = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="before"))
    await asyncio.to_thread(core.create_namespaced_config_map, namespace, before)
    listed = await asyncio.to_thread(core.list_namespaced_config_map, namespace)
    assert listed.metadata is not None
    version = listed.metadata.resource_version
    for name, team in [("mine", "a"), ("theirs", "b")]:
        labelled = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels={"team": team}))
        await asyncio.to_thread(core.create_namespaced_config_map, namespace, labelled)
    await asyncio.to_thread(core.delete_namespaced_config_map, "mine", namespace)

    def events(**kwargs: Any) -> list[tuple[str, str]]:
        stream = watch.Watch().stream(core.list_namespaced_config_map, namespace, timeout_seconds=1, **kwargs)
        return [(e["type"], e["object"].metadata.name) for e in stream]

    resumed = await asyncio.to_thread(events, resource_version=version, label_selector="team=a")
    assert resumed == [("ADDED", "mine"), ("DELETED", "mine")]
    assert await asyncio.to_thread(events) == [("ADDED", "before"), ("ADDED", "theirs")]

    for i in range(1001):  # more changes than the lab remembers
        kube.api.create_object("configmaps", {"metadata": {"name": f"cm-{i}"}}, namespace)
    with pytest.raises(ApiException) as expired:
        await asyncio.to_thread(events, resource_version=version)
    assert expired.value.status == 410


async def test_a_long_running_lab_forgets_old_requests_and_versions(tmp_path: Path) -> None:
    kube = LabKubernetes()
    kube.api.request_limit, kube.api.history_limit = 10, 3
    await kube.start("127.0.0.1", free_port())
    try:
        api_client = config.new_client_from_config(config_file=str(kube.write_kubeconfig(tmp_path / "kc")))
        core = client.CoreV1Api(api_client)

        def churn() -> None:
            first = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="churn"), data={"n": "0"})
            core.create_namespaced_config_map("default", first)
            for n in range(1, 30):
                core.patch_namespaced_config_map("churn", "default", {"data": {"n": str(n)}})

        await asyncio.to_thread(churn)
        api_client.close()
        assert len(kube.api) <= 11  # kmock's record of requests (a kmock view's length)
        versions = kube.api.objects["v1/configmaps", "default", "churn"].history
        # a None would be a deletion marker
        assert [None if version is None else version["data"]["n"] for version in versions] == [
            "27",
            "28",
            "29",
        ]
    finally:
        await kube.stop()


async def test_stopping_the_server_ends_open_watches(tmp_path: Path) -> None:
    kube = LabKubernetes()
    await kube.start("127.0.0.1", free_port())
    api_client = config.new_client_from_config(config_file=str(kube.write_kubeconfig(tmp_path / "kc")))
    core = client.CoreV1Api(api_client)
    opened = asyncio.Event()
    loop = asyncio.get_running_loop()

    def watch_namespaces() -> list[str]:
        names = []
        for event in watch.Watch().stream(core.list_namespace, timeout_seconds=60):
            names.append(event["object"].metadata.name)
            loop.call_soon_threadsafe(opened.set)
        return names

    watching = asyncio.create_task(asyncio.to_thread(watch_namespaces))
    await asyncio.wait_for(opened.wait(), 10)
    await asyncio.wait_for(kube.stop(), 10)  # not aiohttp's 60 s wait for open requests to finish
    assert "default" in await asyncio.wait_for(watching, 10)
    api_client.close()
