"""One workflow's current view: a query its worker fails is a clear 503, not a 500."""

from types import SimpleNamespace
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowQueryFailedError

from api.errors import ApiError
from api.visibility import current_view


class _Handle:
    """Enough of a WorkflowHandle for `current_view` (hence the arg-type ignores where it stands in)."""

    id = "rollout/lab/chat-api"

    def __init__(self, status: WorkflowExecutionStatus, query_error: Exception | None = None) -> None:
        self.status, self.query_error = status, query_error

    async def describe(self) -> Any:
        return SimpleNamespace(status=self.status)

    async def query(self, _: Any) -> str:
        if self.query_error:
            raise self.query_error
        return "queried"

    async def result(self) -> str:
        return "result"


def _state(_: object) -> str:
    """Stands in for a workflow's state query: the fake handle answers without calling it."""
    return "unused"


async def test_a_running_workflow_is_queried_and_a_finished_one_gives_its_result() -> None:
    assert await current_view(_Handle(WorkflowExecutionStatus.RUNNING), _state) == "queried"  # type: ignore[arg-type]
    assert await current_view(_Handle(WorkflowExecutionStatus.COMPLETED), _state) == "result"  # type: ignore[arg-type]


async def test_a_query_the_worker_fails_is_a_503_that_names_the_workflow() -> None:
    failing = _Handle(WorkflowExecutionStatus.RUNNING, WorkflowQueryFailedError("deadlock detected"))
    with pytest.raises(ApiError) as raised:
        await current_view(failing, _state)  # type: ignore[arg-type]
    assert raised.value.status == 503 and raised.value.type == "QueryFailed"
    assert "rollout/lab/chat-api" in raised.value.message and "deadlock detected" in raised.value.message
