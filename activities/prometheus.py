"""PromQL for lcp's activities (canary analysis, predictive scaling): instant and range queries with
"no data", NaN, stale data, a bad query and Prometheus being down told apart."""

from __future__ import annotations

import ast
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import yaml
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from temporalio import activity
from urllib3.util.retry import Retry

from policies.canary import DEFAULT_TEMPLATES_FILE, MetricTemplate, parse_templates

MAX_POINTS_PER_QUERY = 11_000  # Prometheus refuses a range query with more points per series


class PromQLError(Exception):
    """A PromQL query gave no usable answer."""


class PrometheusUnavailable(PromQLError):
    """Prometheus did not answer: down, unreachable, starting, or overloaded (HTTP 5xx)."""


class BadQuery(PromQLError):
    """Prometheus rejected the query (HTTP 400/422): a syntax or evaluation error."""


class NoData(PromQLError):
    """The query is valid but matched no series (missing metric, target down, window too short)."""


class StaleData(PromQLError):
    """The newest sample of a series is older than the caller allows."""


class NotANumber(PromQLError):
    """The query answered NaN (e.g. 0/0 in a ratio when there is no traffic)."""


@dataclass(frozen=True)
class Sample:
    """One series of an instant query: its labels, its value and the evaluation time."""

    labels: dict[str, str]
    value: float
    timestamp: float


@dataclass(frozen=True)
class Series:
    """One series of a range query; NaN points are kept as math.nan."""

    labels: dict[str, str]
    timestamps: list[float]
    values: list[float]


class PromQL:
    """PromQL queries for lcp's workflows, with errors sorted into the PromQLError subclasses."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url
        # No retries: callers (Temporal activities) retry, and "down" must be reported promptly.
        no_retry = Retry(total=0, raise_on_status=False)
        self.client = PrometheusConnect(url=url, timeout=timeout_s, retry=no_retry)

    def close(self) -> None:
        self.client.close()

    def instant(self, query: str, at: float | None = None, max_age_s: float | None = None) -> list[Sample]:
        """Evaluate `query` at `at` (default now): one Sample per series, never empty, never NaN.

        With `max_age_s`, also fail with StaleData when a series' newest sample is older than that.
        Only plain selectors carry sample times; functions like rate() report the evaluation time
        (and give NoData once their window holds too few samples).
        """
        at = time.time() if at is None else at
        samples = self._instant(query, at)
        nans = [s.labels for s in samples if math.isnan(s.value)]
        if nans:
            raise NotANumber(f"{query!r} is NaN for {nans}")
        if max_age_s is not None:
            stale = {
                _describe(s.labels): round(at - s.value, 1)
                for s in self._instant(f"timestamp({query})", at)
                if at - s.value > max_age_s
            }
            if stale:
                raise StaleData(f"{query!r}: newest samples are older than {max_age_s}s: {stale}")
        return samples

    def value(self, query: str, at: float | None = None, max_age_s: float | None = None) -> float:
        """The value of a query that must answer exactly one series (or a scalar)."""
        samples = self.instant(query, at, max_age_s)
        if len(samples) != 1:
            raise PromQLError(f"{query!r} answered {len(samples)} series, expected one: {_labels(samples)}")
        return samples[0].value

    def range(self, query: str, start: float, end: float, step_s: float) -> list[Series]:
        """Evaluate `query` every `step_s` from `start` to `end` (unix seconds, whole seconds sent). A long
        range is asked for in pieces: Prometheus answers at most 11,000 points per series and query."""
        found: dict[tuple[tuple[str, str], ...], Series] = {}
        piece_s = step_s * (MAX_POINTS_PER_QUERY - 1)
        piece_start = start
        while piece_start <= end:
            piece_end = min(piece_start + piece_s, end)
            for item in self._range(query, piece_start, piece_end, step_s):
                key = tuple(sorted(item["metric"].items()))
                series = found.setdefault(key, Series(dict(item["metric"]), [], []))
                for t, v in item["values"]:
                    if series.timestamps and float(t) <= series.timestamps[-1]:
                        continue  # the pieces share their boundary point
                    series.timestamps.append(float(t))
                    series.values.append(float(v))
            piece_start = piece_end + step_s
        if not found:
            raise NoData(f"{query!r} matched no series between {start:.0f} and {end:.0f}")
        return list(found.values())

    def _range(self, query: str, start: float, end: float, step_s: float) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call(
            query,
            lambda: self.client.custom_query_range(
                query, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC), step=str(step_s)
            ),
        )
        return result or []

    def _instant(self, query: str, at: float) -> list[Sample]:
        result = self._call(query, lambda: self.client.custom_query(query, params={"time": f"{at:.3f}"}))
        if not result:
            raise NoData(f"{query!r} matched no series")
        if not isinstance(result[0], dict):  # a scalar: [time, "value"]
            return [Sample(labels={}, value=float(result[1]), timestamp=float(result[0]))]
        return [
            Sample(
                labels=dict(item["metric"]), value=float(item["value"][1]), timestamp=float(item["value"][0])
            )
            for item in result
        ]

    def _call(self, query: str, request: Callable[[], Any]) -> Any:
        try:
            return request()
        except requests.RequestException as exc:
            raise PrometheusUnavailable(f"prometheus at {self.url} is unavailable: {exc}") from exc
        except PrometheusApiClientException as exc:
            status, message = _http_error(str(exc))
            if status in (400, 422):
                raise BadQuery(f"prometheus rejected {query!r}: {message}") from exc
            if status >= 500:
                raise PrometheusUnavailable(f"prometheus at {self.url} answered {status}: {message}") from exc
            raise PromQLError(f"prometheus answered {status} to {query!r}: {message}") from exc


def _http_error(text: str) -> tuple[int, str]:
    """Status and Prometheus' own error message out of prometheus_api_client's exception text."""
    match = re.fullmatch(r"HTTP Status Code (\d+) \((b(['\"]).*\3)\)", text, re.DOTALL)
    if not match:
        return 0, text
    body = ast.literal_eval(match[2]).decode(errors="replace")
    try:
        return int(match[1]), str(json.loads(body).get("error", body))
    except (ValueError, AttributeError):
        return int(match[1]), body.strip()


def _describe(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _labels(samples: list[Sample]) -> list[str]:
    return [_describe(s.labels) for s in samples]


@dataclass
class MeasureInput:
    query: str  # PromQL, its template's placeholders already filled in


@dataclass
class MeasureResult:
    value: float | None
    error: str | None = None  # why there is no value (no data, NaN, a bad query)
    error_type: str | None = None  # the PromQLError subclass's name: NoData, NotANumber, BadQuery, ...


def load_templates(path: Path | None = None) -> dict[str, MetricTemplate]:
    """The metric templates file (default: policies/analysis.yaml)."""
    return parse_templates(yaml.safe_load((path or DEFAULT_TEMPLATES_FILE).read_text()))


@dataclass
class SamplesInput:
    """Per-interval values of one metric for the canary and the baseline, over [start, end]."""

    canary_query: str
    baseline_query: str
    start: float  # unix seconds
    end: float
    step_s: float


@dataclass
class SamplesResult:
    canary: list[float]
    baseline: list[float]
    error: str | None = None  # why a side has no samples (no data, a bad query)


def _points(series: list[Series]) -> list[float]:
    if len(series) != 1:
        raise PromQLError(f"expected one series, got {len(series)}: {[_describe(s.labels) for s in series]}")
    return [value for value in series[0].values if math.isfinite(value)]


class PrometheusActivities:
    def __init__(self, promql: PromQL) -> None:
        self._promql = promql

    @activity.defn(name="prometheus.measure")
    def measure(self, request: MeasureInput) -> MeasureResult:
        """One reading of a metric. Prometheus being down raises (Temporal retries); an answer
        without a usable value is a result, which the analysis counts as an Error measurement."""
        try:
            return MeasureResult(self._promql.value(request.query))
        except PrometheusUnavailable:
            raise
        except PromQLError as err:
            return MeasureResult(None, str(err), type(err).__name__)

    @activity.defn(name="prometheus.samples")
    def samples(self, request: SamplesInput) -> SamplesResult:
        """The samples the statistical judge compares (NaN points, e.g. 0/0 at no traffic, left out)."""
        try:
            return SamplesResult(
                canary=_points(self._range(request.canary_query, request)),
                baseline=_points(self._range(request.baseline_query, request)),
            )
        except PrometheusUnavailable:
            raise
        except PromQLError as err:
            return SamplesResult([], [], str(err))

    def _range(self, query: str, request: SamplesInput) -> list[Series]:
        return self._promql.range(query, request.start, request.end, request.step_s)
