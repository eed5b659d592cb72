"""ChaosScenarioWorkflow: several Litmus faults in steps, run by an Argo Workflow, under one steady-state
hypothesis that this workflow checks; the Workflow and every engine are always cleaned up."""

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from temporalio import workflow

from chaos.experiments import Hypothesis, Target
from chaos.scenarios import Scenario, scenario_engine_name, workflow_name
from policies.chaos import SafetyPolicy
from workflows import _options
from workflows._records import Actor
from workflows.chaos import (
    CLEANING_UP,
    ERROR,
    INJECTING,
    VERIFYING,
    ChaosRun,
    ChaosState,
    JournalEntry,
    ProbeResult,
    _Stop,
)

with workflow.unsafe.imports_passed_through():
    from activities.contracts.argo import (
        ArgoActivities,
        StopWorkflowInput,
        SubmitScenarioInput,
        WorkflowRef,
        WorkflowState,
    )
    from activities.contracts.litmus import EngineRef, LitmusActivities


def workflow_id(scenario: str, run: str) -> str:
    return f"chaos-scenario/{scenario}/{run}"


@dataclass
class ScenarioInput:
    scenario: Scenario
    run: str  # unique per run of the scenario; "" (a schedule's runs): the id's last part
    policy: SafetyPolicy = field(default_factory=SafetyPolicy)
    poll_s: float = 1.0  # how often the Argo Workflow is read while the faults run
    grace_s: float = 60.0  # past the faults' duration, the Workflow is stopped whatever it says
    requested_by: str = ""


@dataclass
class FaultProgress:
    """One fault of the scenario, as its node in the Argo Workflow shows it."""

    name: str
    kind: str
    target: str  # namespace/service
    step: int  # which step of the scenario (from 0)
    engine: str
    phase: str = "Pending"  # the node's: Pending | Running | Succeeded | Failed | Error
    message: str = ""


@dataclass
class ScenarioState(ChaosState):
    faults: list[FaultProgress] = field(default_factory=list)
    progress: str = ""  # Argo's "<done>/<total>" of its resource steps


@dataclass
class ScenarioView:
    id: str
    scenario: str
    run: str
    workflow: str  # namespace/name of the Argo Workflow
    phase: str
    message: str
    started_at: datetime
    requested_by: str
    verdict: str = ""  # the Argo Workflow's phase once it ended (Succeeded, Failed, Error)
    progress: str = ""
    faults: list[FaultProgress] = field(default_factory=list)
    probes: list[ProbeResult] = field(default_factory=list)
    journal: list[JournalEntry] = field(default_factory=list)
    probe_success_percentage: float | None = None
    resilience_score: float | None = None
    time_to_recover_s: float | None = None
    injected: bool = False
    cleaned_up: bool = False
    finished_at: datetime | None = None


@workflow.defn(name="ChaosScenario")
class ChaosScenarioWorkflow(ChaosRun):
    _noun = "scenario"

    @workflow.init
    def __init__(self, request: ScenarioInput) -> None:
        self._in = request
        scenario = request.scenario
        self._state: ScenarioState = ScenarioState(
            started_at=workflow.now(),
            faults=[
                FaultProgress(
                    name=fault.name,
                    kind=fault.fault.kind,
                    target=f"{fault.target.namespace}/{fault.target.service}",
                    step=index,
                    engine=scenario_engine_name(scenario, fault, self._run),
                )
                for index, step in enumerate(scenario.steps)
                for fault in step
            ],
        )

    @workflow.run
    async def run(self, request: ScenarioInput) -> ScenarioView:
        await self._run_steps()
        return self._view()

    # ---- steps -------------------------------------------------------------------------------------------

    async def _safety(self) -> dict[str, Any]:
        scenario = self._in.scenario
        self._refuse_invalid(scenario.problem())
        checked: dict[str, Any] = {}
        # Per step, the faults on one target hit it at once: their pods count together.
        for step in scenario.steps:
            hits: dict[Target, list[float]] = {}
            for fault in step:
                hits.setdefault(fault.target, []).append(fault.fault.pods_affected_perc)
            for target, percentages in hits.items():
                checked[f"{target.namespace}/{target.service}"] = await self._check_target(
                    target, percentages
                )
        return checked

    async def _inject(self) -> dict[str, Any]:
        scenario = self._in.scenario
        self._set_phase(INJECTING)
        self._state.message = (
            f"scenario {scenario.name}: {len(scenario.faults)} faults in {len(scenario.steps)} steps"
        )
        # Marked first: a Workflow whose creation went through but was never reported is cleaned up too.
        self._state.injected = True
        self._state.injected_at = workflow.now()
        await self._activity(
            ArgoActivities.submit_scenario,
            SubmitScenarioInput(scenario, self._run, self._in.grace_s),
            _options.KUBERNETES_READ,
        )
        state = WorkflowState(found=False)

        async def finished() -> bool:
            nonlocal state
            state = await self._activity(
                ArgoActivities.read_workflow, self._workflow, _options.KUBERNETES_READ
            )
            self._follow(state)
            return bool(state.finished)

        await self._watch(
            finished,
            scenario.duration_s + self._in.grace_s,
            f"the Argo Workflow did not end within the faults' duration and {self._in.grace_s:g} s",
        )
        self._state.verdict = state.phase
        if state.phase != "Succeeded":
            failed = [f"{f.name}: {f.message}" for f in self._state.faults if f.phase in ("Failed", "Error")]
            raise _Stop(ERROR, f"the Argo Workflow {state.phase}: {'; '.join(failed) or state.message}")
        return {"workflow": state.phase, "progress": state.progress}

    async def _cleanup(self) -> dict[str, Any]:
        """Stop the Workflow first (so that it starts no further engine), stop every engine (Litmus reverts
        its chaos), then delete the engines and the Workflow."""
        if self._state.phase in (INJECTING, VERIFYING):
            self._set_phase(CLEANING_UP)
        rollback = _options.KUBERNETES_ROLLBACK
        stopped = await self._activity(
            ArgoActivities.stop_workflow, StopWorkflowInput(self._workflow), rollback
        )
        engines = self._engines()
        engines_stopped = await asyncio.gather(
            *(self._activity(LitmusActivities.stop_engine, engine, rollback) for engine in engines)
        )
        engines_deleted = await asyncio.gather(
            *(self._activity(LitmusActivities.delete_engine, engine, rollback) for engine in engines)
        )
        deleted = await self._activity(ArgoActivities.delete_workflow, self._workflow, rollback)
        self._state.cleaned_up = True
        return {
            "workflow_stopped": stopped,
            "workflow_deleted": deleted,
            "engines_stopped": sum(engines_stopped),
            "engines_deleted": sum(engines_deleted),
        }

    def _follow(self, state: WorkflowState) -> None:
        """Each fault's progress from its node, `<workflow>[<step>].<fault>`."""
        nodes = {node.name: node for node in state.nodes}
        for fault in self._state.faults:
            node = nodes.get(f"{self._workflow.name}[{fault.step}].{fault.name}")
            if node is not None:
                fault.phase, fault.message = node.phase, node.message
        self._state.progress = state.progress

    # ---- what ChaosRun asks --------------------------------------------------------------------------------

    @property
    def _hypothesis_def(self) -> Hypothesis:
        return self._in.scenario.hypothesis

    @property
    def _request(self) -> ScenarioInput:
        return self._in

    @property
    def _recover_within_s(self) -> float:
        return self._in.scenario.recover_within_s

    def _targets(self) -> list[Target]:
        return list(dict.fromkeys(fault.target for fault in self._in.scenario.faults))

    def _weights(self) -> list[int]:
        return [fault.weight for fault in self._in.scenario.faults]

    def _leftovers(self) -> str:
        engines = ", ".join(engine.name for engine in self._engines())
        return f"Argo Workflow {self._workflow.name} and engines {engines}"

    # ---- queries and updates -----------------------------------------------------------------------------

    @workflow.query
    def state(self) -> ScenarioView:
        return self._view()

    @workflow.update
    async def accepted(self) -> ScenarioView:
        """Answers once the safety policy has been checked (a refused scenario is a 409 in the API)."""
        await workflow.wait_condition(lambda: self._state.checked)
        if self._state.refusal is not None:
            raise self._state.refusal
        return self._view()

    @workflow.update
    def abort(self, request: Actor) -> ScenarioView:
        """Stop every fault now (the Workflow is terminated, every engine stopped); cleanup and the recovery
        check still run."""
        self._state.abort = request
        return self._view()

    @abort.validator
    def _check_abort(self, request: Actor) -> None:
        self._check_abort_now()

    # ---- bookkeeping -------------------------------------------------------------------------------------

    @property
    def _run(self) -> str:
        return self._in.run or workflow.info().workflow_id.rsplit("/", 1)[-1]

    @property
    def _workflow(self) -> WorkflowRef:
        scenario = self._in.scenario
        namespace = scenario.faults[0].target.namespace if scenario.faults else ""  # "": refused as invalid
        return WorkflowRef(namespace, workflow_name(scenario, self._run))

    def _engines(self) -> list[EngineRef]:
        scenario = self._in.scenario
        return [
            EngineRef(fault.target.namespace, scenario_engine_name(scenario, fault, self._run))
            for fault in scenario.faults
        ]

    def _view(self) -> ScenarioView:
        state = self._state
        return ScenarioView(
            id=workflow.info().workflow_id,
            scenario=self._in.scenario.name,
            run=self._run,
            workflow=f"{self._workflow.namespace}/{self._workflow.name}",
            phase=state.phase,
            message=state.message,
            started_at=state.started_at,
            requested_by=self._in.requested_by,
            verdict=state.verdict,
            progress=state.progress,
            faults=[FaultProgress(**vars(fault)) for fault in state.faults],
            probes=list(state.probes),
            journal=list(state.journal),
            probe_success_percentage=state.probe_success_percentage,
            resilience_score=state.resilience_score,
            time_to_recover_s=state.time_to_recover_s,
            injected=state.injected,
            cleaned_up=state.cleaned_up,
            finished_at=state.finished_at,
        )
