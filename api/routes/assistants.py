"""Assistants: create, edit (a new version), publish, roll back, A/B experiments, archive — role `admin`
for changes, `client` to read. Changes go through the assistant's workflow; reads of versions come from
the read model."""

from typing import Any

from fastapi import APIRouter
from temporalio.client import WithStartWorkflowOperation, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.assistant_calls import unserved_model
from api.assistant_schemas import (
    AssistantCreate,
    AssistantEdit,
    AssistantList,
    AssistantStats,
    AssistantSummary,
    ExperimentAdjust,
    ExperimentCreate,
    ExperimentStop,
    PublishIn,
    RollbackIn,
    StoredVersion,
    VersionList,
)
from api.assistant_stats import assistant_stats
from api.auth import AdminDep, ClientDep
from api.conversation_calls import temporal_unavailable
from api.deps import AppState, SessionDep, StateDep
from api.errors import ApiError, from_update_failure, start_refused
from api.rollout_schemas import ReasonIn
from api.schemas import ERROR_RESPONSES
from api.visibility import current_view
from policies.assistants import AssistantSpec, InvalidAssistant, spec_from_data, validate_spec
from store import crud
from temporal.constants import KIND, PHASE, TENANT
from workflows._records import Actor
from workflows.assistant import (
    DRAFT,
    AdjustExperiment,
    AssistantInput,
    AssistantView,
    AssistantWorkflow,
    Edit,
    Publish,
    Rollback,
    StartExperiment,
    StopExperiment,
    workflow_id,
)

router = APIRouter(prefix="/v1/assistants", tags=["assistants"], responses=ERROR_RESPONSES)
Handle = WorkflowHandle[AssistantWorkflow, AssistantView]


@router.post("", status_code=201, response_model=AssistantView)
async def create_assistant(body: AssistantCreate, state: StateDep, caller: AdminDep) -> AssistantView:
    """A new assistant with its first version, v1 (a draft until published; `publish: true` does it now)."""
    spec = _valid(body.applied_to(None), state, caller.tenant)
    request = AssistantInput(caller.tenant, body.id, spec, caller.subject, body.note)
    start = WithStartWorkflowOperation(
        AssistantWorkflow.run,
        request,
        id=workflow_id(caller.tenant, body.id),
        task_queue=state.settings.conversation.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(TENANT, caller.tenant),
                SearchAttributePair(KIND, "assistant"),
                SearchAttributePair(PHASE, DRAFT),
            ]
        ),
    )
    try:
        view = await state.temporal.execute_update_with_start_workflow(
            AssistantWorkflow.accepted, start_workflow_operation=start
        )
    except WorkflowAlreadyStartedError:
        raise _exists(body.id) from None
    except WorkflowUpdateFailedError as err:
        raise start_refused(err, "AssistantRefused") from err
    except RPCError as err:
        if err.status == RPCStatusCode.ALREADY_EXISTS:
            raise _exists(body.id) from None
        raise temporal_unavailable(err) from err
    if body.publish:
        view = await _change(
            state, caller.tenant, body.id, AssistantWorkflow.publish, Publish("v1", caller.subject)
        )
    return view


@router.get("", response_model=AssistantList)
async def list_assistants(session: SessionDep, caller: ClientDep) -> AssistantList:
    """Your tenant's assistants, newest first: state, live version, a running experiment."""
    rows = await crud.list_assistants(session, tenant=caller.tenant)
    return AssistantList(data=[AssistantSummary.model_validate(row, from_attributes=True) for row in rows])


@router.get("/{assistant_id}", response_model=AssistantView)
async def get_assistant(assistant_id: str, state: StateDep, caller: ClientDep) -> AssistantView:
    """The assistant as it stands: every version, the live one, experiments and the history of changes."""
    handle = _handle(state, caller.tenant, assistant_id)
    try:
        return await current_view(handle, AssistantWorkflow.state)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise _not_found(assistant_id) from err
        raise temporal_unavailable(err) from err


@router.patch("/{assistant_id}", response_model=AssistantView)
async def edit_assistant(
    assistant_id: str, body: AssistantEdit, state: StateDep, session: SessionDep, caller: AdminDep
) -> AssistantView:
    """A new version: the fields given replace the latest version's, the rest are kept. The live version
    does not change until the new one is published."""
    row = await crud.get_assistant(session, tenant=caller.tenant, assistant_id=assistant_id)
    if row is None:
        raise _not_found(assistant_id)
    latest = await crud.get_assistant_version(
        session, tenant=caller.tenant, assistant_id=assistant_id, version=row.latest_version
    )
    assert latest is not None  # stored with the assistant row
    spec = _valid(body.applied_to(spec_from_data(latest.spec)), state, caller.tenant)
    request = Edit(spec, caller.subject, body.note, body.expected_version or row.latest_version)
    return await _change(state, caller.tenant, assistant_id, AssistantWorkflow.edit, request)


@router.get("/{assistant_id}/versions", response_model=VersionList)
async def list_versions(assistant_id: str, session: SessionDep, caller: ClientDep) -> VersionList:
    """Every version, oldest first: its spec, what it changed, who made it, when it was first published."""
    rows = await crud.list_assistant_versions(session, tenant=caller.tenant, assistant_id=assistant_id)
    if not rows:
        raise _not_found(assistant_id)
    return VersionList(data=[StoredVersion.model_validate(row) for row in rows])


@router.get("/{assistant_id}/versions/{version}", response_model=StoredVersion)
async def get_version(
    assistant_id: str, version: str, session: SessionDep, caller: ClientDep
) -> StoredVersion:
    row = await crud.get_assistant_version(
        session, tenant=caller.tenant, assistant_id=assistant_id, version=version
    )
    if row is None:
        raise ApiError(404, "VersionNotFound", f"assistant {assistant_id} has no version {version}")
    return StoredVersion.model_validate(row)


@router.get("/{assistant_id}/stats", response_model=AssistantStats)
async def stats(assistant_id: str, session: SessionDep, caller: ClientDep) -> AssistantStats:
    """Per version and per experiment arm: conversations, turns, tokens, latency p50/p95, errors and
    thumbs up/down; for each experiment, each arm minus the control (its first arm) with a 95% interval."""
    if await crud.get_assistant(session, tenant=caller.tenant, assistant_id=assistant_id) is None:
        raise _not_found(assistant_id)
    return await assistant_stats(session, caller.tenant, assistant_id)


@router.post("/{assistant_id}/publish", response_model=AssistantView)
async def publish(assistant_id: str, body: PublishIn, state: StateDep, caller: AdminDep) -> AssistantView:
    """Make a version live for every user (new conversations; running ones keep theirs)."""
    request = Publish(body.version, caller.subject, body.reason)
    return await _change(state, caller.tenant, assistant_id, AssistantWorkflow.publish, request)


@router.post("/{assistant_id}/rollback", response_model=AssistantView)
async def rollback(assistant_id: str, body: RollbackIn, state: StateDep, caller: AdminDep) -> AssistantView:
    """Back to an earlier published version (default: the one live before) in one step; a running
    experiment is aborted."""
    request = Rollback(body.to_version, caller.subject, body.reason)
    return await _change(state, caller.tenant, assistant_id, AssistantWorkflow.rollback, request)


@router.post("/{assistant_id}/experiments", response_model=AssistantView)
async def start_experiment(
    assistant_id: str, body: ExperimentCreate, state: StateDep, caller: AdminDep
) -> AssistantView:
    """An A/B test: each user is assigned an arm (a version) by a hash of (assistant, experiment, user)
    and keeps it; shares are relative weights."""
    arms = [arm.to_arm() for arm in body.arms]
    request = StartExperiment(body.id, arms, caller.subject, body.reason)
    return await _change(state, caller.tenant, assistant_id, AssistantWorkflow.start_experiment, request)


@router.post("/{assistant_id}/experiments/{experiment_id}/adjust", response_model=AssistantView)
async def adjust_experiment(
    assistant_id: str, experiment_id: str, body: ExperimentAdjust, state: StateDep, caller: AdminDep
) -> AssistantView:
    """New shares for the running experiment (same arms, same order): users move only as they must."""
    arms = [arm.to_arm() for arm in body.arms]
    request = AdjustExperiment(arms, caller.subject, body.reason, experiment_id)
    return await _change(state, caller.tenant, assistant_id, AssistantWorkflow.adjust_experiment, request)


@router.post("/{assistant_id}/experiments/{experiment_id}/stop", response_model=AssistantView)
async def stop_experiment(
    assistant_id: str, experiment_id: str, body: ExperimentStop, state: StateDep, caller: AdminDep
) -> AssistantView:
    """End the experiment: promote a winner (an arm's name or version goes live) or abort."""
    request = StopExperiment(body.promote, caller.subject, body.reason, experiment_id)
    return await _change(state, caller.tenant, assistant_id, AssistantWorkflow.stop_experiment, request)


@router.post("/{assistant_id}/archive", response_model=AssistantView)
async def archive(assistant_id: str, body: ReasonIn, state: StateDep, caller: AdminDep) -> AssistantView:
    """Retire the assistant: no new conversations with it; running ones go on."""
    request = Actor(caller.subject, body.reason)
    return await _change(state, caller.tenant, assistant_id, AssistantWorkflow.archive, request)


# ---- helpers ---------------------------------------------------------------------------------------------


def _valid(spec: AssistantSpec, state: AppState, tenant: str) -> AssistantSpec:
    try:
        validate_spec(spec)
    except InvalidAssistant as err:
        raise ApiError(422, "InvalidSpec", str(err)) from None
    if problem := unserved_model(state.gateway.routes, tenant, spec.model):
        raise ApiError(422, "InvalidSpec", problem)
    return spec


def _handle(state: AppState, tenant: str, assistant_id: str) -> Handle:
    return state.temporal.get_workflow_handle_for(AssistantWorkflow.run, workflow_id(tenant, assistant_id))


async def _change(
    state: AppState, tenant: str, assistant_id: str, update: Any, request: Any
) -> AssistantView:
    handle = _handle(state, tenant, assistant_id)
    try:
        view: AssistantView = await handle.execute_update(update, request)
        return view
    except WorkflowUpdateFailedError as err:
        raise from_update_failure(err) from err
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise _not_found(assistant_id) from err
        raise temporal_unavailable(err) from err


def _not_found(assistant_id: str) -> ApiError:
    return ApiError(
        404,
        "AssistantNotFound",
        f"no assistant {assistant_id} (or it is archived): create one with POST /v1/assistants",
    )


def _exists(assistant_id: str) -> ApiError:
    return ApiError(
        409,
        "AssistantExists",
        f"assistant {assistant_id} already exists: edit it with PATCH /v1/assistants/{assistant_id}",
    )
