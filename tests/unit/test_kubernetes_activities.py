"""The Kubernetes activities against the lab's simulated cluster: the canary Deployment, traffic weights by
replicas, Istio and the Gateway API as the workload simulator reads them, rollback, and error tiers."""

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client, config
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.contracts.kubernetes import (
    DeploymentRef,
    DeploymentState,
    EnsureCanaryInput,
    PromoteInput,
    RollbackInput,
    Router,
    ScaleDeploymentInput,
    SetWeightInput,
    WeightState,
)
from activities.kubernetes import (
    GATEWAY_API,
    ISTIO,
    KubernetesActivities,
    replica_split,
    router_canary_replicas,
)
from lab.cluster_view import KubernetesClusterView
from lab.controllers import ControllerManager, default_controllers
from lab.kube import LabKubernetes
from lab.server import DEMO_NAMESPACE as NS
from lab.server import DEMO_SERVICE as SVC
from lab.server import demo_objects
from lab.workload import traffic_shares
from tests.http_server import free_port
from tests.waiting import eventually, settle

STARTUP_DELAY = 0.2  # seconds for a lab pod to become ready
STABLE = SVC  # the demo's stable Deployment is named like its Service
CANARY = f"{SVC}-canary"
IMAGE = f"lab.local/{SVC}:v2"
T = TypeVar("T")


@dataclass
class Cluster:
    kube: LabKubernetes
    api: client.ApiClient
    acts: KubernetesActivities
    view: KubernetesClusterView


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Cluster]:
    """A fresh lab cluster seeded with the demo service (chat-api v1, 4 ready replicas)."""
    kube = LabKubernetes()
    await kube.start("127.0.0.1", free_port())
    controllers = ControllerManager(default_controllers(kube, pod_startup_delay=STARTUP_DELAY, interval=0.05))
    await controllers.start()
    for kind, body in zip(
        ("v1/namespaces", "v1/services", "apps/v1/deployments"), demo_objects(), strict=True
    ):
        kube.api.create_object(kind, body)
    kubeconfig = str(kube.write_kubeconfig(tmp_path / "kubeconfig"))
    api = config.new_client_from_config(config_file=kubeconfig)
    lab = Cluster(kube, api, KubernetesActivities(api), KubernetesClusterView(api))
    await until(lab, STABLE, lambda s: s.rolled_out and s.ready == 4)
    yield lab
    api.close()
    await controllers.stop()
    await kube.stop()


async def call(activity: Callable[[Any], T], arg: Any) -> T:
    """One attempt of a blocking activity, in a thread: the lab's API serves on this loop."""
    return await asyncio.to_thread(activity, arg)


async def read(lab: Cluster, name: str) -> DeploymentState:
    return await call(lab.acts.read_deployment, DeploymentRef(NS, name))


async def until(
    lab: Cluster, name: str, done: Callable[[DeploymentState], bool], within: float = 15
) -> DeploymentState:
    async def state_when_done() -> DeploymentState:
        state = await read(lab, name)
        assert done(state), state
        return state

    return await eventually(state_when_done, what=f"{name} to get there", within=within)


async def ready_by_version(lab: Cluster) -> dict[str, int]:
    """Ready replicas per version, as the workload simulator sees the service."""
    return {v.name: v.ready_replicas for v in await lab.view.versions(NS, SVC)}


async def shares(lab: Cluster) -> dict[str, float]:
    """Each version's share of the service's traffic, as the workload simulator splits it."""
    versions = await lab.view.versions(NS, SVC)
    return {k: round(v, 3) for k, v in traffic_shares(versions, await lab.view.weights(NS, SVC)).items()}


async def ensure_canary(lab: Cluster, image: str = IMAGE, version: str = "v2", **kw: Any) -> DeploymentState:
    return await call(lab.acts.ensure_canary, EnsureCanaryInput(NS, SVC, STABLE, version, image, **kw))


def weight(percent: int, router: Router, **kw: Any) -> SetWeightInput:
    return SetWeightInput(NS, SVC, STABLE, CANARY, percent, router=router, **kw)


def rollback(router: Router, **kw: Any) -> RollbackInput:
    return RollbackInput(NS, SVC, STABLE, CANARY, router=router, **kw)


def route_of(lab: Cluster, router: Router) -> Any:
    group, version, plural = ISTIO if router == "istio" else GATEWAY_API
    return client.CustomObjectsApi(lab.api).get_namespaced_custom_object(group, version, NS, plural, SVC)


async def raw_deployment(lab: Cluster, name: str) -> Any:
    """The Deployment as the official client reads it."""
    return await asyncio.to_thread(client.AppsV1Api(lab.api).read_namespaced_deployment, name, NS)


def expected_weights(router: Router, percent: int) -> dict[str, float] | None:
    """Router weights as lab.cluster_view reads them: Istio by version, the Gateway API by backend."""
    if router == "istio":
        return {"v1": 100.0 - percent, "v2": float(percent)}
    if router == "gateway-api":
        return {STABLE: 100.0 - percent, CANARY: float(percent)}
    return None


def expected_shares(stable: float, canary: float) -> dict[str, float]:
    total = stable + canary
    found = {"v1": round(stable / total, 3), "v2": round(canary / total, 3)}
    return {k: v for k, v in found.items() if v > 0}


async def both_rolled_out(lab: Cluster) -> tuple[DeploymentState, DeploymentState]:
    return await until(lab, STABLE, lambda s: s.rolled_out), await until(lab, CANARY, lambda s: s.rolled_out)


# --- pure rules --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "percent", "split"),
    [
        (4, 0, (4, 0)),
        (4, 10, (3, 1)),  # 0.4 rounds to 0, but a canary step gets at least one replica
        (4, 25, (3, 1)),
        (4, 50, (2, 2)),
        (4, 60, (2, 2)),
        (4, 90, (1, 3)),
        (4, 99, (1, 3)),  # the stable keeps one replica until 100%
        (4, 100, (0, 4)),
        (10, 1, (9, 1)),
        (10, 35, (6, 4)),  # half rounds up
        (3, 50, (1, 2)),
        (0, 0, (0, 0)),
        (0, 100, (0, 0)),
    ],
)
def test_replica_split_keeps_the_total_and_gives_a_canary_step_one_replica(
    total: int, percent: int, split: tuple[int, int]
) -> None:
    assert replica_split(total, percent) == split
    assert sum(split) == total


def test_replica_split_refuses_a_split_one_replica_cannot_carry() -> None:
    with pytest.raises(ApplicationError) as caught:
        replica_split(1, 50)
    assert caught.value.type == "InvalidSpec" and caught.value.non_retryable


@pytest.mark.parametrize(
    ("total", "percent", "canary"), [(4, 0, 0), (4, 10, 1), (4, 50, 2), (4, 51, 3), (4, 100, 4), (0, 10, 1)]
)
def test_router_canary_replicas_round_up_to_carry_the_share(total: int, percent: int, canary: int) -> None:
    assert router_canary_replicas(total, percent) == canary


# --- ensure_canary -----------------------------------------------------------------------------------------


async def test_ensure_canary_creates_a_copy_of_the_stable_with_the_new_image_and_version(
    lab: Cluster,
) -> None:
    created = await ensure_canary(lab)
    assert (created.name, created.image, created.version, created.desired) == (CANARY, IMAGE, "v2", 0)

    raw = await raw_deployment(lab, CANARY)
    assert raw.spec.selector.match_labels == {"app.kubernetes.io/name": SVC, "lcp.dev/version": "v2"}
    assert raw.spec.template.metadata.labels["lcp.dev/version"] == "v2"
    assert raw.spec.template.metadata.labels["app.kubernetes.io/name"] == SVC  # still behind the Service
    assert raw.metadata.labels["app.kubernetes.io/managed-by"] == "lcp"
    assert raw.metadata.labels["lcp.dev/canary-of"] == STABLE
    assert raw.metadata.annotations["lcp.dev/total-replicas"] == "4"
    stable = await read(lab, STABLE)
    assert (stable.version, stable.image, stable.desired) == ("v1", f"lab.local/{SVC}:v1", 4)

    settled = await until(lab, CANARY, lambda s: s.rolled_out)  # the controller has written its status
    again = await ensure_canary(lab)
    assert again.resource_version == settled.resource_version  # nothing was written
    assert again.generation == created.generation == 1

    await call(lab.acts.scale_deployment, ScaleDeploymentInput(NS, CANARY, 2))
    scaled = await until(lab, CANARY, lambda s: s.rolled_out and s.ready == 2)
    kept = await ensure_canary(lab)
    assert kept.desired == 2 and kept.resource_version == scaled.resource_version  # a retry undoes nothing
    assert await ready_by_version(lab) == {"v1": 4, "v2": 2}


async def test_ensure_canary_updates_the_image_in_place_and_recreates_for_a_new_version(lab: Cluster) -> None:
    first = await ensure_canary(lab, replicas=1)
    uid = (await raw_deployment(lab, CANARY)).metadata.uid

    fixed = await ensure_canary(lab, image=f"{IMAGE}-fix", replicas=3)
    assert (fixed.image, fixed.version, fixed.desired) == (f"{IMAGE}-fix", "v2", 1)  # replicas kept
    assert fixed.resource_version != first.resource_version
    raw = await raw_deployment(lab, CANARY)
    assert raw.metadata.uid == uid
    assert fixed.generation == first.generation + 1
    settled = await until(lab, CANARY, lambda s: s.rolled_out and s.ready == 1)
    assert (await ensure_canary(lab, image=f"{IMAGE}-fix")).resource_version == settled.resource_version

    newer = await ensure_canary(lab, image=f"lab.local/{SVC}:v3", version="v3", replicas=1)
    assert (newer.version, newer.desired) == ("v3", 1)
    raw = await raw_deployment(lab, CANARY)
    assert raw.metadata.uid != uid and raw.spec.selector.match_labels["lcp.dev/version"] == "v3"
    await until(lab, CANARY, lambda s: s.rolled_out and s.ready == 1)
    assert await ready_by_version(lab) == {"v1": 4, "v3": 1}


async def test_ensure_canary_reads_again_and_retries_after_a_conflict(
    lab: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ensure_canary(lab)
    replace = client.AppsV1Api.replace_namespaced_deployment
    calls = []

    def meddling_replace(self: client.AppsV1Api, name: str, namespace: str, body: Any, **kw: Any) -> Any:
        calls.append(name)
        if len(calls) == 1:  # someone else writes between the activity's read and its write
            patch = {"metadata": {"labels": {"team": "search"}}}
            client.AppsV1Api(lab.api).patch_namespaced_deployment(name, namespace, patch)
        return replace(self, name, namespace, body, **kw)

    monkeypatch.setattr(client.AppsV1Api, "replace_namespaced_deployment", meddling_replace)
    updated = await ensure_canary(lab, image=f"{IMAGE}-fix")

    assert calls == [CANARY, CANARY] and updated.image == f"{IMAGE}-fix"
    raw = await raw_deployment(lab, CANARY)
    assert raw.metadata.labels["team"] == "search"  # the retry started from a fresh read


async def test_ensure_canary_leaves_a_deployment_lcp_does_not_manage_alone(lab: Cluster) -> None:
    body: Any = demo_objects(version="v9", replicas=1)[2]
    body["metadata"]["name"] = CANARY
    await asyncio.to_thread(client.AppsV1Api(lab.api).create_namespaced_deployment, NS, body)

    with pytest.raises(ApplicationError) as caught:
        await ensure_canary(lab)
    assert caught.value.type == "InvalidSpec" and caught.value.non_retryable
    assert (await read(lab, CANARY)).version == "v9"


# --- set_weight --------------------------------------------------------------------------------------------


async def test_replica_router_scales_the_canary_up_before_the_stable_down(lab: Cluster) -> None:
    await ensure_canary(lab)

    with pytest.raises(ApplicationError) as caught:
        await call(lab.acts.set_weight, weight(10, "replicas"))
    assert caught.value.type == "NotReady" and not caught.value.non_retryable
    assert caught.value.category == ApplicationErrorCategory.BENIGN
    assert ((await read(lab, STABLE)).desired, (await read(lab, CANARY)).desired) == (4, 1)

    state = await settle(lab.acts.set_weight, weight(10, "replicas"))
    assert (state.stable_replicas, state.canary_replicas, state.total_replicas) == (3, 1, 4)


@pytest.mark.parametrize(
    ("percent", "stable", "canary"), [(0, 4, 0), (10, 3, 1), (50, 2, 2), (100, 0, 4), (0, 4, 0)]
)
async def test_replica_router_splits_the_total_by_ready_replicas(
    lab: Cluster, percent: int, stable: int, canary: int
) -> None:
    await ensure_canary(lab)
    for step in (10, 50, 100):  # earlier steps first: each must keep the total
        if step < percent:
            await settle(lab.acts.set_weight, weight(step, "replicas"))

    state = await settle(lab.acts.set_weight, weight(percent, "replicas"))

    assert (state.stable_replicas, state.canary_replicas, state.total_replicas) == (stable, canary, 4)
    assert state.canary_percent == pytest.approx(100 * canary / 4)
    await both_rolled_out(lab)
    assert await ready_by_version(lab) == {"v1": stable, "v2": canary}
    assert await lab.view.weights(NS, SVC) is None
    assert await shares(lab) == expected_shares(stable, canary)


async def test_replica_router_comes_back_from_full_canary_to_the_same_total(lab: Cluster) -> None:
    await ensure_canary(lab)
    for percent, split in ((50, (2, 2)), (100, (0, 4)), (10, (3, 1)), (0, (4, 0))):
        state = await settle(lab.acts.set_weight, weight(percent, "replicas"))
        assert (state.stable_replicas, state.canary_replicas) == split, percent
    await both_rolled_out(lab)
    assert await ready_by_version(lab) == {"v1": 4, "v2": 0}


@pytest.mark.parametrize("router", ["istio", "gateway-api"])
async def test_traffic_router_weights_the_route_and_sizes_the_canary_for_its_share(
    lab: Cluster, router: Router
) -> None:
    await ensure_canary(lab)
    previous = 0
    for percent, canary in ((0, 0), (10, 1), (50, 2), (100, 4)):
        if percent:  # the canary gets no more traffic until it has the replicas to serve it
            with pytest.raises(ApplicationError) as caught:
                await call(lab.acts.set_weight, weight(percent, router))
            assert caught.value.type == "NotReady"
            assert await lab.view.weights(NS, SVC) == expected_weights(router, previous)

        state = await settle(lab.acts.set_weight, weight(percent, router))

        assert (state.stable_replicas, state.canary_replicas, state.total_replicas) == (4, canary, 4), percent
        assert (state.stable_percent, state.canary_percent) == (100 - percent, percent)
        assert await lab.view.weights(NS, SVC) == expected_weights(router, percent)
        assert await shares(lab) == expected_shares(100 - percent, percent)
        previous = percent

    route = await asyncio.to_thread(route_of, lab, router)
    assert route["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "lcp"
    if router == "gateway-api":
        assert route["spec"]["parentRefs"] == [{"group": "", "kind": "Service", "name": SVC}]
        assert {ref["port"] for ref in route["spec"]["rules"][0]["backendRefs"]} == {80}
    else:
        assert route["spec"]["hosts"] == [SVC]


@pytest.mark.parametrize("router", ["replicas", "istio", "gateway-api"])
async def test_set_weight_twice_changes_nothing_the_second_time(lab: Cluster, router: Router) -> None:
    await ensure_canary(lab)
    first = await settle(lab.acts.set_weight, weight(50, router))
    stable, canary = await both_rolled_out(lab)
    route = await asyncio.to_thread(route_of, lab, router) if router != "replicas" else None

    second = await call(lab.acts.set_weight, weight(50, router))

    assert (second.stable_replicas, second.canary_replicas, second.canary_percent) == (
        first.stable_replicas,
        first.canary_replicas,
        first.canary_percent,
    )
    assert (await read(lab, STABLE)).resource_version == stable.resource_version
    assert (await read(lab, CANARY)).resource_version == canary.resource_version
    if route is not None:
        again = await asyncio.to_thread(route_of, lab, router)
        assert again["metadata"]["resourceVersion"] == route["metadata"]["resourceVersion"]


async def test_an_explicit_total_is_kept_for_later_steps(lab: Cluster) -> None:
    await ensure_canary(lab)
    state = await settle(lab.acts.set_weight, weight(50, "replicas", total_replicas=6))
    assert (state.stable_replicas, state.canary_replicas) == (3, 3)
    state = await settle(lab.acts.set_weight, weight(100, "replicas"))
    assert (state.stable_replicas, state.canary_replicas, state.total_replicas) == (0, 6, 6)


# --- rollback ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("router", ["replicas", "istio", "gateway-api"])
async def test_rollback_sends_everything_to_the_stable_and_scales_the_canary_to_zero(
    lab: Cluster, router: Router
) -> None:
    await ensure_canary(lab)
    await settle(lab.acts.set_weight, weight(50, router))
    await both_rolled_out(lab)

    state = await call(lab.acts.rollback, rollback(router))
    assert (state.stable_replicas, state.canary_replicas, state.stable_percent) == (4, 0, 100)
    assert await lab.view.weights(NS, SVC) == expected_weights(router, 0)
    assert await call(lab.acts.rollback, rollback(router)) == state  # again: the same

    await both_rolled_out(lab)
    assert await ready_by_version(lab) == {"v1": 4, "v2": 0}
    assert await shares(lab) == {"v1": 1.0}


@pytest.mark.parametrize("router", ["istio", "gateway-api"])
async def test_rollback_with_freeze_keeps_the_canary_pods_without_traffic(
    lab: Cluster, router: Router
) -> None:
    await ensure_canary(lab)
    await settle(lab.acts.set_weight, weight(50, router))

    state = await call(lab.acts.rollback, rollback(router, freeze=True))

    assert (state.stable_replicas, state.canary_replicas, state.stable_percent) == (4, 2, 100)
    await both_rolled_out(lab)
    assert await ready_by_version(lab) == {"v1": 4, "v2": 2}
    assert await shares(lab) == {"v1": 1.0}


async def test_rollback_with_freeze_and_no_router_keeps_the_canary_at_its_replica_share(lab: Cluster) -> None:
    await ensure_canary(lab)
    await settle(lab.acts.set_weight, weight(50, "replicas"))

    state = await call(lab.acts.rollback, rollback("replicas", freeze=True))

    assert (state.stable_replicas, state.canary_replicas) == (4, 2)
    assert state.canary_percent == pytest.approx(100 * 2 / 6)  # said plainly: no router, no way around it


async def test_rollback_without_a_canary_restores_the_stable(lab: Cluster) -> None:
    await call(lab.acts.scale_deployment, ScaleDeploymentInput(NS, STABLE, 2))
    state = await call(lab.acts.rollback, rollback("istio", total_replicas=4))
    assert (state.stable_replicas, state.canary_replicas, state.stable_percent) == (4, 0, 100)
    assert await lab.view.weights(NS, SVC) == {"v1": 100.0}


# --- promote ----------------------------------------------------------------------------------------------


def promote(router: Router, **kw: Any) -> PromoteInput:
    return PromoteInput(NS, SVC, STABLE, CANARY, IMAGE, "v2", router=router, **kw)


async def at_full_canary(lab: Cluster, router: Router) -> None:
    """A rollout at its last step: the canary carries all the traffic."""
    await ensure_canary(lab)
    await settle(lab.acts.set_weight, weight(100, router))
    await both_rolled_out(lab)


async def versionless_stable(lab: Cluster) -> str:
    """Swap the demo's stable for one whose selector leaves the version out; returns its uid."""
    apps = client.AppsV1Api(lab.api)
    await asyncio.to_thread(apps.delete_namespaced_deployment, STABLE, NS)
    body: Any = demo_objects()[2]
    del body["spec"]["selector"]["matchLabels"]["lcp.dev/version"]
    created: Any = await asyncio.to_thread(apps.create_namespaced_deployment, NS, body)
    await until(lab, STABLE, lambda s: s.rolled_out and s.ready == 4)
    return str(created.metadata.uid)


async def assert_promoted(lab: Cluster, router: Router) -> None:
    """Where every promotion ends: the stable at v2 on all 4 replicas with all the traffic, no canary."""
    stable = await until(lab, STABLE, lambda s: s.rolled_out)
    assert (stable.version, stable.image, stable.desired, stable.ready) == ("v2", IMAGE, 4, 4)
    with pytest.raises(ApplicationError) as caught:
        await read(lab, CANARY)
    assert caught.value.type == "TargetNotFound"
    assert await ready_by_version(lab) == {"v2": 4}
    assert await shares(lab) == {"v2": 1.0}
    if router == "replicas":
        assert await lab.view.weights(NS, SVC) is None
    elif router == "istio":  # one subset: stable and canary ran the same version
        route = await asyncio.to_thread(route_of, lab, router)
        assert route["spec"]["http"][0]["route"] == [
            {"destination": {"host": SVC, "subset": "v2"}, "weight": 100}
        ]
    else:
        assert await lab.view.weights(NS, SVC) == {STABLE: 100.0, CANARY: 0.0}


def assert_all_on_the_stable(state: WeightState) -> None:
    assert (state.stable_percent, state.canary_percent) == (100, 0)
    assert (state.stable_replicas, state.canary_replicas, state.total_replicas) == (4, 0, 4)


@pytest.mark.parametrize("router", ["replicas", "istio", "gateway-api"])
async def test_promote_recreates_a_stable_whose_selector_holds_the_version(
    lab: Cluster, router: Router
) -> None:
    patch = {"metadata": {"annotations": {"team": "search"}}}
    await asyncio.to_thread(client.AppsV1Api(lab.api).patch_namespaced_deployment, STABLE, NS, patch)
    await at_full_canary(lab, router)
    old = await raw_deployment(lab, STABLE)

    state = await settle(lab.acts.promote, promote(router))

    assert_all_on_the_stable(state)
    raw = await raw_deployment(lab, STABLE)
    assert raw.metadata.uid != old.metadata.uid  # a selector cannot change: a new Deployment
    assert raw.spec.selector.match_labels == {"app.kubernetes.io/name": SVC, "lcp.dev/version": "v2"}
    assert raw.metadata.labels == {**old.metadata.labels, "lcp.dev/version": "v2"}  # no canary markers
    assert raw.metadata.annotations == {"team": "search"}
    await assert_promoted(lab, router)


@pytest.mark.parametrize("router", ["replicas", "istio", "gateway-api"])
async def test_promote_updates_in_place_a_stable_whose_selector_leaves_the_version_out(
    lab: Cluster, router: Router
) -> None:
    uid = await versionless_stable(lab)
    await at_full_canary(lab, router)

    with pytest.raises(ApplicationError) as caught:  # the new template's pods are not ready yet
        await call(lab.acts.promote, promote(router))
    assert caught.value.type == "NotReady"
    assert (await read(lab, CANARY)).desired == 4
    state = await settle(lab.acts.promote, promote(router))

    assert_all_on_the_stable(state)
    raw = await raw_deployment(lab, STABLE)
    assert raw.metadata.uid == uid
    assert raw.spec.selector.match_labels == {"app.kubernetes.io/name": SVC}
    assert raw.metadata.labels["lcp.dev/version"] == "v2"
    assert raw.spec.template.metadata.labels["lcp.dev/version"] == "v2"
    await assert_promoted(lab, router)


@pytest.mark.parametrize("router", ["replicas", "istio", "gateway-api"])
async def test_promote_keeps_the_canary_serving_until_the_stable_is_ready(
    lab: Cluster, router: Router
) -> None:
    await at_full_canary(lab, router)

    with pytest.raises(ApplicationError) as caught:
        await call(lab.acts.promote, promote(router))

    assert caught.value.type == "NotReady" and not caught.value.non_retryable
    assert caught.value.category == ApplicationErrorCategory.BENIGN
    canary = await read(lab, CANARY)
    assert (canary.desired, canary.ready) == (4, 4)
    assert await lab.view.weights(NS, SVC) == expected_weights(router, 100)
    assert await shares(lab) == {"v2": 1.0}
    assert_all_on_the_stable(await settle(lab.acts.promote, promote(router)))
    await assert_promoted(lab, router)


@pytest.mark.parametrize("router", ["replicas", "istio"])
async def test_promote_after_it_is_done_changes_nothing(lab: Cluster, router: Router) -> None:
    await at_full_canary(lab, router)
    first = await settle(lab.acts.promote, promote(router))
    stable = await until(lab, STABLE, lambda s: s.rolled_out)
    route = await asyncio.to_thread(route_of, lab, router) if router != "replicas" else None

    again = await call(lab.acts.promote, promote(router))

    assert again == first
    assert (await read(lab, STABLE)).resource_version == stable.resource_version
    if route is not None:
        after = await asyncio.to_thread(route_of, lab, router)
        assert after["metadata"]["resourceVersion"] == route["metadata"]["resourceVersion"]
    await assert_promoted(lab, router)


@pytest.mark.parametrize("router", ["replicas", "gateway-api"])
async def test_promote_recovers_from_a_crash_between_deleting_the_stable_and_creating_it(
    lab: Cluster, router: Router
) -> None:
    await at_full_canary(lab, router)
    # As a first attempt leaves it when it dies after deleting the stable: only the canary is left.
    await asyncio.to_thread(client.AppsV1Api(lab.api).delete_namespaced_deployment, STABLE, NS)

    state = await settle(lab.acts.promote, promote(router))

    assert_all_on_the_stable(state)
    raw = await raw_deployment(lab, STABLE)
    assert raw.spec.selector.match_labels == {"app.kubernetes.io/name": SVC, "lcp.dev/version": "v2"}
    assert raw.metadata.labels["lcp.dev/version"] == "v2"
    assert not {"app.kubernetes.io/managed-by", "lcp.dev/canary-of"} & set(raw.metadata.labels)
    assert "lcp.dev/total-replicas" not in (raw.metadata.annotations or {})
    await assert_promoted(lab, router)


# --- reads, scale and errors -------------------------------------------------------------------------------


async def test_scale_and_read_deployment_report_desired_and_ready(lab: Cluster) -> None:
    stable = await read(lab, STABLE)
    assert (stable.desired, stable.ready, stable.updated, stable.version) == (4, 4, 4, "v1")
    assert stable.observed_generation == stable.generation and stable.rolled_out

    scaled = await call(lab.acts.scale_deployment, ScaleDeploymentInput(NS, STABLE, 6))
    assert scaled.desired == 6 and not scaled.rolled_out
    assert (await until(lab, STABLE, lambda s: s.rolled_out)).ready == 6
    again = await call(lab.acts.scale_deployment, ScaleDeploymentInput(NS, STABLE, 6))
    assert again.resource_version == (await read(lab, STABLE)).resource_version


async def test_a_missing_stable_deployment_is_a_permanent_error(lab: Cluster) -> None:
    attempts: list[tuple[Callable[[Any], Any], Any]] = [
        (lab.acts.ensure_canary, EnsureCanaryInput(NS, SVC, "nope", "v2", IMAGE)),
        (lab.acts.set_weight, SetWeightInput(NS, SVC, "nope", CANARY, 10)),
        (lab.acts.rollback, RollbackInput(NS, SVC, "nope", CANARY, router="istio")),
        (lab.acts.read_deployment, DeploymentRef(NS, "nope")),
        (lab.acts.scale_deployment, ScaleDeploymentInput(NS, "nope", 1)),
        (lab.acts.set_weight, weight(10, "replicas")),  # the stable is there, the canary is not
        (lab.acts.promote, PromoteInput(NS, SVC, "nope", CANARY, IMAGE, "v2")),
        (lab.acts.promote, promote("replicas")),  # no canary, and the stable still runs v1
    ]
    for activity, arg in attempts:
        with pytest.raises(ApplicationError) as caught:
            await call(activity, arg)
        assert (caught.value.type, caught.value.non_retryable) == ("TargetNotFound", True), arg


@pytest.mark.parametrize(
    "bad",
    [
        weight(101, "replicas"),
        weight(-1, "istio"),
        weight(10, "linkerd"),  # type: ignore[arg-type]
        weight(50, "replicas", total_replicas=1),
    ],
)
async def test_a_request_no_retry_can_fix_is_a_permanent_error(lab: Cluster, bad: SetWeightInput) -> None:
    await ensure_canary(lab)
    with pytest.raises(ApplicationError) as caught:
        await call(lab.acts.set_weight, bad)
    assert (caught.value.type, caught.value.non_retryable) == ("InvalidSpec", True)
    assert ((await read(lab, STABLE)).desired, (await read(lab, CANARY)).desired) == (4, 0)


async def test_an_unreachable_api_is_a_transient_error() -> None:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    configuration.retries = 0
    with client.ApiClient(configuration) as api:
        with pytest.raises(Exception) as caught:
            await call(KubernetesActivities(api).read_deployment, DeploymentRef(NS, STABLE))
    assert not isinstance(caught.value, ApplicationError)  # raised as is: Temporal's retry policy retries
