"""A real Prometheus, started by lab.prometheus, scraping a tiny exporter and queried through PromQL."""

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from activities.prometheus import (
    BadQuery,
    NoData,
    NotANumber,
    PrometheusUnavailable,
    PromQL,
    PromQLError,
    Sample,
    StaleData,
)
from lab.prometheus import (
    CONFIG_NAME,
    SIMULATED,
    PrometheusStartError,
    ScrapeTarget,
    prometheus_url,
    reload,
    render_config,
    start_prometheus,
    stop_prometheus,
    wait_ready,
    write_config,
)
from tests.http_server import free_port, serve_in_thread
from tests.waiting import eventually_sync

LAB = "lcp-test-lab"
FROZEN_AGE_S = 120.0


@dataclass
class Exporter:
    """A metrics endpoint: `requests` moves when the test says so, `scrapes` on every scrape."""

    address: str
    requests: Counter
    scrapes: Counter


class FrozenCollector:
    """A gauge whose exporter stopped updating it: its sample carries a timestamp from the past."""

    def __init__(self) -> None:
        self.at = time.time() - FROZEN_AGE_S

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("lcp_test_frozen", "A gauge frozen in the past.")
        gauge.add_metric([], 1.0, timestamp=self.at)
        yield gauge


@contextmanager
def serve_exporter() -> Iterator[Exporter]:
    registry = CollectorRegistry()
    requests = Counter("lcp_test_requests", "Requests the test made up.", registry=registry)
    scrapes = Counter("lcp_test_scrapes", "Scrapes of this endpoint.", registry=registry)
    registry.register(FrozenCollector())

    async def metrics(request: Request) -> Response:
        scrapes.inc()
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    with serve_in_thread(Starlette(routes=[Route("/metrics", metrics)])) as url:
        yield Exporter(address=url.removeprefix("http://"), requests=requests, scrapes=scrapes)


# Prometheus scrapes every second: until it has, a query may have no data (a PromQLError) or old data.
scraped = partial(eventually_sync, within=60, interval=0.2, not_yet=(PromQLError,))


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    with serve_exporter() as served:
        served.requests.inc(7)
        yield served


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prometheus")


@pytest.fixture(scope="module")
def prometheus(prometheus_bin: str, exporter: Exporter, data_dir: Path) -> Iterator[str]:
    """URL of a real Prometheus scraping the exporter every second."""
    port = free_port()
    targets = [ScrapeTarget("exporter", exporter.address, labels=SIMULATED)]
    process = start_prometheus(targets, data_dir, port=port, scrape_interval_s=1, lab=LAB)
    try:
        wait_ready(prometheus_url("127.0.0.1", port), process=process, log_file=data_dir / "prometheus.log")
        yield prometheus_url("127.0.0.1", port)
    finally:
        stop_prometheus(process)


@pytest.fixture
def promql(prometheus: str) -> Iterator[PromQL]:
    client = PromQL(prometheus)
    yield client
    client.close()


@pytest.fixture
def lone_prometheus(prometheus_bin: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A Prometheus of the test's own, scraping nothing."""
    port = free_port()
    process = start_prometheus([], tmp_path, port=port, scrape_interval_s=1)
    try:
        wait_ready(prometheus_url("127.0.0.1", port), process=process, log_file=tmp_path / "prometheus.log")
        yield process, prometheus_url("127.0.0.1", port)
    finally:
        stop_prometheus(process)


def test_render_config_groups_targets_by_job_with_their_labels() -> None:
    targets = [
        ScrapeTarget("llm", "127.0.0.1:8001", labels=SIMULATED),
        ScrapeTarget("llm", "127.0.0.1:8002", labels={**SIMULATED, "replica": "b"}),
        ScrapeTarget("lcp", "127.0.0.1:8000", metrics_path="/api/metrics"),
    ]
    config = yaml.safe_load(render_config(targets, scrape_interval_s=1, evaluation_interval_s=0.5, lab=LAB))
    assert config["global"] == {
        "scrape_interval": "1s",
        "evaluation_interval": "500ms",
        "external_labels": {"lab": LAB},
    }
    llm, lcp = config["scrape_configs"]
    assert llm["job_name"] == "llm" and llm["metrics_path"] == "/metrics"
    assert llm["static_configs"] == [
        {"targets": ["127.0.0.1:8001"], "labels": {"simulated": "true"}},
        {"targets": ["127.0.0.1:8002"], "labels": {"simulated": "true", "replica": "b"}},
    ]
    assert lcp == {
        "job_name": "lcp",
        "metrics_path": "/api/metrics",
        "static_configs": [{"targets": ["127.0.0.1:8000"]}],
    }
    with pytest.raises(ValueError, match="different metrics paths"):
        render_config([ScrapeTarget("x", "a:1"), ScrapeTarget("x", "a:2", metrics_path="/m")])


def test_render_config_sends_a_job_its_bearer_token(tmp_path: Path) -> None:
    targets = [ScrapeTarget("lcp-api", "127.0.0.1:8000", bearer_token="t0ken"), ScrapeTarget("lab", "a:1")]
    lcp, lab = yaml.safe_load(render_config(targets))["scrape_configs"]
    assert lcp["authorization"] == {"type": "Bearer", "credentials": "t0ken"}
    assert "authorization" not in lab
    assert "t0ken" not in repr(targets[0])
    with pytest.raises(ValueError, match="different bearer tokens"):
        render_config([ScrapeTarget("x", "a:1"), ScrapeTarget("x", "a:2", bearer_token="t")])
    written = write_config(tmp_path / CONFIG_NAME, targets)
    assert written.stat().st_mode & 0o077 == 0  # the token is readable by its owner only


def test_counter_arrives_with_the_simulated_label(promql: PromQL, exporter: Exporter) -> None:
    def counter_is(expected: float) -> Sample:
        [sample] = promql.instant("lcp_test_requests_total")
        assert sample.value == expected, sample
        return sample

    sample = scraped(lambda: counter_is(7), what="the counter at 7")
    assert sample.labels["simulated"] == "true"
    assert sample.labels["job"] == "exporter"
    assert sample.labels["instance"] == exporter.address

    exporter.requests.inc(3)
    scraped(lambda: counter_is(10), what="the counter at 10")
    assert promql.value('lcp_test_requests_total{simulated="true"}') == 10


def test_rate_and_range_queries(promql: PromQL) -> None:
    def scraping() -> float:
        rate = promql.value("rate(lcp_test_scrapes_total[5s])")
        assert rate > 0
        return rate

    scraped(scraping, what="a rate of scrapes")

    def history() -> bool:
        now = time.time()
        [series] = promql.range("lcp_test_scrapes_total", now - 10, now, step_s=1)
        assert len(series.timestamps) >= 3 and len(series.timestamps) == len(series.values)
        assert series.timestamps == sorted(series.timestamps)
        assert series.values == sorted(series.values) and series.values[-1] > series.values[0]
        assert series.labels["job"] == "exporter"
        return True

    scraped(history, what="three seconds of history")

    # More points than Prometheus answers in one query (11,000): asked for in pieces, joined seamlessly.
    [first] = promql.range("lcp_test_scrapes_total", time.time() - 60, time.time(), step_s=1)
    # Not a wait on Prometheus: the history needs 12 s of time to pass since its first sample.
    time.sleep(max(0.0, first.timestamps[0] + 13 - time.time()))
    now = time.time()
    [series] = promql.range("lcp_test_scrapes_total", now - 12, now, step_s=0.001)
    assert len(series.timestamps) > 11_000
    steps = [b - a for a, b in zip(series.timestamps, series.timestamps[1:], strict=False)]
    assert min(steps) > 0 and max(steps) < 0.0015


def test_external_label_names_the_lab(prometheus: str) -> None:
    response = httpx.get(f"{prometheus}/api/v1/status/config")
    config = yaml.safe_load(response.json()["data"]["yaml"])
    assert config["global"]["external_labels"] == {"lab": LAB}
    assert config["global"]["scrape_interval"] == "1s"


def test_reload_picks_up_a_new_target(
    promql: PromQL, prometheus: str, exporter: Exporter, data_dir: Path
) -> None:
    with serve_exporter() as api:
        targets = [
            ScrapeTarget("exporter", exporter.address, labels=SIMULATED),
            ScrapeTarget("api", api.address),  # lcp's own API: real, so not labelled simulated
        ]
        write_config(data_dir / CONFIG_NAME, targets, scrape_interval_s=1, lab=LAB)
        reload(prometheus)

        def api_up() -> dict[str, str]:
            [sample] = promql.instant('up{job="api"}')
            assert sample.value == 1
            return sample.labels

        labels = scraped(api_up, what="the new target scraped")
        assert "simulated" not in labels
        assert promql.value('up{job="exporter"}') == 1
    write_config(data_dir / CONFIG_NAME, targets[:1], scrape_interval_s=1, lab=LAB)
    reload(prometheus)


def test_bad_promql_is_a_bad_query(promql: PromQL) -> None:
    with pytest.raises(BadQuery, match="parse error"):
        promql.instant("rate(lcp_test_requests_total[5s]")


def test_missing_metric_is_no_data(promql: PromQL) -> None:
    with pytest.raises(NoData, match="lcp_no_such_metric"):
        promql.instant("lcp_no_such_metric")


def test_nan_is_not_a_number(promql: PromQL) -> None:
    with pytest.raises(NotANumber):
        promql.value("0 / 0")


def test_old_samples_are_stale(promql: PromQL) -> None:
    frozen = 'lcp_test_frozen{job="exporter"}'
    scraped(lambda: promql.value(frozen), what="the frozen gauge scraped")
    with pytest.raises(StaleData, match="older than 30"):
        promql.instant(frozen, max_age_s=30)
    assert promql.value(frozen, max_age_s=FROZEN_AGE_S * 10) == 1


def test_stopped_prometheus_is_unavailable(lone_prometheus: tuple[subprocess.Popen[bytes], str]) -> None:
    process, url = lone_prometheus
    promql = PromQL(url)
    assert promql.value("1 + 1") == 2
    stop_prometheus(process)
    with pytest.raises(PrometheusUnavailable, match=url):
        promql.value("1 + 1")


def test_reload_refuses_a_broken_config(
    lone_prometheus: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    _, url = lone_prometheus
    (tmp_path / CONFIG_NAME).write_text("scrape_configs: [\n")
    with pytest.raises(PrometheusStartError, match="refused the new config"):
        reload(url)
    assert PromQL(url).value("1 + 1") == 2  # still running on the old config


def test_busy_port_is_a_clear_error(prometheus: str, tmp_path: Path) -> None:
    port = int(prometheus.rsplit(":", 1)[1])
    with pytest.raises(PrometheusStartError, match=f"port {port} on 127.0.0.1 is already in use"):
        start_prometheus([], tmp_path, port=port)


def test_failing_binary_reports_the_log_tail(prometheus_bin: str, tmp_path: Path) -> None:
    config = tmp_path / "broken.yml"
    config.write_text("scrape_configs: [\n")
    process = start_prometheus(config, tmp_path, port=free_port())
    try:
        with pytest.raises(PrometheusStartError, match="exited with code .*Error loading config") as info:
            wait_ready("http://127.0.0.1:1", process=process, log_file=tmp_path / "prometheus.log")
        assert "\n" not in str(info.value)
    finally:
        stop_prometheus(process)
