"""lcp's workflows as Temporal shows them, for the routes of rollouts, scaling and chaos: lists from its
visibility, one workflow's current view, and Temporal's refusals as the routes answer them (404, 503)."""

from collections.abc import Callable
from typing import Any, TypedDict, TypeVar

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from api.conversation_calls import temporal_unavailable
from api.errors import ApiError
from temporal.constants import PHASE
from temporal.visibility import kind_query

View = TypeVar("View")


async def current_view(handle: WorkflowHandle[Any, View], state_query: Callable[[Any], View]) -> View:
    """A running workflow answers its `state` query; a finished one gives its result (no worker needed).
    A query its worker fails (e.g. a worker that was just restarted and is still replaying) is a 503;
    Temporal's own errors (e.g. NOT_FOUND) are the caller's to turn into answers."""
    described = await handle.describe()
    if described.status == WorkflowExecutionStatus.RUNNING:
        try:
            return await handle.query(state_query)
        except WorkflowQueryFailedError as err:
            message = f"{handle.id}'s worker could not answer its state query ({err}); retry shortly"
            raise ApiError(503, "QueryFailed", message) from err
    return await handle.result()


async def view_or_missing(
    handle: WorkflowHandle[Any, View], state_query: Callable[[Any], View], missing: ApiError
) -> View:
    """The workflow's current view; `missing` (the route's 404) when Temporal knows no such workflow."""
    try:
        return await current_view(handle, state_query)
    except RPCError as err:
        raise missing_or_unavailable(err, missing) from err


def missing_or_unavailable(err: RPCError, missing: ApiError) -> ApiError:
    """Temporal's NOT_FOUND as the route's `missing`; any other refusal a 503."""
    return missing if err.status == RPCStatusCode.NOT_FOUND else temporal_unavailable(err)


Names = tuple[str, str]  # what a workflow id holds after its kind: rollout/{namespace}/{service}, ...


async def listed(
    temporal: Client,
    kind: str,
    limit: int,
    *,
    service: str | None = None,
    phase: str | None = None,
    keep: Callable[[Names], bool] = lambda _: True,
) -> list[tuple[Names, WorkflowExecution]]:
    """Up to `limit` workflows of `kind` (newest first, on `service` and in `phase` when given) whose
    names `keep` accepts, each with its names; a 503 when Temporal does not answer."""
    found: list[tuple[Names, WorkflowExecution]] = []
    try:
        async for execution in temporal.list_workflows(kind_query(kind, service=service, phase=phase)):
            _, first, second = execution.id.split("/", 2)
            if keep((first, second)):
                found.append(((first, second), execution))
                if len(found) >= limit:
                    break
    except RPCError as err:
        raise temporal_unavailable(err) from err
    return found


class SummaryFields(TypedDict):
    id: str
    phase: str | None
    status: str
    started_at: str | None
    closed_at: str | None


def summary_fields(execution: WorkflowExecution) -> SummaryFields:
    """What every list shows of an execution: id, phase, status and when it started and ended."""
    return {
        "id": execution.id,
        "phase": execution.typed_search_attributes.get(PHASE),
        "status": execution.status.name if execution.status else "UNKNOWN",
        "started_at": execution.start_time.isoformat() if execution.start_time else None,
        "closed_at": execution.close_time.isoformat() if execution.close_time else None,
    }
