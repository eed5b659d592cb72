"""Every object of both overlays goes to the lab's Kubernetes API through the official client, as
`kubectl apply -k` would send it, and reads back as sent."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.dynamic import DynamicClient

from lab.kube import KINDS, Kind, LabKubernetes
from tests.deploy.render import OVERLAYS, Obj, name_of, render
from tests.http_server import free_port

# The kinds the manifests use that the lab does not serve by default; ServiceMonitor as its CRD would.
MANIFEST_KINDS = (
    Kind("", "v1", "serviceaccounts", "ServiceAccount", subresources=frozenset()),
    Kind("batch", "v1", "jobs", "Job"),
    Kind("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    Kind("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    Kind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", subresources=frozenset()),
    Kind(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        namespaced=False,
        subresources=frozenset(),
    ),
    Kind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", subresources=frozenset()),
    Kind("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor", custom=True),
)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[client.ApiClient]:
    kube = LabKubernetes((*KINDS, *MANIFEST_KINDS))
    await kube.start("127.0.0.1", free_port())
    api = config.new_client_from_config(config_file=str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
    try:
        yield api
    finally:
        api.close()
        await kube.stop()


def apply(api: client.ApiClient, objs: list[Obj]) -> list[tuple[Obj, Obj]]:
    """Create each object (namespaces first, as kubectl orders them) with the dynamic client; returns each
    object beside what the API server reads back. The namespaces the RoleBindings grant in exist already
    (lcp changes workloads there, it does not make them)."""
    dynamic = DynamicClient(api)
    namespaces = dynamic.resources.get(api_version="v1", kind="Namespace")
    for target in {o["metadata"]["namespace"] for o in objs if o["kind"] == "RoleBinding"}:
        namespaces.create(body={"metadata": {"name": target}})
    applied = []
    for obj in sorted(objs, key=lambda o: o["kind"] != "Namespace"):
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        namespace = obj["metadata"].get("namespace")
        created = resource.create(body=obj, namespace=namespace)
        read = resource.get(name=obj["metadata"]["name"], namespace=namespace).to_dict()
        assert created.metadata.uid and read["metadata"]["uid"] == created.metadata.uid
        applied.append((obj, read))
    return applied


@pytest.mark.parametrize("overlay", OVERLAYS)
async def test_every_object_is_accepted_by_the_lab_api_and_reads_back_as_sent(
    api: client.ApiClient, overlay: str
) -> None:
    objs = render(overlay)
    applied = await asyncio.to_thread(apply, api, objs)
    assert len(applied) == len(objs)
    for sent, read in applied:
        for field in set(sent) - {"metadata", "status"}:
            # As sent, plus what the API server defaults (a Deployment's replicas, when the HPA owns them).
            assert _contains(read[field], sent[field]), (
                f"{overlay}: {name_of(sent)}: {field} changed on the way"
            )
        assert sent["metadata"]["labels"].items() <= read["metadata"]["labels"].items(), name_of(sent)
        assert read["metadata"]["labels"]["app.kubernetes.io/part-of"] == "lcp", name_of(sent)


def _contains(read: object, sent: object) -> bool:
    """Whether `read` holds everything `sent` does (dicts may have gained defaulted keys)."""
    if isinstance(sent, dict):
        return isinstance(read, dict) and all(k in read and _contains(read[k], v) for k, v in sent.items())
    if isinstance(sent, list):
        return isinstance(read, list) and len(read) == len(sent) and all(map(_contains, read, sent))
    return read == sent
