"""Chaos experiments: the catalogue, run (by name or inline), list, read, abort — role `sre`."""

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query
from temporalio.client import WorkflowHandle

from api import chaos_runs
from api.auth import SreDep
from api.chaos_schemas import (
    Catalogue,
    ChaosCreate,
    ChaosList,
    ChaosSummary,
    ScheduleCreate,
    ScheduleList,
    ScheduleSummary,
)
from api.deps import AppState, StateDep
from api.errors import ApiError
from api.rollout_schemas import ReasonIn
from api.schemas import ERROR_RESPONSES
from api.visibility import listed, summary_fields, view_or_missing
from chaos.experiments import (
    DEFAULT_CATALOGUE,
    Experiment,
    experiment_to_data,
    load_experiments,
    parse_experiments,
)
from temporal.constants import SERVICE
from workflows._records import Actor
from workflows.chaos import ChaosExperimentWorkflow, ChaosInput, ChaosView, workflow_id

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
    experiment = _experiment(body.experiment, body.definition, state)
    run = body.run or datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return await chaos_runs.start(
        state,
        ChaosExperimentWorkflow.run,
        ChaosExperimentWorkflow.accepted,
        ChaosInput(experiment, run, chaos_runs.safety_policy(state), requested_by=caller.subject),
        workflow_id=workflow_id(experiment.name, run),
        search_attributes=chaos_runs.attributes("chaos", experiment.target),
    )


@router.post("/schedules", status_code=201, response_model=ScheduleSummary)
async def create_schedule(body: ScheduleCreate, state: StateDep, caller: SreDep) -> ScheduleSummary:
    """A recurring game day on a Temporal Schedule (one per experiment; a run is skipped while the last
    one still runs). Each run goes through the same safety policy as a manual one."""
    experiment = _experiment(body.experiment, body.definition, state)
    return await chaos_runs.create_game_day(
        state,
        body,
        ChaosExperimentWorkflow.run,
        ChaosInput(
            experiment, "", chaos_runs.safety_policy(state), requested_by=f"schedule by {caller.subject}"
        ),
        prefix=SCHEDULE_PREFIX,
        name=experiment.name,
        note=f"chaos game day: {experiment.name}",
        workflow_id=workflow_id(experiment.name, "gameday"),
        search_attributes=chaos_runs.attributes("chaos", experiment.target),
    )


@router.get("/schedules", response_model=ScheduleList)
async def list_schedules(state: StateDep, caller: SreDep) -> ScheduleList:
    """Chaos game days and their next runs."""
    return ScheduleList(data=await chaos_runs.game_days(state, SCHEDULE_PREFIX))


@router.delete("/schedules/{schedule_id}", status_code=204)
async def delete_schedule(schedule_id: str, state: StateDep, caller: SreDep) -> None:
    """Stop a game day; runs under way finish (and clean up) on their own."""
    await chaos_runs.delete_game_day(state, schedule_id, SCHEDULE_PREFIX, "chaos schedule")


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
    missing = ApiError(404, "ExperimentNotFound", f"no running chaos run {handle.id}")
    by = Actor(by=caller.subject, reason=body.reason)
    return await chaos_runs.abort(handle, ChaosExperimentWorkflow.abort, by, missing)


# ---- helpers ---------------------------------------------------------------------------------------------


def _catalogue(state: AppState) -> dict[str, Experiment]:
    path = state.settings.chaos.catalogue_file or DEFAULT_CATALOGUE
    return chaos_runs.catalogue(state, load_experiments, path, "chaos")


def _experiment(name: str | None, definition: dict[str, Any] | None, state: AppState) -> Experiment:
    return chaos_runs.chosen("experiment", name, definition, parse_experiments, lambda: _catalogue(state))


def _handle(state: AppState, experiment: str, run: str) -> Handle:
    return state.temporal.get_workflow_handle_for(ChaosExperimentWorkflow.run, workflow_id(experiment, run))
