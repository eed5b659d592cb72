"""Chaos experiments: the catalogue, run (by name or inline), list, read, abort — role `sre`."""

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Query
from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleDescription,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
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
    ChaosCreate,
    ChaosList,
    ChaosSummary,
    GameDayTiming,
    ScheduleCreate,
    ScheduleList,
    ScheduleSummary,
)
from api.conversation_calls import temporal_unavailable
from api.deps import AppState, StateDep
from api.errors import ApiError, from_update_failure, start_refused
from api.rollout_schemas import ReasonIn
from api.schemas import ERROR_RESPONSES
from api.visibility import listed, missing_or_unavailable, summary_fields, view_or_missing
from chaos.experiments import (
    DEFAULT_CATALOGUE,
    Experiment,
    ExperimentError,
    experiment_to_data,
    load_experiments,
    parse_experiments,
)
from policies.chaos import SafetyPolicy
from temporal.constants import KIND, PHASE, SERVICE
from workflows._records import Actor
from workflows.chaos import CHECKING, ChaosExperimentWorkflow, ChaosInput, ChaosView, workflow_id

SCHEDULE_PREFIX = "chaos-gameday-"
router = APIRouter(prefix="/v1/chaos", tags=["chaos"], responses=ERROR_RESPONSES)
Handle = WorkflowHandle[ChaosExperimentWorkflow, ChaosView]


@router.get("/catalogue", response_model=Catalogue)
async def catalogue(state: StateDep, caller: SreDep) -> Catalogue:
    """The experiments that can be run by name."""
    return Catalogue(data=[experiment_to_data(e) for e in _catalogue(state).values()])


@router.post("", status_code=201, response_model=ChaosView)
async def run_experiment(body: ChaosCreate, state: StateDep, caller: SreDep) -> ChaosView:
    """Run an experiment from the catalogue (`experiment`) or given whole (`definition`). It answers once
    the safety policy has been checked: a refusal is a 409 that says why, and nothing is injected."""
    experiment = _experiment(body, state)
    run = body.run or datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    request = ChaosInput(experiment, run, safety_policy(state), requested_by=caller.subject)
    target = experiment.target
    start = WithStartWorkflowOperation(
        ChaosExperimentWorkflow.run,
        request,
        id=workflow_id(experiment.name, run),
        task_queue=state.settings.rollout.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,  # a run id names one run, ever
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(KIND, "chaos"),
                SearchAttributePair(SERVICE, f"{target.namespace}/{target.service}"),
                SearchAttributePair(PHASE, CHECKING),
            ]
        ),
    )
    try:
        return await state.temporal.execute_update_with_start_workflow(
            ChaosExperimentWorkflow.accepted, start_workflow_operation=start
        )
    except WorkflowAlreadyStartedError:
        raise _exists(experiment.name, run) from None
    except WorkflowUpdateFailedError as err:
        raise start_refused(err, "ChaosRefused") from err
    except RPCError as err:
        if err.status == RPCStatusCode.ALREADY_EXISTS:
            raise _exists(experiment.name, run) from None
        raise temporal_unavailable(err) from err


@router.post("/schedules", status_code=201, response_model=ScheduleSummary)
async def create_schedule(body: ScheduleCreate, state: StateDep, caller: SreDep) -> ScheduleSummary:
    """A recurring game day on a Temporal Schedule (one per experiment; a run is skipped while the last
    one still runs). Each run goes through the same safety policy as a manual one."""
    experiment = _experiment(ChaosCreate(experiment=body.experiment, definition=body.definition), state)
    target = experiment.target
    action = ScheduleActionStartWorkflow(
        ChaosExperimentWorkflow.run,
        ChaosInput(experiment, "", safety_policy(state), requested_by=f"schedule by {caller.subject}"),
        id=workflow_id(experiment.name, "gameday"),
        task_queue=state.settings.rollout.task_queue,
        typed_search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(KIND, "chaos"),
                SearchAttributePair(SERVICE, f"{target.namespace}/{target.service}"),
                SearchAttributePair(PHASE, CHECKING),
            ]
        ),
    )
    return await create_game_day(
        state, SCHEDULE_PREFIX + experiment.name, action, body, f"chaos game day: {experiment.name}"
    )


async def create_game_day(
    state: AppState, schedule_id: str, action: ScheduleActionStartWorkflow, body: GameDayTiming, note: str
) -> ScheduleSummary:
    """A Temporal Schedule that starts `action` on the body's cron or interval, skipping a run while the last
    one still runs; a 409 when one by that id exists."""
    spec = (
        ScheduleSpec(cron_expressions=[body.cron])
        if body.cron
        else ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=body.every_s or 0))])
    )
    schedule = Schedule(
        action=action,
        spec=spec,
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(paused=body.paused, note=note),
    )
    try:
        handle = await state.temporal.create_schedule(schedule_id, schedule)
        return schedule_summary(schedule_id, await handle.describe())
    except ScheduleAlreadyRunningError:
        raise ApiError(409, "ScheduleExists", f"{schedule_id} exists: delete it first") from None
    except RPCError as err:
        if err.status == RPCStatusCode.INVALID_ARGUMENT:
            raise ApiError(422, "InvalidSchedule", f"Temporal refused the schedule: {err.message}") from err
        raise temporal_unavailable(err) from err


@router.get("/schedules", response_model=ScheduleList)
async def list_schedules(state: StateDep, caller: SreDep) -> ScheduleList:
    """Chaos game days and their next runs."""
    found: list[ScheduleSummary] = []
    try:
        async for listed in await state.temporal.list_schedules():
            if listed.id.startswith(SCHEDULE_PREFIX):
                described = await state.temporal.get_schedule_handle(listed.id).describe()
                found.append(schedule_summary(listed.id, described))
    except RPCError as err:
        raise temporal_unavailable(err) from err
    return ScheduleList(data=found)


@router.delete("/schedules/{schedule_id}", status_code=204)
async def delete_schedule(schedule_id: str, state: StateDep, caller: SreDep) -> None:
    """Stop a game day; runs under way finish (and clean up) on their own."""
    if not schedule_id.startswith(SCHEDULE_PREFIX):
        raise ApiError(404, "ScheduleNotFound", f"no chaos schedule {schedule_id}")
    try:
        await state.temporal.get_schedule_handle(schedule_id).delete()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ApiError(404, "ScheduleNotFound", f"no chaos schedule {schedule_id}") from err
        raise temporal_unavailable(err) from err


@router.get("", response_model=ChaosList)
async def list_experiments(
    state: StateDep,
    caller: SreDep,
    phase: str | None = Query(default=None, pattern=r"^[A-Za-z]+$"),
    limit: int = Query(default=50, ge=1, le=500),
) -> ChaosList:
    """Experiment runs, newest first, from Temporal's visibility."""
    found = await listed(state.temporal, "chaos", limit, phase=phase)
    return ChaosList(
        data=[
            ChaosSummary(
                experiment=experiment,
                run=run,
                target=execution.typed_search_attributes.get(SERVICE),
                **summary_fields(execution),
            )
            for (experiment, run), execution in found
        ]
    )


@router.get("/{experiment}/{run}", response_model=ChaosView)
async def get_experiment(experiment: str, run: str, state: StateDep, caller: SreDep) -> ChaosView:
    """The run as it stands: phase, probes, the journal of steps, verdict and score once it ends."""
    handle = _handle(state, experiment, run)
    missing = ApiError(404, "ExperimentNotFound", f"no chaos run {handle.id}")
    return await view_or_missing(handle, ChaosExperimentWorkflow.state, missing)


@router.post("/{experiment}/{run}/abort", response_model=ChaosView)
async def abort(experiment: str, run: str, body: ReasonIn, state: StateDep, caller: SreDep) -> ChaosView:
    """Stop the fault now (engineState: stop); cleanup and the recovery check still run."""
    handle = _handle(state, experiment, run)
    try:
        return await handle.execute_update(
            ChaosExperimentWorkflow.abort, Actor(by=caller.subject, reason=body.reason)
        )
    except WorkflowUpdateFailedError as err:
        raise from_update_failure(err) from err
    except RPCError as err:
        missing = ApiError(404, "ExperimentNotFound", f"no running chaos run {handle.id}")
        raise missing_or_unavailable(err, missing) from err


# ---- helpers ---------------------------------------------------------------------------------------------


def _catalogue(state: AppState) -> dict[str, Experiment]:
    try:
        chaos = state.settings.chaos
        experiments = load_experiments(
            chaos.catalogue_file or DEFAULT_CATALOGUE, {"workload": chaos.workload_url.rstrip("/")}
        )
    except ExperimentError as err:
        raise ApiError(500, "BadCatalogue", f"the chaos catalogue is invalid: {err}") from err
    return {experiment.name: experiment for experiment in experiments}


def _experiment(body: ChaosCreate, state: AppState) -> Experiment:
    if body.definition is not None:
        try:
            [experiment] = parse_experiments({"experiments": [body.definition]})
        except ExperimentError as err:
            raise ApiError(
                422, "InvalidExperiment", str(err).replace("experiments[0].", "definition.")
            ) from err
        return experiment
    known = _catalogue(state)
    if body.experiment not in known:
        names = ", ".join(sorted(known)) or "none"
        raise ApiError(
            404, "ExperimentNotFound", f"no experiment {body.experiment!r} in the catalogue ({names})"
        )
    return known[body.experiment]


def safety_policy(state: AppState) -> SafetyPolicy:
    chaos = state.settings.chaos
    return SafetyPolicy(tuple(chaos.allowed_namespaces), chaos.max_pods_affected_perc)


def schedule_summary(
    schedule_id: str, described: ScheduleDescription, prefix: str = SCHEDULE_PREFIX
) -> ScheduleSummary:
    spec = described.schedule.spec
    every = ", ".join(f"every {i.every.total_seconds():g} s" for i in spec.intervals)
    return ScheduleSummary(
        id=schedule_id,
        experiment=schedule_id.removeprefix(prefix),
        spec=", ".join([*spec.cron_expressions, *([every] if every else [])]) or "calendar",
        paused=described.schedule.state.paused,
        next_runs=[at.isoformat() for at in described.info.next_action_times[:3]],
        recent_runs=[str(getattr(a.action, "workflow_id", "")) for a in described.info.recent_actions[-5:]],
    )


def _handle(state: AppState, experiment: str, run: str) -> Handle:
    return state.temporal.get_workflow_handle_for(ChaosExperimentWorkflow.run, workflow_id(experiment, run))


def _exists(experiment: str, run: str) -> ApiError:
    return ApiError(409, "RunExists", f"{workflow_id(experiment, run)} exists: give another run id")
