"""Prometheus metrics of the API: requests by route, method and status, and their latency."""

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from starlette.responses import Response

# Labels that say whose traffic a series counts: kept out of an exposition anyone may read.
TENANT_LABELS = frozenset({"tenant", "assistant", "user"})

REQUESTS = Counter("lcp_http_requests_total", "HTTP requests", ["route", "method", "code"])
LATENCY = Histogram(
    "lcp_http_request_duration_seconds",
    "HTTP request latency",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
CHANGES = Counter(
    "lcp_conversation_changes_total",
    "Changes to conversations through the API (create, send_message, edit_message, ...), "
    "by outcome: ok or the error type",
    ["change", "outcome"],
)


@contextmanager
def counted_change(change: str) -> Iterator[None]:
    """Count one change by its outcome; an error answer (ApiError) counts under its type."""
    from api.errors import ApiError

    try:
        yield
    except ApiError as err:
        CHANGES.labels(change, err.type).inc()
        raise
    CHANGES.labels(change, "ok").inc()


class MetricsMiddleware:
    """Plain ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(route, scope["method"], str(status)).inc()
            LATENCY.labels(route, scope["method"]).observe(time.perf_counter() - started)


class _WithoutTenantLabels:
    """The default registry's metric families, less every family with a series labelled by tenant."""

    def collect(self) -> Iterable[Metric]:
        for family in REGISTRY.collect():
            if not any(TENANT_LABELS & sample.labels.keys() for sample in family.samples):
                yield family


_OPEN = CollectorRegistry(auto_describe=False)
_OPEN.register(_WithoutTenantLabels())


def metrics_response(*, tenant_labelled: bool) -> Response:
    """Every metric, or (for a caller without the scrape token) those that name no tenant."""
    return Response(generate_latest(REGISTRY if tenant_labelled else _OPEN), media_type=CONTENT_TYPE_LATEST)


COMPLETIONS = Counter(
    "lcp_chat_completions_total",
    "OpenAI-compatible chat completions by mode (durable or one-shot), streaming, model and outcome",
    ["mode", "stream", "model", "outcome"],
)
EMBEDDINGS = Counter(
    "lcp_embeddings_total", "OpenAI-compatible embeddings requests by model and outcome", ["model", "outcome"]
)
TOKENS = Counter(
    "lcp_tokens_total", "Tokens through the gateway by tenant, model and kind", ["tenant", "model", "kind"]
)
