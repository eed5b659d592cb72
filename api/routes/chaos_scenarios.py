"""Chaos scenarios (several faults under one hypothesis, run as an Argo Workflow): the catalogue, run (by name
or inline), list, read, abort, game days — role `sre`, as experiments."""

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query
from temporalio.client import WorkflowHandle
from temporalio.common import TypedSearchAttributes

from api import chaos_runs
from api.auth import SreDep
from api.chaos_schemas import (
    Catalogue,
    ScenarioCreate,
    ScenarioList,
    ScenarioScheduleCreate,
    ScenarioSummary,
    ScheduleList,
    ScheduleSummary,
)
from api.deps import AppState, StateDep
from api.errors import ApiError
from api.rollout_schemas import ReasonIn
from api.schemas import ERROR_RESPONSES
from api.visibility import listed, summary_fields, view_or_missing
from chaos.scenarios import DEFAULT_SCENARIOS, Scenario, load_scenarios, parse_scenarios, scenario_to_data
from temporal.constants import SCENARIO_KIND
from workflows._records import Actor
from workflows.chaos_scenario import ChaosScenarioWorkflow, ScenarioInput, ScenarioView, workflow_id

SCHEDULE_PREFIX = "chaos-scenario-gameday-"
router = APIRouter(prefix="/v1/chaos/scenarios", tags=["chaos"], responses=ERROR_RESPONSES)
Handle = WorkflowHandle[ChaosScenarioWorkflow, ScenarioView]


@router.get("/catalogue", response_model=Catalogue)
async def catalogue(state: StateDep, caller: SreDep) -> Catalogue:
    """The scenarios that can be run by name."""
    return Catalogue(data=[scenario_to_data(s) for s in _catalogue(state).values()])


@router.post("", status_code=201, response_model=ScenarioView)
async def run_scenario(body: ScenarioCreate, state: StateDep, caller: SreDep) -> ScenarioView:
    """Run a scenario from the catalogue (`scenario`) or given whole (`definition`). It answers once the
    safety policy has been checked for every fault: a refusal is a 409 that says why, and nothing runs."""
    scenario = _scenario(body.scenario, body.definition, state)
    run = body.run or datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return await chaos_runs.start(
        state,
        ChaosScenarioWorkflow.run,
        ChaosScenarioWorkflow.accepted,
        ScenarioInput(scenario, run, chaos_runs.safety_policy(state), requested_by=caller.subject),
        workflow_id=workflow_id(scenario.name, run),
        search_attributes=_attributes(scenario),
        memo=_memo(scenario),
    )


@router.post("/schedules", status_code=201, response_model=ScheduleSummary)
async def create_schedule(body: ScenarioScheduleCreate, state: StateDep, caller: SreDep) -> ScheduleSummary:
    """A recurring game day of a scenario (one schedule per scenario; a run is skipped while the last one
    still runs), each run through the same safety policy as a manual one."""
    scenario = _scenario(body.scenario, body.definition, state)
    return await chaos_runs.create_game_day(
        state,
        body,
        ChaosScenarioWorkflow.run,
        ScenarioInput(
            scenario, "", chaos_runs.safety_policy(state), requested_by=f"schedule by {caller.subject}"
        ),
        prefix=SCHEDULE_PREFIX,
        name=scenario.name,
        note=f"chaos scenario game day: {scenario.name}",
        workflow_id=workflow_id(scenario.name, "gameday"),
        search_attributes=_attributes(scenario),
        memo=_memo(scenario),
    )


@router.get("/schedules", response_model=ScheduleList)
async def list_schedules(state: StateDep, caller: SreDep) -> ScheduleList:
    """Scenario game days and their next runs (`experiment` names the scenario)."""
    return ScheduleList(data=await chaos_runs.game_days(state, SCHEDULE_PREFIX))


@router.delete("/schedules/{schedule_id}", status_code=204)
async def delete_schedule(schedule_id: str, state: StateDep, caller: SreDep) -> None:
    """Stop a scenario game day; runs under way finish (and clean up) on their own."""
    await chaos_runs.delete_game_day(state, schedule_id, SCHEDULE_PREFIX, "chaos scenario schedule")


@router.get("", response_model=ScenarioList)
async def list_scenarios(
    state: StateDep,
    caller: SreDep,
    phase: str | None = Query(default=None, pattern=r"^[A-Za-z]+$"),
    limit: int = Query(default=50, ge=1, le=500),
) -> ScenarioList:
    """Scenario runs, newest first, from Temporal's visibility."""
    found = await listed(state.temporal, SCENARIO_KIND, limit, phase=phase)
    return ScenarioList(
        data=[
            ScenarioSummary(scenario=scenario, run=run, **summary_fields(execution))
            for (scenario, run), execution in found
        ]
    )


@router.get("/{scenario}/{run}", response_model=ScenarioView)
async def get_scenario(scenario: str, run: str, state: StateDep, caller: SreDep) -> ScenarioView:
    """The run as it stands: phase, each fault's progress, probes, the journal, verdict and score."""
    handle = _handle(state, scenario, run)
    missing = ApiError(404, "ScenarioNotFound", f"no chaos scenario run {handle.id}")
    return await view_or_missing(handle, ChaosScenarioWorkflow.state, missing)


@router.post("/{scenario}/{run}/abort", response_model=ScenarioView)
async def abort(scenario: str, run: str, body: ReasonIn, state: StateDep, caller: SreDep) -> ScenarioView:
    """Stop every fault now (the Argo Workflow is terminated, every engine stopped); cleanup and the
    recovery check still run."""
    handle = _handle(state, scenario, run)
    missing = ApiError(404, "ScenarioNotFound", f"no running chaos scenario run {handle.id}")
    by = Actor(by=caller.subject, reason=body.reason)
    return await chaos_runs.abort(handle, ChaosScenarioWorkflow.abort, by, missing)


# ---- helpers ---------------------------------------------------------------------------------------------


def _catalogue(state: AppState) -> dict[str, Scenario]:
    path = state.settings.chaos.scenarios_file or DEFAULT_SCENARIOS
    return chaos_runs.catalogue(state, load_scenarios, path, "chaos scenario")


def _scenario(name: str | None, definition: dict[str, Any] | None, state: AppState) -> Scenario:
    return chaos_runs.chosen("scenario", name, definition, parse_scenarios, lambda: _catalogue(state))


def _attributes(scenario: Scenario) -> TypedSearchAttributes:
    return chaos_runs.attributes(SCENARIO_KIND, scenario.faults[0].target)  # LcpService holds one: the first


def _memo(scenario: Scenario) -> dict[str, list[str]]:
    """Every service the scenario hits (a rollout of one of them is refused while it runs)."""
    services = dict.fromkeys(f"{f.target.namespace}/{f.target.service}" for f in scenario.faults)
    return {"services": list(services)}


def _handle(state: AppState, scenario: str, run: str) -> Handle:
    return state.temporal.get_workflow_handle_for(ChaosScenarioWorkflow.run, workflow_id(scenario, run))
