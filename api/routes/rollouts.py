"""Canary rollouts: start, list, read, promote, pause, resume, abort — role `sre`."""

from typing import Any

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

from activities.contracts.prometheus import load_templates
from api.auth import SreDep
from api.conversation_calls import temporal_unavailable
from api.deps import AppState, StateDep
from api.errors import ApiError, from_update_failure, start_refused
from api.rollout_schemas import (
    NAME,
    PromoteIn,
    ReasonIn,
    RolloutCreate,
    RolloutList,
    RolloutSummary,
    to_step,
)
from api.schemas import ERROR_RESPONSES
from api.visibility import Names, listed, summary_fields, view_or_missing
from policies.access import Principal
from policies.canary import (
    STANDARD_MODEL_TEMPLATES,
    STANDARD_TEMPLATES,
    Analyze,
    TemplatesError,
    parse_templates,
    standard_plan,
)
from temporal.constants import KIND, PHASE, SERVICE
from temporal.visibility import running_scenarios_on, running_workflows
from workflows._records import Actor
from workflows.canary import (
    MODELS_NAMESPACE,
    CanaryRolloutWorkflow,
    JudgeSettings,
    PromoteRequest,
    RolloutInput,
    RolloutView,
    input_problem,
    workflow_id,
)

router = APIRouter(prefix="/v1/rollouts", tags=["rollouts"], responses=ERROR_RESPONSES)
Handle = WorkflowHandle[CanaryRolloutWorkflow, RolloutView]


@router.post("", status_code=201, response_model=RolloutView)
async def start_rollout(body: RolloutCreate, state: StateDep, caller: SreDep) -> RolloutView:
    """Start a canary rollout of a service. It answers once the stable Deployment is read and the canary
    made; 409 names the rollout of the same service that is still running."""
    request = _rollout_input(body, state, caller)
    await _refuse_during_chaos(state, request)
    start = WithStartWorkflowOperation(
        CanaryRolloutWorkflow.run,
        request,
        id=workflow_id(request.namespace, request.service),
        task_queue=state.settings.rollout.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(KIND, "rollout"),
                SearchAttributePair(SERVICE, f"{request.namespace}/{request.service}"),
                SearchAttributePair(PHASE, "Progressing"),
            ]
        ),
    )
    try:
        return await state.temporal.execute_update_with_start_workflow(
            CanaryRolloutWorkflow.accepted, start_workflow_operation=start
        )
    except WorkflowAlreadyStartedError:
        raise await _running_conflict(state, request) from None
    except WorkflowUpdateFailedError as err:
        raise start_refused(err, "RolloutRefused") from err
    except RPCError as err:
        if err.status == RPCStatusCode.ALREADY_EXISTS:
            raise await _running_conflict(state, request) from None
        raise temporal_unavailable(err) from err


@router.get("", response_model=RolloutList)
async def list_rollouts(
    state: StateDep,
    caller: SreDep,
    namespace: str | None = Query(default=None, pattern=NAME),
    service: str | None = Query(default=None, pattern=NAME),
    phase: str | None = Query(default=None, pattern=r"^[A-Za-z]+$"),
    limit: int = Query(default=50, ge=1, le=500),
) -> RolloutList:
    """Rollouts, newest first, from Temporal's visibility (filter by namespace, service, phase)."""

    def wanted(names: Names) -> bool:
        return not ((namespace and names[0] != namespace) or (service and names[1] != service))

    found = await listed(
        state.temporal,
        "rollout",
        limit,
        service=f"{namespace}/{service}" if namespace and service else None,
        phase=phase,
        keep=wanted,
    )
    return RolloutList(
        data=[RolloutSummary(namespace=ns, service=name, **summary_fields(e)) for (ns, name), e in found]
    )


@router.get("/{namespace}/{service}", response_model=RolloutView)
async def get_rollout(namespace: str, service: str, state: StateDep, caller: SreDep) -> RolloutView:
    """The rollout as it stands (the latest one of the service): step, weights, analyses with their
    numbers, and the history of decisions."""
    return await _view(_handle(state, namespace, service))


@router.post("/{namespace}/{service}/promote", response_model=RolloutView)
async def promote(
    namespace: str, service: str, body: PromoteIn, state: StateDep, caller: SreDep
) -> RolloutView:
    """End the current step now (a pause, an analysis under way, a wait for a human), or with `full`
    every remaining step: straight to 100% and promotion."""
    request = PromoteRequest(by=caller.subject, reason=body.reason, full=body.full)
    return await _change(state, namespace, service, CanaryRolloutWorkflow.promote, request)


@router.post("/{namespace}/{service}/pause", response_model=RolloutView)
async def pause(namespace: str, service: str, body: ReasonIn, state: StateDep, caller: SreDep) -> RolloutView:
    """Hold the rollout at its step until resume or promote (an analysis under way keeps measuring)."""
    request = Actor(by=caller.subject, reason=body.reason)
    return await _change(state, namespace, service, CanaryRolloutWorkflow.pause, request)


@router.post("/{namespace}/{service}/resume", response_model=RolloutView)
async def resume(
    namespace: str, service: str, body: ReasonIn, state: StateDep, caller: SreDep
) -> RolloutView:
    """Lift a pause; at an inconclusive analysis, analyse again."""
    request = Actor(by=caller.subject, reason=body.reason)
    return await _change(state, namespace, service, CanaryRolloutWorkflow.resume, request)


@router.post("/{namespace}/{service}/abort", response_model=RolloutView)
async def abort(namespace: str, service: str, body: ReasonIn, state: StateDep, caller: SreDep) -> RolloutView:
    """Roll back now: all traffic to the stable, the canary scaled down (or frozen, if so started)."""
    request = Actor(by=caller.subject, reason=body.reason)
    return await _change(state, namespace, service, CanaryRolloutWorkflow.abort, request)


# ---- helpers ---------------------------------------------------------------------------------------------


def _rollout_input(body: RolloutCreate, state: AppState, caller: Principal) -> RolloutInput:
    """The workflow's complete input: the default plan filled in, the templates it names resolved."""
    try:
        templates = load_templates(state.settings.rollout.templates_file)
        if body.templates is not None:
            templates |= parse_templates({"templates": body.templates})
    except TemplatesError as err:
        raise ApiError(422, "InvalidTemplates", str(err)) from err
    model = body.target == "model"
    if not model and not body.image:
        raise ApiError(422, "InvalidRollout", "image: a Deployment's rollout needs the new image")
    standard = (STANDARD_MODEL_TEMPLATES if model else STANDARD_TEMPLATES)[body.judge]
    steps = (
        [to_step(step) for step in body.steps]
        if body.steps is not None
        else standard_plan(body.time_scale, standard)
    )
    named = {name for step in steps if isinstance(step, Analyze) for name in step.templates}
    request = RolloutInput(
        namespace=MODELS_NAMESPACE if model else body.namespace,
        service=body.service,
        image="" if model else body.image,
        target=body.target,
        version=body.version,
        steps=steps,
        templates={name: templates[name] for name in sorted(named) if name in templates},
        deployment=body.deployment or "",
        container=body.container,
        router=body.router,
        judge=body.judge,
        judge_settings=JudgeSettings(**body.judge_settings.model_dump()),
        total_replicas=body.total_replicas,
        on_failure=body.on_failure,
        allow_decrease=body.allow_decrease,
        exact_weights=body.exact_weights,
        min_window_s=state.settings.rollout.min_window_s,
        requested_by=caller.subject,
    )
    unknown = sorted(named - templates.keys())
    if unknown:
        known = ", ".join(sorted(templates))
        raise ApiError(422, "InvalidRollout", f"unknown metric template {unknown[0]!r} (known: {known})")
    if problem := input_problem(request):
        raise ApiError(422, "InvalidRollout", problem)
    return request


async def _refuse_during_chaos(state: AppState, request: RolloutInput) -> None:
    """A service under a chaos experiment gets no rollout (and a chaos experiment refuses a service under
    a rollout): a failing analysis could not tell the release from the fault."""
    if request.target != "deployment":
        return
    try:
        service = f"{request.namespace}/{request.service}"
        running = await running_workflows(state.temporal, "chaos", service)
        running += await running_scenarios_on(state.temporal, service)
    except RPCError as err:
        raise temporal_unavailable(err) from err
    if running:
        raise ApiError(
            409,
            "ChaosRunning",
            f"chaos {running[0]} is running on {request.namespace}/{request.service}: "
            "start the rollout after it ends (or abort it)",
            running=running[0],
        )


def _handle(state: AppState, namespace: str, service: str) -> Handle:
    return state.temporal.get_workflow_handle_for(CanaryRolloutWorkflow.run, workflow_id(namespace, service))


async def _view(handle: Handle) -> RolloutView:
    """A running rollout answers its query; a finished one its result (no worker needed)."""
    missing = ApiError(404, "RolloutNotFound", f"no rollout {handle.id}: start one with POST /v1/rollouts")
    return await view_or_missing(handle, CanaryRolloutWorkflow.state, missing)


async def _change(state: AppState, namespace: str, service: str, update: Any, request: Any) -> RolloutView:
    handle = _handle(state, namespace, service)
    try:
        view: RolloutView = await handle.execute_update(update, request)
        return view
    except WorkflowUpdateFailedError as err:
        raise from_update_failure(err) from err
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            # The workflow finished (or never ran): say which.
            await _view(handle)
            raise ApiError(409, "RolloutFinished", f"{handle.id} has finished: start a new rollout") from err
        raise temporal_unavailable(err) from err


async def _running_conflict(state: AppState, request: RolloutInput) -> ApiError:
    """409 naming the rollout of the same service that still runs."""
    rollout_id = workflow_id(request.namespace, request.service)
    detail = ""
    try:
        view = await _handle(state, request.namespace, request.service).query(CanaryRolloutWorkflow.state)
        detail = f" ({view.image} as {view.version}: {view.phase}, step {view.step}, {view.message})"
    except Exception:  # the 409 stands without the details (Temporal or the worker may be down)
        pass
    return ApiError(
        409,
        "RolloutRunning",
        f"{rollout_id} is already running{detail}: promote or abort it first",
        running=rollout_id,
    )
