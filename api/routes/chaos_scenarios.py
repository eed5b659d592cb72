"""Chaos scenarios (several faults under one hypothesis, run as an Argo Workflow): the catalogue, run (by name
or inline), list, read, abort, game days — role `sre`, as experiments."""

from datetime import UTC, datetime

from fastapi import APIRouter, Query
from temporalio.client import (
    ScheduleActionStartWorkflow,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

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
from api.conversation_calls import temporal_unavailable
from api.deps import AppState, StateDep
from api.errors import ApiError, from_update_failure, start_refused
from api.rollout_schemas import ReasonIn
from api.routes.chaos import create_game_day, safety_policy, schedule_summary
from api.schemas import ERROR_RESPONSES
from api.visibility import listed, missing_or_unavailable, summary_fields, view_or_missing
from chaos.experiments import ExperimentError
from chaos.scenarios import DEFAULT_SCENARIOS, Scenario, load_scenarios, parse_scenarios, scenario_to_data
from temporal.constants import KIND, PHASE, SCENARIO_KIND, SERVICE
from workflows._records import Actor
from workflows.chaos import CHECKING
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
    start = WithStartWorkflowOperation(
        ChaosScenarioWorkflow.run,
        ScenarioInput(scenario, run, safety_policy(state), requested_by=caller.subject),
        id=workflow_id(scenario.name, run),
        task_queue=state.settings.rollout.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,  # a run id names one run, ever
        search_attributes=_attributes(scenario),
        memo=_memo(scenario),
    )
    try:
        return await state.temporal.execute_update_with_start_workflow(
            ChaosScenarioWorkflow.accepted, start_workflow_operation=start
        )
    except WorkflowAlreadyStartedError:
        raise _exists(scenario.name, run) from None
    except WorkflowUpdateFailedError as err:
        raise start_refused(err, "ChaosRefused") from err
    except RPCError as err:
        if err.status == RPCStatusCode.ALREADY_EXISTS:
            raise _exists(scenario.name, run) from None
        raise temporal_unavailable(err) from err


@router.post("/schedules", status_code=201, response_model=ScheduleSummary)
async def create_schedule(body: ScenarioScheduleCreate, state: StateDep, caller: SreDep) -> ScheduleSummary:
    """A recurring game day of a scenario (one schedule per scenario; a run is skipped while the last one
    still runs), each run through the same safety policy as a manual one."""
    scenario = _scenario(body.scenario, body.definition, state)
    action = ScheduleActionStartWorkflow(
        ChaosScenarioWorkflow.run,
        ScenarioInput(scenario, "", safety_policy(state), requested_by=f"schedule by {caller.subject}"),
        id=workflow_id(scenario.name, "gameday"),
        task_queue=state.settings.rollout.task_queue,
        typed_search_attributes=_attributes(scenario),
        memo=_memo(scenario),
    )
    summary = await create_game_day(
        state, SCHEDULE_PREFIX + scenario.name, action, body, f"chaos scenario game day: {scenario.name}"
    )
    return summary.model_copy(update={"experiment": scenario.name})


@router.get("/schedules", response_model=ScheduleList)
async def list_schedules(state: StateDep, caller: SreDep) -> ScheduleList:
    """Scenario game days and their next runs (`experiment` names the scenario)."""
    found: list[ScheduleSummary] = []
    try:
        async for each in await state.temporal.list_schedules():
            if each.id.startswith(SCHEDULE_PREFIX):
                described = await state.temporal.get_schedule_handle(each.id).describe()
                found.append(schedule_summary(each.id, described, SCHEDULE_PREFIX))
    except RPCError as err:
        raise temporal_unavailable(err) from err
    return ScheduleList(data=found)


@router.delete("/schedules/{schedule_id}", status_code=204)
async def delete_schedule(schedule_id: str, state: StateDep, caller: SreDep) -> None:
    """Stop a scenario game day; runs under way finish (and clean up) on their own."""
    missing = ApiError(404, "ScheduleNotFound", f"no chaos scenario schedule {schedule_id}")
    if not schedule_id.startswith(SCHEDULE_PREFIX):
        raise missing
    try:
        await state.temporal.get_schedule_handle(schedule_id).delete()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise missing from err
        raise temporal_unavailable(err) from err


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
    try:
        return await handle.execute_update(
            ChaosScenarioWorkflow.abort, Actor(by=caller.subject, reason=body.reason)
        )
    except WorkflowUpdateFailedError as err:
        raise from_update_failure(err) from err
    except RPCError as err:
        missing = ApiError(404, "ScenarioNotFound", f"no running chaos scenario run {handle.id}")
        raise missing_or_unavailable(err, missing) from err


# ---- helpers ---------------------------------------------------------------------------------------------


def _catalogue(state: AppState) -> dict[str, Scenario]:
    try:
        chaos = state.settings.chaos
        scenarios = load_scenarios(
            chaos.scenarios_file or DEFAULT_SCENARIOS, {"workload": chaos.workload_url.rstrip("/")}
        )
    except ExperimentError as err:
        raise ApiError(500, "BadCatalogue", f"the chaos scenario catalogue is invalid: {err}") from err
    return {scenario.name: scenario for scenario in scenarios}


def _scenario(name: str | None, definition: dict[str, object] | None, state: AppState) -> Scenario:
    if definition is not None:
        try:
            [scenario] = parse_scenarios({"scenarios": [definition]})
        except ExperimentError as err:
            raise ApiError(422, "InvalidScenario", str(err).replace("scenarios[0].", "definition.")) from err
        return scenario
    known = _catalogue(state)
    if name not in known:
        names = ", ".join(sorted(known)) or "none"
        raise ApiError(404, "ScenarioNotFound", f"no scenario {name!r} in the catalogue ({names})")
    return known[name]


def _attributes(scenario: Scenario) -> TypedSearchAttributes:
    first = scenario.faults[0].target  # LcpService holds one service: the first fault's
    return TypedSearchAttributes(
        [
            SearchAttributePair(KIND, SCENARIO_KIND),
            SearchAttributePair(SERVICE, f"{first.namespace}/{first.service}"),
            SearchAttributePair(PHASE, CHECKING),
        ]
    )


def _memo(scenario: Scenario) -> dict[str, list[str]]:
    """Every service the scenario hits (a rollout of one of them is refused while it runs)."""
    services = dict.fromkeys(f"{f.target.namespace}/{f.target.service}" for f in scenario.faults)
    return {"services": list(services)}


def _handle(state: AppState, scenario: str, run: str) -> Handle:
    return state.temporal.get_workflow_handle_for(ChaosScenarioWorkflow.run, workflow_id(scenario, run))


def _exists(scenario: str, run: str) -> ApiError:
    return ApiError(409, "RunExists", f"{workflow_id(scenario, run)} exists: give another run id")
