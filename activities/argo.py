"""Argo Workflows through its CRD (argoproj.io/v1alpha1 workflows): a chaos scenario's Workflow rendered and
created, its status read, stopped and deleted."""

from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from temporalio import activity

from activities.argo_workflow import render_workflow
from activities.contracts import argo as contract
from activities.contracts.argo import (
    NodeState,
    StopWorkflowInput,
    SubmitScenarioInput,
    WorkflowRef,
    WorkflowState,
)
from activities.kubernetes import permanent_errors
from activities.litmus import unless_gone

ARGO = ("argoproj.io", "v1alpha1")
WORKFLOWS = "workflows"


class ArgoActivities(contract.ArgoActivities):
    """Blocking kubernetes-client calls (plain `def` activities on the worker's thread pool), each idempotent:
    creating a Workflow that exists, stopping a stopped one or deleting a deleted one is done."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api_client)

    @activity.defn(name="argo.submit_scenario")
    def submit_scenario(self, request: SubmitScenarioInput) -> WorkflowRef:
        with permanent_errors():
            manifest = render_workflow(request.scenario, request.run, grace_s=request.grace_s)
            ref = WorkflowRef(manifest["metadata"]["namespace"], manifest["metadata"]["name"])
            try:
                self._custom.create_namespaced_custom_object(*ARGO, ref.namespace, WORKFLOWS, manifest)
            except ApiException as err:
                if err.status != 409:  # 409: a retried create, after the first one went through
                    raise
        activity.logger.info("created Argo Workflow %s/%s", ref.namespace, ref.name)
        return ref

    @activity.defn(name="argo.read_workflow")
    def read_workflow(self, ref: WorkflowRef) -> WorkflowState:
        try:
            found = cast(
                dict[str, Any],
                self._custom.get_namespaced_custom_object(*ARGO, ref.namespace, WORKFLOWS, ref.name),
            )
        except ApiException as err:
            if err.status == 404:
                return WorkflowState(found=False)
            raise
        status = found.get("status") or {}
        nodes = status.get("nodes") or {}
        return WorkflowState(
            found=True,
            phase=str(status.get("phase") or ""),
            message=str(status.get("message") or ""),
            progress=str(status.get("progress") or ""),
            nodes=[
                NodeState(
                    name=str(node.get("name") or ""),
                    display_name=str(node.get("displayName") or ""),
                    type=str(node.get("type") or ""),
                    phase=str(node.get("phase") or ""),
                    message=str(node.get("message") or ""),
                )
                for node in nodes.values()
                if isinstance(node, dict)
            ],
        )

    @activity.defn(name="argo.stop_workflow")
    def stop_workflow(self, request: StopWorkflowInput) -> bool:
        ref = request.ref
        shutdown = {"spec": {"shutdown": request.strategy}}
        workflow = (*ARGO, ref.namespace, WORKFLOWS, ref.name)
        stopped = unless_gone(lambda: self._custom.patch_namespaced_custom_object(*workflow, shutdown))
        if stopped:
            activity.logger.info("%s Argo Workflow %s/%s", request.strategy, ref.namespace, ref.name)
        return stopped

    @activity.defn(name="argo.delete_workflow")
    def delete_workflow(self, ref: WorkflowRef) -> bool:
        workflow = (*ARGO, ref.namespace, WORKFLOWS, ref.name)
        deleted = unless_gone(lambda: self._custom.delete_namespaced_custom_object(*workflow))
        if deleted:
            activity.logger.info("deleted Argo Workflow %s/%s", ref.namespace, ref.name)
        return deleted
