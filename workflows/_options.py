"""Timeout and retry presets for every activity call site in lcp's workflows."""

from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy

from policies.assistants import ToolSpec

# Chat inference: heartbeats every second, so a dead worker's call is retried within 5 s;
# the endpoint's own verdicts (bad request, unknown model) are final.
INFERENCE: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=180),
    "schedule_to_close_timeout": timedelta(minutes=5),
    "heartbeat_timeout": timedelta(seconds=5),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(milliseconds=500),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=10),
        maximum_attempts=6,
        non_retryable_error_types=["EndpointRejected", "UnknownModel"],
    ),
}

# Read-model projection: a short local activity (no server round trip), idempotent by keys.
PROJECTION: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=10),
    "schedule_to_close_timeout": timedelta(seconds=60),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5)
    ),
}

# Kubernetes writes converge, so they are retried freely. NotReady (pods still starting) is retried every
# few seconds for up to 15 minutes; a missing target or a spec Kubernetes refuses is final.
KUBERNETES: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=60),
    "schedule_to_close_timeout": timedelta(minutes=15),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=1.5,
        maximum_interval=timedelta(seconds=5),
        non_retryable_error_types=["TargetNotFound", "InvalidSpec"],
    ),
}

# A rollback must happen: retried until it does (or Kubernetes refuses it outright).
KUBERNETES_ROLLBACK: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=60),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=30),
        non_retryable_error_types=["InvalidSpec"],
    ),
}

# A PromQL reading: Prometheus being down is retried for a minute, then counts as an Error measurement.
PROMETHEUS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "schedule_to_close_timeout": timedelta(seconds=60),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10)
    ),
}


# Reading or scaling one Deployment for a scaling decision: retried briefly, the next decision tries again.
KUBERNETES_READ: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=20),
    "schedule_to_close_timeout": timedelta(seconds=60),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1),
        maximum_interval=timedelta(seconds=5),
        non_retryable_error_types=["TargetNotFound", "InvalidSpec"],
    ),
}


def prometheus_within(interval_s: float) -> dict[str, Any]:
    """A PromQL reading for a decision loop: Prometheus being down is retried for one interval (at least
    10 s), then the decision records it and acts on nothing."""
    return {**PROMETHEUS, "schedule_to_close_timeout": timedelta(seconds=max(interval_s, 10.0))}


def forecast_within(interval_s: float) -> dict[str, Any]:
    """A forecast: training may take minutes, but a forecasting worker that does not pick the task up
    within one interval (at least 30 s) leaves the decision to the reactive need."""
    return {
        "schedule_to_start_timeout": timedelta(seconds=max(interval_s, 30.0)),
        "start_to_close_timeout": timedelta(minutes=10),
        "retry_policy": RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=2),
    }


TOOL_TIMEOUT_MARGIN_S = 2.0  # time the activity needs around the tool's own (schema check, secret)
TOOL_HEARTBEAT_AFTER_S = 30.0  # tools allowed longer than this heartbeat, so a lost worker shows sooner

# An idempotent tool is retried a few times with backoff; its own refusals come back as results, not errors.
IDEMPOTENT_TOOL_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=4,
)


def tool_call(tool: ToolSpec) -> dict[str, Any]:
    """A tool call: the tool's timeout plus a margin. An idempotent tool is retried; any other runs at
    most once, so a worker that dies mid-call leaves the call to time out and it is never made twice."""
    options: dict[str, Any] = {
        "start_to_close_timeout": timedelta(seconds=tool.timeout_s + TOOL_TIMEOUT_MARGIN_S),
        "retry_policy": IDEMPOTENT_TOOL_RETRY if tool.idempotent else RetryPolicy(maximum_attempts=1),
    }
    if tool.timeout_s > TOOL_HEARTBEAT_AFTER_S:
        options["heartbeat_timeout"] = timedelta(seconds=10)
    return options
