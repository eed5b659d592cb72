"""What the conversation workflow shares with the tool-call activity (activities/tools.py): its input,
result and name, without the HTTP client or the schema checks."""

from dataclasses import dataclass

from temporalio import activity

from policies.assistants import ToolSpec


@dataclass
class ToolCallInput:
    tool: ToolSpec
    call_id: str
    arguments: str  # JSON text, as the model wrote it
    idempotency_key: str  # sent as Idempotency-Key, the same on every attempt of this call
    # Whose secrets the call may use. Empty for calls scheduled before tenants reached this activity:
    # those get no secret rather than someone else's.
    tenant: str = ""


@dataclass
class ToolCallResult:
    ok: bool
    content: str  # what the model reads: the tool's answer, or {"error": "..."}
    error_type: str = ""  # InvalidArguments, ToolRejected, MissingSecret, ... when not ok
    duration_ms: float = 0


class ToolActivities:
    """The activity's contract: what workflows call. The implementation, activities/tools.py's
    ToolActivities, subclasses this and overrides it under the same activity name."""

    @activity.defn(name="tools.call")
    async def call(self, request: ToolCallInput) -> ToolCallResult:
        """Check the call's arguments against the tool's schema, then run it."""
        raise NotImplementedError
