"""OpenAI-compatible LLM simulator: a simulated inference fleet with vLLM metrics, faults and tool calls.

Replies are deterministic simulations, not a model's thoughts:
- text: sentences of ordinary words (a pure function of the request when it carries a seed), or the
  user's own text after "[echo]";
- tool calls (OpenAI function calling): with `tools` declared and `tool_choice` not "none", a last
  user message that names declared tools as whole words calls them, in the order they are first
  named. A JSON object right after a name is passed through verbatim as that call's arguments;
  otherwise every required parameter gets an example value by type. "required" always calls (the
  first declared tool when none is named); a named `tool_choice` calls only that tool. Call ids are
  a hash of the request, so the same request gets the same ids;
- after tool results (the last messages have role "tool"): a text reply stating each result,
  "Tool results: get_weather → {...}", or "get_weather failed: {...}" for an {"error": ...} result.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
import random
import re
import struct
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import Counter as PromCounter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lab.json_instance import Unsupported, instance

logger = logging.getLogger(__name__)

FINGERPRINT = "lcp-simulator"
MODEL_DESCRIPTION = "simulated model (lcp LLM simulator) — not a real inference endpoint"
ECHO_MARKER = "[echo]"
EMBEDDING_MODELS = {"sim-embed": 64}  # embedding models the simulator serves, and their dimensions
MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit on the inputs of one request
TIMEOUT_HOLD_S = 600.0  # how long a "timeout" fault holds a request (ends early on disconnect)
MESSAGE_OVERHEAD_TOKENS = 4  # simulated tokens per message for the role and separators


@dataclass(frozen=True)
class ModelProfile:
    """Latency and capacity of one simulated model (one replica of an inference server)."""

    name: str
    ttft_base_ms: float  # fixed part of the time to first token
    prefill_tokens_per_s: float  # prompt tokens prefilled per second, shared by requests in prefill
    itl_ms: float  # inter-token latency with one request generating
    itl_growth: float  # extra ms of inter-token latency per additional request generating
    max_concurrency: int  # requests generating at once; the rest wait in a queue
    default_max_tokens: int  # longest natural reply, in words
    # KV cache: what one replica holds, in tokens, in blocks of block_tokens (vLLM's default 16). A
    # prompt's leading blocks still cached from an earlier request are not prefilled again.
    kv_cache_tokens: int = 700_000
    block_tokens: int = 16

    def ttft_s(self, prompt_tokens_in_flight: int) -> float:
        return (self.ttft_base_ms + 1000 * prompt_tokens_in_flight / self.prefill_tokens_per_s) / 1000

    def itl_s(self, generating: int) -> float:
        return (self.itl_ms + self.itl_growth * max(generating - 1, 0)) / 1000


# Derived from ../shared/data/gpu_profiles/README.md (one H200, measured 2026-11-26):
# TTFT ≈ 20 ms + prompt tokens in flight / 33,000 tok/s; inter-token latency ≈ 4–8 ms at low load,
# growing with concurrency, for an 8B model on one H200. The 1B profile is about 3x faster.
# KV cache: an H200 (141 GB) keeps ~100 GB for it after the 8B model's 16 GB of weights; at 128 KiB a
# token (2 x 32 layers x 8 KV heads x 128 x 2 bytes) that is ~700k tokens; the 1B shape's 32 KiB a
# token gives ~3M.
DEFAULT_PROFILES: dict[str, ModelProfile] = {
    p.name: p
    for p in (
        ModelProfile(
            name="sim-llama-8b",
            ttft_base_ms=20.0,
            prefill_tokens_per_s=33_000.0,
            itl_ms=5.0,
            itl_growth=3.0 / 63,  # 5 ms alone, 8 ms with 64 generating
            max_concurrency=64,
            default_max_tokens=128,
        ),
        ModelProfile(
            name="sim-llama-1b",
            ttft_base_ms=7.0,
            prefill_tokens_per_s=100_000.0,
            itl_ms=1.7,
            itl_growth=1.0 / 63,
            max_concurrency=128,
            default_max_tokens=128,
            kv_cache_tokens=3_000_000,
        ),
        ModelProfile(  # no latency at all: for tests and benchmarks
            name="sim-zero",
            ttft_base_ms=0.0,
            prefill_tokens_per_s=math.inf,
            itl_ms=0.0,
            itl_growth=0.0,
            max_concurrency=1024,
            default_max_tokens=32,
        ),
    )
}

VOCABULARY = """
the a an this that these those some every each other many few more most all any no
people time year day way man woman child world life hand part place case week company
system program question work government number night point home water room mother area
money story fact month lot right study book eye job word business issue side kind head
house service friend father power hour game line end member law car city community name
team minute idea body information back parent face others level office door health person
art war history party result change evening reason research girl guy moment air teacher
force education river garden music letter window table paper morning road plan market
be have do say get make go know take see come think look want give use find tell ask
seem feel try leave call keep let begin help talk turn start show hear play run move
live believe hold bring happen write provide sit stand lose pay meet include continue
good new first last long great little own old big high different small large next early
young important public bad same able quiet bright warm simple clear open careful
and or but so because while after before when where then also very often still just
""".split()


# ---- request bodies ---------------------------------------------------------------------------


class EmbeddingRequest(BaseModel):
    """What OpenAI's embeddings API takes (text inputs; token arrays are not simulated)."""

    model: str
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _inputs_fit(self) -> EmbeddingRequest:
        if isinstance(self.input, list) and len(self.input) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"input takes at most {MAX_EMBEDDING_INPUTS} texts")
        return self

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


def embedding(model: str, text: str, dimensions: int) -> list[float]:
    """A unit vector that is a pure function of (model, text, dimensions)."""
    key = json.dumps([model, text, dimensions]).encode("utf-8", "surrogatepass")
    rng = random.Random(hashlib.sha256(key).digest())
    vector = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(value * value for value in vector)) or 1.0
    return [value / norm for value in vector]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class CalledFunction(BaseModel):
    name: str
    arguments: str  # JSON text, as the model wrote it


class ToolCall(BaseModel):
    """A tool call an earlier assistant message made, sent back in the conversation."""

    id: str = Field(min_length=1)
    type: Literal["function"]
    function: CalledFunction


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None  # required, may be null; see _content_fits_the_role
    tool_calls: list[ToolCall] | None = None  # assistant only
    tool_call_id: str | None = None  # tool only: the call this message answers

    @model_validator(mode="after")
    def _content_fits_the_role(self) -> Message:
        if "content" not in self.model_fields_set and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (only an assistant message with tool_calls may omit it)")
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"tool_calls belong on assistant messages, not on a {self.role} message")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError(
                "a tool message needs tool_call_id: the id of the assistant's tool call it answers"
            )
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return " ".join(part.text for part in self.content)
        return self.content or ""


class FunctionParameters(BaseModel):
    """A function's parameters as JSON schema; the simulator reads properties and required."""

    model_config = ConfigDict(extra="allow")

    properties: dict[str, Any] = Field(default_factory=dict)
    required: list[str] = Field(default_factory=list)


class FunctionDefinition(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
    description: str | None = None
    parameters: FunctionParameters | None = None


class Tool(BaseModel):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: FunctionName


class StreamOptions(BaseModel):
    include_usage: bool = False


class JsonSchemaSpec(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """Structured outputs: plain text, any JSON object, or JSON that fits a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError('type "json_schema" needs json_schema: {name, schema, strict}')
        return self


class ChatRequest(BaseModel):
    """The fields of an OpenAI chat completion request the simulator reads; others are ignored."""

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormat | None = None

    @model_validator(mode="after")
    def _tools_fit(self) -> ChatRequest:
        names = self.tool_names()
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"tools declare the function name(s) {', '.join(duplicates)} more than once")
        if self.tool_choice == "required" and not names:
            raise ValueError('tool_choice "required" needs at least one tool in tools')
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            declared = ", ".join(names) or "none"
            raise ValueError(
                f"tool_choice names the function {self.tool_choice.function.name!r}, "
                f"which tools do not declare (declared: {declared})"
            )
        _check_tool_results_answer_calls(self.messages)
        return self

    def tool_names(self) -> list[str]:
        return [tool.function.name for tool in self.tools or []]


def _check_tool_results_answer_calls(messages: list[Message]) -> None:
    """As OpenAI does: tool messages come right after the assistant message whose tool_calls they
    answer, and every tool call is answered before the conversation goes on."""
    called: set[str] = set()  # ids of the tool calls of the assistant message just before
    unanswered: list[str] = []
    for i, message in enumerate(messages):
        if message.role == "tool":
            if message.tool_call_id not in called:
                raise ValueError(
                    f"messages.{i} is a tool message for tool_call_id {message.tool_call_id!r}, but the "
                    "assistant message before it made no tool call with that id; tool messages must "
                    "follow the assistant message with tool_calls they answer"
                )
            unanswered = [id_ for id_ in unanswered if id_ != message.tool_call_id]
            continue
        if unanswered:
            raise ValueError(
                f"messages.{i} comes before the tool call(s) {', '.join(unanswered)} were answered; "
                "send one tool message (role tool, tool_call_id, content) per tool call right after "
                "the assistant message that made them"
            )
        called = {call.id for call in message.tool_calls or []}
        unanswered = [call.id for call in message.tool_calls or []]
    if unanswered:
        raise ValueError(
            f"the messages end with the tool call(s) {', '.join(unanswered)} unanswered; send one tool "
            "message (role tool, tool_call_id, content) per tool call after the assistant message"
        )


class FaultConfig(BaseModel):
    """Body of PUT /admin/faults: faults for one model (model=None: every model)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    error_rate_500: float = Field(0.0, ge=0, le=1)
    error_rate_429: float = Field(0.0, ge=0, le=1)
    timeout_rate: float = Field(0.0, ge=0, le=1)
    fail_next: int = Field(0, ge=0)
    fail_next_status: int = Field(500, ge=400, le=599)
    latency_ms: float = Field(0.0, ge=0)
    # The next N streamed replies break off after their first tokens: the replica "dies mid-stream"
    # (the connection drops, no finish_reason, no [DONE]).
    break_stream_next: int = Field(0, ge=0)
    break_stream_after: int = Field(2, ge=0)  # content tokens such a stream sends before it breaks

    @model_validator(mode="after")
    def _rates_fit(self) -> FaultConfig:
        if self.error_rate_500 + self.error_rate_429 + self.timeout_rate > 1:
            raise ValueError("error_rate_500 + error_rate_429 + timeout_rate must be at most 1")
        return self


# ---- app state --------------------------------------------------------------------------------


class _Metrics:
    """vLLM-named Prometheus metrics in a registry owned by one app."""

    def __init__(self, model_names: list[str]) -> None:
        self.registry = CollectorRegistry()
        labels = ["model_name"]
        reg = self.registry
        self.running = Gauge(
            "vllm:num_requests_running", "Requests generating (simulated).", labels, registry=reg
        )
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Requests queued (simulated).", labels, registry=reg
        )
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token, queueing included (simulated).",
            labels,
            registry=reg,
            buckets=(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5),
        )
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "End-to-end request latency (simulated).",
            labels,
            registry=reg,
            buckets=(0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 60),
        )
        self.kv_cache_usage = Gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage, 0-1: blocks held by running requests (simulated).",
            labels,
            registry=reg,
        )
        # prometheus_client appends "_total" to counter names: these expose vllm:*_total.
        self.prefix_queries = PromCounter(
            "vllm:prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache (simulated).",
            labels,
            registry=reg,
        )
        self.prefix_hits = PromCounter(
            "vllm:prefix_cache_hits",
            "Prompt tokens found in the prefix cache, not prefilled again (simulated).",
            labels,
            registry=reg,
        )
        self.prompt_tokens = PromCounter(
            "vllm:prompt_tokens", "Prompt tokens processed (simulated).", labels, registry=reg
        )
        self.generation_tokens = PromCounter(
            "vllm:generation_tokens", "Tokens generated (simulated).", labels, registry=reg
        )
        self.success = PromCounter(
            "vllm:request_success",
            "Requests finished (simulated).",
            [*labels, "finished_reason"],
            registry=reg,
        )
        for name in model_names:  # expose every series from the start, at zero
            for metric in (self.running, self.waiting, self.kv_cache_usage, self.ttft, self.e2e):
                metric.labels(name)
            self.prefix_queries.labels(name)
            self.prefix_hits.labels(name)
            self.prompt_tokens.labels(name)
            self.generation_tokens.labels(name)
            for reason in ("stop", "length"):
                self.success.labels(name, reason)


class PrefixCache:
    """A replica's cached KV blocks by chained hash, least recently used evicted first."""

    def __init__(self, capacity_blocks: int) -> None:
        self.capacity_blocks = capacity_blocks
        self._blocks: OrderedDict[bytes, None] = OrderedDict()

    def match(self, blocks: Sequence[bytes]) -> int:
        """How many of the leading `blocks` are cached (those are now the most recently used)."""
        count = 0
        for block in blocks:
            if block not in self._blocks:
                break
            self._blocks.move_to_end(block)
            count += 1
        return count

    def keep(self, blocks: Sequence[bytes]) -> None:
        for block in blocks:
            self._blocks[block] = None
            self._blocks.move_to_end(block)
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.popitem(last=False)


def prompt_blocks(messages: list[Message], block_tokens: int) -> list[bytes]:
    """The prompt's whole blocks of simulated tokens as chained hashes: a block's hash covers every
    token before it, so two prompts share a cached block only if they share everything up to it."""
    words: list[str] = []
    for m in messages:
        words.append(f"<{m.role}>")
        words.extend(m.text().split())
        for call in m.tool_calls or []:
            words.append(call.function.name)
            words.extend(call.function.arguments.split())
    hashes: list[bytes] = []
    previous = b""
    for start in range(0, len(words) - block_tokens + 1, block_tokens):
        block = " ".join(words[start : start + block_tokens]).encode()
        previous = hashlib.blake2b(previous + block, digest_size=16).digest()
        hashes.append(previous)
    return hashes


@dataclass
class _ModelState:
    profile: ModelProfile
    slots: asyncio.Semaphore
    cache: PrefixCache
    generating: int = 0
    prefill_tokens: int = 0  # prompt tokens of requests now in prefill
    kv_tokens: int = 0  # tokens held in the KV cache by running requests


_OUTCOMES = ("ok", "500", "429", "timeout", "client_error")


@dataclass
class _Simulator:
    models: dict[str, _ModelState]
    metrics: _Metrics
    rng: random.Random
    created: int = field(default_factory=lambda: int(time.time()))
    faults: dict[str | None, FaultConfig] = field(default_factory=dict)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    received: int = 0  # chat requests that arrived, counted before any simulated delay

    def count(self, model: object, outcome: str) -> None:
        key = model if isinstance(model, str) and model in self.models else "(unknown model)"
        self.outcomes.setdefault(key, Counter())[outcome] += 1

    def stats(self) -> dict[str, object]:
        by_model: dict[str, dict[str, int]] = {}
        by_outcome: Counter[str] = Counter({o: 0 for o in _OUTCOMES})
        for model, counts in sorted(self.outcomes.items()):
            by_model[model] = {"requests": sum(counts.values()), **{o: 0 for o in _OUTCOMES}}
            by_model[model].update(counts)
            by_outcome.update(counts)
        return {
            "received": self.received,
            "requests": sum(by_outcome.values()),
            "by_outcome": dict(by_outcome),
            "by_model": by_model,
        }

    def breaks_stream(self, model: str) -> int | None:
        """After how many tokens this streamed reply breaks off (None: it does not); one fewer of the
        next ones will."""
        faults = self.faults.get(model) or self.faults.get(None)
        if faults is None or faults.break_stream_next <= 0:
            return None
        faults.break_stream_next -= 1
        return faults.break_stream_after

    def decide_fault(self, model: str) -> tuple[float, int | Literal["timeout"] | None]:
        """Extra latency (s), and the fault to inject: an HTTP status, "timeout", or None."""
        faults = self.faults.get(model) or self.faults.get(None)
        if faults is None:
            return 0.0, None
        latency_s = faults.latency_ms / 1000
        if faults.fail_next > 0:
            faults.fail_next -= 1
            return latency_s, faults.fail_next_status
        draw = self.rng.random()
        if draw < faults.timeout_rate:
            return latency_s, "timeout"
        if draw < faults.timeout_rate + faults.error_rate_500:
            return latency_s, 500
        if draw < faults.timeout_rate + faults.error_rate_500 + faults.error_rate_429:
            return latency_s, 429
        return latency_s, None


# ---- replies ----------------------------------------------------------------------------------


def prompt_tokens(messages: list[Message]) -> int:
    """Simulated prompt tokens: words of every message (tool calls included) plus a per-message
    overhead."""
    return sum(
        len(m.text().split())
        + sum(1 + len(call.function.arguments.split()) for call in m.tool_calls or [])
        + MESSAGE_OVERHEAD_TOKENS
        for m in messages
    )


def reply_pieces(
    req: ChatRequest, profile: ModelProfile, structured: str | None = None
) -> tuple[list[str], str]:
    """The text reply as tokens (each word with its leading whitespace), and the finish reason;
    `structured` (the JSON that structured_reply built) instead when the request asks for JSON."""
    last_user = _last_user_text(req.messages)
    results = _tool_results_text(req.messages)
    if structured is not None:
        text = structured
    elif results is not None:
        text = results
    elif ECHO_MARKER in last_user:
        text = last_user.replace(ECHO_MARKER, "").strip()
    else:
        text = _generated_text(req, profile.default_max_tokens)
    pieces = _tokens(text)
    limit = req.max_completion_tokens or req.max_tokens
    if limit is not None and len(pieces) > limit:
        return pieces[:limit], "length"
    return pieces, "stop"


def _tokens(text: str) -> list[str]:
    """Simulated tokens: each word with its leading whitespace."""
    return re.findall(r"\s*\S+", text)


def _last_user_text(messages: list[Message]) -> str:
    return next((m.text() for m in reversed(messages) if m.role == "user"), "")


def _messages_key(messages: list[Message]) -> list[dict[str, Any]]:
    """The messages as JSON for hashing; fields a message leaves out stay out (so a plain text
    conversation hashes as it did before tool calls existed)."""
    return [m.model_dump(mode="json", exclude_unset=True) for m in messages]


def structured_reply(req: ChatRequest, profile: ModelProfile) -> str | None:
    """The reply as JSON when `response_format` asks for it: an object holding generated text for
    json_object, a value that fits the schema for json_schema (json_instance.Unsupported when the
    simulator cannot build one); None for plain text."""
    form = req.response_format
    if form is None or form.type == "text":
        return None
    if form.type == "json_object":
        return json.dumps({"reply": _generated_text(req, profile.default_max_tokens)})
    assert form.json_schema is not None
    return json.dumps(instance(form.json_schema.schema_, _request_rng(req)), ensure_ascii=False)


def _request_rng(req: ChatRequest) -> random.Random:
    """Randomness that is a pure function of (model, messages, seed) when a seed is given; without
    one, each request samples anew, as a real model at temperature > 0 does."""
    key = {
        "model": req.model,
        "messages": _messages_key(req.messages),
        "seed": req.seed if req.seed is not None else random.getrandbits(64),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _generated_text(req: ChatRequest, natural_max_words: int) -> str:
    """Sentences of ordinary words (see _request_rng for when they repeat)."""
    rng = _request_rng(req)
    remaining = rng.randint(min(8, natural_max_words), natural_max_words)
    sentences = []
    while remaining > 0:
        words = [rng.choice(VOCABULARY) for _ in range(min(rng.randint(4, 12), remaining))]
        remaining -= len(words)
        sentences.append(" ".join(words).capitalize() + ".")
    return " ".join(sentences)


# ---- tool calls -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedToolCall:
    """A tool call the simulated model makes."""

    id: str
    name: str
    arguments: str  # JSON text

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def planned_tool_calls(req: ChatRequest) -> list[PlannedToolCall]:
    """The tool calls the simulated model makes for `req`; none means it answers in text."""
    tools = {tool.function.name: tool.function for tool in req.tools or []}
    choice = req.tool_choice
    if not tools or choice == "none":
        return []
    text = _last_user_text(req.messages)
    if isinstance(choice, NamedToolChoice):
        names = [choice.function.name]
    elif choice == "required":
        names = _tool_names_in(text, list(tools)) or [next(iter(tools))]
    elif req.messages[-1].role == "user":  # "auto": call the tools the user names
        names = _tool_names_in(text, list(tools))
    else:
        return []
    return [
        PlannedToolCall(
            id=_tool_call_id(req, name, index),
            name=name,
            arguments=_arguments_in(text, name) or _example_arguments(tools[name].parameters),
        )
        for index, name in enumerate(names)
    ]


def _name_pattern(name: str) -> re.Pattern[str]:
    """`name` as a whole word: not inside a longer name (function names hold letters, digits, _ and -)."""
    return re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])")


def _tool_names_in(text: str, names: list[str]) -> list[str]:
    """The names that `text` mentions as whole words (case-sensitive), in order of first mention."""
    first_mention = {}
    for name in names:
        match = _name_pattern(name).search(text)
        if match:
            first_mention[name] = match.start()
    return sorted(first_mention, key=first_mention.__getitem__)


def _arguments_in(text: str, name: str) -> str | None:
    """The JSON object written right after a mention of `name` in `text`, verbatim, if any.
    It need not fit the tool's schema: tests send invalid arguments on purpose."""
    decoder = json.JSONDecoder()
    for match in _name_pattern(name).finditer(text):
        rest = text[match.end() :].lstrip()
        if not rest.startswith("{"):
            continue
        try:
            value, end = decoder.raw_decode(rest)
        except ValueError:
            continue
        if isinstance(value, dict):
            return rest[:end]
    return None


def _example_arguments(parameters: FunctionParameters | None) -> str:
    """Arguments a model might write: an example value for every required parameter."""
    if parameters is None:
        return "{}"
    arguments = {name: _example_value(parameters.properties.get(name)) for name in parameters.required}
    return json.dumps(arguments, ensure_ascii=False)


def _example_value(schema: object) -> object:
    """A deterministic value for a JSON schema: its first enum value, else one by type."""
    if not isinstance(schema, dict):
        return None
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):  # e.g. ["string", "null"]
        kind = next((k for k in kind if k != "null"), None)
    if kind == "string":
        return "example"
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return None


def _tool_call_id(req: ChatRequest, name: str, index: int) -> str:
    """`call_` + a hash of the request and the call: the same request gets the same ids."""
    key = {"model": req.model, "messages": _messages_key(req.messages), "tool": name, "index": index}
    return "call_" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def _argument_fragments(calls: list[PlannedToolCall]) -> list[tuple[int, str]]:
    """The calls' arguments as simulated tokens, each with the index of its call."""
    return [(index, piece) for index, call in enumerate(calls) for piece in _tokens(call.arguments)]


def _tool_results_text(messages: list[Message]) -> str | None:
    """A text reply stating the results of the trailing tool messages; None when the last message
    is not a tool message."""
    results: list[Message] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        results.insert(0, message)
    if not results:
        return None
    assistant = messages[-len(results) - 1]  # the validator ensures it made these tool calls
    names = {call.id: call.function.name for call in assistant.tool_calls or []}
    stated = []
    for result in results:
        name = names.get(result.tool_call_id or "", "a tool")
        content = result.text()
        stated.append(f"{name} failed: {content}" if _is_error_result(content) else f"{name} → {content}")
    return "Tool results: " + "; ".join(stated)


def _is_error_result(content: str) -> bool:
    """Whether a tool result reports a failure: a JSON object with a non-null "error"."""
    try:
        value = json.loads(content)
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("error") is not None


# ---- serving ----------------------------------------------------------------------------------


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


Piece = TypeVar("Piece")


async def _generate(
    sim: _Simulator,
    state: _ModelState,
    n_prompt: int,
    pieces: Sequence[Piece],
    finish: str,
    blocks: Sequence[bytes] = (),
) -> AsyncGenerator[Piece, None]:
    """Yield the reply's tokens paced by the model profile: queue, prefill (of the prompt tokens past
    its cached prefix `blocks`), then decode. `finish` is the engine's finish reason for vLLM's
    metrics ("stop" for tool calls too)."""
    name, profile, metrics = state.profile.name, state.profile, sim.metrics
    started = time.monotonic()
    metrics.waiting.labels(name).inc()
    try:
        await state.slots.acquire()
    finally:
        metrics.waiting.labels(name).dec()
    state.generating += 1
    metrics.running.labels(name).inc()
    held = n_prompt  # this request's tokens in the KV cache
    state.kv_tokens += held
    try:
        cached = min(n_prompt, state.cache.match(blocks) * profile.block_tokens)
        metrics.prefix_queries.labels(name).inc(n_prompt)
        metrics.prefix_hits.labels(name).inc(cached)
        _show_kv_usage(sim, state)
        uncached = n_prompt - cached
        state.prefill_tokens += uncached
        try:
            await _sleep(profile.ttft_s(state.prefill_tokens))
        finally:
            state.prefill_tokens -= uncached
        state.cache.keep(blocks)
        metrics.ttft.labels(name).observe(time.monotonic() - started)
        metrics.prompt_tokens.labels(name).inc(n_prompt)
        for i, piece in enumerate(pieces):
            if i:
                await _sleep(profile.itl_s(state.generating))
            metrics.generation_tokens.labels(name).inc()
            held += 1
            state.kv_tokens += 1
            yield piece
        metrics.e2e.labels(name).observe(time.monotonic() - started)
        metrics.success.labels(name, finish).inc()
    finally:
        state.generating -= 1
        state.kv_tokens -= held
        _show_kv_usage(sim, state)
        metrics.running.labels(name).dec()
        state.slots.release()


def _show_kv_usage(sim: _Simulator, state: _ModelState) -> None:
    usage = min(1.0, state.kv_tokens / max(1, state.profile.kv_cache_tokens))
    sim.metrics.kv_cache_usage.labels(state.profile.name).set(usage)


def _usage(n_prompt: int, n_completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": n_prompt,
        "completion_tokens": n_completion,
        "total_tokens": n_prompt + n_completion,
    }


def _sse_event(payload: dict[str, object]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _sse_chunk(
    base: dict[str, object], delta: dict[str, object], include_usage: bool, finish_reason: str | None = None
) -> str:
    """One chat.completion.chunk event."""
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    payload = {**base, "choices": [choice]}
    if include_usage:
        payload["usage"] = None
    return _sse_event(payload)


def _sse_end(
    base: dict[str, object], finish: str, usage: dict[str, int], include_usage: bool
) -> Iterator[str]:
    """The last events of a stream: the finish reason, the usage if asked for, then [DONE]."""
    yield _sse_chunk(base, {}, include_usage, finish)
    if include_usage:
        yield _sse_event({**base, "choices": [], "usage": usage})
    yield "data: [DONE]\n\n"


class StreamBroken(Exception):
    """A simulated replica death mid-stream: raised inside a streamed reply, it makes the server drop
    the connection."""


async def _sse(
    base: dict[str, object],
    tokens: AsyncGenerator[str, None],
    finish: str,
    usage: dict[str, int],
    include_usage: bool,
    breaks_after: int | None = None,
) -> AsyncIterator[str]:
    """OpenAI's chat.completion.chunk stream of a text reply, as server-sent events."""
    yield _sse_chunk(base, {"role": "assistant", "content": ""}, include_usage)
    async with aclosing(tokens):
        sent = 0
        async for piece in tokens:
            if sent == breaks_after:
                logger.warning("simulated fault: the stream breaks off after %d tokens", sent)
                raise StreamBroken("simulated fault: the replica died mid-stream")
            yield _sse_chunk(base, {"content": piece}, include_usage)
            sent += 1
    for event in _sse_end(base, finish, usage, include_usage):
        yield event


async def _sse_tool_calls(
    base: dict[str, object],
    calls: list[PlannedToolCall],
    fragments: AsyncGenerator[tuple[int, str], None],
    usage: dict[str, int],
    include_usage: bool,
) -> AsyncIterator[str]:
    """OpenAI's chat.completion.chunk stream of tool calls, as server-sent events: each call's id
    and name (arguments ""), then its arguments in fragments, then finish_reason "tool_calls"."""
    announced = 0  # calls whose id and name were sent
    async with aclosing(fragments):
        async for index, fragment in fragments:
            if index == announced:
                yield _sse_chunk(base, _tool_call_opening(calls[index], index), include_usage)
                announced += 1
            arguments = {"index": index, "function": {"arguments": fragment}}
            yield _sse_chunk(base, {"tool_calls": [arguments]}, include_usage)
    for event in _sse_end(base, "tool_calls", usage, include_usage):
        yield event


def _tool_call_opening(call: PlannedToolCall, index: int) -> dict[str, object]:
    """The delta that opens a streamed tool call; the first one also opens the message."""
    opening = {
        "index": index,
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": ""},
    }
    if index == 0:
        return {"role": "assistant", "content": None, "tool_calls": [opening]}
    return {"tool_calls": [opening]}


def _error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error in OpenAI's shape."""
    if status == 429:
        kind = "rate_limit_error"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(exc: ValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return (f"{where}: {first['msg']}" if where else first["msg"]), (where or None)


async def _hold_until_disconnect(request: Request, seconds: float) -> None:
    """Hold a request (a simulated hang) until the client goes away or `seconds` pass."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(disconnected(), seconds)
    except TimeoutError:
        pass


# ---- the app ----------------------------------------------------------------------------------


def create_app(profiles: dict[str, ModelProfile] | None = None, *, seed: int | None = None) -> FastAPI:
    """An OpenAI-compatible simulator app serving `profiles` (keyed by model name)."""
    profiles = dict(DEFAULT_PROFILES if profiles is None else profiles)
    for key, profile in profiles.items():
        if key != profile.name:
            raise ValueError(f"profile key {key!r} does not match its name {profile.name!r}")
    sim = _Simulator(
        models={
            n: _ModelState(
                p, asyncio.Semaphore(p.max_concurrency), PrefixCache(p.kv_cache_tokens // p.block_tokens)
            )
            for n, p in profiles.items()
        },
        metrics=_Metrics(list(profiles)),
        rng=random.Random(seed),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logger.warning(
            "LLM simulator (simulation, not a real inference endpoint) serving models: %s",
            ", ".join(profiles),
        )
        yield

    app = FastAPI(title="lcp LLM simulator (simulated inference fleet)", lifespan=lifespan)
    app.state.sim = sim

    def model_entry(name: str) -> dict[str, object]:
        return {
            "id": name,
            "object": "model",
            "created": sim.created,
            "owned_by": "lcp-simulator",
            "description": MODEL_DESCRIPTION,
        }

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "simulated": True}

    @app.get("/v1/models")
    async def list_models() -> dict[str, object]:
        return {"object": "list", "data": [model_entry(name) for name in [*sim.models, *EMBEDDING_MODELS]]}

    @app.get("/v1/models/{model}")
    async def get_model(model: str) -> Response:
        if model not in sim.models and model not in EMBEDDING_MODELS:
            return _error(404, f"The model '{model}' does not exist.", code="model_not_found")
        return JSONResponse(model_entry(model))

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        """Deterministic unit vectors: the same text always gets the same embedding."""
        try:
            req = EmbeddingRequest.model_validate(await request.json())
        except ValueError as exc:  # not JSON, or a ValidationError
            message, param = (
                _validation_message(exc) if isinstance(exc, ValidationError) else (str(exc), None)
            )
            return _error(400, f"Invalid request: {message}", param=param)
        dimensions = EMBEDDING_MODELS.get(req.model)
        if dimensions is None:
            known = ", ".join(EMBEDDING_MODELS)
            message = (
                f"The model '{req.model}' does not exist or is not an embedding model (these are: {known})."
            )
            return _error(404, message, code="model_not_found", param="model")
        if req.dimensions is not None and req.dimensions > dimensions:
            return _error(400, f"dimensions must be at most {dimensions} for {req.model}", param="dimensions")
        data = []
        for index, text in enumerate(req.texts()):
            vector = embedding(req.model, text, req.dimensions or dimensions)
            encoded: object = vector
            if req.encoding_format == "base64":
                encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(text.split()) for text in req.texts())
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse({"object": "list", "data": data, "model": req.model, "usage": usage})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        sim.received += 1
        try:
            body = await request.json()
        except ValueError:
            sim.count(None, "client_error")
            return _error(400, "The request body is not valid JSON.")
        try:
            req = ChatRequest.model_validate(body)
        except ValidationError as exc:
            sim.count(body.get("model") if isinstance(body, dict) else None, "client_error")
            message, param = _validation_message(exc)
            return _error(400, f"Invalid request: {message}", param=param)
        state = sim.models.get(req.model)
        if state is None:
            sim.count(None, "client_error")
            known = ", ".join(sim.models)
            return _error(
                404,
                f"The model '{req.model}' does not exist. This simulator serves: {known}.",
                code="model_not_found",
                param="model",
            )
        try:
            structured = structured_reply(req, state.profile)
        except Unsupported as err:  # the schema asks for what the simulator cannot build
            sim.count(req.model, "client_error")
            return _error(400, f"response_format.json_schema.schema {err}", param="response_format")

        latency_s, fault = sim.decide_fault(req.model)
        await _sleep(latency_s)
        if fault == "timeout":
            sim.count(req.model, "timeout")
            await _hold_until_disconnect(request, TIMEOUT_HOLD_S)
            return _error(504, "simulated fault: the request timed out", code="injected_fault")
        if fault is not None:
            sim.count(req.model, str(fault))
            headers = {"Retry-After": "1"} if fault == 429 else None
            message = f"simulated fault: injected HTTP {fault}"
            return _error(fault, message, code="injected_fault", headers=headers)
        sim.count(req.model, "ok")

        n_prompt = prompt_tokens(req.messages)
        blocks = prompt_blocks(req.messages, state.profile.block_tokens)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        completion_id = f"chatcmpl-sim-{uuid.uuid4().hex[:24]}"

        def header(kind: str) -> dict[str, object]:
            return {
                "id": completion_id,
                "object": kind,
                "created": int(time.time()),
                "model": req.model,
                "system_fingerprint": FINGERPRINT,
            }

        def streamed(events: AsyncIterator[str]) -> StreamingResponse:
            return StreamingResponse(
                events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )

        def completed(message: dict[str, object], finish: str, usage: dict[str, int]) -> JSONResponse:
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            return JSONResponse({**header("chat.completion"), "choices": [choice], "usage": usage})

        calls = planned_tool_calls(req)
        if calls:
            fragments = _argument_fragments(calls)
            usage = _usage(n_prompt, len(fragments))
            generated = _generate(sim, state, n_prompt, fragments, "stop", blocks)  # vLLM says "stop"
            if req.stream:
                chunks = header("chat.completion.chunk")
                return streamed(_sse_tool_calls(chunks, calls, generated, usage, include_usage))
            async with aclosing(generated):
                async for _ in generated:
                    pass
            reply: dict[str, object] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [c.as_json() for c in calls],
            }
            return completed(reply, "tool_calls", usage)

        pieces, finish = reply_pieces(req, state.profile, structured)
        usage = _usage(n_prompt, len(pieces))
        tokens = _generate(sim, state, n_prompt, pieces, finish, blocks)
        if req.stream:
            breaks_after = sim.breaks_stream(req.model)
            events = _sse(header("chat.completion.chunk"), tokens, finish, usage, include_usage, breaks_after)
            return streamed(events)
        async with aclosing(tokens):
            content = "".join([piece async for piece in tokens])
        return completed({"role": "assistant", "content": content}, finish, usage)

    @app.get("/admin/faults")
    async def get_faults() -> dict[str, object]:
        return {"faults": [f.model_dump() for f in sim.faults.values()]}

    @app.put("/admin/faults")
    async def put_faults(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(422, "Invalid fault settings: the body is not valid JSON.")
        try:
            faults = FaultConfig.model_validate(body)
        except ValidationError as exc:
            message, param = _validation_message(exc)
            return _error(422, f"Invalid fault settings: {message}", param=param)
        if faults.model is not None and faults.model not in sim.models:
            known = ", ".join(sim.models)
            return _error(422, f"Unknown model '{faults.model}'; known: {known}.", param="model")
        sim.faults[faults.model] = faults
        logger.warning("simulated faults set: %s", faults.model_dump())
        return JSONResponse({"faults": [f.model_dump() for f in sim.faults.values()]})

    @app.delete("/admin/faults")
    async def delete_faults() -> dict[str, object]:
        sim.faults.clear()
        logger.warning("simulated faults cleared")
        return {"faults": []}

    @app.get("/admin/stats")
    async def stats() -> dict[str, object]:
        return sim.stats()

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(sim.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def run(host: str, port: int, log_level: str = "info") -> None:
    """Serve the simulator with uvicorn until interrupted."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.DEBUG),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    uvicorn.run(create_app(), host=host, port=port, log_level=log_level)
