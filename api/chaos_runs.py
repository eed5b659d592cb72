"""What the chaos experiment and chaos scenario routes share: a kind's catalogue and the run a body names,
starting a run (by hand or as a game day on a Temporal Schedule), listing and deleting game days, aborting."""

from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

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
from temporalio.workflow import UpdateMethodMultiParam

from api.chaos_schemas import GameDayTiming, ScheduleSummary
from api.conversation_calls import temporal_unavailable
from api.deps import AppState
from api.errors import ApiError, from_update_failure, start_refused
from api.visibility import missing_or_unavailable
from chaos.experiments import ExperimentError, Target
from policies.chaos import SafetyPolicy
from temporal.constants import KIND, PHASE, SERVICE
from workflows._records import Actor
from workflows.chaos import CHECKING


class Named(Protocol):
    """What a catalogue holds: experiments or scenarios, by name."""

    @property
    def name(self) -> str: ...


Run = TypeVar("Run", bound=Named)
View = TypeVar("View")  # its workflow's view
Load = Callable[[str | Path, Mapping[str, str]], list[Run]]
Parse = Callable[[Any], list[Run]]


def catalogue(state: AppState, load: Load[Run], path: str | Path, what: str) -> dict[str, Run]:
    """The `what` catalogue (e.g. "chaos scenario") at `path` by name; a 500 when it is invalid."""
    try:
        runs = load(path, {"workload": state.settings.chaos.workload_url.rstrip("/")})
    except ExperimentError as err:
        raise ApiError(500, "BadCatalogue", f"the {what} catalogue is invalid: {err}") from err
    return {run.name: run for run in runs}


def chosen(
    kind: str,
    name: str | None,
    definition: dict[str, Any] | None,
    parse: Parse[Run],
    known: Callable[[], dict[str, Run]],
) -> Run:
    """The `kind` (experiment or scenario) a body gives whole (`definition`: a 422 when it is invalid) or
    names from the catalogue (a 404 that lists the catalogue when it is not there)."""
    if definition is not None:
        try:
            [run] = parse({f"{kind}s": [definition]})
        except ExperimentError as err:
            message = str(err).replace(f"{kind}s[0].", "definition.")
            raise ApiError(422, f"Invalid{kind.title()}", message) from err
        return run
    runs = known()
    if name not in runs:
        names = ", ".join(sorted(runs)) or "none"
        raise ApiError(404, f"{kind.title()}NotFound", f"no {kind} {name!r} in the catalogue ({names})")
    return runs[name]


def safety_policy(state: AppState) -> SafetyPolicy:
    chaos = state.settings.chaos
    return SafetyPolicy(tuple(chaos.allowed_namespaces), chaos.max_pods_affected_perc)


def attributes(kind: str, target: Target) -> TypedSearchAttributes:
    """A run's search attributes as it starts: its kind, the service it hits and the first phase."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(KIND, kind),
            SearchAttributePair(SERVICE, f"{target.namespace}/{target.service}"),
            SearchAttributePair(PHASE, CHECKING),
        ]
    )


async def start(
    state: AppState,
    run: Callable[[Any, Any], Any],
    accepted: UpdateMethodMultiParam[[Any], View],
    request: Any,
    *,
    workflow_id: str,
    search_attributes: TypedSearchAttributes,
    memo: Mapping[str, Any] | None = None,
) -> View:
    """Start the run's workflow and answer once its safety policy has been checked (the `accepted` update):
    a refusal is a 409 that says why; a run id used before (by any run, ever) is a 409 as well."""
    start = WithStartWorkflowOperation(
        run,
        request,
        id=workflow_id,
        task_queue=state.settings.rollout.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,  # a run id names one run, ever
        search_attributes=search_attributes,
        memo=memo,
    )
    exists = ApiError(409, "RunExists", f"{workflow_id} exists: give another run id")
    try:
        return await state.temporal.execute_update_with_start_workflow(
            accepted, start_workflow_operation=start
        )
    except WorkflowAlreadyStartedError:
        raise exists from None
    except WorkflowUpdateFailedError as err:
        raise start_refused(err, "ChaosRefused") from err
    except RPCError as err:
        if err.status == RPCStatusCode.ALREADY_EXISTS:
            raise exists from None
        raise temporal_unavailable(err) from err


async def create_game_day(
    state: AppState,
    body: GameDayTiming,
    run: Callable[[Any, Any], Any],
    request: Any,
    *,
    prefix: str,
    name: str,
    note: str,
    workflow_id: str,
    search_attributes: TypedSearchAttributes,
    memo: Mapping[str, Any] | None = None,
) -> ScheduleSummary:
    """A Temporal Schedule (`prefix` + `name`) that starts the run's workflow on the body's cron or interval,
    skipping a run while the last one still runs; a 409 when one by that id exists."""
    action = ScheduleActionStartWorkflow(
        run,
        request,
        id=workflow_id,
        task_queue=state.settings.rollout.task_queue,
        typed_search_attributes=search_attributes,
        memo=memo,
    )
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
    schedule_id = prefix + name
    try:
        handle = await state.temporal.create_schedule(schedule_id, schedule)
        return schedule_summary(schedule_id, await handle.describe(), prefix)
    except ScheduleAlreadyRunningError:
        raise ApiError(409, "ScheduleExists", f"{schedule_id} exists: delete it first") from None
    except RPCError as err:
        if err.status == RPCStatusCode.INVALID_ARGUMENT:
            raise ApiError(422, "InvalidSchedule", f"Temporal refused the schedule: {err.message}") from err
        raise temporal_unavailable(err) from err


async def game_days(state: AppState, prefix: str) -> list[ScheduleSummary]:
    """The schedules whose ids begin with `prefix`, with their next runs."""
    found: list[ScheduleSummary] = []
    try:
        async for each in await state.temporal.list_schedules():
            if each.id.startswith(prefix):
                described = await state.temporal.get_schedule_handle(each.id).describe()
                found.append(schedule_summary(each.id, described, prefix))
    except RPCError as err:
        raise temporal_unavailable(err) from err
    return found


async def delete_game_day(state: AppState, schedule_id: str, prefix: str, what: str) -> None:
    """Delete a schedule whose id begins with `prefix`; any other id, or one Temporal does not know, is a 404
    ("no {what} {schedule_id}")."""
    missing = ApiError(404, "ScheduleNotFound", f"no {what} {schedule_id}")
    if not schedule_id.startswith(prefix):
        raise missing
    try:
        await state.temporal.get_schedule_handle(schedule_id).delete()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise missing from err
        raise temporal_unavailable(err) from err


def schedule_summary(schedule_id: str, described: ScheduleDescription, prefix: str) -> ScheduleSummary:
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


async def abort(
    handle: WorkflowHandle[Any, View],
    update: UpdateMethodMultiParam[[Any, Actor], View],
    by: Actor,
    missing: ApiError,
) -> View:
    """Abort the run (`update`); `missing` (a 404) when no such run is running."""
    try:
        return await handle.execute_update(update, by)
    except WorkflowUpdateFailedError as err:
        raise from_update_failure(err) from err
    except RPCError as err:
        raise missing_or_unavailable(err, missing) from err
