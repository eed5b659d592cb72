"""Predictive scaling: start, list, read (live state, stored decisions), set the mode, stop — role `sre`."""

from fastapi import APIRouter, Query
from temporalio.client import (
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
from api.conversation_calls import temporal_unavailable
from api.deps import AppState, SessionDep, StateDep
from api.errors import ApiError, from_update_failure, start_refused
from api.rollout_schemas import NAME, ReasonIn
from api.scaling_schemas import (
    DecisionList,
    ModeIn,
    ScalingCreate,
    ScalingList,
    ScalingSummary,
    StoredDecision,
)
from api.schemas import ERROR_RESPONSES
from api.visibility import listed, missing_or_unavailable, summary_fields, view_or_missing
from policies.access import Principal
from store import crud
from temporal.constants import KIND, PHASE, SERVICE
from workflows._records import Actor
from workflows.scaling import (
    MODE_PHASE,
    ModeChange,
    PredictiveScalingWorkflow,
    ScalingInput,
    ScalingView,
    input_problem,
    workflow_id,
)

router = APIRouter(prefix="/v1/scaling", tags=["scaling"], responses=ERROR_RESPONSES)
Handle = WorkflowHandle[PredictiveScalingWorkflow, ScalingView]


@router.post("", status_code=201, response_model=ScalingView)
async def start_scaling(body: ScalingCreate, state: StateDep, caller: SreDep) -> ScalingView:
    """Scale a Deployment ahead of demand. It answers after the first decision; 404 when the Deployment
    does not exist, 409 when the target is already scaled by lcp."""
    request = _scaling_input(body, state, caller)
    start = WithStartWorkflowOperation(
        PredictiveScalingWorkflow.run,
        request,
        id=workflow_id(request.namespace, request.deployment),
        task_queue=state.settings.rollout.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(KIND, "scaling"),
                SearchAttributePair(SERVICE, f"{request.namespace}/{request.deployment}"),
                SearchAttributePair(PHASE, MODE_PHASE[request.mode]),
            ]
        ),
    )
    try:
        return await state.temporal.execute_update_with_start_workflow(
            PredictiveScalingWorkflow.accepted, start_workflow_operation=start
        )
    except WorkflowAlreadyStartedError:
        raise _running_conflict(request) from None
    except WorkflowUpdateFailedError as err:
        raise start_refused(err, "ScalingRefused") from err
    except RPCError as err:
        if err.status == RPCStatusCode.ALREADY_EXISTS:
            raise _running_conflict(request) from None
        raise temporal_unavailable(err) from err


@router.get("", response_model=ScalingList)
async def list_scaling(
    state: StateDep,
    caller: SreDep,
    namespace: str | None = Query(default=None, pattern=NAME),
    phase: str | None = Query(default=None, pattern=r"^[A-Za-z]+$"),
    limit: int = Query(default=50, ge=1, le=500),
) -> ScalingList:
    """Scaling targets, newest first, from Temporal's visibility (filter by namespace, phase)."""
    found = await listed(
        state.temporal,
        "scaling",
        limit,
        phase=phase,
        keep=lambda names: not namespace or names[0] == namespace,
    )
    return ScalingList(
        data=[ScalingSummary(namespace=ns, deployment=name, **summary_fields(e)) for (ns, name), e in found]
    )


@router.get("/{namespace}/{deployment}", response_model=ScalingView)
async def get_scaling(namespace: str, deployment: str, state: StateDep, caller: SreDep) -> ScalingView:
    """The target as it stands: mode, health, the latest forecast and model, recent decisions."""
    handle = _handle(state, namespace, deployment)
    missing = ApiError(404, "ScalingNotFound", f"no scaling {handle.id}: start one with POST /v1/scaling")
    return await view_or_missing(handle, PredictiveScalingWorkflow.state, missing)


@router.get("/{namespace}/{deployment}/decisions", response_model=DecisionList)
async def list_decisions(
    namespace: str,
    deployment: str,
    session: SessionDep,
    caller: SreDep,
    limit: int = Query(default=50, ge=1, le=1000),
) -> DecisionList:
    """Every decision stored for the target, newest first: inputs, forecast, confidence, target, action."""
    rows = await crud.list_scaling_decisions(session, namespace=namespace, deployment=deployment, limit=limit)
    return DecisionList(data=[StoredDecision.model_validate(row) for row in rows])


@router.post("/{namespace}/{deployment}/mode", response_model=ScalingView)
async def set_mode(
    namespace: str, deployment: str, body: ModeIn, state: StateDep, caller: SreDep
) -> ScalingView:
    """forecast-only (decisions recorded, nothing scaled) or active (the Deployment is scaled)."""
    request = ModeChange(mode=body.mode, by=caller.subject, reason=body.reason)
    return await _change(state, namespace, deployment, PredictiveScalingWorkflow.set_mode, request)


@router.post("/{namespace}/{deployment}/stop", response_model=ScalingView)
async def stop(
    namespace: str, deployment: str, body: ReasonIn, state: StateDep, caller: SreDep
) -> ScalingView:
    """Stop scaling the target; the Deployment keeps the replicas it has."""
    request = Actor(by=caller.subject, reason=body.reason)
    return await _change(state, namespace, deployment, PredictiveScalingWorkflow.stop, request)


# ---- helpers ---------------------------------------------------------------------------------------------


def _scaling_input(body: ScalingCreate, state: AppState, caller: Principal) -> ScalingInput:
    request = body.to_input(
        forecast_queue=state.settings.scaling.forecast_task_queue, requested_by=caller.subject
    )
    if problem := input_problem(request):
        raise ApiError(422, "InvalidScaling", problem)
    return request


def _handle(state: AppState, namespace: str, deployment: str) -> Handle:
    return state.temporal.get_workflow_handle_for(
        PredictiveScalingWorkflow.run, workflow_id(namespace, deployment)
    )


async def _change(
    state: AppState, namespace: str, deployment: str, update: object, request: object
) -> ScalingView:
    handle = _handle(state, namespace, deployment)
    try:
        view: ScalingView = await handle.execute_update(update, request)  # type: ignore[call-overload]
        return view
    except WorkflowUpdateFailedError as err:
        raise from_update_failure(err) from err
    except RPCError as err:  # NOT_FOUND: never started, or stopped
        missing = ApiError(
            404, "ScalingNotFound", f"no running scaling {handle.id}: start one with POST /v1/scaling"
        )
        raise missing_or_unavailable(err, missing) from err


def _running_conflict(request: ScalingInput) -> ApiError:
    scaling_id = workflow_id(request.namespace, request.deployment)
    return ApiError(
        409,
        "ScalingRunning",
        f"{scaling_id} is already running: change its mode, or stop it first to change its settings",
        running=scaling_id,
    )
