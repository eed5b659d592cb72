"""A platform operator's PromQL cannot make a worker read an unbounded answer. Found by the adversarial pass
on the platform side: a scaling target's query `({__name__=~".+"} and on() (vector(time()) < T)) or
vector(1)` answers one series now (so the decision's own reading passes) and every series in the past, and
the forecasting worker read every piece of it whole (its RSS grew with the number of series Prometheus
held; Prometheus' only limit is 50 million samples per piece, gigabytes of JSON). A probe's instant query
(`up[1d:1ms]`) read the same way into the ops worker. Each answer is now read as it arrives and refused past
8 MiB, a range query keeps at most 1,000,000 points over its pieces, and every query carries Prometheus'
own `timeout`, so an expensive query stops when lcp stops waiting."""

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from activities import prometheus
from activities.contracts.forecasting import ForecastInput
from activities.forecasting import ForecastingActivities
from activities.prometheus import AnswerTooLarge, PromQL
from tests.http_server import serve_in_thread

SERIES = 60 * 2**20 // 200  # about 60 MiB of answer, were it read whole


class FakePrometheus:
    """Answers every query with as many series as it is told, streamed, and counts what it sent."""

    def __init__(self) -> None:
        self.sent = 0
        self.params: list[dict[str, str]] = []
        self.app = FastAPI()
        self.app.get("/api/v1/query", response_model=None)(self.answer)
        self.app.get("/api/v1/query_range", response_model=None)(self.answer)

    async def answer(self, request: Request) -> Response:
        params = dict(request.query_params)
        self.params.append(params)
        if params["query"] == "slow":
            return JSONResponse(
                {"status": "error", "errorType": "timeout", "error": "query timed out in query execution"},
                status_code=503,
            )
        ranged = "step" in params
        return StreamingResponse(self._body(ranged), media_type="application/json")

    def _body(self, ranged: bool) -> Iterator[bytes]:
        kind = "matrix" if ranged else "vector"
        yield f'{{"status":"success","data":{{"resultType":"{kind}","result":['.encode()
        point = '[1796287000,"1"]'
        value = f'"values":[{point}]' if ranged else f'"value":{point}'
        for first in range(0, SERIES, 1000):  # a thousand series a chunk
            chunk = ",".join(
                f'{{"metric":{{"__name__":"up","series":"{i:012d}"}},{value}}}'
                for i in range(first, min(first + 1000, SERIES))
            ).encode()
            chunk = (b"," if first else b"") + chunk
            self.sent += len(chunk)
            yield chunk
        yield b"]}}"


@pytest.fixture
def fake() -> Iterator[tuple[FakePrometheus, str]]:
    server = FakePrometheus()
    with serve_in_thread(server.app) as url:
        yield server, url


def test_an_instant_answer_of_too_many_series_is_refused_unread(fake: tuple[FakePrometheus, str]) -> None:
    server, url = fake
    promql = PromQL(url)
    with pytest.raises(AnswerTooLarge, match="MiB"):
        promql.value("up")
    assert server.sent < 4 * prometheus.MAX_ANSWER_BYTES  # it stopped reading, it did not drain 60 MiB
    assert server.params[-1]["timeout"] == "10s"  # Prometheus stops evaluating when lcp stops waiting


def test_the_forecaster_refuses_a_range_answer_of_too_many_series(fake: tuple[FakePrometheus, str]) -> None:
    server, url = fake
    activities = ForecastingActivities(PromQL(url), clock=lambda: 1796287000.0)
    request = ForecastInput("scaling/lab/x", "every series", step_s=60, lookback_s=86400, season_s=[3600])
    result = activities.forecast(request)
    assert result.status == "bad-query" and "MiB" in result.detail
    assert server.sent < 4 * prometheus.MAX_ANSWER_BYTES


def test_a_range_query_keeps_a_bounded_number_of_points_over_its_pieces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every piece small enough, their sum not: one series per step in each 11,000-step piece."""
    pieces: list[dict[str, Any]] = []

    def piece(self: PromQL, query: str, endpoint: str, params: dict[str, Any]) -> Any:
        pieces.append(params)
        return [{"metric": {"i": str(i)}, "values": [[params["start"], "1"]] * 100} for i in range(2_000)]

    monkeypatch.setattr(PromQL, "_get", piece)
    with pytest.raises(AnswerTooLarge, match="points"):
        PromQL("http://127.0.0.1:9").range("x", 0, 100_000, 1)
    assert len(pieces) <= prometheus.MAX_RANGE_POINTS // 200_000 + 1


def test_a_query_prometheus_gave_up_on_is_a_bad_query_not_prometheus_down(
    fake: tuple[FakePrometheus, str],
) -> None:
    """Prometheus answers 503 for a query that ran past its timeout: that is the query's fault, and an
    activity that took it for Prometheus being down would retry it, at the same cost, for ever."""
    _, url = fake
    with pytest.raises(prometheus.BadQuery, match="gave up"):
        PromQL(url).value("slow")
