"""The demand forecaster and its Temporal activity, on synthetic series in compressed time (1 s steps)."""

import json
import math
import os
import resource
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from temporalio.exceptions import ApplicationError

from activities import forecasting
from activities.contracts.forecasting import ForecastInput
from activities.forecasting import (
    Forecaster,
    ForecastingActivities,
    ForecastSettings,
    NotEnoughHistory,
    regular,
    settings_for,
)
from activities.prometheus import BadQuery, NoData, PrometheusUnavailable, Series
from policies.scaling import MAX_HISTORY_POINTS, MAX_HORIZON_STEPS, MAX_SEASONS, settings_problem

SEASON = 30  # steps (seconds) per "day"
BASE, BUSY = 10.0, 40.0
RAMP = range(20, 27)  # the busy phases of each season
SETTINGS = ForecastSettings(
    step_s=1, horizon_steps=10, lead_steps=3, season_s=(SEASON,), n_estimators=50, seed=7
)


def daily(points: int, noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A compressed daily pattern: BASE requests/s, BUSY during RAMP, optionally with lognormal noise."""
    rng = np.random.default_rng(seed)
    timestamps = np.arange(points, dtype=float)
    values = np.where(np.isin(np.arange(points) % SEASON, RAMP), BUSY, BASE)
    return timestamps, values * (rng.lognormal(0, noise, points) if noise else 1.0)


def test_it_learns_the_daily_pattern_and_plans_for_the_ramp_before_it_comes() -> None:
    timestamps, values = daily(1200)
    forecaster = Forecaster(SETTINGS)
    forecaster.fit(timestamps[:1000], values[:1000])

    quiet = 1005  # phase 15: the ramp (phase 20) is 5 steps away, beyond the lead
    before_ramp = 1008  # phase 18: the ramp comes within the lead, but nothing has risen yet
    assert values[before_ramp] == BASE
    far = forecaster.predict(timestamps[: quiet + 1], values[: quiet + 1])
    near = forecaster.predict(timestamps[: before_ramp + 1], values[: before_ramp + 1])

    assert far.peak_rps == pytest.approx(BASE, rel=0.1)
    assert near.peak_rps == pytest.approx(BUSY, rel=0.1)
    assert far.mean[4] == pytest.approx(BUSY, rel=0.15)  # the mean path already shows the ramp at +5
    assert far.start_ts == timestamps[quiet] + 1 and len(far.mean) == SETTINGS.horizon_steps
    assert all(lo <= mid <= hi for lo, mid, hi in zip(far.low, far.mean, far.high, strict=True))


def test_confidence_is_high_on_a_clean_pattern_and_low_on_pure_noise() -> None:
    timestamps, pattern = daily(1200, noise=0.05)
    rng = np.random.default_rng(3)
    noise = 10 * rng.lognormal(0, 1.0, 1200)

    clean = Forecaster(SETTINGS).fit(timestamps, pattern)
    noisy = Forecaster(SETTINGS).fit(timestamps, noise)

    assert clean.confidence > 0.9
    assert noisy.confidence < 0.5  # below ScalingBounds' default min_confidence: the forecast is ignored
    assert noisy.holdout_error > 0.5 and clean.holdout_error < 0.1
    assert clean.holdout_error < clean.holdout_naive_error  # the pattern beats "no change"


def test_provenance_says_how_the_model_was_made_in_plain_json_values() -> None:
    timestamps, values = daily(1200)
    provenance = Forecaster(SETTINGS, clock=lambda: 1234.0).fit(timestamps, values).to_dict()

    assert provenance["seasons_s"] == [30.0] and provenance["seed"] == 7
    assert provenance["trained_at"] == 1234.0
    assert (provenance["train_start_ts"], provenance["train_end_ts"]) == (0.0, 1199.0)
    assert json.loads(json.dumps(provenance)) == provenance  # plain values only
    assert "season_30s_sin" in str(provenance["features"])


def test_a_season_longer_than_half_the_history_is_ignored() -> None:
    timestamps, values = daily(1200)
    settings = ForecastSettings(**{**SETTINGS.__dict__, "season_s": (SEASON, 900.0)})
    assert Forecaster(settings).fit(timestamps, values).seasons_s == [30.0]


def test_the_same_seed_gives_the_same_forecast() -> None:
    timestamps, values = daily(1200, noise=0.2)
    first, second = Forecaster(SETTINGS), Forecaster(SETTINGS)
    first.fit(timestamps, values)
    second.fit(timestamps, values)
    assert first.predict(timestamps, values) == second.predict(timestamps, values)


def test_too_short_a_history_raises_not_enough_history() -> None:
    timestamps, values = daily(100)
    with pytest.raises(NotEnoughHistory, match="needs at least 240 points"):
        Forecaster(SETTINGS).fit(timestamps, values)


def test_a_forecast_at_a_point_uses_nothing_after_it() -> None:
    timestamps, values = daily(1200, noise=0.2)
    forecaster = Forecaster(SETTINGS)
    forecaster.fit(timestamps[:1000], values[:1000])
    changed = values.copy()
    changed[1051:] *= 5

    quantiles = [0.5, SETTINGS.planning_quantile, 0.95]
    batch = forecaster.planned_peaks_at(timestamps, values, [1020, 1050], quantiles)
    batch_changed = forecaster.planned_peaks_at(timestamps, changed, [1020, 1050], quantiles)
    alone = forecaster.predict(timestamps[:1051], values[:1051])

    assert batch.tolist() == batch_changed.tolist()
    assert batch[1, 1] == alone.peak_rps  # the planning quantile's peak is the one a forecast plans on
    assert (np.diff(batch, axis=0) >= 0).all() and (
        batch[2] > batch[0]
    ).any()  # higher quantile, more headroom


def test_missing_and_nan_points_take_the_value_before_them() -> None:
    grid = regular([0, 1, 2, 4, 5, 6], [math.nan, 1.0, math.nan, 3.0, 5.0, math.nan], step_s=1)
    assert grid.timestamps.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert grid.values.tolist() == [1.0, 1.0, 1.0, 1.0, 3.0, 5.0, 5.0]  # the first known one at the start


# ---- the activity, with a fake Prometheus -----------------------------------------------------------------


class FakePromQL:
    """PromQL's range() over a fixed series, or raising what it is told to."""

    def __init__(self, timestamps: np.ndarray, values: np.ndarray) -> None:
        self.series = [Series({}, timestamps.tolist(), values.tolist())]
        self.error: Exception | None = None
        self.calls: list[tuple[str, float, float, float]] = []

    def range(self, query: str, start: float, end: float, step_s: float) -> list[Series]:
        self.calls.append((query, start, end, step_s))
        if self.error:
            raise self.error
        return self.series


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def request(**changes: object) -> ForecastInput:
    fields: dict[str, object] = {
        "key": "lab/chat-api",
        "query": "sum(rate(http_requests_total[1m]))",
        "step_s": 1.0,
        "lookback_s": 1200.0,
        "horizon_s": 10.0,
        "lead_s": 3.0,
        "season_s": [30.0],
        "refresh_s": 100.0,
        "max_age_s": 5.0,
    }
    return ForecastInput(**{**fields, **changes})  # type: ignore[arg-type]


def activity_with(points: int = 1200) -> tuple[ForecastingActivities, FakePromQL, Clock]:
    timestamps, values = daily(points)
    promql = FakePromQL(timestamps, values)
    clock = Clock(float(timestamps[-1]) + 1)
    return ForecastingActivities(promql, clock), promql, clock  # type: ignore[arg-type]


def test_the_activity_forecasts_from_the_range_query() -> None:
    activities, promql, clock = activity_with()

    result = activities.forecast(request())

    assert result.status == "ok", result.detail
    assert promql.calls == [("sum(rate(http_requests_total[1m]))", clock.now - 1200, clock.now, 1.0)]
    assert (result.observed_rps, result.observed_at) == (BASE, 1199.0)
    assert result.peak_rps == pytest.approx(BASE, rel=0.1) and result.confidence > 0.9
    assert len(result.forecast) == len(result.low) == len(result.high) == 10 and result.step_s == 1.0
    assert result.trained and result.provenance is not None and result.provenance["lead_steps"] == 3


def test_a_long_horizon_comes_back_in_at_most_60_points() -> None:
    activities, _, _ = activity_with()
    result = activities.forecast(request(horizon_s=150.0, season_s=[]))
    assert result.status == "ok", result.detail
    assert len(result.forecast) == 50 and result.step_s == 3.0  # 150 steps in blocks of 3


@pytest.mark.parametrize(
    ("error", "status", "words"),
    [
        (
            PrometheusUnavailable("prometheus at http://prom:9090 is unavailable: refused"),
            "prometheus-down",
            "Prometheus is down: prometheus at http://prom:9090",
        ),
        (NoData("'q' matched no series"), "no-data", "matched no series"),
        (BadQuery("prometheus rejected 'q(': parse error"), "bad-query", "parse error"),
    ],
)
def test_query_errors_come_back_as_a_status(error: Exception, status: str, words: str) -> None:
    activities, promql, _ = activity_with()
    promql.error = error
    result = activities.forecast(request())
    assert (result.status, result.peak_rps, result.observed_rps) == (status, None, None)
    assert words in result.detail


def test_times_that_are_not_positive_numbers_are_a_bad_query() -> None:
    activities, promql, _ = activity_with()
    result = activities.forecast(request(horizon_s=math.inf, season_s=[30.0, math.nan]))
    assert result.status == "bad-query" and promql.calls == []
    assert result.detail == "horizon_s, season_s[1] must be a number of seconds > 0"


def test_more_than_one_series_is_a_bad_query() -> None:
    activities, promql, _ = activity_with()
    promql.series = promql.series * 2
    result = activities.forecast(request())
    assert result.status == "bad-query" and "answered 2 series, expected one" in result.detail


def test_a_stale_newest_point_is_stale() -> None:
    activities, _, clock = activity_with()
    clock.now += 60
    result = activities.forecast(request())
    assert result.status == "stale" and result.peak_rps is None
    assert "61 s old (more than 5 s)" in result.detail


def test_a_nan_newest_point_is_nan() -> None:
    activities, promql, _ = activity_with()
    promql.series[0].values[-1] = math.nan
    result = activities.forecast(request())
    assert result.status == "nan" and result.peak_rps is None


def test_a_short_history_still_reports_what_it_observed() -> None:
    activities, _, _ = activity_with(points=100)
    result = activities.forecast(request())
    assert result.status == "short-history" and result.peak_rps is None
    assert result.observed_rps == BASE and "needs at least" in result.detail


def test_the_model_is_cached_per_key_and_refit_when_old_or_asked_differently() -> None:
    activities, _, clock = activity_with()
    patient = {"max_age_s": 1000.0}  # the fake series doesn't move on with the clock

    assert activities.forecast(request(**patient)).trained
    clock.now += 50
    again = activities.forecast(request(**patient))
    assert again.status == "ok" and not again.trained
    assert activities.forecast(request(key="lab/other", **patient)).trained  # its own model
    assert activities.forecast(request(planning_quantile=0.9, **patient)).trained  # other settings: refit
    clock.now += 101
    refreshed = activities.forecast(request(planning_quantile=0.9, **patient))
    assert refreshed.trained and refreshed.provenance is not None
    assert refreshed.provenance["trained_at"] == clock.now


# ---- memory: bounded by design ----------------------------------------------------------------------------


def no_trees(*args: object, **kwargs: object) -> object:
    raise AssertionError("a tree ensemble was fitted")


@pytest.mark.parametrize("rate", [1.0, 0.0, 250.0])
def test_a_constant_series_is_forecast_as_its_level_without_fitting_trees(
    rate: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forecasting, "_new_model", no_trees)
    timestamps = np.arange(1200, dtype=float)
    values = np.full(1200, rate)
    forecaster = Forecaster(SETTINGS)

    provenance = forecaster.fit(timestamps, values)
    forecast = forecaster.predict(timestamps, values)

    assert forecast.peak_rps == pytest.approx(rate)
    assert forecast.mean == forecast.low == forecast.high == (pytest.approx(rate),) * SETTINGS.horizon_steps
    assert provenance.model.startswith("level, no trees: log1p(rate) spans 0 over 1200 points")
    assert provenance.confidence == 1.0 and provenance.holdout_coverage == 1.0
    assert provenance.seasons_s == [] and provenance.features == []


def test_a_near_constant_series_plans_on_its_level_plus_its_spread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forecasting, "_new_model", no_trees)
    timestamps = np.arange(1200, dtype=float)
    values = 100.0 + np.random.default_rng(0).uniform(-0.3, 0.3, 1200)  # within 0.6 %
    forecaster = Forecaster(SETTINGS)
    forecaster.fit(timestamps, values)
    forecast = forecaster.predict(timestamps, values)
    assert values.max() <= forecast.peak_rps <= 101.0
    assert forecast.low[0] <= values[-3:].mean() <= forecast.high[0]


def test_a_series_that_moves_more_than_1_percent_is_fitted_with_trees() -> None:
    timestamps = np.arange(1200, dtype=float)
    values = 100.0 + np.random.default_rng(0).uniform(-2, 2, 1200)
    provenance = Forecaster(SETTINGS).fit(timestamps, values)
    assert provenance.model.startswith("2 x ExtraTreesRegressor")


def reference_quantiles(models: forecasting._Models, nodes: np.ndarray, q: float) -> np.ndarray:
    """Meinshausen's quantile the direct way: gather every training peak in each row's leaves, weigh each by
    1 / its leaf's size, sort, walk the weights."""
    width = models.peak_values.size
    leaf_of, rank = np.divmod(models.leaf_keys, width)
    picked = []
    for row in range(nodes.shape[1]):
        values, weights = [], []
        for node in nodes[:, row]:
            members = models.peak_values[rank[leaf_of == node]]
            values += members.tolist()
            weights += [1.0 / members.size] * members.size
        order = np.argsort(values, kind="stable")
        cumulative = np.cumsum(np.asarray(weights)[order])
        at = np.searchsorted(cumulative, q * nodes.shape[0] - 1e-9, "left")
        picked.append(np.asarray(values)[order][at])
    return np.asarray(picked)


def test_the_planning_quantile_is_the_one_the_leaves_training_peaks_give() -> None:
    """Bisection over the peaks picks what gathering the leaves' members picks, on a series with many ties
    (big leaves) and on a noisy one."""
    rng = np.random.default_rng(5)
    spiky = np.where(rng.random(1200) < 0.03, 100.0, 0.0)
    _, noisy = daily(1200, noise=0.3)
    settings = ForecastSettings(**{**SETTINGS.__dict__, "n_estimators": 20})
    for values in (spiky, noisy):
        grid = regular(np.arange(1200.0), values, 1.0)
        features = forecasting._features(grid, [SEASON], settings)
        rows = np.arange(features.first_row, 1100)
        models = forecasting._Models.fit(features, np.log1p(grid.values), rows, settings)
        asked = np.arange(1100, 1190)
        _, planned = models.peaks(features, asked, settings)
        x = features.matrix[asked]
        trees = zip(models.peak.estimators_, models.node_offsets, strict=True)
        nodes = np.stack([tree.apply(x) + offset for tree, offset in trees])
        expected = np.expm1(reference_quantiles(models, nodes, 0.8) + features.level[asked])
        assert planned == pytest.approx(expected)
        assert np.unique(planned).size > 1


def test_regular_keeps_only_the_newest_max_points() -> None:
    grid = regular([0.0, 1e9, 1e9 + 1, 1e9 + 3], [1.0, 2.0, 3.0, 4.0], step_s=1, max_points=5)
    assert grid.timestamps.tolist() == [1e9, 1e9 + 1, 1e9 + 2, 1e9 + 3]  # not a billion-step grid
    assert grid.values.tolist() == [2.0, 3.0, 3.0, 4.0]


MEMORY_CHILD = """
import resource, sys
import numpy as np
from activities.forecasting import Forecaster, ForecastInput, settings_for
from dataclasses import replace
cases, trees = sys.argv[1].split(","), int(sys.argv[2])
points = 14 * 1440  # 14 days at the scaling workflow's 60 s step
timestamps = 1.7e9 + 60.0 * np.arange(points)
rng = np.random.default_rng(0)
series = {"constant": np.ones(points), "zero": np.zeros(points),
          "spiky": np.where(rng.random(points) < 0.005, 100.0, 0.0)}
settings = replace(settings_for(ForecastInput(key="k", query="q")), n_estimators=trees)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
for case in cases:
    forecaster = Forecaster(settings)
    forecaster.fit(timestamps, series[case])
    forecaster.predict(timestamps, series[case])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(peak, peak - before, settings.fit_bytes(points))
"""


@pytest.mark.parametrize(("cases", "trees"), [("constant,zero", 100), ("spiky", 15)])
def test_a_14_day_fit_stays_within_its_memory_estimate_and_under_1_gb(cases: str, trees: int) -> None:
    """A fresh process (ru_maxrss is a process's peak), under an address-space limit so that a regression
    fails here instead of taking the machine down. Before the bound, a constant 14-day series needed over
    20 GB (every sample in one leaf of every tree, gathered for every held-out row), and a mostly idle one
    with rare spikes 213 MB with 15 trees (its estimate now: 63 MB; it takes 18 MB)."""
    limit = 3 * 2**30

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, cases, str(trees)],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
        preexec_fn=cap,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    peak, grown, estimate = (int(word) for word in done.stdout.split())
    assert peak < 2**30
    assert grown <= estimate


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"lookback_s": 1e9}, "the forecaster reads at most 100,000"),  # 31 years of seconds
        (
            {"horizon_s": 20_000.0, "lookback_s": 40_000.0, "season_s": []},
            "more than the forecaster's 1,024 MiB",
        ),
    ],
)
def test_a_forecast_too_large_for_the_worker_is_refused_before_prometheus_is_asked(
    changes: dict[str, object], words: str
) -> None:
    activities, promql, _ = activity_with()
    with pytest.raises(ApplicationError, match=words) as raised:
        activities.forecast(request(**changes))
    assert raised.value.type == "ForecastTooLarge" and raised.value.non_retryable
    assert promql.calls == []


def test_the_worker_keeps_fitted_models_within_its_cache_budget() -> None:
    timestamps, values = daily(1200)
    activities = ForecastingActivities(FakePromQL(timestamps, values), Clock(1200.0), cache_bytes=1)  # type: ignore[arg-type]
    patient = {"max_age_s": 1000.0}
    assert activities.forecast(request(key="a", **patient)).trained
    assert activities.forecast(request(key="b", **patient)).trained  # a is dropped: over the budget
    assert not activities.forecast(request(key="b", **patient)).trained  # the newest is always kept
    assert activities.forecast(request(key="a", **patient)).trained


def test_every_horizon_the_api_accepts_fits_within_the_memory_limit() -> None:
    """The scaling target's ranges (policies/scaling.py) admit no forecast the worker would refuse as
    ForecastTooLarge: the longest horizon, the most seasons and the most history still fit."""
    step_s = 60.0
    request = ForecastInput(
        key="t",
        query="q",
        step_s=step_s,
        horizon_s=MAX_HORIZON_STEPS * step_s,
        lead_s=MAX_HORIZON_STEPS * step_s,
        lookback_s=90 * 86400.0,
        season_s=[86400.0 * (index + 1) for index in range(MAX_SEASONS)],
    )
    worst = settings_for(request)
    assert worst.horizon_steps == MAX_HORIZON_STEPS
    assert worst.too_large(10**9) is None
    assert replace(worst, horizon_steps=MAX_HORIZON_STEPS + 20).too_large(10**9) is not None


def test_every_lookback_the_api_accepts_is_one_the_worker_reads() -> None:
    """The most history a scaling target may ask for (lookback_s / step_s) is what the forecasting activity
    reads: it used to be 2,000,000 points in the API and 100,000 in the worker, so a target of 14 days at
    1 s (1,209,600 points, accepted) had every forecast refused as ForecastTooLarge and ran on the reactive
    need only."""
    settings = {
        "interval_s": 15.0, "startup_s": 10.0, "horizon_s": 72.0, "step_s": 1.0,
        "lookback_s": float(MAX_HISTORY_POINTS), "refresh_s": 3600.0, "max_age_s": 300.0,
        "planning_quantile": 0.8, "season_s": [3600.0],
    }  # fmt: skip
    assert settings_problem(settings) is None
    assert settings_problem({**settings, "lookback_s": MAX_HISTORY_POINTS + 1.0}) is not None
    activities, promql, _ = activity_with()
    activities.forecast(request(lookback_s=float(MAX_HISTORY_POINTS), horizon_s=72.0, season_s=[3600.0]))
    assert promql.calls, "the activity refused, as too large, a lookback the API accepts"
