"""The inference gateway: calls OpenAI-compatible endpoints (the simulator, vLLM, OpenAI, ...) with httpx,
whole or streamed, and classes every failure. Used by the inference activity and the one-shot API path.

A model is a group of deployments (inference/fleet.py): each request goes to the one the model's
routing picks (policies/picker.py). A deployment that fails before the first byte (refused, 5xx, 429,
timed out) cools down (policies/cooldown.py) and the request goes to another one, within the model's
timeout; when every deployment is cooling down the request waits for the first back. When every
deployment is saturated (a long prefill queue), flow control holds the request here, tenants in turn,
until one frees up (inference/flow.py). When none is left, the model's fallbacks are tried. On the
durable path (`single_attempt`) the gateway makes one call and Temporal's retry policy is the only
loop: its next attempt finds the failed deployment cooling down and goes elsewhere; fallbacks are
tried at once only when no other deployment is left.

A model with a canary in the models policy is served by two versions: each request goes to the canary
with the probability its weight in the read model gives (ModelWeights, table model_canaries), else to
the stable version. lcp_gateway_requests_total and lcp_gateway_request_duration_seconds count and time
the calls by model and version, which is what a canary rollout's analysis compares."""

import asyncio
import contextlib
import functools
import json
import logging
import os
import random
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError

from inference.fleet import Fleet, Replica
from inference.flow import REFUSED_RETRY_AFTER, FlowGate, Saturated
from inference.messages import ChatCompletionResult, ChatMessage
from inference.replica_metrics import ReplicaMetricsReader
from policies.cooldown import Failure
from policies.errors import LcpError
from policies.models import (
    DEFAULT_POLICY_FILE,
    STABLE_VERSION,
    ModelRoute,
    ModelsPolicyError,
    expand_env,
    parse_routes,
)
from policies.picker import NoDeployment, Request, Unavailable, prompt_blocks
from store import crud

log = logging.getLogger(__name__)

# 4xx answers say the request itself is wrong (400/401/404/422...): retrying cannot help,
# except for these two, which say "not now".
RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})
MESSAGE_OVERHEAD_TOKENS = 4  # estimated tokens per message for its role and separators
WEIGHTS_TTL_S = 1.0  # how long the gateway serves the canary weights it read before reading them again
WEIGHTS_WAIT_S = 2.0  # the longest a request waits for that read; then it goes on with the last known
WEIGHTS_READ_TIMEOUT_S = 10.0  # a read that takes longer fails (and the next one starts a TTL later)

GATEWAY_REQUESTS = Counter(
    "lcp_gateway_requests_total",
    "Calls of the inference gateway to an endpoint by model (the client-facing name), version (the "
    "models policy's: the stable's or the canary's) and outcome: ok, the failure type (EndpointError, "
    "EndpointRejected, EndpointBusy, EndpointTimeout, EndpointUnavailable), or cancelled",
    ["model", "version", "outcome"],
)
BROKEN_STREAMS = Counter(
    "lcp_gateway_broken_streams_total",
    "Streamed replies that broke off after they started (a replica died mid-stream), by model and version: "
    "a durable turn retries on another deployment, a one-shot stream ends with an error event",
    ["model", "version"],
)
GATEWAY_LATENCY = Histogram(
    "lcp_gateway_request_duration_seconds",
    "Time of the inference gateway's successful calls, until the whole reply (streamed or not), by "
    "model and version",
    ["model", "version"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60),
)


@dataclass
class EmbeddingResult:
    data: list[dict[str, Any]]  # the endpoint's embedding objects, in input order
    model: str
    prompt_tokens: int
    version: str = STABLE_VERSION


def wire_message(message: ChatMessage) -> dict[str, Any]:
    """A message in OpenAI's wire format; an assistant's tool calls go with `content: null` when it
    wrote no text."""
    body: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        body["content"] = message.content or None
        body["tool_calls"] = [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": call["arguments"]},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        body["tool_call_id"] = message.tool_call_id
    return body


def _tool_call(id_: str, name: str, arguments: Any) -> dict[str, Any]:
    """A tool call, normalised: arguments are JSON text (an endpoint that sends an object gets it
    written out); a call without an id gets a fresh one, so idempotency keys made from it never repeat."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": id_ or f"call_{uuid.uuid4().hex[:24]}", "name": name, "arguments": text}


def _whole_tool_calls(message: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The tool calls of a whole (not streamed) reply's message."""
    calls = message.get("tool_calls") or []
    parsed = [
        _tool_call(call.get("id") or "", call["function"]["name"], call["function"].get("arguments") or "")
        for call in calls
    ]
    return parsed or None


class _StreamedToolCalls:
    """Tool calls as a stream brings them: deltas by index, each adding to the id, name and arguments
    (strings concatenate, as OpenAI's own client accumulates them)."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, str]] = {}

    def add(self, deltas: list[dict[str, Any]]) -> None:
        for delta in deltas:
            index = int(delta.get("index", len(self._calls)))
            call = self._calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
            function = delta.get("function") or {}
            call["id"] += delta.get("id") or ""
            call["name"] += function.get("name") or ""
            call["arguments"] += function.get("arguments") or ""

    def __bool__(self) -> bool:
        return bool(self._calls)

    def result(self) -> list[dict[str, Any]] | None:
        calls = [self._calls[index] for index in sorted(self._calls)]
        return [_tool_call(call["id"], call["name"], call["arguments"]) for call in calls] or None


class InferenceFailure(ApplicationError, LcpError):
    """An endpoint could not answer. `type` says how (EndpointRejected, EndpointBusy, EndpointError,
    EndpointTimeout, EndpointUnavailable, UnknownModel); `status` is the HTTP status the API answers
    with on the one-shot path; `retry_after` comes from the endpoint's Retry-After."""

    def __init__(
        self,
        message: str,
        *,
        type: str,
        status: int,
        non_retryable: bool = False,
        retry_after: timedelta | None = None,
        health: Failure | None = None,
    ) -> None:
        super().__init__(message, type=type, non_retryable=non_retryable, next_retry_delay=retry_after)
        self.status = status
        self.retry_after = retry_after
        self.health = health  # what it says of the deployment's health; None: the request's own fault
        # Raised on the durable path while another deployment could take the request: Temporal's next
        # attempt goes there, so no fallback model yet.
        self.others_ready = False


def load_routes(path: Path | None = None, *, llm_url: str | None = None) -> dict[str, ModelRoute]:
    """Read the models policy file (default: policies/models.yaml), expanding ${ENV} values;
    `llm_url` (the simulator's base URL from settings) fills ${LCP_LLM_URL}."""
    env = dict(os.environ)
    if llm_url:
        env["LCP_LLM_URL"] = llm_url
    path = path or DEFAULT_POLICY_FILE
    try:
        return parse_routes(yaml.safe_load(expand_env(path.read_text(), env)))
    except ModelsPolicyError as err:
        raise ModelsPolicyError(f"{path}: {err}") from None


def make_http_client() -> httpx.AsyncClient:
    # Retries belong to the caller (Temporal's retry policy, or the API client): none here.
    return httpx.AsyncClient(
        timeout=httpx.Timeout(60.0, connect=5.0),
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        transport=httpx.AsyncHTTPTransport(retries=0),
    )


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (words), used when an endpoint reports no usage."""
    return len(text.split())


def estimate_prompt_tokens(messages: list[ChatMessage]) -> int:
    return sum(
        estimate_tokens(m.content) + estimate_tool_call_tokens(m.tool_calls) + MESSAGE_OVERHEAD_TOKENS
        for m in messages
    )


def estimate_tool_call_tokens(calls: list[dict[str, Any]] | None) -> int:
    return sum(1 + estimate_tokens(call["arguments"]) for call in calls or [])


def _endpoint_message(body: bytes, reason: str) -> str:
    try:
        data = json.loads(body)
        error = data.get("error", data) if isinstance(data, dict) else data
        message = error.get("message") if isinstance(error, dict) else None
        return str(message or error)
    except ValueError:
        return body[:500].decode(errors="replace") or reason


def _retry_after(response: httpx.Response) -> timedelta | None:
    try:
        return timedelta(seconds=float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def _transport_failure(route: ModelRoute, err: Exception, timed_out: str, broken: str) -> InferenceFailure:
    if isinstance(err, httpx.TimeoutException):
        return InferenceFailure(
            f"{route.name}: {timed_out} ({type(err).__name__})",
            type="EndpointTimeout",
            status=504,
            health=Failure.TIMEOUT,
        )
    health = Failure.UNREACHABLE if isinstance(err, httpx.ConnectError) else Failure.BROKEN_STREAM
    return InferenceFailure(
        f"{route.name}: {broken} ({err})", type="EndpointUnavailable", status=502, health=health
    )


@contextlib.contextmanager
def _transport_errors(route: ModelRoute, timed_out: str, broken: str) -> Iterator[None]:
    try:
        yield
    except (httpx.TimeoutException, httpx.TransportError) as err:
        raise _transport_failure(route, err, timed_out, broken) from err


@dataclass(frozen=True)
class CanaryWeight:
    """A model's canary split as the read model holds it."""

    version: str  # the canary version the weight is for
    weight: int  # percent of the requests, 0..100
    promoted: bool = False  # the canary gets every request


class ModelWeights:
    """The canary weights of every model, read from the read model (table model_canaries) at most
    once per `ttl_s` and served from memory in between.

    The request that finds the weights stale reads them (for at most `wait_s`); requests meanwhile go
    on with the last known weights. A database that cannot be read leaves the last known in place (a
    warning once, until it can be read again): no weights known means every request goes to the
    stable version. `clock` (monotonic seconds) is injectable for tests."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        ttl_s: float = WEIGHTS_TTL_S,
        wait_s: float = WEIGHTS_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._ttl_s = ttl_s
        self._wait_s = wait_s
        self._clock = clock
        self._weights: dict[str, CanaryWeight] = {}
        self._fresh_until = float("-inf")
        self._loaded = False
        self._failing = False
        self._reading: asyncio.Task[None] | None = None

    async def get(self, model: str) -> CanaryWeight | None:
        """The model's canary weight; None: it has no canary row (all traffic to the stable)."""
        if self._clock() >= self._fresh_until:
            await self._refresh()
        return self._weights.get(model)

    async def _refresh(self) -> None:
        reading = self._reading
        if reading is None:
            reading = self._reading = asyncio.create_task(self._read())
        elif self._loaded:
            return  # another request is reading them: go on with the last known
        try:
            async with asyncio.timeout(self._wait_s):  # not wait_for: on 3.11 it can swallow a cancellation
                await asyncio.shield(reading)
        except TimeoutError:
            self._fresh_until = self._clock() + self._ttl_s  # the read goes on; nobody else waits for it

    async def _read(self) -> None:
        try:
            async with asyncio.timeout(WEIGHTS_READ_TIMEOUT_S), self._sessions() as session:
                rows = await crud.list_model_canaries(session)
        except Exception as err:  # any database failure: keep serving the last known weights
            if not self._failing:
                log.warning(
                    "cannot read the model canary weights (%r): serving the last known until it works", err
                )
            self._failing = True
        else:
            self._weights = {
                row.model: CanaryWeight(row.canary_version, row.weight, row.promoted) for row in rows
            }
            self._loaded = True
            if self._failing:
                log.warning("model canary weights readable again")
            self._failing = False
        finally:
            self._fresh_until = self._clock() + self._ttl_s
            self._reading = None


def _result(
    route: ModelRoute,
    replica: Replica,
    messages: list[ChatMessage],
    content: str,
    finish_reason: str,
    usage: dict[str, Any],
    latency_ms: float,
    tool_calls: list[dict[str, Any]] | None = None,
) -> ChatCompletionResult:
    """A whole reply; token counts are the endpoint's when it reported them, else lcp's estimates."""
    estimated_completion = estimate_tokens(content) + estimate_tool_call_tokens(tool_calls)
    return ChatCompletionResult(
        content=content,
        model=route.name,
        finish_reason=finish_reason,
        prompt_tokens=int(usage.get("prompt_tokens") or estimate_prompt_tokens(messages)),
        completion_tokens=int(usage.get("completion_tokens") or estimated_completion),
        latency_ms=latency_ms,
        version=route.version,
        tool_calls=tool_calls,
        deployment=replica.deployment.id,
    )


# Failures after which another deployment (or a fallback model) may answer: the endpoint's, not the
# request's. ContentPolicy and ContextWindow go to their own kinds of fallbacks.
AVAILABILITY_FAILURES = frozenset(
    {"EndpointUnavailable", "EndpointError", "EndpointBusy", "EndpointTimeout", "NoDeployment"}
)


@dataclass
class _Call:
    """What one request asks of the gateway, whichever model and deployment end up serving it."""

    messages: list[ChatMessage]
    params: dict[str, Any]
    stream: bool
    tools: list[dict[str, Any]] | None
    tool_choice: str | dict[str, Any] | None
    previous: str | None  # the deployment that served the conversation's previous turn
    single_attempt: bool
    tenant: str | None  # whose request it is: flow control holds each tenant's in turn
    # (model, version, deployment) of the deployments that failed this request, and the last failure
    tried: set[tuple[str, str, str]] = field(default_factory=set)
    failure: "InferenceFailure | None" = None
    inputs: list[str] | None = None  # an embeddings request's texts (then messages only estimate them)

    def tried_on(self, route: ModelRoute) -> set[str]:
        return {d for m, v, d in self.tried if (m, v) == (route.name, route.version)}

    def failed(self, route: ModelRoute, replica: Replica, failure: "InferenceFailure") -> None:
        self.tried.add((route.name, route.version, replica.deployment.id))
        self.failure = failure

    def __post_init__(self) -> None:
        text = "\n".join(f"{m.role}\n{m.content}" for m in self.messages)
        self.blocks = prompt_blocks(text)
        max_tokens = self.params.get("max_completion_tokens") or self.params.get("max_tokens") or 0
        self.request = Request(
            prompt_tokens=estimate_prompt_tokens(self.messages),
            max_tokens=int(max_tokens),
            prefix_blocks=len(self.blocks),
            previous=self.previous,
        )


@dataclass
class _Opened:
    route: ModelRoute
    replica: Replica
    response: httpx.Response
    started: float
    prefill: float  # prompt tokens the replica is expected to prefill, pending until its first token

    def answering(self, fleet: Fleet) -> None:
        """The first token came, or the call ended: its prefill is no longer pending (counted once)."""
        fleet.answering(self.replica, self.prefill)
        self.prefill = 0.0

    def ended(self, fleet: Fleet, outcome: str, failure: Failure | None) -> None:
        """The call is over: counted in the fleet (its health, its latency) and in the gateway's metrics."""
        self.answering(fleet)
        fleet.finished(self.route, self.replica, failure, time.perf_counter() - self.started)
        _measure(self.route, outcome, self.started)


class Gateway:
    def __init__(
        self,
        http: httpx.AsyncClient,
        routes: dict[str, ModelRoute],
        weights: ModelWeights | None = None,
        *,
        rng: random.Random | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        """`weights`: the canary weights (None: canaries get no traffic); `rng` draws each request's
        version (injectable for tests); `fleet`: the deployments' state (a fresh one by default)."""
        self._http = http
        self.routes = routes
        self._weights = weights
        self._rng = rng or random.Random()
        self.fleet = fleet or Fleet()
        self.flow = FlowGate(self.fleet)
        self._reader = ReplicaMetricsReader(self.fleet, http, self.routes.values)
        self._reading: asyncio.Task[None] | None = None

    def _read_replica_metrics(self) -> None:
        """Start reading the deployments' /metrics, once, when some model has deployments to score."""
        if self._reading is None and self._reader.replicas():
            self._reading = asyncio.create_task(self._reader.run(), name="replica-metrics")

    async def aclose(self) -> None:
        """Stop reading the deployments' /metrics (the HTTP client is its owner's to close)."""
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading
            self._reading = None

    def route(self, model: str) -> ModelRoute:
        route = self.routes.get(model)
        if route is None:
            known = ", ".join(sorted(self.routes)) or "none"
            raise InferenceFailure(
                f"model {model!r} is not in the models policy (known: {known})",
                type="UnknownModel",
                status=404,
                non_retryable=True,
            )
        return route

    async def pick(self, model: str) -> ModelRoute:
        """The route of the version that serves this request: the canary with the probability of its
        weight (all of it once promoted), else the stable."""
        route = self.route(model)
        canary = route.canary
        if canary is None or self._weights is None:
            return route
        split = await self._weights.get(model)
        if split is None or split.version != canary.version:  # no weight, or one for another canary
            return route
        if split.promoted or self._rng.random() * 100 < split.weight:
            return canary
        return route

    def _request(self, route: ModelRoute, replica: Replica, call: _Call) -> httpx.Request:
        deployment = replica.deployment
        headers = {"Authorization": f"Bearer {deployment.api_key}"} if deployment.api_key else {}
        if call.inputs is not None:
            return self._http.build_request(
                "POST",
                f"{deployment.base_url}/embeddings",
                json={"model": deployment.upstream_model, "input": call.inputs, **call.params},
                headers=headers,
                timeout=httpx.Timeout(route.timeout_s, connect=5.0),
            )
        body: dict[str, Any] = {
            "model": deployment.upstream_model,
            "messages": [wire_message(m) for m in call.messages],
            "stream": call.stream,
        }
        if call.stream:
            body["stream_options"] = {"include_usage": True}
        body.update({key: value for key, value in call.params.items() if value is not None})
        if call.tools:
            body["tools"] = call.tools
        if call.tool_choice:
            body["tool_choice"] = call.tool_choice
        return self._http.build_request(
            "POST",
            f"{deployment.base_url}/chat/completions",
            json=body,
            headers=headers,
            timeout=httpx.Timeout(route.timeout_s, connect=5.0),
        )

    async def _send(self, route: ModelRoute, request: httpx.Request, stream: bool) -> httpx.Response:
        with _transport_errors(route, "endpoint timed out", "endpoint unreachable"):
            response = await self._http.send(request, stream=stream)
        if response.status_code >= 400:
            body = await response.aread()
            await response.aclose()
            raise self._failure(route, response, body)
        return response

    @staticmethod
    def _failure(route: ModelRoute, response: httpx.Response, body: bytes) -> InferenceFailure:
        status = response.status_code
        message = _endpoint_message(body, response.reason_phrase)
        if status < 500 and status not in RETRYABLE_CLIENT_ERRORS:
            kind = _rejection_kind(message)
            return InferenceFailure(
                f"{route.name} rejected the request (HTTP {status}): {message}",
                type=kind,
                status=status,
                non_retryable=True,
            )
        busy = status in RETRYABLE_CLIENT_ERRORS
        return InferenceFailure(
            f"{route.name} answered HTTP {status}: {message}",
            type="EndpointBusy" if busy else "EndpointError",
            status=status if busy else 502,
            retry_after=_retry_after(response),
            health=Failure.RATE_LIMITED
            if status == 429
            else Failure.TIMEOUT
            if busy
            else Failure.SERVER_ERROR,
        )

    async def _open(self, model: str, call: _Call) -> _Opened:
        """An endpoint's answer has started (status 200): from the model's own deployments, or else,
        if none could answer, from one of its fallbacks of the kind the failure calls for."""
        self._read_replica_metrics()
        route = await self.pick(model)
        try:
            return await self._open_on(route, call)
        except InferenceFailure as err:
            if err.type == "ContextWindowExceeded":
                fallbacks = route.fallbacks.context_window
            elif err.type == "ContentPolicyViolation":
                fallbacks = route.fallbacks.content_policy
            elif err.type in AVAILABILITY_FAILURES and not err.others_ready:
                fallbacks = route.fallbacks.general
            else:
                raise
            for name in fallbacks:
                try:
                    return await self._open_on(await self.pick(name), call)
                except InferenceFailure:
                    log.warning("fallback %s of %s could not answer either", name, model, exc_info=True)
            raise

    async def _open_on(self, route: ModelRoute, call: _Call) -> _Opened:
        """Start the request on one of the route's deployments: another one after a failure before the
        first byte, waiting for a cooling one when none is ready, all within the route's timeout."""
        deadline = time.monotonic() + route.timeout_s
        while True:
            try:
                placed = await self.flow.place(
                    route, call.request, call.blocks, call.tried_on(route), call.tenant, deadline
                )
            except Saturated as err:
                raise InferenceFailure(
                    f"{err}: try again shortly",
                    type="NoDeployment",
                    status=503,
                    retry_after=REFUSED_RETRY_AFTER,
                ) from None
            if placed is None:  # every deployment failed this request
                raise call.failure or InferenceFailure(
                    f"{route.name}: every deployment failed this request", type="NoDeployment", status=503
                )
            if isinstance(placed, NoDeployment):
                wait_s = self._wait_s(route, call, placed, deadline)
                await asyncio.sleep(wait_s)
                continue
            choice, prefill = placed
            started = time.perf_counter()
            try:
                response = await self._send(route, self._request(route, choice, call), call.stream)
            except InferenceFailure as err:
                self.fleet.answering(choice, prefill)
                self.fleet.finished(route, choice, err.health, time.perf_counter() - started)
                _measure(route, _outcome(err), started)
                if err.health is None:  # the request's own fault: no other deployment will take it
                    raise
                if call.single_attempt and self._elsewhere(route, call, choice):
                    err.others_ready = True
                    raise
                call.failed(route, choice, err)
                continue
            except BaseException:
                self.fleet.answering(choice, prefill)
                self.fleet.finished(route, choice, None, time.perf_counter() - started)
                _measure(route, "cancelled", started)
                raise
            return _Opened(route, choice, response, started, prefill)

    def _elsewhere(self, route: ModelRoute, call: _Call, failed: Replica) -> bool:
        """Whether another deployment could take the request now (then Temporal's retry will find it)."""
        other = self.fleet.choose(route, call.request, call.blocks, {failed.deployment.id})
        return isinstance(other, Replica)

    def _wait_s(self, route: ModelRoute, call: _Call, none: NoDeployment, deadline: float) -> float:
        """How long to wait for a deployment to come back, or the failure to raise when none will in time."""
        if none.reason is Unavailable.CONTEXT_WINDOW:
            needed = call.request.prompt_tokens + call.request.max_tokens
            raise InferenceFailure(
                f"{route.name}: the prompt and the reply need about {needed} tokens, more than any of its "
                f"deployments takes (at most {none.largest_window}): shorten the conversation or max_tokens",
                type="ContextWindowExceeded",
                status=400,
                non_retryable=True,
            )
        now = time.monotonic()
        if none.reason is Unavailable.COOLING_DOWN and none.retry_at is not None:
            back_in = max(0.0, none.retry_at - self.fleet.clock())
            if now + back_in < deadline:
                return back_in + 0.01
        retry_after = (
            timedelta(seconds=max(1.0, none.retry_at - self.fleet.clock())) if none.retry_at else None
        )
        reason = {
            Unavailable.COOLING_DOWN: "every deployment is cooling down or at its concurrency cap",
            Unavailable.DRAINING: "every deployment is draining",
            Unavailable.LABELS: "no deployment has the labels the request allows",
        }.get(none.reason, none.reason.value)
        raise InferenceFailure(
            f"{route.name}: {reason}", type="NoDeployment", status=503, retry_after=retry_after
        )

    async def complete(
        self,
        model: str,
        messages: list[ChatMessage],
        params: dict[str, Any],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        previous: str | None = None,
        single_attempt: bool = False,
        tenant: str | None = None,
    ) -> ChatCompletionResult:
        """One whole reply: text, or the tools the model calls (of `tools`, OpenAI's declarations)."""
        call = _Call(messages, params, False, tools, tool_choice, previous, single_attempt, tenant)
        opened = await self._open(model, call)
        route, replica, started = opened.route, opened.replica, opened.started
        outcome, failure = "cancelled", None
        try:
            with _transport_errors(route, "endpoint timed out", "reply broke off"):
                await opened.response.aread()
            latency_ms = (time.perf_counter() - started) * 1000
            try:
                data = opened.response.json()
                choice = data["choices"][0]
                content = choice["message"].get("content") or ""
                calls = _whole_tool_calls(choice["message"])
                usage = data.get("usage") or {}
                finish_reason = choice.get("finish_reason") or "stop"
                result = _result(route, replica, messages, content, finish_reason, usage, latency_ms, calls)
            except (ValueError, KeyError, IndexError, TypeError) as err:
                raise self._malformed(route, err) from err
            outcome = "ok"
            return result
        except Exception as err:
            outcome = _outcome(err)
            failure = err.health if isinstance(err, InferenceFailure) else Failure.SERVER_ERROR
            raise
        finally:
            await opened.response.aclose()
            opened.ended(self.fleet, outcome, failure)

    async def embed(
        self, model: str, inputs: list[str], params: dict[str, Any], tenant: str | None = None
    ) -> EmbeddingResult:
        """Embeddings of `inputs` (OpenAI's /embeddings; `params`: encoding_format, dimensions), from the
        model's deployments as a chat request is served: retried on another, then its fallbacks."""
        messages = [ChatMessage("user", text) for text in inputs]  # for the token estimate and routing
        call = _Call(messages, params, False, None, None, None, False, tenant, inputs=inputs)
        opened = await self._open(model, call)
        route, outcome, failure = opened.route, "cancelled", None
        try:
            with _transport_errors(route, "endpoint timed out", "reply broke off"):
                await opened.response.aread()
            try:
                data = opened.response.json()
                vectors = list(data["data"])
                if len(vectors) != len(inputs):
                    raise ValueError(f"{len(vectors)} embeddings for {len(inputs)} inputs")
                usage = data.get("usage") or {}
                tokens = int(usage.get("prompt_tokens") or estimate_prompt_tokens(messages))
            except (ValueError, KeyError, TypeError) as err:
                raise self._malformed(route, err) from err
            outcome = "ok"
            return EmbeddingResult(vectors, route.name, tokens, route.version)
        except Exception as err:
            outcome = _outcome(err)
            failure = err.health if isinstance(err, InferenceFailure) else Failure.SERVER_ERROR
            raise
        finally:
            await opened.response.aclose()
            opened.ended(self.fleet, outcome, failure)

    async def stream(
        self,
        model: str,
        messages: list[ChatMessage],
        params: dict[str, Any],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        previous: str | None = None,
        single_attempt: bool = False,
        tenant: str | None = None,
    ) -> AsyncGenerator[str | ChatCompletionResult, None]:
        """The reply as it is generated: text deltas, then the whole reply (with any tool calls) as the
        last item. A stream that breaks off before its first item goes to another deployment (on the
        one-shot path): the consumer has seen nothing yet."""
        call = _Call(messages, params, True, tools, tool_choice, previous, single_attempt, tenant)
        while True:
            opened = await self._open(model, call)
            started = False
            try:
                # Closed with this generator: a consumer that stops reading ends the call now.
                async with contextlib.aclosing(self._relay(opened, call)) as items:
                    async for item in items:
                        started = True
                        yield item
                return
            except InferenceFailure as err:
                if started or single_attempt or err.health is not Failure.BROKEN_STREAM:
                    raise
                log.warning("%s broke off before its first token: trying another deployment", err.message)
                call.failed(opened.route, opened.replica, err)

    async def _relay(
        self, opened: "_Opened", call: _Call
    ) -> AsyncGenerator[str | ChatCompletionResult, None]:
        """One opened stream's items, measured and counted in the fleet."""
        messages = call.messages
        route, replica, started, response = opened.route, opened.replica, opened.started, opened.response
        outcome: str | None = "cancelled"  # until it ends otherwise: the consumer stopped reading
        failure: Failure | None = None
        try:
            parts: list[str] = []
            calls = _StreamedToolCalls()
            finish_reason, usage = "stop", dict[str, Any]()
            try:
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        continue  # read on to the end of the body, so the connection can be reused
                    chunk = json.loads(data)
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        calls.add(delta.get("tool_calls") or [])
                        text = delta.get("content")
                        if text:
                            if not parts:
                                opened.answering(self.fleet)
                            parts.append(text)
                            yield text
                        finish_reason = choice.get("finish_reason") or finish_reason
            except (httpx.TimeoutException, httpx.TransportError) as err:
                BROKEN_STREAMS.labels(route.name, route.version).inc()
                raise _transport_failure(route, err, "stream stalled", "stream broke off") from err
            except (ValueError, AttributeError, TypeError) as err:
                raise self._malformed(route, err) from err
            finally:
                await response.aclose()
            content = "".join(parts)
            latency_ms = (time.perf_counter() - started) * 1000
            result = _result(
                route, replica, messages, content, finish_reason, usage, latency_ms, calls.result()
            )
            # Counted now: a consumer may well never resume the generator after the last item.
            opened.ended(self.fleet, "ok", None)
            outcome = None
            yield result
        except Exception as err:
            outcome = _outcome(err)
            failure = err.health if isinstance(err, InferenceFailure) else Failure.SERVER_ERROR
            raise
        finally:
            if outcome is not None:
                opened.ended(self.fleet, outcome, failure)

    @staticmethod
    def _malformed(route: ModelRoute, err: Exception) -> InferenceFailure:
        return InferenceFailure(
            f"{route.name} sent a malformed completion: {err!r}",
            type="EndpointError",
            status=502,
            health=Failure.SERVER_ERROR,
        )


def _rejection_kind(message: str) -> str:
    """The type of a 4xx rejection: the context window and content policy each have their fallbacks."""
    lowered = message.lower()
    if "maximum context length" in lowered or "context window" in lowered or "context_length" in lowered:
        return "ContextWindowExceeded"
    if "content policy" in lowered or "content_policy" in lowered or "content_filter" in lowered:
        return "ContentPolicyViolation"
    return "EndpointRejected"


def _outcome(err: Exception) -> str:
    return (err.type if isinstance(err, InferenceFailure) else None) or type(err).__name__


@functools.cache
def _series(model: str, version: str) -> tuple[Any, Any]:
    """The ok counter and the latency histogram of one model version, looked up once (on the hot path)."""
    return GATEWAY_REQUESTS.labels(model, version, "ok"), GATEWAY_LATENCY.labels(model, version)


def _measure(route: ModelRoute, outcome: str, started: float) -> None:
    if outcome == "ok":
        ok, latency = _series(route.name, route.version)
        ok.inc()
        latency.observe(time.perf_counter() - started)
    else:
        GATEWAY_REQUESTS.labels(route.name, route.version, outcome).inc()
