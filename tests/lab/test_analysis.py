"""Canary analysis readings end to end: the lab workload with a faulty version, a real Prometheus
scraping it, the default metric templates, the measure activity and Argo's threshold judge."""

import time
from collections.abc import Iterator

import pytest

from activities.contracts.prometheus import MeasureInput, SamplesInput, SamplesResult, load_templates
from activities.prometheus import PrometheusActivities, PromQL, PromQLError
from bench.canary import Counters, slow_bound, slow_share
from lab.prometheus import SIMULATED, ScrapeTarget, start_prometheus, stop_prometheus, wait_ready
from lab.traces import Constant
from lab.workload import Fault, InMemoryCluster, ServiceSpec, VersionState, Workload, create_app
from policies.canary import (
    AnalysisPhase,
    CanaryMetric,
    Direction,
    JudgeConfig,
    Samples,
    TemplatesError,
    judge_canary,
    measure,
    parse_templates,
    render_query,
)
from tests.http_server import free_port, serve_in_thread
from tests.waiting import eventually_sync


@pytest.fixture(scope="module")
def readings(promql: PromQL) -> PrometheusActivities:
    return PrometheusActivities(promql)


@pytest.fixture(scope="module")
def promql(prometheus_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PromQL]:
    """Stable v1 (9 replicas) and canary v2 (1 replica, 30% errors) serving 200 requests/s."""
    cluster = InMemoryCluster()
    cluster.set_versions(
        "lab",
        "shop",
        [VersionState("v1", "shop", 9), VersionState("v2", "shop-canary", 1)],
    )
    workload = Workload(cluster, seed=7, tick_s=0.25)
    workload.add_service(ServiceSpec("lab", "shop", Constant(200.0), capacity_per_replica_rps=100))
    workload.set_fault("lab", "shop", "v2", Fault(error_share=0.3))
    with serve_in_thread(create_app(workload)) as url:
        port = free_port()
        prometheus = start_prometheus(
            [ScrapeTarget("lab-workload", url.removeprefix("http://"), labels=SIMULATED)],
            tmp_path_factory.mktemp("prometheus"),
            port=port,
            scrape_interval_s=1,
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}", 30, prometheus)
            promql = PromQL(f"http://127.0.0.1:{port}")
            # Two scrapes make a rate, but one over a second of traffic is too noisy for the readings'
            # ranges below: wait until every series has five in the 10 s window.
            scrapes = 'min(count_over_time(http_requests_total{namespace="lab",service="shop"}[10s]))'
            eventually_sync(
                lambda: promql.value(scrapes) >= 5,
                what="five scrapes of the workload in the 10 s window",
                within=60,
                interval=0.25,
                not_yet=(PromQLError,),
            )
            yield promql
        finally:
            stop_prometheus(prometheus)


def _success_rate(version: str) -> str:
    template = load_templates()["success-rate"]
    return render_query(template.query, namespace="lab", service="shop", version=version, window="10s")


def test_the_healthy_version_passes_and_the_faulty_one_fails(readings: PrometheusActivities) -> None:
    threshold = load_templates()["success-rate"].threshold
    stable = readings.measure(MeasureInput(_success_rate("v1")))
    canary = readings.measure(MeasureInput(_success_rate("v2")))
    assert stable.value is not None and stable.value > 0.99
    assert canary.value is not None and 0.55 < canary.value < 0.85
    assert measure(stable.value, stable.error, threshold).phase == AnalysisPhase.SUCCESSFUL
    assert measure(canary.value, canary.error, threshold).phase == AnalysisPhase.FAILED


def test_no_data_and_bad_queries_are_error_readings(readings: PrometheusActivities) -> None:
    threshold = load_templates()["success-rate"].threshold
    missing = readings.measure(MeasureInput(_success_rate("v9")))
    assert missing.value is None and missing.error
    assert measure(missing.value, missing.error, threshold).phase == AnalysisPhase.ERROR
    broken = readings.measure(MeasureInput("sum(rate(http_requests_total[10s]"))
    assert broken.value is None and "rejected" in (broken.error or "")


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({}, "'templates' mapping"),
        ({"templates": {"x": {}}}, "needs a 'query'"),
        ({"templates": {"x": {"query": "up", "success": "about 1"}}}, "not a condition"),
        ({"templates": {"x": {"query": "up"}}}, "neither a success nor a failure"),
        ({"templates": {"x": {"query": "up", "failure": "> 1", "direction": "up"}}}, "not one of increase"),
        ({"templates": {"x": {"query": "up", "failure": "> 1", "weight": -1}}}, "weight: -1 is not a number"),
        ({"templates": {"x": {"query": "up", "failure": "> 1", "weight": 0}}}, "weight must be a number > 0"),
        ({"templates": {"x": {"query": "up", "failure": "> 1", "min_traffic": 100}}}, "min_traffic needs a"),
    ],
)
def test_bad_templates_are_clear_errors(document: object, problem: str) -> None:
    with pytest.raises(TemplatesError, match=problem):
        parse_templates(document)


def test_unfilled_placeholders_are_refused() -> None:
    with pytest.raises(TemplatesError, match="version"):
        render_query(load_templates()["success-rate"].query, namespace="lab", service="shop", window="1m")


def test_default_templates_parse() -> None:
    templates = load_templates()
    assert set(templates) == {
        *(
            "success-rate",
            "latency-slow-share",
            "latency-slow-share-excess",
            "latency-p99",
            "latency-p99-ratio",
        ),
        *("model-success-rate", "model-latency-p99", "model-latency-p99-ratio"),
    }
    assert templates["latency-p99"].threshold.failure is not None
    success = templates["success-rate"].canary_metric()
    assert (success.direction, success.critical, success.weight) == (Direction.DECREASE, True, 2.0)
    assert templates["latency-p99-ratio"].canary_metric().direction is Direction.INCREASE


def _error_ratio(version: str) -> str:
    labels = f'namespace="lab",service="shop",version="{version}"'
    errors = f'sum(rate(http_requests_total{{{labels},code=~"5.."}}[5s]))'
    return f"{errors} / sum(rate(http_requests_total{{{labels}}}[5s]))"


def test_statistical_judge_on_per_interval_samples(readings: PrometheusActivities) -> None:
    config = JudgeConfig(metrics=(CanaryMetric("error-rate", allowed_absolute=0.005),))

    def twenty_seconds() -> tuple[float, SamplesResult]:
        end = time.time()
        faulty = readings.samples(SamplesInput(_error_ratio("v2"), _error_ratio("v1"), end - 20, end, 1))
        assert len(faulty.canary) >= 15, faulty
        return end, faulty

    end, faulty = eventually_sync(
        twenty_seconds, what="Prometheus to hold 20 s of the workload's history", within=60, interval=0.5
    )
    same = readings.samples(SamplesInput(_error_ratio("v1"), _error_ratio("v1"), end - 20, end, 1))
    assert faulty.error is None and len(faulty.canary) >= 15 and len(faulty.baseline) >= 15
    assert judge_canary({"error-rate": Samples(faulty.canary, faulty.baseline)}, config).phase == (
        AnalysisPhase.FAILED
    )
    assert judge_canary({"error-rate": Samples(same.canary, same.baseline)}, config).phase == (
        AnalysisPhase.SUCCESSFUL
    )
    missing = readings.samples(SamplesInput(_error_ratio("v9"), _error_ratio("v1"), end - 20, end, 1))
    assert missing.error and missing.canary == []


def _buckets(promql: PromQL, version: str, at: float) -> Counters:
    labels = f'namespace="lab",service="shop",version="{version}"'
    answer = promql.instant(
        f"sum by (le) (increase(http_request_duration_seconds_bucket{{{labels}}}[10s]))", at
    )
    return Counters(0.0, 0.0, tuple(sorted((float(s.labels["le"]), s.value) for s in answer)))


def test_the_slow_share_templates_read_in_prometheus_what_the_bench_computes(promql: PromQL) -> None:
    """The standard latency templates' PromQL (bottomk over the stable's shares by `le`, `and on (le)`),
    evaluated by Prometheus, equals bench/canary.py's arithmetic over the same counters read raw."""
    templates = load_templates()
    at = time.time() - 1  # every query reads the same moment
    stable, canary = _buckets(promql, "v1", at), _buckets(promql, "v2", at)
    assert slow_bound(stable) in (0.075, 0.1, 0.15, 0.2, 0.3)  # ~p95 of a 50 ms median, 20% busy

    def read(name: str, version: str) -> float:
        query = render_query(
            templates[name].query,
            namespace="lab",
            service="shop",
            version=version,
            baseline_version="v1",
            reference_version="v1",
            window="10s",
        )
        return promql.value(query, at)

    assert read("latency-slow-share", "v2") == pytest.approx(slow_share(canary, stable), abs=1e-9)
    assert read("latency-slow-share", "v1") == pytest.approx(slow_share(stable, stable), abs=1e-9)
    assert 0 < slow_share(stable, stable) <= 0.05
    excess = slow_share(canary, stable) - slow_share(stable, stable)
    assert read("latency-slow-share-excess", "v2") == pytest.approx(excess, abs=1e-9)
