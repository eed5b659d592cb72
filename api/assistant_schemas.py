"""Request and answer bodies of the assistant routes (answers are mostly the workflow's AssistantView)."""

from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.strict import Strict
from api.text import Name, Prose
from policies.assignment import Arm
from policies.assistants import BUILTIN_TOOLS, AssistantSpec, ToolSpec

ASSISTANT_ID = r"^[a-z0-9]([-a-z0-9_]{0,62}[a-z0-9])?$"
VERSION = r"^v[1-9][0-9]{0,5}$"


FUNCTION_FIELDS = ("name", "description", "parameters", "strict")  # OpenAI's `function` of a tool


class ToolIn(Strict):
    """A tool as lcp lists it (name, description, parameters and the binding side by side), or in OpenAI's
    function-calling shape, `{"type": "function", "function": {"name", "description", "parameters"}}`,
    with the binding (`kind`, `url`, `builtin`, ...) beside `function`. A tool naming a `builtin` is of
    kind builtin without saying so."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="The function name the model calls.")
    description: Prose = Field(default="", max_length=2000)
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON schema of the arguments (OpenAI's function-calling `parameters`).",
    )
    kind: Literal["http", "builtin"] = "http"
    url: Name = Field(default="", max_length=2000, description="http tools: the endpoint called.")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    auth_secret: Name = Field(
        default="", max_length=128, description="A named secret sent as the Authorization header."
    )
    idempotent: bool = Field(
        default=False, description="Safe to call twice: failed calls are retried. Otherwise at most once."
    )
    builtin: Literal["", *BUILTIN_TOOLS] = ""  # type: ignore[valid-type]

    @model_validator(mode="before")
    @classmethod
    def _openai_shape(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "type" in data or "function" in data:
            data = _flattened(data)
        if data.get("builtin") and "kind" not in data:
            data = {**data, "kind": "builtin"}
        return data

    @model_validator(mode="after")
    def _url_can_be_called(self) -> "ToolIn":
        """The URL parses as the tool activity's HTTP client parses it (`http://0177.0.0.1` does not)."""
        if self.kind == "http" and self.url:
            try:
                httpx.URL(self.url)
            except httpx.InvalidURL as err:
                raise ValueError(f"url {self.url[:200]!r} cannot be called: {err}") from None
        return self

    def to_tool(self) -> ToolSpec:
        return ToolSpec(**self.model_dump())


def _flattened(tool: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's `{"type": "function", "function": {...}, <binding>}` as lcp's flat tool."""
    if tool.get("type") != "function":
        raise ValueError('type: an OpenAI tool is {"type": "function", "function": {"name": ...}}')
    function = tool.get("function")
    if not isinstance(function, dict):
        raise ValueError("function: expected an object with name, description and parameters")
    if unknown := sorted(set(function) - set(FUNCTION_FIELDS)):
        raise ValueError(
            f"function: unknown field(s) {', '.join(unknown)}; it takes {', '.join(FUNCTION_FIELDS)}"
        )
    if twice := sorted(set(function) & set(tool)):
        raise ValueError(
            f"{', '.join(twice)}: given both in function and beside it; keep the one in function"
        )
    if not isinstance(function.get("strict", False), bool):
        raise ValueError("function.strict: true or false")
    # lcp always checks a call's arguments against the parameters schema: what `strict` asks for.
    declared = {key: value for key, value in function.items() if key != "strict"}
    return {**{k: v for k, v in tool.items() if k not in ("type", "function")}, **declared}


MAX_GENERATED_TOKENS = 1_000_000  # more than any model writes in one reply
StopSequence = Annotated[str, Field(min_length=1, max_length=1000)]
Stop = StopSequence | Annotated[list[StopSequence], Field(max_length=16)]


class AssistantParams(Strict):
    """Generation params an assistant's version sets (OpenAI's names and ranges)."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_GENERATED_TOKENS)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    stop: Stop | None = None


class SpecFields(Strict):
    """The editable parts of an assistant; on an edit, the fields left out keep the latest version's."""

    name: Name | None = Field(default=None, min_length=1, max_length=200)
    model: Name | None = Field(default=None, min_length=1, max_length=200)
    instructions: Prose | None = Field(default=None, max_length=100_000, description="The system prompt.")
    params: AssistantParams | None = Field(default=None, description="temperature, top_p, max_tokens, ...")
    tools: list[ToolIn] | None = Field(default=None, max_length=64)
    max_tool_rounds: int | None = Field(default=None, ge=0, le=16)

    def applied_to(self, base: AssistantSpec | None) -> AssistantSpec:
        given = self.model_dump(exclude_none=True, include=set(SpecFields.model_fields) - {"tools"})
        tools = [tool.to_tool() for tool in self.tools] if self.tools is not None else None
        if base is None:
            listed: dict[str, Any] = {"tools": tools} if tools is not None else {}
            return AssistantSpec(**given, **listed)
        spec = AssistantSpec(**{**base.__dict__, **given})
        if tools is not None:
            spec.tools = tools
        return spec


class AssistantCreate(SpecFields):
    id: str = Field(pattern=ASSISTANT_ID, description="Lowercase letters, digits, '-' and '_'.")
    name: Name = Field(min_length=1, max_length=200)
    model: Name = Field(min_length=1, max_length=200)
    note: Prose = Field(default="", max_length=2000, description="What this version is for.")
    publish: bool = Field(default=False, description="Publish v1 at once.")


class AssistantEdit(SpecFields):
    note: Prose = Field(default="", max_length=2000, description="What changed, and why.")
    expected_version: str | None = Field(
        default=None, pattern=VERSION, description="The latest version you read: 409 if another came since."
    )


class PublishIn(Strict):
    version: str = Field(pattern=VERSION)
    reason: Prose = Field(default="", max_length=2000)


class RollbackIn(Strict):
    to_version: str | None = Field(
        default=None, pattern=VERSION, description="Empty: the version live before the current one."
    )
    reason: Prose = Field(default="", max_length=2000)


class ArmIn(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,63}$")
    version: str = Field(pattern=VERSION)
    share: int = Field(ge=0, le=10_000, description="Relative weight (percent, usually).")

    def to_arm(self) -> Arm:
        return Arm(self.name, self.version, self.share)


class ExperimentCreate(Strict):
    id: str = Field(pattern=ASSISTANT_ID)
    arms: list[ArmIn] = Field(min_length=2, max_length=10)
    reason: Prose = Field(default="", max_length=2000)


class ExperimentAdjust(Strict):
    arms: list[ArmIn] = Field(min_length=2, max_length=10, description="Same arms and order; new shares.")
    reason: Prose = Field(default="", max_length=2000)


class ExperimentStop(Strict):
    promote: Name | None = Field(
        default=None, max_length=64, description="An arm's name or version to make live; empty: abort."
    )
    reason: Prose = Field(default="", max_length=2000)


class AssistantSummary(BaseModel):
    id: str
    name: str
    state: str
    live_version: str | None
    latest_version: str
    experiment: dict[str, Any] | None
    created_by: str
    created_at: datetime
    updated_at: datetime


class AssistantList(BaseModel):
    data: list[AssistantSummary]


class StoredVersion(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: str
    number: int
    spec: dict[str, Any]
    changed: list[str]
    note: str
    created_by: str
    created_at: datetime
    published_at: datetime | None


class VersionList(BaseModel):
    data: list[StoredVersion]


class AssistantRef(Strict):
    """Which assistant serves a conversation: the live version (or the user's experiment arm), or the
    version named."""

    id: str = Field(pattern=ASSISTANT_ID)
    version: str | None = Field(default=None, pattern=VERSION)


class AssistantSwitch(Strict):
    """Move a conversation to another version of its assistant."""

    version: str | None = Field(
        default=None,
        pattern=VERSION,
        description="Empty: the version that serves the conversation's user now (live, or their arm).",
    )
    expected_version: int | None = Field(
        default=None,
        ge=0,
        le=2**31 - 1,
        description="The conversation version you read: 409 if it changed since.",
    )


# ---- the assistant's analytics (api/assistant_stats.py computes them) -----------------------------------


class Usage(BaseModel):
    conversations: int
    turns: int
    errors: int
    error_rate: float | None
    prompt_tokens: int
    completion_tokens: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    thumbs_up: int
    thumbs_down: int
    satisfaction: float | None  # thumbs up ÷ (up + down)


class VersionUsage(Usage):
    version: str


class ArmUsage(Usage):
    arm: str
    version: str


class ArmDifference(BaseModel):
    """treatment − control for one metric, with its confidence interval."""

    metric: str
    arm: str  # the treatment arm; the control is the experiment's first arm
    value: float | None
    low: float | None
    high: float | None
    confidence: float


class ExperimentStats(BaseModel):
    id: str
    state: str
    control: str
    arms: list[ArmUsage]
    differences: list[ArmDifference]


class AssistantStats(BaseModel):
    assistant_id: str
    versions: list[VersionUsage]
    experiments: list[ExperimentStats]
