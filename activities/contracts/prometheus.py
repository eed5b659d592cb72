"""What workflows and the API share with the Prometheus activities (activities/prometheus.py): their
inputs, results and names, and the metric templates file (policies/analysis.yaml) that rollouts
receive in their input, without the Prometheus client."""

from dataclasses import dataclass
from pathlib import Path

import yaml
from temporalio import activity

from policies.canary import DEFAULT_TEMPLATES_FILE, MetricTemplate, parse_templates


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


class PrometheusActivities:
    """The activities' contract: what workflows call. The implementation, activities/prometheus.py's
    PrometheusActivities, subclasses this and overrides every method under the same activity name."""

    @activity.defn(name="prometheus.measure")
    def measure(self, request: MeasureInput) -> MeasureResult:
        """One reading of a metric. Prometheus being down raises (Temporal retries); an answer
        without a usable value is a result, which the analysis counts as an Error measurement."""
        raise NotImplementedError

    @activity.defn(name="prometheus.samples")
    def samples(self, request: SamplesInput) -> SamplesResult:
        """The samples the statistical judge compares (NaN points, e.g. 0/0 at no traffic, left out)."""
        raise NotImplementedError
