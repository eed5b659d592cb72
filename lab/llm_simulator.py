"""OpenAI-compatible LLM simulator: a simulated inference fleet with vLLM metrics and faults."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

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

logger = logging.getLogger(__name__)

FINGERPRINT = "lcp-simulator"
MODEL_DESCRIPTION = "simulated model (lcp LLM simulator) — not a real inference endpoint"
ECHO_MARKER = "[echo]"
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

    def ttft_s(self, prompt_tokens_in_flight: int) -> float:
        return (self.ttft_base_ms + 1000 * prompt_tokens_in_flight / self.prefill_tokens_per_s) / 1000

    def itl_s(self, generating: int) -> float:
        return (self.itl_ms + self.itl_growth * max(generating - 1, 0)) / 1000


# Derived from ../shared/data/gpu_profiles/README.md (one H200, measured 2026-11-26):
# TTFT ≈ 20 ms + prompt tokens in flight / 33,000 tok/s; inter-token latency ≈ 4–8 ms at low load,
# growing with concurrency, for an 8B model on one H200. The 1B profile is about 3x faster.
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


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None  # required, may be null (assistant tool calls)

    def text(self) -> str:
        if isinstance(self.content, list):
            return " ".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields of an OpenAI chat completion request the simulator reads; others are ignored."""

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    stream_options: StreamOptions | None = None


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
        # prometheus_client appends "_total" to counter names: these expose vllm:*_total.
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
            for metric in (self.running, self.waiting, self.ttft, self.e2e):
                metric.labels(name)
            self.prompt_tokens.labels(name)
            self.generation_tokens.labels(name)
            for reason in ("stop", "length"):
                self.success.labels(name, reason)


@dataclass
class _ModelState:
    profile: ModelProfile
    slots: asyncio.Semaphore
    generating: int = 0
    prefill_tokens: int = 0  # prompt tokens of requests now in prefill


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
    """Simulated prompt tokens: words of every message plus a per-message overhead."""
    return sum(len(m.text().split()) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def reply_pieces(req: ChatRequest, profile: ModelProfile) -> tuple[list[str], str]:
    """The reply as tokens (each word with its leading whitespace), and the finish reason."""
    last_user = next((m.text() for m in reversed(req.messages) if m.role == "user"), "")
    if ECHO_MARKER in last_user:
        text = last_user.replace(ECHO_MARKER, "").strip()
    else:
        text = _generated_text(req, profile.default_max_tokens)
    pieces = re.findall(r"\s*\S+", text)
    limit = req.max_completion_tokens or req.max_tokens
    if limit is not None and len(pieces) > limit:
        return pieces[:limit], "length"
    return pieces, "stop"


def _generated_text(req: ChatRequest, natural_max_words: int) -> str:
    """Sentences of ordinary words: a pure function of (model, messages, seed) when a seed is
    given; without one, each request samples anew, as a real model at temperature > 0 does."""
    key = {
        "model": req.model,
        "messages": [m.model_dump(mode="json") for m in req.messages],
        "seed": req.seed if req.seed is not None else random.getrandbits(64),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    remaining = rng.randint(min(8, natural_max_words), natural_max_words)
    sentences = []
    while remaining > 0:
        words = [rng.choice(VOCABULARY) for _ in range(min(rng.randint(4, 12), remaining))]
        remaining -= len(words)
        sentences.append(" ".join(words).capitalize() + ".")
    return " ".join(sentences)


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


async def _generate(
    sim: _Simulator, state: _ModelState, n_prompt: int, pieces: list[str], finish: str
) -> AsyncGenerator[str, None]:
    """Yield the reply's tokens paced by the model profile: queue, prefill, then decode."""
    name, profile, metrics = state.profile.name, state.profile, sim.metrics
    started = time.monotonic()
    metrics.waiting.labels(name).inc()
    try:
        await state.slots.acquire()
    finally:
        metrics.waiting.labels(name).dec()
    state.generating += 1
    metrics.running.labels(name).inc()
    try:
        state.prefill_tokens += n_prompt
        try:
            await _sleep(profile.ttft_s(state.prefill_tokens))
        finally:
            state.prefill_tokens -= n_prompt
        metrics.ttft.labels(name).observe(time.monotonic() - started)
        metrics.prompt_tokens.labels(name).inc(n_prompt)
        for i, piece in enumerate(pieces):
            if i:
                await _sleep(profile.itl_s(state.generating))
            metrics.generation_tokens.labels(name).inc()
            yield piece
        metrics.e2e.labels(name).observe(time.monotonic() - started)
        metrics.success.labels(name, finish).inc()
    finally:
        state.generating -= 1
        metrics.running.labels(name).dec()
        state.slots.release()


def _usage(n_prompt: int, n_completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": n_prompt,
        "completion_tokens": n_completion,
        "total_tokens": n_prompt + n_completion,
    }


async def _sse(
    base: dict[str, object],
    tokens: AsyncGenerator[str, None],
    finish: str,
    usage: dict[str, int],
    include_usage: bool,
) -> AsyncIterator[str]:
    """OpenAI's chat.completion.chunk stream as server-sent events."""

    def event(payload: dict[str, object]) -> str:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    def chunk(delta: dict[str, str], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        payload = {**base, "choices": [choice]}
        if include_usage:
            payload["usage"] = None
        return event(payload)

    yield chunk({"role": "assistant", "content": ""})
    async with aclosing(tokens):
        async for piece in tokens:
            yield chunk({"content": piece})
    yield chunk({}, finish)
    if include_usage:
        yield event({**base, "choices": [], "usage": usage})
    yield "data: [DONE]\n\n"


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
        models={n: _ModelState(p, asyncio.Semaphore(p.max_concurrency)) for n, p in profiles.items()},
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
        return {"object": "list", "data": [model_entry(name) for name in sim.models]}

    @app.get("/v1/models/{model}")
    async def get_model(model: str) -> Response:
        if model not in sim.models:
            return _error(404, f"The model '{model}' does not exist.", code="model_not_found")
        return JSONResponse(model_entry(model))

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

        pieces, finish = reply_pieces(req, state.profile)
        n_prompt = prompt_tokens(req.messages)
        usage = _usage(n_prompt, len(pieces))
        tokens = _generate(sim, state, n_prompt, pieces, finish)
        completion_id = f"chatcmpl-sim-{uuid.uuid4().hex[:24]}"

        def header(kind: str) -> dict[str, object]:
            return {
                "id": completion_id,
                "object": kind,
                "created": int(time.time()),
                "model": req.model,
                "system_fingerprint": FINGERPRINT,
            }

        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            events = _sse(header("chat.completion.chunk"), tokens, finish, usage, include_usage)
            return StreamingResponse(
                events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        async with aclosing(tokens):
            content = "".join([piece async for piece in tokens])
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "logprobs": None,
            "finish_reason": finish,
        }
        return JSONResponse({**header("chat.completion"), "choices": [choice], "usage": usage})

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
