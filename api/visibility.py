"""lcp's workflows as Temporal shows them, for the routes of rollouts, scaling and chaos: lists from its
visibility, and one workflow's current view."""

from collections.abc import Callable
from typing import Any, TypedDict, TypeVar

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.service import RPCError

from api.conversation_calls import temporal_unavailable
from api.errors import ApiError
from temporal.constants import PHASE

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


async def executions(
    temporal: Client,
    query: str,
    limit: int,
    keep: Callable[[WorkflowExecution], bool] = lambda _: True,
) -> list[WorkflowExecution]:
    """Up to `limit` executions matching `query` (newest first) that `keep` accepts; a 503 when Temporal
    does not answer."""
    found: list[WorkflowExecution] = []
    try:
        async for execution in temporal.list_workflows(query):
            if keep(execution):
                found.append(execution)
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
