"""PromQL for lcp's activities (canary analysis, predictive scaling): instant and range queries with
"no data", NaN, stale data, a bad query and Prometheus being down told apart."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from temporalio import activity
from urllib3.util.retry import Retry

from activities.contracts import prometheus as contract
from activities.contracts.prometheus import (
    MeasureInput,
    MeasureResult,
    SamplesInput,
    SamplesResult,
)
from policies.errors import LcpError, PermanentError, TransientError

MAX_POINTS_PER_QUERY = 11_000  # Prometheus refuses a range query with more points per series
# What one answer may hold, read as it arrives: a query is an operator's (a scaling target, a probe), and
# one that answers thousands of series (`{__name__=~".+"}`, `topk(5000, ...)`) or a subquery at a fine
# resolution would otherwise be read whole into the worker, up to Prometheus' own max-samples (50 million
# by default: gigabytes of JSON). One series of 11,000 points is about 400 KB.
MAX_ANSWER_BYTES = 8 * 2**20
MAX_RANGE_POINTS = 1_000_000  # points one range() keeps over all its pieces (the forecaster reads 100,000)


class PromQLError(LcpError):
    """A PromQL query gave no usable answer."""


class PrometheusUnavailable(PromQLError, TransientError):
    """Prometheus did not answer: down, unreachable, starting, or overloaded (HTTP 5xx)."""


class BadQuery(PromQLError, PermanentError):
    """Prometheus rejected the query (HTTP 400/422): a syntax or evaluation error."""


class NoData(PromQLError, TransientError):
    """The query is valid but matched no series (missing metric, target down, window too short)."""


class StaleData(PromQLError, TransientError):
    """The newest sample of a series is older than the caller allows."""


class NotANumber(PromQLError, TransientError):
    """The query answered NaN (e.g. 0/0 in a ratio when there is no traffic)."""


class AnswerTooLarge(BadQuery):
    """The answer is larger than lcp reads (MAX_ANSWER_BYTES, MAX_RANGE_POINTS): too many series or points."""


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
        self.timeout_s = timeout_s
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
        kept = 0
        while piece_start <= end:
            piece_end = min(piece_start + piece_s, end)
            for item in self._range(query, piece_start, piece_end, step_s):
                key = tuple(sorted(item["metric"].items()))
                series = found.setdefault(key, Series(dict(item["metric"]), [], []))
                kept += len(item["values"])
                if kept > MAX_RANGE_POINTS:
                    raise AnswerTooLarge(
                        f"{query!r} answered more than {MAX_RANGE_POINTS:,} points in {len(found):,} or more "
                        "series: lcp reads at most that much of one range query (sum the series?)"
                    )
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
        params = {
            "query": query,
            "start": round(start),  # whole seconds, as prometheus_api_client sent them
            "end": round(end),
            "step": str(step_s),
        }
        result: list[dict[str, Any]] = self._get(query, "query_range", params)
        return result or []

    def _instant(self, query: str, at: float) -> list[Sample]:
        result = self._get(query, "query", {"query": query, "time": f"{at:.3f}"})
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

    def _get(self, query: str, endpoint: str, params: dict[str, Any]) -> Any:
        """`data.result` of /api/v1/<endpoint>, read as it arrives and refused past MAX_ANSWER_BYTES. The
        query carries Prometheus' own `timeout`, so an expensive one stops there when lcp stops waiting
        (rather than after Prometheus' query.timeout, 2 minutes by default)."""
        client = self.client
        try:
            with client._session.get(
                f"{self.url.rstrip('/')}/api/v1/{endpoint}",
                params={**params, "timeout": f"{self.timeout_s:g}s"},
                headers=client.headers,
                auth=client.auth,
                timeout=self.timeout_s,
                stream=True,
            ) as response:
                body = self._read(query, response)
        except requests.RequestException as exc:
            raise PrometheusUnavailable(f"prometheus at {self.url} is unavailable: {exc}") from exc
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if response.status_code == 200 and isinstance(answer, dict) and isinstance(answer.get("data"), dict):
            return answer["data"].get("result")
        error = answer.get("error") if isinstance(answer, dict) else None
        message = str(error) if error else body[:500].decode(errors="replace").strip()
        status = response.status_code
        if isinstance(answer, dict) and answer.get("errorType") == "timeout":
            raise BadQuery(f"prometheus gave up on {query!r} after lcp's {self.timeout_s:g} s: {message}")
        if status in (400, 422):
            raise BadQuery(f"prometheus rejected {query!r}: {message}")
        if status >= 500 or status == 200:
            raise PrometheusUnavailable(f"prometheus at {self.url} answered {status}: {message}")
        raise PromQLError(f"prometheus answered {status} to {query!r}: {message}")

    @staticmethod
    def _read(query: str, response: requests.Response) -> bytes:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
            raise AnswerTooLarge(_too_large(query, int(declared)))
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(chunk_size=64 * 1024):
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise AnswerTooLarge(_too_large(query, size))
            chunks.append(chunk)
        return b"".join(chunks)


def _too_large(query: str, size: int) -> str:
    return (
        f"{query!r} answered more than {MAX_ANSWER_BYTES // 2**20} MiB ({size:,} bytes read so far): lcp "
        "reads at most that much of one answer; a query for lcp answers one series (sum the series?)"
    )


def _describe(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _labels(samples: list[Sample]) -> list[str]:
    return [_describe(s.labels) for s in samples]


def _points(series: list[Series]) -> list[float]:
    if len(series) != 1:
        raise PromQLError(f"expected one series, got {len(series)}: {[_describe(s.labels) for s in series]}")
    return [value for value in series[0].values if math.isfinite(value)]


class PrometheusActivities(contract.PrometheusActivities):
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
