"""Demand forecasting for predictive scaling: a scikit-learn tree ensemble over a request-rate series, and
the Temporal activity that reads the series from Prometheus and keeps one fitted model per service.

Memory is bounded by design, whatever the series (see `ForecastSettings.fit_bytes`):
- a (near-)constant series (`vector(1)`, an idle service at 0) gets a level model, no trees;
- at most `max_history_points` points are read and at most `max_train_samples` samples are learned from;
- a tree has at most 2 * samples / min_samples_leaf nodes, each keeping one value per horizon step;
- the planning quantile is found by bisection over the training peaks, `QUERY_CHUNK` rows at a time, with
  one count per tree and row: it never gathers a leaf's members, however many samples a leaf holds
  (a series with many ties, such as a mostly idle one, puts thousands in one leaf);
- a fit whose estimated working memory is above `FIT_MEMORY_LIMIT_BYTES` is refused before it starts.

The forecasting worker's ceiling, `WORKER_MEMORY_CEILING_BYTES`: the interpreter with its libraries, plus
`CONCURRENT_FORECASTS` fits at once, plus the fitted models it keeps (`MODEL_CACHE_BYTES`, least recently
used dropped first)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Protocol

import numpy as np
import sklearn
from sklearn.ensemble import ExtraTreesRegressor
from temporalio import activity

from activities.contracts import forecasting as contract
from activities.contracts.forecasting import (
    ForecastInput,
    ForecastResult,
)
from activities.prometheus import BadQuery, NoData, PrometheusUnavailable, PromQL, PromQLError, Series
from policies.errors import PermanentError, TransientError
from temporal.failures import application_error

Points = Sequence[float] | np.ndarray  # a series' timestamps or values
log = logging.getLogger(__name__)

MIB = 2**20
FIT_MEMORY_LIMIT_BYTES = 1024 * MIB  # the most one fit's estimated working memory may be
MODEL_CACHE_BYTES = 1024 * MIB  # fitted models a worker keeps, one per target (about 60 MiB at the defaults)
CONCURRENT_FORECASTS = 2  # forecasts one worker runs at once (workers/main.py)
INTERPRETER_BYTES = 256 * MIB  # Python, numpy, scikit-learn, temporalio: a worker before any fit
WORKER_MEMORY_CEILING_BYTES = (
    INTERPRETER_BYTES + CONCURRENT_FORECASTS * FIT_MEMORY_LIMIT_BYTES + MODEL_CACHE_BYTES
)  # 3.25 GiB
# A series whose log1p(rate) spans no more than this (1 %) is forecast as its current level, without trees:
# trees learn nothing from it, and a constant target put every sample in one leaf.
NEAR_CONSTANT_LOG_SPREAD = 0.01
QUERY_CHUNK = 512  # rows forecast at once


class NotEnoughHistory(TransientError, ValueError):
    """The series is too short to train and check a forecaster on."""


class ForecastTooLarge(PermanentError, ValueError):
    """A fit with these settings would need more memory than FIT_MEMORY_LIMIT_BYTES."""


@dataclass(frozen=True)
class ForecastSettings:
    """How the forecaster reads a series and what it plans on. Steps are points of the series."""

    step_s: float = 60.0
    horizon_steps: int = 30
    lead_steps: int = 3  # the need is planned on the peak over the next lead_steps
    season_s: tuple[float, ...] = (86400.0, 604800.0)  # one longer than half the history is ignored
    lags: tuple[int, ...] = (1, 2, 3, 5, 10, 20, 30, 60)
    windows: tuple[int, ...] = (5, 15, 60)  # rolling means, in steps
    level_steps: int = 3  # "the current level": the mean of the newest points
    n_estimators: int = 100
    min_samples_leaf: int = 5
    peak_min_samples_leaf: int = 5  # the lead-peak model's leaves hold the samples its quantiles come from
    max_train_samples: int = 8000  # older samples are thinned out (neighbouring steps say much the same)
    max_history_points: int = 100_000  # only the newest are read (69 days at 60 s, 14 days at 12 s)
    min_history_steps: int = 240
    holdout_steps: int = 1440
    planning_quantile: float = 0.8
    seed: int = 0

    def problem(self) -> str | None:
        """What is wrong with these settings, or None."""
        if not (math.isfinite(self.step_s) and self.step_s > 0):
            return f"step_s must be > 0, got {self.step_s}"
        if self.horizon_steps < 1 or not 1 <= self.lead_steps <= self.horizon_steps:
            return f"need 1 <= lead_steps ({self.lead_steps}) <= horizon_steps ({self.horizon_steps})"
        if any(not (math.isfinite(s) and s > 0) for s in self.season_s):
            return f"seasons must be > 0 seconds, got {list(self.season_s)}"
        if not self.lags or min(self.lags) < 1 or (self.windows and min(self.windows) < 2):
            return "lags must be >= 1 step and windows >= 2 steps"
        if self.level_steps < 1 or self.n_estimators < 2 or self.min_samples_leaf < 1:
            return "level_steps >= 1, n_estimators >= 2 and min_samples_leaf >= 1 are required"
        if self.max_train_samples < 100 or self.holdout_steps < 1:
            return "max_train_samples must be >= 100 and holdout_steps >= 1"
        if self.max_history_points < 2 * self.max_train_samples:
            return "max_history_points must be at least twice max_train_samples"
        if not 0 < self.planning_quantile < 1:
            return f"planning_quantile must be in (0, 1), got {self.planning_quantile}"
        return None

    @property
    def lookback_steps(self) -> int:
        """Points a sample needs before its own, not counting seasons."""
        return max(max(self.lags), max(self.windows, default=1), self.level_steps)

    def feature_count(self, seasons: int) -> int:
        return len(self.lags) + len(self.windows) + 1 + seasons * (len(_season_points(self)) + 4)

    def fit_bytes(self, points: int) -> int:
        """An upper bound of the memory a fit on `points` points and its forecasts use, beyond the
        interpreter's: it depends on the settings and the number of points only, never on the values.
        The terms: the grid and its features; the training samples and their targets (and scikit-learn's
        float32 and contiguous copies); two fitted models alive at once (a cached one is replaced only after
        its successor is fitted), each with up to 2 * samples / min_samples_leaf nodes per tree, a node
        keeping a value per horizon step, and the lead-peak model's sorted leaf keys; one chunk of
        per-tree forecasts."""
        n = min(max(points, 0), self.max_history_points)
        features = self.feature_count(len(self.season_s))
        samples = min(self.max_train_samples, n)
        trees, horizon = self.n_estimators, self.horizon_steps
        node = 64  # sklearn's Node struct
        series = n * (2 * features + 16) * 8
        training = samples * (features * 12 + horizon * 16)
        paths = trees * (2 * samples // self.min_samples_leaf + 1) * (horizon * 8 + node)
        peak = trees * ((2 * samples // self.peak_min_samples_leaf + 1) * (8 + node + 4) + samples * 8)
        chunk = min(QUERY_CHUNK, n) * trees * (horizon + 16) * 8
        return series + training + 2 * (paths + peak) + chunk

    def too_large(self, points: int) -> str | None:
        """Why a fit on `points` points would be refused (over FIT_MEMORY_LIMIT_BYTES), or None."""
        needed = self.fit_bytes(points)
        if needed <= FIT_MEMORY_LIMIT_BYTES:
            return None
        return (
            f"a fit with {self.n_estimators} trees, a {self.horizon_steps}-step horizon and "
            f"{min(points, self.max_history_points):,} points would need up to {needed / MIB:,.0f} MiB, more "
            f"than the forecaster's {FIT_MEMORY_LIMIT_BYTES / MIB:,.0f} MiB per fit: forecast fewer steps "
            "ahead (a longer step or a shorter horizon)"
        )


@dataclass(frozen=True)
class ModelProvenance:
    """Where a fitted model came from and how well it forecast data it had not seen (JSON-friendly)."""

    model: str
    features: list[str]
    sklearn_version: str
    seed: int
    trained_at: float
    train_start_ts: float
    train_end_ts: float
    samples: int
    seasons_s: list[float]  # the seasons used (those short enough for the history)
    step_s: float
    horizon_steps: int
    lead_steps: int
    planning_quantile: float
    holdout_steps: int
    # Of the lead-peak forecast (its ensemble mean) on the held-out newest points: sum |error| / sum actual.
    holdout_error: float
    holdout_naive_error: float  # the same for "no change" (the current level), for comparison
    holdout_coverage: float  # share of held-out lead peaks at or below the planned (quantile) peak
    confidence: float  # max(0, 1 - holdout_error)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Forecast:
    """Requests per second for each step after the newest point, and the peak to plan on."""

    start_ts: float  # the first step's time
    step_s: float
    mean: tuple[float, ...]
    low: tuple[float, ...]  # p10 of the ensemble's trees
    high: tuple[float, ...]  # p90
    peak_rps: float  # max over the lead of the planning quantile
    confidence: float  # in [0, 1], from the model's held-out error


@dataclass(frozen=True)
class _Grid:
    """A series on a regular grid, gaps and NaN points filled in."""

    timestamps: np.ndarray
    values: np.ndarray


def regular(timestamps: Points, values: Points, step_s: float, max_points: int | None = None) -> _Grid:
    """The points on a grid of `step_s` from the first timestamp. A missing or NaN point takes the value
    of the point before it (the first known value at the very start): a fill that never looks ahead, so
    a point's features use nothing later than it, here and in a replay alike. With `max_points`, only the
    newest that many steps are kept (the grid starts at the oldest point within them)."""
    ts = np.asarray(timestamps, dtype=float)
    ys = np.asarray(values, dtype=float)
    if ts.shape != ys.shape or ts.ndim != 1:
        raise ValueError("timestamps and values must be two lists of the same length")
    timed = np.isfinite(ts)
    ts, ys = ts[timed], ys[timed]
    if not np.isfinite(ys).any():
        raise NotEnoughHistory("the series has no numeric points")
    order = np.argsort(ts, kind="stable")
    ts, ys = ts[order], np.maximum(ys[order], 0.0)
    if max_points is not None:
        recent = ts > ts[-1] - max_points * step_s + step_s / 2
        ts, ys = ts[recent], ys[recent]
        if not np.isfinite(ys).any():
            raise NotEnoughHistory(f"the newest {max_points} steps have no numeric points")
    index = np.rint((ts - ts[0]) / step_s).astype(int)
    filled = np.full(index[-1] + 1, np.nan)
    filled[index] = ys  # two points in one slot: the later wins
    known = np.isfinite(filled)
    last_known = np.maximum.accumulate(np.where(known, np.arange(filled.size), -1))
    last_known[last_known < 0] = np.argmax(known)
    return _Grid(ts[0] + step_s * np.arange(filled.size), filled[last_known])


def _rolling_mean(ys: np.ndarray, window: int) -> np.ndarray:
    """Mean of ys[t-window+1 .. t] (fewer at the start): uses nothing after t."""
    sums = np.cumsum(np.r_[0.0, ys])
    ends = np.arange(1, ys.size + 1)
    starts = np.maximum(ends - window, 0)
    means: np.ndarray = (sums[ends] - sums[starts]) / (ends - starts)
    return means


def _shift(xs: np.ndarray, by: int) -> np.ndarray:
    """xs[t - by] at t (by > 0 looks back), edge-padded; by < 0 would look ahead and is never asked for."""
    assert by >= 0, "features must not look ahead"
    return np.r_[np.full(by, xs[0]), xs[: xs.size - by]] if by else xs


@dataclass
class _Features:
    """Features of every point of a grid (row t uses only points up to t), and the level they are
    relative to."""

    names: list[str]
    matrix: np.ndarray  # (points, features)
    level: np.ndarray  # log1p of the level at each point
    first_row: int  # the first point with its full lookback


def _season_points(settings: ForecastSettings) -> list[int]:
    points = {*range(1, settings.lead_steps + 1), settings.horizon_steps}
    points |= {round(p) for p in np.linspace(1, settings.horizon_steps, 6)}
    return sorted(points)


def _features(grid: _Grid, seasons: Sequence[int], settings: ForecastSettings) -> _Features:
    logs = np.log1p(grid.values)
    level = np.log1p(_rolling_mean(grid.values, settings.level_steps))
    names: list[str] = []
    columns: list[np.ndarray] = []

    def add(name: str, column: np.ndarray) -> None:
        names.append(name)
        columns.append(column)

    for lag in settings.lags:
        add(f"lag_{lag}", _shift(logs, lag) - level)
    for window in settings.windows:
        add(f"mean_{window}", np.log1p(_rolling_mean(grid.values, window)) - level)
    add("level_vs_mean_1440", level - np.log1p(_rolling_mean(grid.values, 1440)))
    for season in seasons:
        tag = f"season_{season * settings.step_s:g}s"
        phase = 2 * np.pi * (grid.timestamps % (season * settings.step_s)) / (season * settings.step_s)
        add(f"{tag}_sin", np.sin(phase))
        add(f"{tag}_cos", np.cos(phase))
        then_level = _shift(level, season)
        # What happened one season ago over the steps to come, relative to the level then and to now.
        for h in _season_points(settings):
            add(f"{tag}_change_{h}", _shift(logs, season - h) - then_level)
        ahead = np.max([_shift(logs, season - h) for h in range(1, settings.lead_steps + 1)], axis=0)
        add(f"{tag}_lead_peak", ahead - then_level)
        add(f"{tag}_level_vs_now", then_level - level)
    first_row = max([settings.lookback_steps, *seasons])
    return _Features(names, np.column_stack(columns), level, first_row)


def _targets(logs: np.ndarray, level: np.ndarray, rows: np.ndarray, horizon: int) -> np.ndarray:
    return np.column_stack([logs[rows + h] - level[rows] for h in range(1, horizon + 1)])


class Forecaster:
    """Forecasts a request-rate series `horizon_steps` ahead with extremely randomised trees.

    Trees cannot forecast above the values they were trained on, so every target and most features are
    relative to the current level (log1p of rates, minus log1p of the level), and a forecast is that level
    times the predicted change. Features: recent lags and rolling means, each usable season's phase (a
    week's gives the day of the week), and what happened one season ago over the steps ahead.

    One ensemble forecasts every step of the horizon (mean, and p10/p90 of its trees). A second one learns
    the peak over the lead directly, and the peak planned on is a quantile of the training peaks that share
    its leaves (Meinshausen's quantile regression forest): headroom where the past says jumps come, none
    where it says the rate holds. The spread of trees' means, the alternative, was too narrow. Deterministic
    for a given seed.
    """

    def __init__(
        self, settings: ForecastSettings | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings or ForecastSettings()
        self._clock = clock
        if problem := self.settings.problem():
            raise ValueError(problem)
        self.provenance: ModelProvenance | None = None
        self._models: _Model | None = None
        self._seasons: list[int] = []

    def minimum_history_steps(self) -> int:
        """Points needed at least before fit: the lookback, a horizon to learn from, and a holdout."""
        s = self.settings
        return max(s.min_history_steps, s.lookback_steps + s.horizon_steps + s.lead_steps + 70)

    def usable_seasons(self, points: int) -> list[int]:
        """Seasons (in steps) no longer than half the history and no shorter than the horizon."""
        steps = sorted({round(s / self.settings.step_s) for s in self.settings.season_s})
        return [s for s in steps if self.settings.horizon_steps <= s <= points // 2]

    def fit(self, timestamps: Points, values: Points) -> ModelProvenance:
        """Check the model on the newest points (fit without them, forecast them: the confidence is
        1 - that error), then fit on all. A (near-)constant series gets a level model and no trees."""
        s = self.settings
        grid = regular(timestamps, values, s.step_s, s.max_history_points)
        n = grid.values.size
        if n < self.minimum_history_steps():
            raise NotEnoughHistory(
                f"forecasting needs at least {self.minimum_history_steps()} points at {s.step_s:g} s "
                f"({self.minimum_history_steps() * s.step_s / 3600:.1f} h), got {n}"
            )
        if problem := s.too_large(n):
            raise ForecastTooLarge(problem)
        logs = np.log1p(grid.values)
        spread = float(logs.max() - logs.min())
        constant = spread <= NEAR_CONSTANT_LOG_SPREAD  # trees would learn nothing, at a cost
        seasons = [] if constant else self.usable_seasons(n)
        features = _features(grid, seasons, s)
        holdout = min(s.holdout_steps, max(s.lead_steps + 10, n // 4))
        split = n - holdout
        rows = np.arange(max(split, features.first_row), n - s.lead_steps)
        if constant:
            check: _Model = _Level(spread)
            all_rows = np.arange(n)
        else:
            train_rows = self._train_rows(features.first_row, split, s)
            if train_rows.size < 50:
                raise NotEnoughHistory(
                    f"{n} points leave {train_rows.size} samples to learn from before the {holdout}-point "
                    f"holdout (seasons of {[x * s.step_s for x in seasons]} s need a season before the first)"
                )
            check = _Models.fit(features, logs, train_rows, s)
            all_rows = self._train_rows(features.first_row, n, s)
        mean_peak, planned = check.peaks(features, rows, s)
        actual = np.max([grid.values[rows + h] for h in range(1, s.lead_steps + 1)], axis=0)
        naive = np.expm1(features.level[rows])
        # Errors weighed by demand (WAPE), not averaged per point: an idle minute's relative error is
        # unbounded and would swamp the rest.
        total = max(float(actual.sum()), 1e-9)
        error = float(np.abs(mean_peak - actual).sum()) / total
        naive_error = float(np.abs(naive - actual).sum()) / total
        coverage = float(np.mean(actual <= planned + 1e-9))

        if isinstance(check, _Level):
            self._models, self._seasons = check, seasons
            model = (
                f"level, no trees: log1p(rate) spans {spread:.3g} over {n} points (at most "
                f"{NEAR_CONSTANT_LOG_SPREAD:g} is near-constant), so every step ahead is the current level "
                f"(the {s.level_steps}-step mean), low and high that level within the span, and the "
                "planned peak its high"
            )
        else:
            del check  # its memory goes back before the final model is fitted
            self._models, self._seasons = _Models.fit(features, logs, all_rows, s), seasons
            model = (
                f"2 x ExtraTreesRegressor(n_estimators={s.n_estimators}, max_features=0.5) on log1p(rate) "
                f"minus log1p(the {s.level_steps}-step mean): horizons 1..{s.horizon_steps} "
                f"(min_samples_leaf={s.min_samples_leaf}) and the peak over 1..{s.lead_steps}, its quantile "
                f"from the training peaks sharing its leaves (quantile regression forest, "
                f"min_samples_leaf={s.peak_min_samples_leaf})"
            )
        self.provenance = ModelProvenance(
            model=model,
            features=[] if constant else features.names,
            sklearn_version=sklearn.__version__,
            seed=s.seed,
            trained_at=self._clock(),
            train_start_ts=float(grid.timestamps[0]),
            train_end_ts=float(grid.timestamps[-1]),
            samples=int(all_rows.size),
            seasons_s=[x * s.step_s for x in seasons],
            step_s=s.step_s,
            horizon_steps=s.horizon_steps,
            lead_steps=s.lead_steps,
            planning_quantile=s.planning_quantile,
            holdout_steps=int(rows.size),
            holdout_error=round(error, 4),
            holdout_naive_error=round(naive_error, 4),
            holdout_coverage=round(coverage, 4),
            confidence=round(max(0.0, 1.0 - error), 4),
        )
        return self.provenance

    @property
    def model_bytes(self) -> int:
        """Memory the fitted model holds (0 before a fit)."""
        return self._models.nbytes if self._models is not None else 0

    def predict(self, timestamps: Points, values: Points) -> Forecast:
        """The forecast after the newest point."""
        grid = regular(timestamps, values, self.settings.step_s, self.settings.max_history_points)
        return self._forecasts(grid, np.array([grid.values.size - 1]))[0]

    def planned_peaks_at(
        self, timestamps: Points, values: Points, at: Sequence[int], quantiles: Sequence[float]
    ) -> np.ndarray:
        """The lead peak (requests/s) planned right after each point index in `at`, each from the points up
        to it only, at each planning quantile in `quantiles`: an array (quantiles, points). What a replay
        that compares quantiles needs: many decisions from one fit, without the paths. The series must be
        regular already."""
        if bad := [q for q in quantiles if not 0 < q < 1]:
            raise ValueError(f"planning quantiles must be in (0, 1), got {bad}")
        grid = regular(timestamps, values, self.settings.step_s, self.settings.max_history_points)
        if grid.values.size != len(values):
            raise ValueError(
                "planned_peaks_at needs a regular series without gaps, of at most max_history_points (its "
                "indexes must hold)"
            )
        models, features = self._fitted_features(grid)
        rows = np.asarray(at, dtype=int)
        planned = np.empty((len(quantiles), rows.size))
        for i, quantile in enumerate(quantiles):
            _, peaks = models.peaks(features, rows, replace(self.settings, planning_quantile=quantile))
            planned[i] = np.maximum(peaks, 0.0)
        return planned

    def _fitted_features(self, grid: _Grid) -> tuple[_Model, _Features]:
        if self._models is None or self.provenance is None:
            raise RuntimeError("fit the forecaster before asking it for a forecast")
        s = self.settings
        if grid.values.size < s.lookback_steps + 1 + max(self._seasons, default=0):
            raise NotEnoughHistory(f"a forecast needs a season and {s.lookback_steps} points of history")
        return self._models, _features(grid, self._seasons, s)

    def _forecasts(self, grid: _Grid, rows: np.ndarray) -> list[Forecast]:
        models, features = self._fitted_features(grid)
        assert self.provenance is not None  # fitted
        s, confidence = self.settings, self.provenance.confidence
        forecasts = []
        for start in range(0, rows.size, QUERY_CHUNK):
            chunk = rows[start : start + QUERY_CHUNK]
            mean, low, high = models.paths(features, chunk, s)
            _, planned = models.peaks(features, chunk, s)
            forecasts += [
                Forecast(
                    start_ts=float(grid.timestamps[row] + s.step_s),
                    step_s=s.step_s,
                    mean=tuple(np.maximum(mean[i], 0.0).round(6).tolist()),
                    low=tuple(np.maximum(low[i], 0.0).round(6).tolist()),
                    high=tuple(np.maximum(high[i], 0.0).round(6).tolist()),
                    peak_rps=max(0.0, float(planned[i])),
                    confidence=confidence,
                )
                for i, row in enumerate(chunk)
            ]
        return forecasts

    @staticmethod
    def _train_rows(first: int, end: int, s: ForecastSettings) -> np.ndarray:
        """Sample points before `end` whose horizon also lies before it, evenly thinned to the cap
        (the newest kept)."""
        rows = np.arange(first, end - s.horizon_steps)
        if rows.size <= s.max_train_samples:
            return rows
        stride = math.ceil(rows.size / s.max_train_samples)
        return rows[::-1][::stride][::-1]


def _new_model(s: ForecastSettings, min_samples_leaf: int) -> ExtraTreesRegressor:
    return ExtraTreesRegressor(
        n_estimators=s.n_estimators,
        min_samples_leaf=min_samples_leaf,
        max_features=0.5,
        random_state=s.seed,
        n_jobs=1,
    )


class _Model(Protocol):
    """What a fitted model answers, for rows of a feature matrix (at most QUERY_CHUNK at once)."""

    @property
    def nbytes(self) -> int:
        """Memory the model holds."""
        ...

    def paths(
        self, features: _Features, rows: np.ndarray, s: ForecastSettings
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, low (p10) and high (p90) requests/s at each step of the horizon: (rows, horizon) each."""
        ...

    def peaks(
        self, features: _Features, rows: np.ndarray, s: ForecastSettings
    ) -> tuple[np.ndarray, np.ndarray]:
        """The mean and the planning quantile of the lead peak (requests/s) after each row."""
        ...


@dataclass
class _Level:
    """A (near-)constant series' model: no change from the current level, within the history's span."""

    spread: float  # max - min of log1p(rate) over the history
    nbytes = 0

    def paths(
        self, features: _Features, rows: np.ndarray, s: ForecastSettings
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        level = np.repeat(features.level[rows, None], s.horizon_steps, axis=1)
        return np.expm1(level), np.expm1(np.maximum(level - self.spread, 0.0)), np.expm1(level + self.spread)

    def peaks(
        self, features: _Features, rows: np.ndarray, s: ForecastSettings
    ) -> tuple[np.ndarray, np.ndarray]:
        level = features.level[rows]
        return np.expm1(level), np.expm1(level + self.spread)


@dataclass
class _Models:
    """Two ensembles on the same features: the paths over the horizon (mean, spread), and the peak over
    the lead, whose quantile is planned on.

    The quantile needs, for a row, the training peaks in the leaves the row falls in (each leaf weighs one
    tree's share). Gathering them costs rows x leaf population x trees, without a bound: a series with many
    ties puts most samples in one leaf. So the leaves are kept as sorted keys (node, rank of the peak among
    the training peaks), and the quantile is found by bisection over those ranks: at each step, one
    binary search per tree and row counts the leaf's peaks at or below the candidate. Memory: one key per
    training sample and tree, and rows x trees per step. The answer is the same as gathering's."""

    paths_model: ExtraTreesRegressor
    peak: ExtraTreesRegressor
    peak_values: np.ndarray  # the training peaks' distinct values, ascending
    leaf_keys: np.ndarray  # sorted: (tree's node offset + node) * peak_values.size + rank, a sample per tree
    node_offsets: np.ndarray  # each tree's first node in the keys' numbering
    leaf_sizes: np.ndarray  # training samples per node (numbered as in the keys)

    @classmethod
    def fit(cls, features: _Features, logs: np.ndarray, rows: np.ndarray, s: ForecastSettings) -> _Models:
        x = features.matrix[rows]
        targets = _targets(logs, features.level, rows, s.horizon_steps)
        paths = _new_model(s, s.min_samples_leaf).fit(x, targets)
        peak_target = targets[:, : s.lead_steps].max(axis=1)
        del targets
        peak = _new_model(s, s.peak_min_samples_leaf).fit(x, peak_target)
        values, ranks = np.unique(peak_target, return_inverse=True)
        counts = [tree.tree_.node_count for tree in peak.estimators_]
        offsets = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
        leaves = zip(peak.estimators_, offsets, strict=True)
        nodes = np.concatenate([tree.apply(x) + offset for tree, offset in leaves])
        keys = np.sort(nodes.astype(np.int64) * values.size + np.tile(ranks.ravel(), len(counts)))
        sizes = np.bincount(nodes, minlength=int(sum(counts))).astype(np.int32)
        return cls(paths, peak, values, keys, offsets, sizes)

    @property
    def nbytes(self) -> int:
        trees = [*self.paths_model.estimators_, *self.peak.estimators_]
        held = (self.peak_values, self.leaf_keys, self.node_offsets, self.leaf_sizes)
        nodes = sum(tree.tree_.value.nbytes + tree.tree_.node_count * 64 for tree in trees)
        return int(nodes + sum(array.nbytes for array in held))

    def paths(
        self, features: _Features, rows: np.ndarray, s: ForecastSettings
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        matrix = features.matrix[rows]
        per_tree = np.stack(
            [tree.predict(matrix).reshape(rows.size, -1) for tree in self.paths_model.estimators_]
        )
        per_tree += features.level[rows, None]
        mean = np.expm1(per_tree.mean(axis=0))
        low, high = (np.expm1(np.quantile(per_tree, q, axis=0)) for q in (0.1, 0.9))
        return mean, low, high

    def peaks(
        self, features: _Features, rows: np.ndarray, s: ForecastSettings
    ) -> tuple[np.ndarray, np.ndarray]:
        mean, planned = np.empty(rows.size), np.empty(rows.size)
        for start in range(0, rows.size, QUERY_CHUNK):
            chunk = slice(start, start + QUERY_CHUNK)
            mean[chunk], planned[chunk] = self._peaks(features, rows[chunk], s)
        return mean, planned

    def _peaks(
        self, features: _Features, rows: np.ndarray, s: ForecastSettings
    ) -> tuple[np.ndarray, np.ndarray]:
        x = features.matrix[rows]
        level = features.level[rows]
        trees = self.peak.estimators_
        mean = np.expm1(np.mean([tree.predict(x) for tree in trees], axis=0) + level)
        width = self.peak_values.size
        nodes = np.stack([t.apply(x) + offset for t, offset in zip(trees, self.node_offsets, strict=True)])
        firsts = nodes.astype(np.int64) * width  # (trees, rows): each leaf's keys start here
        starts = np.searchsorted(self.leaf_keys, firsts, "left")
        sizes = self.leaf_sizes[nodes]
        # The smallest training peak whose weighted share at or below it (each tree's leaf weighs 1) reaches
        # the quantile: the same pick as sorting the leaves' peaks together and walking their weights.
        wanted = s.planning_quantile * len(trees) - 1e-9
        low, high = np.zeros(rows.size, dtype=np.int64), np.full(rows.size, width - 1, dtype=np.int64)
        while (low < high).any():
            middle = (low + high) // 2
            at_or_below = np.searchsorted(self.leaf_keys, firsts + middle, "right") - starts
            enough = (at_or_below / sizes).sum(axis=0) >= wanted
            high = np.where(enough, middle, high)
            low = np.where(enough, low, middle + 1)
        return mean, np.expm1(self.peak_values[low] + level)


# ---- the Temporal activity ---------------------------------------------------------------------------------

MAX_POINTS_RETURNED = 60  # forecast points in a result (longer horizons are averaged into blocks)


@dataclass
class _CachedModel:
    settings: ForecastSettings
    forecaster: Forecaster
    trained_at: float


def settings_for(request: ForecastInput) -> ForecastSettings:
    """The forecaster's settings for an activity request. With a season of fewer steps than the longest lag
    (a compressed day, as in the lab's tests), lags and rolling means stop at the season, and six seasons
    of history are enough to start forecasting."""
    horizon = max(1, math.ceil(request.horizon_s / request.step_s - 1e-9))
    lead = min(horizon, max(1, math.ceil(request.lead_s / request.step_s - 1e-9)))
    settings = ForecastSettings(
        step_s=request.step_s,
        horizon_steps=horizon,
        lead_steps=lead,
        season_s=tuple(request.season_s),
        planning_quantile=request.planning_quantile,
    )
    seasons = [round(season / request.step_s) for season in request.season_s]
    shortest = min((season for season in seasons if season >= horizon), default=settings.lookback_steps)
    if shortest >= settings.lookback_steps:
        return settings
    return replace(
        settings,
        lags=tuple(lag for lag in settings.lags if lag <= shortest),
        windows=tuple(window for window in settings.windows if window <= shortest),
        min_history_steps=6 * shortest,
    )


def _blocks(values: tuple[float, ...], size: int, reduce: Callable[[list[float]], float]) -> list[float]:
    return [round(reduce(list(values[i : i + size])), 6) for i in range(0, len(values), size)]


class ForecastingActivities(contract.ForecastingActivities):
    """Forecasts from Prometheus history, one fitted model per key kept in memory (per worker), up to
    `cache_bytes` of them (the least recently used are dropped, and refitted when next asked for)."""

    def __init__(
        self, promql: PromQL, clock: Callable[[], float] = time.time, cache_bytes: int = MODEL_CACHE_BYTES
    ) -> None:
        self._promql = promql
        self._clock = clock
        self._cache_bytes = cache_bytes
        self._models: OrderedDict[str, _CachedModel] = OrderedDict()
        self._models_lock = threading.Lock()
        # Activities run on a thread pool: two calls for one key must not both fit; other keys go on.
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    @activity.defn(name="forecasting.forecast")
    def forecast(self, request: ForecastInput) -> ForecastResult:
        """The peak demand to plan on over the lead time, and the forecast over the horizon. Data problems
        come back as a status (the workflow then takes no forecast-driven action); they never raise.
        A forecast too large for the worker's memory is refused before anything is read: a non-retryable
        ApplicationError of type ForecastTooLarge (its retry would be refused the same)."""
        times = {"step_s": request.step_s, "lookback_s": request.lookback_s, "horizon_s": request.horizon_s}
        times |= {"lead_s": request.lead_s} | {f"season_s[{i}]": x for i, x in enumerate(request.season_s)}
        if bad := [name for name, value in times.items() if not (math.isfinite(value) and value > 0)]:
            return ForecastResult("bad-query", f"{', '.join(bad)} must be a number of seconds > 0")
        points = request.lookback_s / request.step_s
        limit = ForecastSettings.max_history_points
        if points > limit:
            raise application_error(
                ForecastTooLarge(
                    f"a lookback of {request.lookback_s:g} s at {request.step_s:g} s steps is {points:,.0f} "
                    f"points; the forecaster reads at most {limit:,}: a longer step or a shorter lookback"
                )
            )
        settings = settings_for(request)
        if problem := settings.problem():
            return ForecastResult("bad-query", f"the forecast settings are invalid: {problem}")
        if problem := settings.too_large(math.floor(points) + 1):
            raise application_error(ForecastTooLarge(problem))
        now = self._clock()
        try:
            found = self._promql.range(request.query, now - request.lookback_s, now, request.step_s)
        except PrometheusUnavailable as err:
            return ForecastResult("prometheus-down", f"Prometheus is down: {err}")
        except NoData as err:
            return ForecastResult("no-data", f"no data: {err}")
        except BadQuery as err:
            return ForecastResult("bad-query", f"bad query: {err}")
        except PromQLError as err:
            return ForecastResult("bad-query", f"the query gave no usable answer: {err}")
        if len(found) != 1:
            labels = [s.labels for s in found[:3]]
            return ForecastResult(
                "bad-query",
                f"{request.query!r} answered {len(found)} series, expected one (sum them?): {labels}",
            )
        series: Series = found[0]
        if not series.timestamps:
            return ForecastResult("no-data", f"{request.query!r} answered a series without points")
        newest_at, newest = series.timestamps[-1], series.values[-1]
        if now - newest_at > request.max_age_s:
            return ForecastResult(
                "stale",
                f"the newest point of {request.query!r} is {now - newest_at:.0f} s old "
                f"(more than {request.max_age_s:g} s)",
                observed_at=newest_at,
            )
        if not math.isfinite(newest):
            return ForecastResult(
                "nan",
                f"the newest point of {request.query!r} is {newest} (e.g. 0/0 with no traffic)",
                observed_at=newest_at,
            )
        with self._key_lock(request.key):
            try:
                cached, trained = self._model(request, settings, series, now)
                forecast = cached.forecaster.predict(series.timestamps, series.values)
            except NotEnoughHistory as err:
                return ForecastResult(
                    "short-history", f"no forecast yet: {err}", observed_rps=newest, observed_at=newest_at
                )
            except ForecastTooLarge as err:
                raise application_error(err) from None
        result = self._result(forecast, cached, trained)
        result.observed_rps, result.observed_at = newest, newest_at
        return result

    def _key_lock(self, key: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(key, threading.Lock())

    def _model(
        self, request: ForecastInput, settings: ForecastSettings, series: Series, now: float
    ) -> tuple[_CachedModel, bool]:
        with self._models_lock:
            cached = self._models.get(request.key)
            if cached and cached.settings == settings and now - cached.trained_at < request.refresh_s:
                self._models.move_to_end(request.key)
                return cached, False
        forecaster = Forecaster(settings, clock=self._clock)
        forecaster.fit(series.timestamps, series.values)
        cached = _CachedModel(settings, forecaster, now)
        with self._models_lock:
            self._models[request.key] = cached
            self._models.move_to_end(request.key)
            held = sum(model.forecaster.model_bytes for model in self._models.values())
            while held > self._cache_bytes and len(self._models) > 1:
                key, dropped = self._models.popitem(last=False)
                held -= dropped.forecaster.model_bytes
                log.warning(
                    "forecasting: dropped the model of %s to keep fitted models within %d MiB (it is "
                    "refitted when next asked for)",
                    key,
                    self._cache_bytes // MIB,
                )
        return cached, True

    @staticmethod
    def _result(forecast: Forecast, cached: _CachedModel, trained: bool) -> ForecastResult:
        size = math.ceil(len(forecast.mean) / MAX_POINTS_RETURNED)
        lead_s = cached.settings.lead_steps * cached.settings.step_s
        provenance = cached.forecaster.provenance
        return ForecastResult(
            "ok",
            f"planned peak {forecast.peak_rps:.2f} requests/s over the next {lead_s:g} s "
            f"(confidence {forecast.confidence:.2f})",
            peak_rps=forecast.peak_rps,
            confidence=forecast.confidence,
            forecast=_blocks(forecast.mean, size, lambda xs: sum(xs) / len(xs)),
            low=_blocks(forecast.low, size, min),
            high=_blocks(forecast.high, size, max),
            step_s=forecast.step_s * size,
            provenance=provenance.to_dict() if provenance else None,
            trained=trained,
        )
