"""Backtest of predictive scaling: a per-minute request trace replayed against the Kubernetes HPA and lcp's
predictive policy, each scaling a simulated Deployment whose new pods take a start-up time to be ready, and
the two compared at equal cost (replica-hours)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from activities.forecasting import Forecaster, ForecastSettings, NotEnoughHistory
from policies.errors import PermanentError
from policies.hpa import Hpa, HpaSpec
from policies.scaling import DecisionInput, Recommendation, ScalingBounds, decide, remember, replicas_for

MINUTE_S = 60
PEAK_REPLICAS = 40  # default capacity: the trace's busiest minute needs this many replicas at full capacity
HISTORY_DAYS_FOR_4_DAY_HOLDOUT = 7
# The goal: at lcp's replica-hours, at most this share of the HPA's under-provisioned minutes.
GOAL_AT_EQUAL_COST = 0.5
# The equal-cost search bisects the HPA's target utilisation in MATCH_TARGETS (its replica-hours fall as the
# target rises) until the replica-hours of the two targets around lcp's differ by at most MATCH_TOLERANCE of
# lcp's (or the targets by MATCH_MIN_WIDTH); each metric is then interpolated linearly in replica-hours
# between those two runs.
MATCH_TARGETS = (0.05, 1.0)
MATCH_TOLERANCE = 0.002
MATCH_MIN_WIDTH = 1e-4
MAX_CURVE_QUANTILES = 8
ORACLE_WHAT = (
    "lcp's policy fed the true peak over each decision's lead instead of a forecast (perfect foresight, "
    "same start-up, step limits and stabilisation): what is left of its under-provisioned minutes is the "
    "mechanics', the rest is the forecast's"
)


class BacktestError(PermanentError, ValueError):
    """The trace or the settings can't be backtested (one sentence, for the CLI)."""


@dataclass(frozen=True)
class BacktestSettings:
    """What is replayed and how both autoscalers are set up. Times in seconds."""

    capacity_rps: float | None = None  # per replica; None: the busiest minute needs PEAK_REPLICAS
    startup_s: float = 120.0  # a new pod is ready this long after it was created
    target_utilization: float = 0.8
    min_replicas: int = 1
    max_replicas: int = 100
    tolerance: float = 0.1
    scale_down_stabilization_s: float = 300.0
    interval_s: float = 15.0  # between the predictive policy's decisions: the HPA's sync period by default
    refresh_s: float = 6 * 3600.0  # retrain the forecaster this often (on everything seen so far)
    holdout_days: float | None = None  # evaluated days at the end; None: 4 when the trace has ≥ 7, else half
    planning_quantile: float = 0.8
    # lcp's cost curve runs through these planning quantiles and planning_quantile
    curve_quantiles: tuple[float, ...] = (0.5, 0.7, 0.9, 0.95)
    min_confidence: float = 0.5
    seed: int = 0
    tick_s: float = 15.0  # simulation step, and the HPA's sync period

    def problem(self) -> str | None:
        positive = {
            "startup": self.startup_s >= 0,
            "interval": self.interval_s > 0,
            "refresh": self.refresh_s > 0,
            "tick": self.tick_s > 0,
        }
        if bad := [name for name, ok in positive.items() if not ok]:
            return f"{', '.join(bad)} must be positive numbers of seconds"
        if self.capacity_rps is not None and not (math.isfinite(self.capacity_rps) and self.capacity_rps > 0):
            return f"capacity must be a positive number of requests/s, got {self.capacity_rps}"
        if MINUTE_S % self.tick_s or self.interval_s % self.tick_s:
            return (
                f"the tick ({self.tick_s:g} s) must divide a minute and the interval ({self.interval_s:g} s)"
            )
        if self.holdout_days is not None and not self.holdout_days > 0:
            return f"holdout days must be > 0, got {self.holdout_days}"
        if not all(0 < q < 1 for q in self.quantiles):
            return f"planning quantiles must be in (0, 1), got {', '.join(f'{q:g}' for q in self.quantiles)}"
        if len(self.quantiles) > MAX_CURVE_QUANTILES:
            return f"at most {MAX_CURVE_QUANTILES} planning quantiles, got {len(self.quantiles)}"
        return self.bounds(1.0).problem()

    @property
    def quantiles(self) -> tuple[float, ...]:
        """The planning quantiles of lcp's cost curve, ascending (planning_quantile among them)."""
        return tuple(sorted({self.planning_quantile, *self.curve_quantiles}))

    def bounds(self, capacity_rps: float) -> ScalingBounds:
        return ScalingBounds(
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            capacity_rps=capacity_rps,
            target_utilization=self.target_utilization,
            tolerance=self.tolerance,
            scale_down_stabilization_s=self.scale_down_stabilization_s,
            min_confidence=self.min_confidence,
        )

    def hpa_spec(self, capacity_rps: float) -> HpaSpec:
        return HpaSpec(
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            capacity_rps=capacity_rps,
            target_utilization=self.target_utilization,
            tolerance=self.tolerance,
            sync_period_s=self.tick_s,
            scale_down_stabilization_s=self.scale_down_stabilization_s,
        )

    @property
    def lead_s(self) -> float:
        """How far ahead a decision plans: pods it adds are ready after the start-up, and the next decision
        comes one interval later."""
        return self.startup_s + self.interval_s

    def forecast_settings(self) -> ForecastSettings:
        return ForecastSettings(
            step_s=MINUTE_S,
            lead_steps=max(1, math.ceil(self.lead_s / MINUTE_S)),
            planning_quantile=self.planning_quantile,
            seed=self.seed,
        )


class Deployment:
    """A simulated Deployment: pods with creation times; a pod is ready `startup_s` after it was created.
    Scaling down removes pods that are not ready first (the newest first) and takes effect at once."""

    def __init__(self, replicas: int, startup_s: float, now: float) -> None:
        self.startup_s = startup_s
        self.created: list[float] = [now - startup_s] * replicas  # sorted, oldest first

    @property
    def replicas(self) -> int:
        return len(self.created)

    def ready(self, now: float) -> int:
        return bisect.bisect_right(self.created, now - self.startup_s)

    def scale(self, replicas: int, now: float) -> None:
        if replicas > self.replicas:
            self.created.extend([now] * (replicas - self.replicas))
        else:
            del self.created[replicas:]


@dataclass
class _Run:
    """One autoscaler's record over the evaluation window, per tick."""

    ready: np.ndarray
    replicas: np.ndarray
    actions: int = 0


def evaluation_start(minutes: int, holdout_days: float | None) -> int:
    """The first evaluated minute: the last `holdout_days` days, or by default the last 4 days of a trace
    of 7 days or more and the second half of a shorter one."""
    if holdout_days is None:
        days = minutes / (24 * 60)
        held = 4 * 24 * 60 if days >= HISTORY_DAYS_FOR_4_DAY_HOLDOUT else minutes // 2
    else:
        held = round(holdout_days * 24 * 60)
    if not 1 <= held < minutes:
        raise BacktestError(f"the trace has {minutes} minutes: it can't evaluate the last {held} of them")
    return minutes - held


def default_capacity(rps: np.ndarray) -> float:
    peak = float(rps.max(initial=0.0))
    if peak <= 0:
        raise BacktestError("the trace has no requests")
    return peak / PEAK_REPLICAS


class NoEqualCost(ValueError):
    """No target utilisation in MATCH_TARGETS gives the HPA the replica-hours asked for."""


@dataclass(frozen=True)
class EqualCost:
    """The HPA's two target utilisations around a replica-hours goal, and how to interpolate between them."""

    goal: float  # replica-hours
    below: float  # a target whose replica-hours are ≥ the goal (more replicas)
    above: float  # a target whose replica-hours are ≤ the goal
    weight: float  # of `above`'s run at the goal: (hours(below) − goal) / (hours(below) − hours(above))
    runs: int  # HPA replays the search asked for

    @property
    def target(self) -> float:
        return self.below + self.weight * (self.above - self.below)


def match_replica_hours(replica_hours: Callable[[float], float], goal: float) -> EqualCost:
    """Bisection on the HPA's target utilisation for `goal` replica-hours (`replica_hours(target)` falls as
    the target rises), keeping a target on each side of the goal until their replica-hours differ by at most
    MATCH_TOLERANCE × goal or the targets by MATCH_MIN_WIDTH. Raises NoEqualCost when MATCH_TARGETS' ends
    don't bracket the goal."""
    low, high = MATCH_TARGETS
    hours_low, hours_high = replica_hours(low), replica_hours(high)
    runs = 2
    if not hours_high <= goal <= hours_low:
        raise NoEqualCost(
            f"the HPA's replica-hours run from {hours_high:,.1f} (target {high:g}) to {hours_low:,.1f} "
            f"(target {low:g}), not through {goal:,.1f}"
        )
    while hours_low - hours_high > MATCH_TOLERANCE * goal and high - low > MATCH_MIN_WIDTH:
        middle = (low + high) / 2
        hours = replica_hours(middle)
        runs += 1
        if hours >= goal:
            low, hours_low = middle, hours
        else:
            high, hours_high = middle, hours
    weight = (hours_low - goal) / (hours_low - hours_high) if hours_low > hours_high else 0.0
    return EqualCost(goal, low, high, weight, runs)


@dataclass
class _Replay:
    """What both autoscalers replay: the evaluated window's ticks and demand, and how to score a run."""

    rps: np.ndarray  # the whole trace, per minute
    first: int  # the first evaluated minute
    ticks: np.ndarray
    demand: np.ndarray  # per tick
    capacity: float
    settings: BacktestSettings

    @property
    def per_tick(self) -> int:
        return round(MINUTE_S / self.settings.tick_s)

    def initial(self, bounds: ScalingBounds) -> int:
        """What the window's first minute needs at the bounds' target."""
        needed = replicas_for(float(self.rps[self.first]), bounds)
        return min(max(needed, self.settings.min_replicas), self.settings.max_replicas)

    def metrics(self, run: _Run) -> dict[str, Any]:
        return _metrics(run, self.demand, self.capacity, self.settings.tick_s, self.per_tick)


def run_backtest(
    per_minute: Sequence[float],
    settings: BacktestSettings,
    *,
    trace: str = "",
    echo: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Replay `per_minute` (requests per minute) against both autoscalers; the metrics, each one's cost curve
    (under-provisioned minutes against replica-hours: the HPA's over target utilisations, lcp's over planning
    quantiles), their ratio at equal cost, the settings, the forecaster's provenance and the per-minute
    series, JSON-ready."""
    if problem := settings.problem():
        raise BacktestError(problem)
    rps = np.asarray(per_minute, dtype=float) / MINUTE_S
    if rps.size < 2 or not np.all(np.isfinite(rps)) or rps.min() < 0:
        raise BacktestError("the trace needs at least 2 minutes of finite request counts ≥ 0")
    capacity = settings.capacity_rps or default_capacity(rps)
    first = evaluation_start(rps.size, settings.holdout_days)
    ticks = np.arange(first * MINUTE_S, rps.size * MINUTE_S, settings.tick_s)
    replay = _Replay(rps, first, ticks, rps[(ticks // MINUTE_S).astype(int)], capacity, settings)
    echo(
        f"{rps.size} minutes, evaluating the last {rps.size - first} ({_span(rps.size - first)}) "
        f"at {capacity:.3g} requests/s per replica, start-up {settings.startup_s:g} s"
    )

    hpa_runs: dict[float, dict[str, Any]] = {}

    def hpa_at(target: float) -> dict[str, Any]:
        if target not in hpa_runs:
            hpa_runs[target] = replay.metrics(_replay_hpa(replay, target))
        return hpa_runs[target]

    hpa = _replay_hpa(replay, settings.target_utilization)
    hpa_runs[settings.target_utilization] = replay.metrics(hpa)
    peaks, models = _forecast_peaks(rps, first, settings, echo)
    curve = []
    for quantile in settings.quantiles:
        run, bases = _replay_predictive(replay, peaks[quantile])
        metrics = replay.metrics(run)
        point = {"planning_quantile": quantile} | metrics | _equal_cost(metrics, hpa_at)
        curve.append(point)
        if quantile == settings.planning_quantile:
            predictive, predictive_bases, headline = run, bases, point
    oracle_run, _ = _replay_predictive(replay, _oracle_peaks(rps, first, settings))
    oracle = replay.metrics(oracle_run)

    minutes = rps.size - first
    result: dict[str, Any] = {
        "trace": trace,
        "settings": asdict(settings) | {"capacity_rps": capacity, "lead_s": settings.lead_s},
        "simulation": (
            "SIMULATED: per-minute demand from the trace (constant within a minute), pods ready exactly "
            "start-up seconds after creation, a replica serves capacity requests/s"
        ),
        "window": {"first_minute": first, "minutes": minutes, "trace_minutes": int(rps.size)},
        "autoscalers": {},
        "forecaster": {"models": models, "decision_bases": predictive_bases},
        "series": {"minute": list(range(first, rps.size)), "demand_rps": _round(rps[first:])},
    }
    for name, run in (("hpa", hpa), ("predictive", predictive)):
        result["autoscalers"][name] = replay.metrics(run)
        ready_capacity = run.ready.reshape(minutes, replay.per_tick).mean(axis=1) * capacity
        result["series"][f"{name}_ready_capacity_rps"] = _round(ready_capacity)
        result["series"][f"{name}_replicas"] = run.replicas[:: replay.per_tick].tolist()
    result["ratios"] = _ratios(result["autoscalers"]["predictive"], result["autoscalers"]["hpa"])
    result["equal_cost"] = _headline(headline)
    result["curves"] = {
        "hpa": [
            {"target_utilization": round(target, 6)} | _curve_metrics(metrics)
            for target, metrics in sorted(hpa_runs.items())
        ],
        "predictive": curve,
    }
    result["oracle"] = {"what": ORACLE_WHAT} | _curve_metrics(oracle) | _equal_cost(oracle, hpa_at)
    result["goal"] = {
        "under_provisioned_minutes_at_equal_cost_at_most": GOAL_AT_EQUAL_COST,
        "met": _goal_met(result["equal_cost"]["ratio"]),
    }
    return result


def _equal_cost(predictive: dict[str, Any], hpa_at: Callable[[float], dict[str, Any]]) -> dict[str, Any]:
    """The HPA at `predictive`'s replica-hours, and the ratio of their under-provisioned minutes."""
    try:
        match = match_replica_hours(
            lambda target: hpa_at(target)["replica_hours"], predictive["replica_hours"]
        )
    except NoEqualCost as err:
        return {"hpa_at_equal_cost": None, "no_equal_cost": str(err), "ratio_at_equal_cost": None}
    below, above = hpa_at(match.below), hpa_at(match.above)
    hpa = {
        key: round(below[key] + match.weight * (above[key] - below[key]), 2)
        for key in ("under_provisioned_minutes", "served_late_requests", "replica_hours", "scaling_actions")
    }
    hpa_minutes = hpa["under_provisioned_minutes"]
    return {
        "hpa_at_equal_cost": {
            "target_utilization": round(match.target, 4),
            "between_targets": [round(match.below, 6), round(match.above, 6)],
            "search_runs": match.runs,
        }
        | hpa,
        "ratio_at_equal_cost": (
            round(predictive["under_provisioned_minutes"] / hpa_minutes, 4) if hpa_minutes > 0 else None
        ),
    }


def _headline(point: dict[str, Any]) -> dict[str, Any]:
    """lcp at its planning quantile against the HPA at the same replica-hours."""
    hpa = point["hpa_at_equal_cost"]
    return {
        "replica_hours": point["replica_hours"],
        "planning_quantile": point["planning_quantile"],
        "predictive_under_provisioned_minutes": point["under_provisioned_minutes"],
        "hpa_target_utilization": None if hpa is None else hpa["target_utilization"],
        "hpa_under_provisioned_minutes": None if hpa is None else hpa["under_provisioned_minutes"],
        "ratio": point["ratio_at_equal_cost"],
        "no_equal_cost": point.get("no_equal_cost"),
        "search": (
            f"bisection on the HPA's target utilisation in [{MATCH_TARGETS[0]:g}, {MATCH_TARGETS[1]:g}] "
            f"until the two targets around lcp's replica-hours differ by at most {100 * MATCH_TOLERANCE:g} % "
            f"of them in replica-hours (or by {MATCH_MIN_WIDTH:g} in target); the HPA's metrics are "
            "interpolated linearly in replica-hours between those two runs"
        ),
    }


def _curve_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("replica_hours", "under_provisioned_minutes", "served_late_requests", "scaling_actions")
    return {key: metrics[key] for key in keys}


def _replay_hpa(replay: _Replay, target_utilization: float) -> _Run:
    settings = replace(replay.settings, target_utilization=target_utilization)
    hpa = Hpa(settings.hpa_spec(replay.capacity))
    ticks = replay.ticks
    deployment = Deployment(
        replay.initial(settings.bounds(replay.capacity)), settings.startup_s, float(ticks[0])
    )
    run = _Run(np.zeros(ticks.size, dtype=int), np.zeros(ticks.size, dtype=int))
    for i, (now, rps) in enumerate(zip(ticks.tolist(), replay.demand.tolist(), strict=True)):
        desired = hpa.sync(now, deployment.replicas, deployment.ready(now), rps)
        if desired != deployment.replicas:
            deployment.scale(desired, now)
            run.actions += 1
        run.ready[i], run.replicas[i] = deployment.ready(now), deployment.replicas
    return run


def _decision_times(ticks: np.ndarray, settings: BacktestSettings) -> np.ndarray:
    every = round(settings.interval_s / settings.tick_s)
    return ticks[::every]


Peaks = dict[int, tuple[float, float]]  # (planned peak requests/s, confidence) for the decisions in a minute


def _forecast_peaks(
    rps: np.ndarray, first: int, settings: BacktestSettings, echo: Callable[[str], None]
) -> tuple[dict[float, Peaks], list[dict[str, Any]]]:
    """The forecasts for the decisions in each evaluated minute, at each planning quantile. The model is
    trained on the complete minutes before each refresh; each minute's forecast uses the complete minutes
    before it only (features never look past their own point, and the series is cut at the batch's newest)."""
    forecaster_settings = settings.forecast_settings()
    timestamps = np.arange(rps.size, dtype=float) * MINUTE_S
    refresh_minutes = max(1, round(settings.refresh_s / MINUTE_S))
    peaks: dict[float, Peaks] = {quantile: {} for quantile in settings.quantiles}
    models: list[dict[str, Any]] = []
    for known in range(first, rps.size, refresh_minutes):  # complete minutes at the refresh
        batch = list(range(known, min(known + refresh_minutes, rps.size)))
        forecaster = Forecaster(forecaster_settings, clock=_fixed(float(known * MINUTE_S)))
        try:
            provenance = forecaster.fit(timestamps[:known], rps[:known])
        except NotEnoughHistory as err:
            models.append({"at_s": float(known * MINUTE_S), "error": str(err)})
            echo(f"at {known / 60:.1f} h: no forecast ({err})")
            continue
        models.append({"at_s": float(known * MINUTE_S)} | provenance.to_dict())
        echo(
            f"at {known / 60:.1f} h: trained on {known / 1440:.1f} days, held-out lead-peak error "
            f"{100 * provenance.holdout_error:.1f}% (confidence {provenance.confidence:.2f})"
        )
        observed = [minute - 1 for minute in batch]  # the last complete minute before each one
        planned = forecaster.planned_peaks_at(
            timestamps[: batch[-1]], rps[: batch[-1]], observed, settings.quantiles
        )
        for quantile, row in zip(settings.quantiles, planned.tolist(), strict=True):
            peaks[quantile].update(
                (minute, (peak, provenance.confidence)) for minute, peak in zip(batch, row, strict=True)
            )
    return peaks, models


def _oracle_peaks(rps: np.ndarray, first: int, settings: BacktestSettings) -> Peaks:
    """The true peak over each minute's lead (the minutes a forecast made then plans for), at full
    confidence: a forecaster that knows the future."""
    lead = settings.forecast_settings().lead_steps
    return {minute: (float(rps[minute : minute + lead].max()), 1.0) for minute in range(first, rps.size)}


def _fixed(at: float) -> Callable[[], float]:
    """A clock that always says `at` (the model's "trained at" is the replay's time)."""
    return lambda: at


def _replay_predictive(replay: _Replay, peaks: Peaks) -> tuple[_Run, dict[str, int]]:
    """Decisions every interval: the demand now (what the HPA's metric reads at the same tick) and the
    forecast made from the complete minutes before this one."""
    settings, ticks = replay.settings, replay.ticks
    bounds = settings.bounds(replay.capacity)
    deployment = Deployment(replay.initial(bounds), settings.startup_s, float(ticks[0]))
    run = _Run(np.zeros(ticks.size, dtype=int), np.zeros(ticks.size, dtype=int))
    decision_times = set(_decision_times(ticks, settings).tolist())
    recent: tuple[Recommendation, ...] = ()
    bases: dict[str, int] = {}
    for i, now in enumerate(ticks.tolist()):
        if now in decision_times:
            minute = int(now // MINUTE_S)
            peak, confidence = peaks.get(minute, (None, 0.0))
            observed = float(replay.rps[minute])
            decision = decide(
                DecisionInput(now, deployment.replicas, observed, peak, confidence, recent), bounds
            )
            recent = remember(recent, decision, now, bounds)
            bases[decision.basis] = bases.get(decision.basis, 0) + 1
            if decision.target != deployment.replicas:
                deployment.scale(decision.target, now)
                run.actions += 1
        run.ready[i], run.replicas[i] = deployment.ready(now), deployment.replicas
    return run, bases


def _metrics(run: _Run, demand: np.ndarray, capacity: float, tick_s: float, per_tick: int) -> dict[str, Any]:
    ready_capacity = run.ready * capacity
    minutes = demand.size // per_tick
    minute_demand = demand.reshape(minutes, per_tick)[:, 0]
    minute_capacity = ready_capacity.reshape(minutes, per_tick).mean(axis=1)
    late = np.maximum(demand - ready_capacity, 0.0) * tick_s
    return {
        "under_provisioned_minutes": int(np.sum(minute_demand > minute_capacity * (1 + 1e-9))),
        "served_late_requests": round(float(late.sum()), 1),
        "served_late_share": round(float(late.sum() / max(demand.sum() * tick_s, 1e-9)), 6),
        "replica_hours": round(float(run.replicas.sum() * tick_s / 3600), 2),
        "scaling_actions": run.actions,
        "max_replicas": int(run.replicas.max()),
    }


def _ratios(predictive: dict[str, Any], hpa: dict[str, Any]) -> dict[str, float | None]:
    keys = ("under_provisioned_minutes", "served_late_requests", "replica_hours", "scaling_actions")
    return {k: round(predictive[k] / hpa[k], 4) if hpa[k] else None for k in keys}


def _span(minutes: int) -> str:
    return f"{minutes / 1440:.1f} days" if minutes >= 1440 else f"{minutes / 60:.1f} hours"


def _goal_met(ratio: float | None) -> bool | None:
    """The goal at equal cost; None when there is no ratio (no HPA run as costly, or one never
    under-provisioned: nothing to halve)."""
    return None if ratio is None else ratio <= GOAL_AT_EQUAL_COST


def _round(values: np.ndarray) -> list[float]:
    return [round(v, 4) for v in values.tolist()]


def plot(result: dict[str, Any], path: Path) -> None:
    """Demand against each autoscaler's ready capacity over the evaluated window (two stacked panels, the HPA
    at its configured target and lcp at its planning quantile), and beside them both cost curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = result["series"]
    hours = np.asarray(series["minute"], dtype=float) / 60
    demand = np.asarray(series["demand_rps"])
    figure = plt.figure(figsize=(16, 7.5), constrained_layout=True)
    grid = figure.add_gridspec(2, 2, width_ratios=(2.6, 1))
    top = figure.add_subplot(grid[0, 0])
    axes = [top, figure.add_subplot(grid[1, 0], sharex=top, sharey=top)]
    settings = result["settings"]
    names = {
        "hpa": f"Kubernetes HPA at target {settings['target_utilization']:g}",
        "predictive": f"lcp predictive at planning quantile {settings['planning_quantile']:g}",
    }
    for ax, (key, label) in zip(axes, names.items(), strict=True):
        capacity = np.asarray(series[f"{key}_ready_capacity_rps"])
        metrics = result["autoscalers"][key]
        ax.plot(hours, demand, color="black", linewidth=0.7, label="demand")
        ax.step(hours, capacity, where="post", color="tab:blue", linewidth=0.8, label="ready capacity")
        short = demand > capacity * (1 + 1e-9)
        ax.fill_between(
            hours, 0, demand, where=short, color="tab:red", alpha=0.5, step="post", label="under-provisioned"
        )
        ax.set_title(
            f"{label}: {metrics['under_provisioned_minutes']} under-provisioned minutes, "
            f"{metrics['replica_hours']:.0f} replica-hours",
            fontsize=10,
        )
        ax.set_ylabel("requests/s")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    axes[-1].set_xlabel("hours since the start of the trace")
    _plot_curves(figure.add_subplot(grid[:, 1]), result)
    figure.suptitle(
        f"SIMULATED backtest of {Path(result['trace']).name or 'a trace'}: "
        f"{settings['capacity_rps']:.3g} requests/s per replica, start-up {settings['startup_s']:g} s",
        fontsize=11,
    )
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_curves(ax: Any, result: dict[str, Any]) -> None:
    """Under-provisioned minutes against replica-hours: the HPA over target utilisations (those around lcp's
    costs), lcp over planning quantiles, and the headline's equal-cost pair."""
    lcp = result["curves"]["predictive"]
    lcp_hours = [point["replica_hours"] for point in lcp]
    oracle = result["oracle"]
    # and the HPA at its own target, and the oracle
    shown = [*lcp_hours, result["autoscalers"]["hpa"]["replica_hours"], oracle["replica_hours"]]
    low, high = 0.95 * min(shown), 1.05 * max(shown)
    hpa = sorted(
        (p for p in result["curves"]["hpa"] if low <= p["replica_hours"] <= high),
        key=lambda p: p["replica_hours"],
    )
    ax.plot(
        [p["replica_hours"] for p in hpa],
        [p["under_provisioned_minutes"] for p in hpa],
        ".-",
        color="tab:orange",
        label="Kubernetes HPA, by target utilisation",
    )
    ax.plot(
        lcp_hours,
        [p["under_provisioned_minutes"] for p in lcp],
        "o-",
        color="tab:blue",
        label="lcp, by planning quantile",
    )
    for point in lcp:
        ax.annotate(
            f"q {point['planning_quantile']:g}",
            (point["replica_hours"], point["under_provisioned_minutes"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    ax.plot(
        oracle["replica_hours"],
        oracle["under_provisioned_minutes"],
        "*",
        color="tab:green",
        markersize=12,
        label="lcp's policy with perfect foresight (oracle)",
    )
    headline = result["equal_cost"]
    if headline["ratio"] is not None:
        ax.plot(
            [headline["replica_hours"]] * 2,
            [headline["predictive_under_provisioned_minutes"], headline["hpa_under_provisioned_minutes"]],
            "k:",
            label=(
                f"equal cost: {headline['ratio']:.2f}× the HPA's minutes "
                f"(HPA at target {headline['hpa_target_utilization']:.3g})"
            ),
        )
    ax.set_xlabel("replica-hours")
    ax.set_ylabel("under-provisioned minutes")
    ax.set_ylim(bottom=0)
    ax.set_title("cost curves", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
