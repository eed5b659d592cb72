"""How the API starts and changes ConversationWorkflows: the start operation, update ids, and
Temporal's failures turned into API errors. Shared by the REST and OpenAI-compatible routes."""

from typing import Annotated, Any

from fastapi import Header
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError

from api.errors import ApiError
from policies.assistants import AssistantBinding
from settings import ConversationSettings
from temporal.constants import KIND, PHASE, TENANT
from workflows.conversation import ConversationInput, ConversationLimits, ConversationWorkflow, workflow_id

IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=200,
        description="Repeat a request safely: the same key never applies the change twice.",
    ),
]


def start_operation(
    settings: ConversationSettings,
    *,
    tenant: str,
    conversation_id: str,
    model: str,
    join_existing: bool,
    system_prompt: str | None = None,
    title: str | None = None,
    params: dict[str, Any] | None = None,
    assistant: AssistantBinding | None = None,
    principal: str | None = None,
) -> WithStartWorkflowOperation[Any, Any]:
    """Start the conversation's workflow unless it runs; `join_existing` joins a running one instead
    of refusing. An archived conversation's id is never reused."""
    return WithStartWorkflowOperation(
        ConversationWorkflow.run,
        ConversationInput(
            tenant=tenant,
            conversation_id=conversation_id,
            model=model,
            system_prompt=system_prompt,
            title=title,
            params=params or {},
            limits=ConversationLimits(
                max_message_chars=settings.max_message_chars,
                max_turns_per_run=settings.max_turns_per_run,
                keep_messages_on_continue=settings.keep_messages_on_continue,
            ),
            assistant=assistant,
            principal=principal,
        ),
        id=workflow_id(tenant, conversation_id),
        task_queue=settings.task_queue,
        id_conflict_policy=(
            WorkflowIDConflictPolicy.USE_EXISTING if join_existing else WorkflowIDConflictPolicy.FAIL
        ),
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(TENANT, tenant),
                SearchAttributePair(KIND, "conversation"),
                SearchAttributePair(PHASE, "active"),
            ]
        ),
    )


def update_id(update_name: str, key: str | None) -> str | None:
    """The Temporal update ID for a client's Idempotency-Key, per kind of change: a key reused for
    another kind of change (create, then send, then archive) is a new request; the same request
    again is a replay of the first answer."""
    return f"{update_name}:{key}" if key else None


def temporal_unavailable(err: RPCError) -> ApiError:
    return ApiError(503, "TemporalUnavailable", f"the workflow service did not answer ({err}); retry shortly")


def conversation_closed(conversation_id: str, status: str = "archived") -> ApiError:
    return ApiError(
        409,
        "ConversationClosed",
        f"conversation {conversation_id} is {status}: it takes no more messages; start a new conversation",
    )
