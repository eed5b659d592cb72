"""Request and response bodies of the REST API."""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.assistant_schemas import AssistantRef
from api.strict import Strict
from api.text import Name, Prose

# SQLite hands timestamps back without their zone; every timestamp lcp stores is UTC.
UtcDatetime = Annotated[
    datetime, AfterValidator(lambda value: value if value.tzinfo else value.replace(tzinfo=UTC))
]

CONVERSATION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class ErrorDetail(BaseModel):
    type: str = Field(description="What kind of error, e.g. InvalidMessage, VersionConflict.")
    message: str = Field(description="What was wrong and how to fix it.")
    model_config = ConfigDict(extra="allow")


class ErrorOut(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": description}
    for status, description in {
        401: "Missing, unknown, revoked or expired credentials.",
        403: "The credentials lack the role this route needs.",
        404: "No such conversation or message.",
        409: "Stale expected_version (with current_version), archived conversation, or taken id.",
        422: "Invalid input: the message says which field and why.",
        429: "A per-key or per-tenant limit is spent: retry after Retry-After seconds.",
        502: "The model endpoint rejected the request or could not answer.",
        503: "Temporal or the read model is unavailable; retry shortly.",
    }.items()
}


# Versions, seeds: bounded so a number never overflows a column or an endpoint's integer.
MAX_VERSION = 2**31 - 1
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1


class GenerationParams(Strict):
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=32_768)
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)


class MessageIn(Strict):
    content: str = Field(description="The user's message text.")
    role: str = Field(default="user", max_length=20, description="Only 'user' messages are sent by clients.")
    expected_version: int | None = Field(
        default=None,
        ge=0,
        le=MAX_VERSION,
        description="Optimistic concurrency: the version you last read; 409 if stale.",
    )


class ConversationCreate(Strict):
    id: str | None = Field(
        default=None,
        pattern=CONVERSATION_ID_PATTERN,
        description="Your own id for the conversation; generated when absent.",
    )
    title: Name | None = Field(default=None, max_length=300)
    model: Name | None = Field(default=None, max_length=200, description="A model from the models policy.")
    system_prompt: Prose | None = Field(default=None, max_length=100_000)
    params: GenerationParams = GenerationParams()
    message: MessageIn | None = Field(default=None, description="An optional first message.")
    assistant: AssistantRef | None = Field(
        default=None,
        description="An assistant instead of a model: its version (or your experiment arm's) sets the model, "
        "instructions, params and tools.",
    )
    user: Name | None = Field(
        default=None,
        max_length=200,
        description="Your end user's id: experiments assign arms per user (default: the caller).",
    )


class EditIn(Strict):
    content: str
    expected_version: int | None = Field(default=None, ge=0, le=MAX_VERSION)


class FeedbackIn(Strict):
    rating: Literal["up", "down"]
    comment: Prose = Field(default="", max_length=2000)
    user: Name | None = Field(
        default=None, max_length=200, description="Your end user's id (default: the caller)."
    )


class FeedbackOut(BaseModel):
    message_id: str
    rating: str
    comment: str
    by: str


class VersionIn(Strict):
    expected_version: int | None = Field(default=None, ge=0, le=MAX_VERSION)


class MessageOut(BaseModel):
    id: str
    parent_id: str | None
    role: str
    content: str
    version: int = Field(description="1 for the first variant at this point, 2 after an edit...")
    seq: int
    created_at: UtcDatetime
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    variants: int = Field(default=1, description="How many variants exist at this point.")
    assistant_version: str | None = Field(default=None, description="A reply's: the version that wrote it.")
    arm: str | None = None
    tool_calls: list[dict[str, Any]] | None = Field(
        default=None, description="A reply's tool calls: id, name, arguments, ok, result, duration_ms."
    )


class ConversationOut(BaseModel):
    id: str
    tenant: str
    title: str | None
    model: str
    system_prompt: str | None
    params: dict[str, Any]
    status: str
    version: int
    message_count: int
    summary: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    assistant_id: str | None = None
    assistant_version: str | None = Field(default=None, description="The assistant version serving it.")
    experiment_id: str | None = None
    arm: str | None = Field(default=None, description="The experiment arm it was assigned.")


class BranchOut(BaseModel):
    leaf_id: str
    length: int
    active: bool
    updated_at: UtcDatetime


class ConversationDetail(BaseModel):
    conversation: ConversationOut
    branch: str | None = Field(description="Leaf message id of the branch shown.")
    messages: list[MessageOut]
    branches: list[BranchOut]


class TurnOut(BaseModel):
    conversation_id: str
    version: int
    message: MessageOut
    reply: MessageOut


class ConversationCreated(BaseModel):
    conversation: ConversationOut
    turn: TurnOut | None = None


class ConversationPage(BaseModel):
    data: list[ConversationOut]
    next_cursor: str | None


MAX_REQUESTS_PER_MINUTE = 10**9
MAX_TOKENS_PER_MINUTE = 2 * 10**9  # the column is a 32-bit integer on PostgreSQL


class KeyCreate(Strict):
    name: Name = Field(min_length=1, max_length=200, description="What the key is for, e.g. 'librechat'.")
    roles: list[Literal["client", "admin", "sre", "platform"]] = Field(
        default=["client"],
        min_length=1,
        description="Tenant roles (client, admin) or platform roles (sre, platform): only a platform admin "
        "grants platform roles.",
    )
    tenant: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Platform admins only: the tenant the key acts in. Empty: your own.",
    )
    requests_per_minute: int | None = Field(
        default=None, ge=1, le=MAX_REQUESTS_PER_MINUTE, description="Empty: the default limit."
    )
    tokens_per_minute: int | None = Field(
        default=None, ge=1, le=MAX_TOKENS_PER_MINUTE, description="Empty: the default limit."
    )


class KeyOut(BaseModel):
    id: str
    tenant: str
    name: str
    roles: list[str]
    requests_per_minute: int | None
    tokens_per_minute: int | None
    created_at: UtcDatetime
    revoked_at: UtcDatetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="The API key itself. It is shown only now: store it safely.")


class KeyList(BaseModel):
    data: list[KeyOut]
