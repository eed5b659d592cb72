"""Timeout and retry presets for every activity call site in lcp's workflows."""

from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy

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
