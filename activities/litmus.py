"""LitmusChaos through its CRDs (there is no Python SDK): ChaosEngines created, stopped and deleted,
ChaosResults read, and the state of the pods an experiment targets."""

from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from temporalio import activity

from activities.contracts import litmus as contract
from activities.contracts.litmus import (
    CreateEngineInput,
    EngineRef,
    ResultRef,
    ResultState,
    TargetRef,
    TargetState,
)
from activities.kubernetes import permanent_errors

LITMUS = ("litmuschaos.io", "v1alpha1")
MAX_PODS_SHOWN = 100  # of a ChaosResult's targets, carried into the workflow's state
ENGINES, RESULTS = "chaosengines", "chaosresults"


class LitmusActivities(contract.LitmusActivities):
    """Blocking kubernetes-client calls (plain `def` activities on the worker's thread pool), each
    idempotent: creating an engine that exists, stopping a stopped one or deleting a deleted one is done."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)

    @activity.defn(name="litmus.create_engine")
    def create_engine(self, request: CreateEngineInput) -> EngineRef:
        metadata = request.manifest["metadata"]
        ref = EngineRef(metadata["namespace"], metadata["name"])
        with permanent_errors():
            try:
                manifest = request.manifest
                self._custom.create_namespaced_custom_object(*LITMUS, ref.namespace, ENGINES, manifest)
            except ApiException as err:
                if err.status != 409:  # 409: a retried create, after the first one went through
                    raise
        activity.logger.info("created ChaosEngine %s/%s", ref.namespace, ref.name)
        return ref

    @activity.defn(name="litmus.read_result")
    def read_result(self, ref: ResultRef) -> ResultState:
        try:
            result = cast(
                dict[str, Any],
                self._custom.get_namespaced_custom_object(*LITMUS, ref.namespace, RESULTS, ref.name),
            )
        except ApiException as err:
            if err.status == 404:
                return ResultState(found=False)
            raise
        status = (result.get("status") or {}).get("experimentStatus") or {}
        failure = (result.get("status") or {}).get("failureOutput") or {}
        targets = ((result.get("status") or {}).get("history") or {}).get("targets") or []
        return ResultState(
            found=True,
            phase=str(status.get("phase") or ""),
            verdict=str(status.get("verdict") or "Awaited"),
            probe_success_percentage=str(status.get("probeSuccessPercentage") or "Awaited"),
            # Litmus 3.x says why in failureOutput.failedStep; older releases in experimentStatus.failStep.
            fail_step=str(failure.get("failedStep") or status.get("failStep") or ""),
            pods_hit=[str(t["name"]) for t in targets if isinstance(t, dict) and t.get("name")][
                :MAX_PODS_SHOWN
            ],
        )

    @activity.defn(name="litmus.stop_engine")
    def stop_engine(self, ref: EngineRef) -> bool:
        """Patch `spec.engineState: stop` (Litmus' abort); False when the engine is already gone."""
        stop = {"spec": {"engineState": "stop"}}
        engine = (*LITMUS, ref.namespace, ENGINES, ref.name)
        stopped = unless_gone(lambda: self._custom.patch_namespaced_custom_object(*engine, stop))
        if stopped:
            activity.logger.info("stopped ChaosEngine %s/%s", ref.namespace, ref.name)
        return stopped

    @activity.defn(name="litmus.delete_engine")
    def delete_engine(self, ref: EngineRef) -> bool:
        """Delete the engine; False when it was already gone."""
        engine = (*LITMUS, ref.namespace, ENGINES, ref.name)
        deleted = unless_gone(lambda: self._custom.delete_namespaced_custom_object(*engine))
        if deleted:
            activity.logger.info("deleted ChaosEngine %s/%s", ref.namespace, ref.name)
        return deleted

    @activity.defn(name="litmus.target_state")
    def target_state(self, ref: TargetRef) -> TargetState:
        with permanent_errors():
            pods = self._core.list_namespaced_pod(ref.namespace, label_selector=ref.app_label).items
        live = [pod for pod in pods if not (pod.metadata and pod.metadata.deletion_timestamp)]
        ready = [pod for pod in live if _ready(pod)]
        created = [
            pod.metadata.creation_timestamp
            for pod in live
            if pod.metadata and pod.metadata.creation_timestamp
        ]
        became_ready = [at for pod in ready if (at := _ready_since(pod)) is not None]
        return TargetState(
            pods=len(live),
            ready=len(ready),
            newest_created_ts=max(created).timestamp() if created else None,
            last_ready_ts=max(became_ready).timestamp() if became_ready else None,
        )


def unless_gone(write: Callable[[], object]) -> bool:
    """Make `write` to an object; False when the object is already gone (404), which is done too."""
    try:
        write()
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


def _ready(pod: Any) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _ready_since(pod: Any) -> datetime | None:
    """When a ready pod's Ready condition last turned True."""
    conditions = (pod.status.conditions if pod.status else None) or []
    return next((c.last_transition_time for c in conditions if c.type == "Ready"), None)
