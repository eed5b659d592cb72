"""The inference gateway: calls OpenAI-compatible endpoints (the simulator, vLLM, OpenAI, ...) with httpx,
whole or streamed, and classes every failure. Used by the inference activity and the one-shot API path."""

import contextlib
import json
import os
import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from temporalio.exceptions import ApplicationError

from policies.models import DEFAULT_POLICY_FILE, ModelRoute, expand_env, parse_routes

# 4xx answers say the request itself is wrong (400/401/404/422...): retrying cannot help,
# except for these two, which say "not now".
RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})
MESSAGE_OVERHEAD_TOKENS = 4  # estimated tokens per message for its role and separators


@dataclass
class ChatMessage:
    role: str
    content: str


@dataclass
class ChatCompletionResult:
    content: str
    model: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float


class InferenceFailure(ApplicationError):
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
    ) -> None:
        super().__init__(message, type=type, non_retryable=non_retryable, next_retry_delay=retry_after)
        self.status = status
        self.retry_after = retry_after


def load_routes(path: Path | None = None, *, llm_url: str | None = None) -> dict[str, ModelRoute]:
    """Read the models policy file (default: policies/models.yaml), expanding ${ENV} values;
    `llm_url` (the simulator's base URL from settings) fills ${LCP_LLM_URL}."""
    env = dict(os.environ)
    if llm_url:
        env["LCP_LLM_URL"] = llm_url
    text = (path or DEFAULT_POLICY_FILE).read_text()
    return parse_routes(yaml.safe_load(expand_env(text, env)))


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
    return sum(estimate_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in messages)


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
            f"{route.name}: {timed_out} ({type(err).__name__})", type="EndpointTimeout", status=504
        )
    return InferenceFailure(f"{route.name}: {broken} ({err})", type="EndpointUnavailable", status=502)


@contextlib.contextmanager
def _transport_errors(route: ModelRoute, timed_out: str, broken: str) -> Iterator[None]:
    try:
        yield
    except (httpx.TimeoutException, httpx.TransportError) as err:
        raise _transport_failure(route, err, timed_out, broken) from err


class Gateway:
    def __init__(self, http: httpx.AsyncClient, routes: dict[str, ModelRoute]) -> None:
        self._http = http
        self.routes = routes

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

    def _request(
        self, route: ModelRoute, messages: list[ChatMessage], params: dict[str, Any], stream: bool
    ) -> httpx.Request:
        body: dict[str, Any] = {
            "model": route.upstream_model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        body.update({key: value for key, value in params.items() if value is not None})
        headers = {"Authorization": f"Bearer {route.api_key}"} if route.api_key else {}
        return self._http.build_request(
            "POST",
            f"{route.base_url}/chat/completions",
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
            return InferenceFailure(
                f"{route.name} rejected the request (HTTP {status}): {message}",
                type="EndpointRejected",
                status=status,
                non_retryable=True,
            )
        busy = status in RETRYABLE_CLIENT_ERRORS
        return InferenceFailure(
            f"{route.name} answered HTTP {status}: {message}",
            type="EndpointBusy" if busy else "EndpointError",
            status=status if busy else 502,
            retry_after=_retry_after(response),
        )

    async def complete(
        self, model: str, messages: list[ChatMessage], params: dict[str, Any]
    ) -> ChatCompletionResult:
        """One whole reply."""
        route = self.route(model)
        started = time.perf_counter()
        response = await self._send(route, self._request(route, messages, params, stream=False), False)
        latency_ms = (time.perf_counter() - started) * 1000
        try:
            data = response.json()
            choice = data["choices"][0]
            content = choice["message"]["content"] or ""
            usage = data.get("usage") or {}
            return ChatCompletionResult(
                content=content,
                model=route.name,
                finish_reason=choice.get("finish_reason") or "stop",
                prompt_tokens=int(usage.get("prompt_tokens") or estimate_prompt_tokens(messages)),
                completion_tokens=int(usage.get("completion_tokens") or estimate_tokens(content)),
                latency_ms=latency_ms,
            )
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise self._malformed(route, err) from err

    async def stream(
        self, model: str, messages: list[ChatMessage], params: dict[str, Any]
    ) -> AsyncGenerator[str | ChatCompletionResult, None]:
        """The reply as it is generated: text deltas, then the whole reply as the last item."""
        route = self.route(model)
        started = time.perf_counter()
        response = await self._send(route, self._request(route, messages, params, stream=True), True)
        parts: list[str] = []
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
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        parts.append(delta)
                        yield delta
                    finish_reason = choice.get("finish_reason") or finish_reason
        except (httpx.TimeoutException, httpx.TransportError) as err:
            raise _transport_failure(route, err, "stream stalled", "stream broke off") from err
        except (ValueError, AttributeError, TypeError) as err:
            raise self._malformed(route, err) from err
        finally:
            await response.aclose()
        content = "".join(parts)
        yield ChatCompletionResult(
            content=content,
            model=route.name,
            finish_reason=finish_reason,
            prompt_tokens=int(usage.get("prompt_tokens") or estimate_prompt_tokens(messages)),
            completion_tokens=int(usage.get("completion_tokens") or estimate_tokens(content)),
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    @staticmethod
    def _malformed(route: ModelRoute, err: Exception) -> InferenceFailure:
        return InferenceFailure(
            f"{route.name} sent a malformed completion: {err!r}", type="EndpointError", status=502
        )
