"""What the chaos scenario workflow shares with the Argo Workflows activities (activities/argo.py): their
inputs, results and names, without the kubernetes client or the argo-workflows models."""

from dataclasses import dataclass, field

from temporalio import activity

from chaos.scenarios import Scenario

FINISHED_PHASES = ("Succeeded", "Failed", "Error")


@dataclass
class WorkflowRef:
    namespace: str
    name: str


@dataclass
class SubmitScenarioInput:
    scenario: Scenario
    run: str
    grace_s: float = 60.0  # past the faults' duration, Argo itself fails the Workflow (activeDeadlineSeconds)


@dataclass
class NodeState:
    """One node of the Workflow's status, as Argo writes it."""

    name: str  # e.g. "<workflow>[1].<fault>"
    display_name: str
    type: str  # Steps | StepGroup | Pod
    phase: str  # Pending | Running | Succeeded | Failed | Error ...
    message: str = ""


@dataclass
class WorkflowState:
    """The Workflow's status; `found` is False once it is gone (or before it was created)."""

    found: bool
    phase: str = ""
    message: str = ""
    progress: str = ""
    nodes: list[NodeState] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.found and self.phase in FINISHED_PHASES


@dataclass
class StopWorkflowInput:
    ref: WorkflowRef
    strategy: str = "Terminate"  # spec.shutdown: Terminate (no exit handlers run) or Stop


class ArgoActivities:
    """The activities' contract: what workflows call. The implementation, activities/argo.py's
    ArgoActivities, subclasses this and overrides every method under the same activity name."""

    @activity.defn(name="argo.submit_scenario")
    def submit_scenario(self, request: SubmitScenarioInput) -> WorkflowRef:
        """Render the scenario's Workflow (activities/argo_workflow.py) and create it; one that exists already
        is done."""
        raise NotImplementedError

    @activity.defn(name="argo.read_workflow")
    def read_workflow(self, ref: WorkflowRef) -> WorkflowState:
        raise NotImplementedError

    @activity.defn(name="argo.stop_workflow")
    def stop_workflow(self, request: StopWorkflowInput) -> bool:
        """Patch `spec.shutdown` (Argo's stop/terminate); False when the Workflow is already gone."""
        raise NotImplementedError

    @activity.defn(name="argo.delete_workflow")
    def delete_workflow(self, ref: WorkflowRef) -> bool:
        """Delete the Workflow; False when it was already gone."""
        raise NotImplementedError
