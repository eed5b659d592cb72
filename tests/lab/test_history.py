"""A fresh lab Prometheus seeded with history (lab/history.py): a real Prometheus opens the blocks promtool
made, PromQL reads the demo service's past traffic as the workload would have made it, and the forecaster
forecasts from it at once, as `lcp scaling` does on a fresh `lcp dev`."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from activities.contracts.forecasting import ForecastInput
from activities.forecasting import ForecastingActivities
from activities.prometheus import PromQL
from lab.history import HISTORY_S, backfill, is_fresh, openmetrics, past_rate
from lab.prometheus import prometheus_url, start_prometheus, stop_prometheus, wait_ready
from lab.traces import Constant, Replay
from tests.http_server import free_port

# A 10-minute loop of the shape of a day: quiet, busy, quiet (one trace minute per 10 s, as the lab plays)
REPLAY = Replay(tuple(20.0 + 100.0 * (1 if 20 <= m < 40 else 0) for m in range(60)), speedup=6.0, scale=1.0)
LABELS = {"job": "lab-workload", "instance": "127.0.0.1:8601", "namespace": "lab", "service": "chat-api"}
QUERY = 'sum(rate(http_requests_total{namespace="lab",service="chat-api"}[1m]))'


def test_a_looping_replay_runs_backwards_into_its_past_and_a_constant_stays() -> None:
    assert past_rate(REPLAY, 5.0) == REPLAY.rate_at(595.0)  # the last trace minute, just before the start
    assert past_rate(REPLAY, 600.0) == REPLAY.rate_at(0.0)  # a whole lap earlier
    assert past_rate(Constant(7.0), 3600.0) == 7.0


def test_the_series_is_a_counter_growing_at_the_past_rate() -> None:
    lines = list(openmetrics(REPLAY, LABELS, end=1_000_000.0, history_s=600.0, step_s=15.0))
    assert lines[0] == "# TYPE http_requests counter\n" and lines[-1] == "# EOF\n"
    points = [(float(line.split()[-1]), float(line.split()[-2])) for line in lines[1:-1]]
    assert points[0][0] == 1_000_000.0 - 600.0 and points[-1][0] == 1_000_000.0
    increases = [(b[1] - a[1]) / 15.0 for a, b in zip(points, points[1:], strict=False)]
    assert min(increases) == pytest.approx(20 / 60) and max(increases) == pytest.approx(120 / 60)
    assert 'code="200"' in lines[1] and 'service="chat-api"' in lines[1]


@pytest.fixture
def seeded(prometheus_bin: str, tmp_path: Path) -> Iterator[str]:
    """A Prometheus opening a TSDB seeded with HISTORY_S of the replay, ending now."""
    tsdb = tmp_path / "tsdb"
    assert is_fresh(tsdb)
    backfill(tsdb, openmetrics(REPLAY, LABELS, time.time()))
    assert not is_fresh(tsdb)
    port = free_port()
    process = start_prometheus([], tmp_path, port=port, retention="3d", scrape_interval_s=5)
    try:
        wait_ready(prometheus_url("127.0.0.1", port), process=process, log_file=tmp_path / "prometheus.log")
        yield prometheus_url("127.0.0.1", port)
    finally:
        stop_prometheus(process)


def test_prometheus_serves_the_seeded_day_and_the_forecaster_forecasts_from_it(seeded: str) -> None:
    promql = PromQL(seeded)
    try:
        now = time.time()
        (series,) = promql.range(QUERY, now - HISTORY_S + 120, now, 60.0)
        assert len(series.values) > 0.95 * (HISTORY_S - 120) / 60
        assert min(series.values) == pytest.approx(20 / 60, rel=0.05)
        assert max(series.values) == pytest.approx(120 / 60, rel=0.05)
        result = ForecastingActivities(promql).forecast(ForecastInput("scaling/lab/chat-api", QUERY))
    finally:
        promql.close()
    assert result.status == "ok", result.detail
    assert result.forecast and result.peak_rps is not None and result.confidence > 0.5
