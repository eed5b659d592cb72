"""Request and response bodies of the OpenAI-compatible routes, in OpenAI's shapes."""

from typing import Annotated, Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.assistant_schemas import MAX_GENERATED_TOKENS, AssistantRef, Stop
from api.errors import ApiError
from api.text import Name
from policies.response_format import bounds_problem, pointer, strict_problem

# One-shot and durable turns take the same messages: at most this many (a long chat sent whole is a few
# hundred), user messages not blank and at most LCP_CONVERSATION__MAX_MESSAGE_CHARS, system messages at
# most as long as a conversation's system prompt. The body limit bounds the rest.
MAX_MESSAGES = 2048
MAX_SYSTEM_CHARS = 100_000
MAX_CHOICES = 8  # n: each choice is a call to the model
MAX_EMBEDDING_INPUTS = 2048  # texts in one embeddings request, as OpenAI allows
# Requests are strict: no coercion, so `true` is not 1 and "5" not 5; extra fields are ignored, as OpenAI's
# SDKs and LibreChat send many.
_LENIENT = ConfigDict(extra="allow", strict=True)


class ContentPart(BaseModel):
    model_config = _LENIENT
    type: str
    text: str | None = None


class FunctionCall(BaseModel):
    model_config = _LENIENT
    name: str = Field(min_length=1, max_length=64)
    arguments: str = ""


class ToolCall(BaseModel):
    """A tool call the model made: in a reply, and sent back with the conversation."""

    model_config = _LENIENT
    id: str = Field(min_length=1, max_length=200)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessageIn(BaseModel):
    model_config = _LENIENT  # name, ... are accepted and ignored
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = Field(default=None, description="An assistant's tool calls.")
    tool_call_id: str | None = Field(default=None, description="A tool message's: the call it answers.")

    @model_validator(mode="after")
    def _tool_fields_fit_the_role(self) -> "ChatMessageIn":
        if self.role == "function" or (self.model_extra or {}).get("function_call") is not None:
            raise ValueError(
                "function messages and function_call are OpenAI's deprecated function calling: send the "
                "assistant's tool_calls and answer each with a tool message (tool_call_id)"
            )
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"tool_calls belong on assistant messages, not on a {self.role} message")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id: the id of the tool call it answers")
        return self

    def text(self) -> str:
        """The message's text; content given as parts must be text parts."""
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class FunctionDeclaration(BaseModel):
    model_config = _LENIENT  # strict, ... are passed on
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _parameters_are_usable(self) -> "FunctionDeclaration":
        """The same bounds and meta-schema as response_format's schema: the endpoint compiles both."""
        strict = (self.model_extra or {}).get("strict") is True
        if self.parameters is not None and (problem := schema_problem(self.parameters, strict=strict)):
            raise ValueError(f"invalid parameters: {problem}")
        return self


class ToolDeclaration(BaseModel):
    """A tool the client offers the model (OpenAI function calling); the client runs it."""

    model_config = ConfigDict(strict=True)
    type: Literal["function"] = "function"
    function: FunctionDeclaration


class NamedFunction(BaseModel):
    model_config = ConfigDict(strict=True)
    name: str = Field(max_length=64)


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(strict=True)
    type: Literal["function"] = "function"
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    """The schema a structured reply must fit (OpenAI's `response_format.json_schema`)."""

    model_config = ConfigDict(strict=True, populate_by_name=True)
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = Field(default=None, max_length=10_000)
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_is_usable(self) -> "JsonSchemaFormat":
        if problem := schema_problem(self.schema_, strict=bool(self.strict)):
            raise ValueError(f"invalid schema: {problem}")
        return self


def schema_problem(schema: dict[str, Any], *, strict: bool) -> str | None:
    """What is wrong with a structured-output schema, naming where, or None: its bounds, then the
    meta-schema's word (Draft 2020-12 unless it names its own `$schema`), then strict mode's rules."""
    if problem := bounds_problem(schema):
        return problem
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as err:
        return f"at {pointer(tuple(err.path))}: {err.message[:300]}"
    return strict_problem(schema) if strict else None


class TextFormat(BaseModel):
    model_config = ConfigDict(strict=True)
    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    model_config = ConfigDict(strict=True)
    type: Literal["json_object"]


class JsonSchemaResponseFormat(BaseModel):
    model_config = ConfigDict(strict=True)
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")
]


class StreamOptions(BaseModel):
    model_config = _LENIENT
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """What OpenAI's chat API takes. Unknown optional fields are ignored, not refused, as
    LibreChat and the SDKs send many (frequency_penalty, logit_bias, user, ...)."""

    model_config = _LENIENT

    model: Name = Field(
        default="",
        max_length=200,
        description="A model, or an assistant as `assistant:ID` or `assistant:ID@vN` (see GET /v1/models).",
    )
    assistant: AssistantRef | None = Field(
        default=None, description="Instead of a model: the assistant (and optionally version) to answer."
    )
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Name | None = Field(default=None, max_length=200)
    metadata: dict[str, Any] | None = Field(
        default=None, description="metadata.conversation_id makes the turn durable, like X-Conversation-Id."
    )
    conversation_id: str | None = Field(
        default=None,
        max_length=100,
        description="Makes the turn durable, like X-Conversation-Id: for clients that drop `metadata` but "
        "pass `extra_body` on (LangChain, litellm).",
    )
    functions: Any = Field(default=None, description="Refused (400): declare them in `tools`.")
    function_call: Any = Field(default=None, description="Refused (400): use `tool_choice`.")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_GENERATED_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_GENERATED_TOKENS)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    stop: Stop | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    n: int | None = Field(
        default=None,
        ge=1,
        le=MAX_CHOICES,
        description=f"Choices to generate, at most {MAX_CHOICES}: each is its own call to the model, metered "
        "as one; streamed, their chunks interleave. One-shot only: a durable turn records one reply.",
    )
    tools: list[ToolDeclaration] | None = Field(
        default=None,
        max_length=128,
        description="Tools the client runs itself: passed to the model, whose calls come back as "
        "`tool_calls`. One-shot requests only (not with a conversation ID or an assistant).",
    )
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormat | None = Field(
        default=None,
        description="Structured outputs: `json_object`, or `json_schema` (with `strict`) whose schema the "
        "reply fits. Passed to the model's deployment; a durable turn's applies to that turn only.",
    )

    @model_validator(mode="after")
    def _tool_choice_fits_the_tools(self) -> "ChatCompletionRequest":
        if self.functions is not None or self.function_call is not None:
            raise ValueError(
                "functions and function_call are OpenAI's deprecated function calling: declare the "
                'functions in tools ([{"type": "function", "function": {...}}]) and use tool_choice'
            )
        names = [tool.function.name for tool in self.tools or []]
        if len(set(names)) != len(names):
            raise ValueError("tools declare a function name more than once")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            raise ValueError(
                f"tool_choice names {self.tool_choice.function.name!r}, which tools do not declare"
            )
        if self.tool_choice == "required" and not names:
            raise ValueError('tool_choice "required" needs at least one tool in tools')
        _check_tool_results_answer_calls(self.messages)
        return self

    def tool_declarations(self) -> list[dict[str, Any]] | None:
        """The client's tools in OpenAI's wire format, for the endpoint."""
        return [tool.model_dump(exclude_none=True) for tool in self.tools] if self.tools else None

    def tool_choice_wire(self) -> str | dict[str, Any] | None:
        if isinstance(self.tool_choice, NamedToolChoice):
            return self.tool_choice.model_dump()
        return self.tool_choice

    def turn_params(self) -> dict[str, Any]:
        """This request's parameters for the endpoint: the generation parameters and response_format."""
        wire = (
            self.response_format.model_dump(by_alias=True, exclude_none=True)
            if self.response_format
            else None
        )
        return {**self.params(), **({"response_format": wire} if wire else {})}

    def params(self) -> dict[str, Any]:
        """Generation parameters to pass on to the endpoint (a conversation keeps them for its turns)."""
        params = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_completion_tokens or self.max_tokens,
            "seed": self.seed,
            "stop": self.stop,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }
        return {key: value for key, value in params.items() if value is not None}


def _check_tool_results_answer_calls(messages: list[ChatMessageIn]) -> None:
    """OpenAI's rule: an assistant message's tool calls are answered by the tool messages right after
    it, one per call id."""
    unanswered: set[str] = set()
    for index, message in enumerate(messages):
        if message.role == "tool":
            if message.tool_call_id not in unanswered:
                raise ValueError(
                    f"messages[{index}] answers tool call {message.tool_call_id!r}, which the assistant "
                    "message just before it did not make (or another tool message already answered)"
                )
            unanswered.discard(message.tool_call_id)
            continue
        if unanswered:
            raise ValueError(
                f"messages[{index}] comes before the tool call(s) {sorted(unanswered)} of the assistant "
                "message before it have tool messages answering them"
            )
        unanswered = {call.id for call in message.tool_calls or []}


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


class EmbeddingRequest(BaseModel):
    """What OpenAI's embeddings API takes: text inputs (token arrays are not supported)."""

    model_config = _LENIENT
    model: Name = Field(max_length=200, description="A model of kind `embedding` (see GET /v1/models).")
    # The bounds are the list's (a text's length is the body's and the token limits' to bound): on the
    # union they also bounded a single text to MAX_EMBEDDING_INPUTS characters.
    input: (
        Annotated[str, Field(min_length=1)]
        | Annotated[
            list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)
        ]
    ) = Field(description="A text, or a list of texts.")
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1, le=65_536)
    user: Name | None = Field(default=None, max_length=200)

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input

    def params(self) -> dict[str, Any]:
        """What goes to the endpoint besides the model and the input."""
        params = {"encoding_format": self.encoding_format, "dimensions": self.dimensions}
        return {key: value for key, value in params.items() if value is not None}


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


def check_message_limits(body: ChatCompletionRequest, max_message_chars: int) -> None:
    """The content rules a conversation applies to a user's message, for every chat completion, one-shot
    or durable: a user message is not empty or whitespace only and is at most `max_message_chars` long,
    and a system message is at most as long as a conversation's system prompt. A 422 names the message."""
    for index, message in enumerate(body.messages):
        if isinstance(message.content, list) and any(part.type != "text" for part in message.content):
            continue  # the route refuses non-text parts itself
        text = message.text()
        problem = None
        if message.role == "user" and not text.strip():
            problem = "message content is empty or whitespace only: send some text"
        elif message.role == "user" and len(text) > max_message_chars:
            problem = (
                f"message content is {len(text):,} characters, over the limit of {max_message_chars:,}: "
                "shorten it or split it into several messages"
            )
        elif message.role in ("system", "developer") and len(text) > MAX_SYSTEM_CHARS:
            problem = f"a system message is {len(text):,} characters, over the limit of {MAX_SYSTEM_CHARS:,}"
        if problem:
            raise ApiError(
                422, "InvalidMessage", f"messages[{index}]: {problem}", param=f"messages.{index}.content"
            )
