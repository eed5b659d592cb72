"""The lab's simulated Argo Workflows controller, for what chaos scenarios use: steps templates (groups in
sequence, the steps of a group in parallel), resource templates that create or get an object and wait on its
success/failure conditions, a deadline, and `spec.shutdown` (Stop, Terminate)."""

from __future__ import annotations

import calendar
import copy
import logging
import time
from collections.abc import Callable
from typing import Any

import kmock
import yaml

from lab.controllers import DEFAULT_INTERVAL, Controller
from lab.kube import SIMULATED_LABEL, Kind, LabKubernetes, Obj, parse_label_selector

log = logging.getLogger(__name__)

# What the real controller (argoproj/argo-workflows 3.x, workflow/controller/operator.go and steps.go; the
# executor's resource.go for resource templates) does, and so what this one imitates:
# - status: phase "" → Running → Succeeded | Failed | Error, startedAt, finishedAt, message, progress
#   ("<done>/<total>" of Pod nodes), and nodes keyed by id: the root node's id is the Workflow's name, every
#   other's `<workflow>-<fnv-1a 32 of the node's name>`. A steps template is a "Steps" node (name as its
#   parent names it), each group a "StepGroup" node `<steps>[i]` (displayName "[i]"), each step a node
#   `<steps>[i].<step>`; a resource template runs in an executor pod, a "Pod" node. Children link a node
#   to what runs under it; a group's steps link to the next group.
# - A group is done when all its steps are; it fails if one failed ("child '<id>' failed"), and so does its
#   steps node and, at the top, the Workflow, which also takes the message.
# - Resource templates: `action` create (ownerReferences to the Workflow when setOwnerReference) or get,
#   then, if conditions are given, the object is polled; failureCondition is checked before
#   successCondition. A condition is a label selector whose keys are JSON paths into the object
#   (gjson: `status.experiments.0.verdict`).
# - spec.shutdown Stop or Terminate (no exit handlers here, so the two are alike): every node not done
#   fails with "Stopped with strategy '<strategy>'", and so does the Workflow. activeDeadlineSeconds past
#   startedAt does the same with "Step exceeded its deadline".
# - labels workflows.argoproj.io/phase, and workflows.argoproj.io/completed "true" once it ended.
# No executor pod is created and no other template type runs (a node of one is an Error saying so).

WORKFLOWS = "argoproj.io/v1alpha1/workflows"
PHASE_LABEL = "workflows.argoproj.io/phase"
COMPLETED_LABEL = "workflows.argoproj.io/completed"
SHUTDOWN_STRATEGIES = ("Stop", "Terminate")
DONE = ("Succeeded", "Failed", "Error", "Skipped", "Omitted")
FAILED = ("Failed", "Error")


def node_id(workflow: str, node_name: str) -> str:
    """Argo's id of a node: the Workflow's name for the root, else `<workflow>-<fnv-1a 32 of its name>`."""
    if node_name == workflow:
        return workflow
    digest = 0x811C9DC5
    for byte in node_name.encode():
        digest = ((digest ^ byte) * 0x01000193) & 0xFFFFFFFF
    return f"{workflow}-{digest}"


def json_path(obj: Any, path: str) -> Any:
    """gjson's dotted path: `status.experiments.0.verdict`; None where it leads nowhere."""
    for part in path.split("."):
        if isinstance(obj, dict):
            obj = obj.get(part)
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return None
    return obj


def condition_holds(condition: str, obj: Obj) -> bool:
    """Whether `obj` meets an Argo resource condition (a label selector over JSON paths)."""
    requirements = parse_label_selector(condition)
    values: dict[str, str] = {}
    for requirement in requirements:
        value = json_path(obj, requirement.key)
        if value is not None:
            values[requirement.key] = str(value).lower() if isinstance(value, bool) else str(value)
    return bool(requirements) and all(requirement.matches(values) for requirement in requirements)


class ArgoWorkflowController(Controller):
    """Runs Workflows on the lab's Kubernetes API, writing their status as Argo does; `clock` (unix seconds)
    times the deadline. Everything it needs is in the Workflow's status, so a new controller picks up where
    an old one stopped."""

    watches = (WORKFLOWS,)

    def __init__(
        self,
        kube: LabKubernetes,
        *,
        clock: Callable[[], float] = time.time,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        super().__init__(kube, interval=interval)
        self.clock = clock

    def reconcile(self) -> None:
        for workflow in self.api.list_objects(WORKFLOWS):
            meta = workflow["metadata"]
            phase = (workflow.get("status") or {}).get("phase") or ""
            if phase in DONE or meta.get("deletionTimestamp"):
                continue
            try:
                _Run(self, workflow).advance()
            except Exception:
                log.exception(
                    "lab: the simulated Argo controller failed on %s/%s", meta["namespace"], meta["name"]
                )


class _Run:
    """One reconcile of one Workflow: its status worked out from the spec and the cluster, then written."""

    def __init__(self, controller: ArgoWorkflowController, workflow: Obj) -> None:
        self.api = controller.api
        self.now = controller.clock()
        self.workflow = workflow
        self.name: str = workflow["metadata"]["name"]
        self.namespace: str = workflow["metadata"]["namespace"]
        self.spec: Obj = workflow.get("spec") or {}
        self.status: Obj = copy.deepcopy(workflow.get("status") or {})
        self.nodes: dict[str, Obj] = self.status.get("nodes") or {}
        self.templates = {t.get("name"): t for t in self.spec.get("templates") or [] if isinstance(t, dict)}

    def advance(self) -> None:
        if not self.status.get("phase"):
            self.status.update(phase="Running", startedAt=_timestamp(self.now))
            log.warning(
                "lab: simulated Argo Workflow %s/%s started (a simulation)", self.namespace, self.name
            )
        shutdown = self.spec.get("shutdown")
        deadline = self.spec.get("activeDeadlineSeconds")
        started = _parse_time(self.status["startedAt"])
        if shutdown in SHUTDOWN_STRATEGIES:
            self._end_all(f"Stopped with strategy '{shutdown}'")
        elif isinstance(deadline, int) and started is not None and self.now >= started + deadline:
            self._end_all("Step exceeded its deadline")
        else:
            root = self._execute(self.name, self.spec.get("entrypoint") or "", self.name, None)
            if root["phase"] in DONE:
                self._end(root["phase"], root.get("message", ""))
        self._write()

    # --- templates ---------------------------------------------------------------------------------------

    def _execute(self, name: str, template_name: str, display: str, boundary: str | None) -> Obj:
        """The node `name` running `template_name`, one step further; its phase says whether it is done."""
        identity = node_id(self.name, name)
        node = self.nodes.get(identity)
        if node is None:
            node = {
                "id": identity,
                "name": name,
                "displayName": display,
                "templateName": template_name,
                "phase": "Pending",
                "startedAt": _timestamp(self.now),
            }
            if boundary is not None:
                node["boundaryID"] = boundary
            self.nodes[identity] = node
        if node["phase"] in DONE:
            return node
        template = self.templates.get(template_name)
        if template is None:
            return self._finish(node, "Error", f"template {template_name!r} not found")
        if "steps" in template:
            node["type"] = "Steps"
            return self._steps(node, template["steps"] or [])
        if "resource" in template:
            node["type"] = "Pod"
            return self._resource(node, template["resource"] or {})
        node["type"] = "Pod"
        return self._finish(node, "Error", "the lab's simulated Argo runs only steps and resource templates")

    def _steps(self, node: Obj, groups: list[Any]) -> Obj:
        node["phase"] = "Running"
        previous = [node]
        for index, group in enumerate(groups):
            group_node = self._group(node, index)
            for earlier in previous:
                _link(earlier, group_node["id"])
            steps = [step for step in group or [] if isinstance(step, dict)]
            children = [
                self._execute(
                    f"{group_node['name']}.{step.get('name', '')}",
                    str(step.get("template") or ""),
                    str(step.get("name") or ""),
                    node["id"],
                )
                for step in steps
            ]
            for child in children:
                _link(group_node, child["id"])
            if any(child["phase"] not in DONE for child in children):
                group_node["phase"] = "Running"
                return node
            if failed := [child for child in children if child["phase"] in FAILED]:
                message = f"child '{failed[0]['id']}' failed"
                self._finish(group_node, "Failed", message)
                return self._finish(node, "Failed", message)
            self._finish(group_node, "Succeeded")
            previous = children
        return self._finish(node, "Succeeded")

    def _group(self, steps_node: Obj, index: int) -> Obj:
        name = f"{steps_node['name']}[{index}]"
        identity = node_id(self.name, name)
        if identity not in self.nodes:
            self.nodes[identity] = {
                "id": identity,
                "name": name,
                "displayName": f"[{index}]",
                "type": "StepGroup",
                "templateName": steps_node["templateName"],
                "phase": "Pending",
                "boundaryID": steps_node["id"],
                "startedAt": _timestamp(self.now),
            }
        return self.nodes[identity]

    def _resource(self, node: Obj, resource: Obj) -> Obj:
        action = resource.get("action")
        try:
            manifest = yaml.safe_load(resource.get("manifest") or "")
        except yaml.YAMLError as error:
            return self._finish(node, "Error", f"the manifest is not valid YAML: {error}")
        if not isinstance(manifest, dict):
            return self._finish(node, "Error", "the manifest is not a Kubernetes object")
        kind = self._kind(manifest)
        if kind is None:
            return self._finish(
                node,
                "Error",
                f"the lab's cluster serves no {manifest.get('kind')} ({manifest.get('apiVersion')})",
            )
        meta = manifest.setdefault("metadata", {})
        namespace = meta.get("namespace") or self.namespace
        if node["phase"] == "Pending":
            if action == "create":
                if resource.get("setOwnerReference"):
                    owner = {
                        "apiVersion": self.workflow["apiVersion"],
                        "kind": "Workflow",
                        "name": self.name,
                        "uid": self.workflow["metadata"]["uid"],
                        "blockOwnerDeletion": True,
                    }
                    meta["ownerReferences"] = [*meta.get("ownerReferences", []), owner]
                try:
                    created = self.api.create_object(kind, manifest, namespace)
                except kmock.KubernetesError as error:
                    return self._finish(node, "Failed", str(error))
                meta["name"] = created["metadata"]["name"]
                log.warning(
                    "lab: simulated Argo Workflow %s/%s created %s %s/%s",
                    self.namespace,
                    self.name,
                    kind.kind,
                    namespace,
                    meta["name"],
                )
            elif action != "get":
                return self._finish(node, "Error", f"the lab's simulated Argo does not run action {action!r}")
            node["phase"] = "Running"
            node["outputs"] = {
                "parameters": [{"name": "resource-name", "value": f"{kind.plural}/{meta.get('name')}"}]
            }
        success, failure = resource.get("successCondition"), resource.get("failureCondition")
        if not success and not failure:
            return self._finish(node, "Succeeded")
        found = self.api.get_object(kind, namespace, str(meta.get("name") or ""))
        if found is None:
            return self._finish(node, "Failed", f'{kind.plural} "{meta.get("name")}" not found')
        if failure and condition_holds(failure, found):
            return self._finish(node, "Failed", f"failed condition: {failure}")
        if success and condition_holds(success, found):
            return self._finish(node, "Succeeded")
        return node

    def _kind(self, manifest: Obj) -> Kind | None:
        for kind in self.api.kinds.values():
            if kind.api_version == manifest.get("apiVersion") and kind.kind == manifest.get("kind"):
                return kind
        return None

    # --- ending and writing --------------------------------------------------------------------------------

    def _finish(self, node: Obj, phase: str, message: str = "") -> Obj:
        node.update(phase=phase, finishedAt=_timestamp(self.now))
        if message:
            node["message"] = message
        return node

    def _end_all(self, message: str) -> None:
        for node in self.nodes.values():
            if node["phase"] not in DONE:
                self._finish(node, "Failed", message)
        self._end("Failed", message)

    def _end(self, phase: str, message: str) -> None:
        self.status.update(phase=phase, finishedAt=_timestamp(self.now))
        if message:
            self.status["message"] = message
        log.warning(
            "lab: simulated Argo Workflow %s/%s ended: %s%s",
            self.namespace,
            self.name,
            phase,
            f" ({message})" if message else "",
        )

    def _write(self) -> None:
        pods = [node for node in self.nodes.values() if node.get("type") == "Pod"]
        done = sum(1 for node in pods if node["phase"] in DONE)
        self.status.update(nodes=self.nodes, progress=f"{done}/{len(pods)}")
        if self.status == self.workflow.get("status"):
            return
        labels = self.workflow["metadata"].setdefault("labels", {})
        labels.update({PHASE_LABEL: self.status["phase"], SIMULATED_LABEL: "true"})
        if self.status["phase"] in DONE:
            labels[COMPLETED_LABEL] = "true"
        self.workflow["status"] = self.status
        self.api.replace_object(WORKFLOWS, self.workflow)


def _link(node: Obj, child: str) -> None:
    children = node.setdefault("children", [])
    if child not in children:
        children.append(child)


def _timestamp(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


def _parse_time(text: str) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None
