"""Calls OpenAI-compatible chat-completion endpoints (the simulator, vLLM, OpenAI, ...) with httpx."""

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from temporalio import activity
from temporalio.exceptions import ApplicationError

from policies.models import DEFAULT_POLICY_FILE, ModelRoute, expand_env, parse_routes

log = logging.getLogger(__name__)

# 4xx answers say the request itself is wrong (400/401/404/422...): retrying cannot help,
# except for these two, which say "not now".
RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})
HEARTBEAT_EVERY_S = 1.0


@dataclass
class ChatMessage:
    role: str
    content: str


@dataclass
class ChatCompletionInput:
    model: str
    messages: list[ChatMessage]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChatCompletionResult:
    content: str
    model: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float


def load_routes(path: Path | None = None, *, llm_url: str | None = None) -> dict[str, ModelRoute]:
    """Read the models policy file (default: policies/models.yaml), expanding ${ENV} values;
    `llm_url` (the simulator's base URL from settings) fills ${LCP_LLM_URL}."""
    env = dict(os.environ)
    if llm_url:
        env["LCP_LLM_URL"] = llm_url
    text = (path or DEFAULT_POLICY_FILE).read_text()
    return parse_routes(yaml.safe_load(expand_env(text, env)))


def _endpoint_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message") if isinstance(error, dict) else None
        return str(message or error)
    except ValueError:
        return response.text[:500] or response.reason_phrase


def _retry_after(response: httpx.Response) -> timedelta | None:
    try:
        return timedelta(seconds=float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


class InferenceActivities:
    def __init__(self, http: httpx.AsyncClient, routes: dict[str, ModelRoute]) -> None:
        # Retries belong to Temporal's retry policy alone: the client must not retry on its own.
        self._http = http
        self._routes = routes

    @staticmethod
    def make_http_client() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(60.0, connect=5.0),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            transport=httpx.AsyncHTTPTransport(retries=0),
        )

    @activity.defn(name="inference.chat_completion")
    async def chat_completion(self, request: ChatCompletionInput) -> ChatCompletionResult:
        route = self._routes.get(request.model)
        if route is None:
            known = ", ".join(sorted(self._routes)) or "none"
            raise ApplicationError(
                f"model {request.model!r} is not in the models policy (known: {known})",
                type="UnknownModel",
                non_retryable=True,
            )
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            return await self._call(route, request)
        finally:
            heartbeat.cancel()

    async def _heartbeat(self) -> None:
        # Only calls that take a while heartbeat: a fast reply costs no extra round trip.
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY_S)
            activity.heartbeat()

    async def _call(self, route: ModelRoute, request: ChatCompletionInput) -> ChatCompletionResult:
        body: dict[str, Any] = {
            "model": route.upstream_model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": False,
        }
        body.update({key: value for key, value in request.params.items() if value is not None})
        headers = {"Authorization": f"Bearer {route.api_key}"} if route.api_key else {}
        started = time.perf_counter()
        try:
            response = await self._http.post(
                f"{route.base_url}/chat/completions",
                json=body,
                headers=headers,
                timeout=httpx.Timeout(route.timeout_s, connect=5.0),
            )
        except httpx.TimeoutException as err:
            raise ApplicationError(
                f"{route.name}: endpoint timed out ({type(err).__name__})", type="EndpointTimeout"
            ) from err
        except httpx.TransportError as err:
            raise ApplicationError(
                f"{route.name}: endpoint unreachable ({err})", type="EndpointUnavailable"
            ) from err
        latency_ms = (time.perf_counter() - started) * 1000
        status = response.status_code
        if 400 <= status < 500 and status not in RETRYABLE_CLIENT_ERRORS:
            raise ApplicationError(
                f"{route.name} rejected the request (HTTP {status}): {_endpoint_message(response)}",
                type="EndpointRejected",
                non_retryable=True,
            )
        if status >= 400:
            raise ApplicationError(
                f"{route.name} answered HTTP {status}: {_endpoint_message(response)}",
                type="EndpointBusy" if status in RETRYABLE_CLIENT_ERRORS else "EndpointError",
                next_retry_delay=_retry_after(response),
            )
        return self._parse(route, response, latency_ms)

    @staticmethod
    def _parse(route: ModelRoute, response: httpx.Response, latency_ms: float) -> ChatCompletionResult:
        try:
            data = response.json()
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            return ChatCompletionResult(
                content=choice["message"]["content"] or "",
                model=route.name,
                finish_reason=choice.get("finish_reason") or "stop",
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                latency_ms=latency_ms,
            )
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise ApplicationError(
                f"{route.name} sent a malformed completion: {err!r}", type="EndpointError"
            ) from err
