"""A chaos scenario rendered as an Argo Workflow (argoproj.io/v1alpha1), with the argo-workflows package's
models, as Litmus ChaosCenter runs its scenarios: resource templates that create each ChaosEngine and wait
for its verdict in the ChaosResult. Pure (no client): activities/argo.py creates the manifest on a cluster,
`lcp chaos scenario render` prints it."""

from typing import Any

import yaml
from argo_workflows.api_client import ApiClient
from argo_workflows.model.io_argoproj_workflow_v1alpha1_parallel_steps import (
    IoArgoprojWorkflowV1alpha1ParallelSteps as ParallelSteps,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_resource_template import (
    IoArgoprojWorkflowV1alpha1ResourceTemplate as ResourceTemplate,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_template import (
    IoArgoprojWorkflowV1alpha1Template as Template,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_workflow import (
    IoArgoprojWorkflowV1alpha1Workflow as Workflow,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_workflow_spec import (
    IoArgoprojWorkflowV1alpha1WorkflowSpec as WorkflowSpec,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_workflow_step import (
    IoArgoprojWorkflowV1alpha1WorkflowStep as WorkflowStep,
)
from argo_workflows.model.object_meta import ObjectMeta

from chaos.experiments import LITMUS_API_VERSION, ExperimentError, _shortened, render_engine, result_name
from chaos.scenarios import Scenario, scenario_engine_name, workflow_name

ARGO_API_VERSION = "argoproj.io/v1alpha1"
ENTRYPOINT = "scenario"
# The conditions Argo checks on the resource a template acts on (Kubernetes label-selector syntax over JSON
# paths of the object). The engine: Litmus' operator sets status.engineStatus "completed" when its runner is
# done and "stopped" after an abort. The ChaosResult: the experiment's verdict.
ENGINE_DONE = "status.engineStatus == completed"
ENGINE_STOPPED = "status.engineStatus == stopped"
VERDICT_PASS = "status.experimentStatus.verdict == Pass"
VERDICT_NOT_PASS = "status.experimentStatus.verdict in (Fail,Error,Stopped)"
SCENARIO_LABEL = "lcp.dev/scenario"


def render_workflow(
    scenario: Scenario,
    run: str,
    *,
    namespace: str | None = None,
    service_account: str = "argo-chaos",
    grace_s: float = 60.0,
) -> dict[str, Any]:
    """The Workflow manifest for one run of `scenario`, in `namespace` (the first fault's target namespace
    unless given). Each fault is a steps template of two resource templates: create its ChaosEngine (done
    when the engine is), then get its ChaosResult (passes on verdict Pass). The faults of a step run in
    parallel, the steps in sequence; Argo itself fails the Workflow after the faults' duration and
    `grace_s`. Probes are not rendered: lcp runs the hypothesis."""
    if problem := scenario.problem():
        raise ExperimentError(f"scenario {scenario.name!r}: {problem}")
    name = workflow_name(scenario, run)
    labels = {
        "app.kubernetes.io/managed-by": "lcp",
        SCENARIO_LABEL: scenario.name,
        "lcp.dev/run": _shortened(run, 63),
    }
    templates = [
        Template(
            name=ENTRYPOINT,
            steps=[
                ParallelSteps(
                    [
                        WorkflowStep(name=fault.name, template=_fault_template(scenario, fault))
                        for fault in step
                    ]
                )
                for step in scenario.steps
            ],
        )
    ]
    for fault in scenario.faults:
        engine = render_engine(fault, f"{scenario.name}-{run}")
        engine["metadata"]["labels"][SCENARIO_LABEL] = scenario.name
        assert engine["metadata"]["name"] == scenario_engine_name(scenario, fault, run)
        result = {
            "apiVersion": LITMUS_API_VERSION,
            "kind": "ChaosResult",
            "metadata": {
                "name": result_name(engine["metadata"]["name"], fault),
                "namespace": fault.target.namespace,
            },
        }
        template = _fault_template(scenario, fault)
        templates += [
            Template(
                name=template,
                steps=[
                    ParallelSteps([WorkflowStep(name="inject", template=f"{template}-engine")]),
                    ParallelSteps([WorkflowStep(name="verdict", template=f"{template}-verdict")]),
                ],
            ),
            Template(
                name=f"{template}-engine",
                resource=ResourceTemplate(
                    action="create",
                    manifest=_yaml(engine),
                    set_owner_reference=True,  # deleting the Workflow deletes its engines too
                    success_condition=ENGINE_DONE,
                    failure_condition=ENGINE_STOPPED,
                ),
            ),
            Template(
                name=f"{template}-verdict",
                resource=ResourceTemplate(
                    action="get",
                    manifest=_yaml(result),
                    success_condition=VERDICT_PASS,
                    failure_condition=VERDICT_NOT_PASS,
                ),
            ),
        ]
    workflow = Workflow(
        api_version=ARGO_API_VERSION,
        kind="Workflow",
        metadata=ObjectMeta(
            name=name, namespace=namespace or scenario.faults[0].target.namespace, labels=labels
        ),
        spec=WorkflowSpec(
            entrypoint=ENTRYPOINT,
            service_account_name=service_account,
            active_deadline_seconds=int(scenario.duration_s + grace_s),
            templates=templates,
        ),
    )
    manifest: dict[str, Any] = ApiClient.sanitize_for_serialization(workflow)
    return {"apiVersion": manifest.pop("apiVersion"), "kind": manifest.pop("kind"), **manifest}


def _fault_template(scenario: Scenario, fault: Any) -> str:
    """A fault's template name, by its place in the scenario (fault names may end in "-engine")."""
    return f"fault-{scenario.faults.index(fault)}"


def _yaml(manifest: dict[str, Any]) -> str:
    text: str = yaml.safe_dump(manifest, sort_keys=False)
    return text
