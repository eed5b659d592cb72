"""Backtest of predictive scaling: a per-minute request trace replayed against the Kubernetes HPA and lcp's
predictive policy, each scaling a simulated Deployment whose new pods take a start-up time to be ready."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
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
# The goal, as ratios predictive / HPA.
GOAL_UNDER_PROVISIONED = 0.5
GOAL_REPLICA_HOURS = 1.1


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
        if not 0 < self.planning_quantile < 1:
            return f"the planning quantile must be in (0, 1), got {self.planning_quantile}"
        return self.bounds(1.0).problem()

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


def run_backtest(
    per_minute: Sequence[float],
    settings: BacktestSettings,
    *,
    trace: str = "",
    echo: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Replay `per_minute` (requests per minute) against both autoscalers; the metrics, settings, the
    forecaster's provenance and the per-minute series, JSON-ready."""
    if problem := settings.problem():
        raise BacktestError(problem)
    rps = np.asarray(per_minute, dtype=float) / MINUTE_S
    if rps.size < 2 or not np.all(np.isfinite(rps)) or rps.min() < 0:
        raise BacktestError("the trace needs at least 2 minutes of finite request counts ≥ 0")
    capacity = settings.capacity_rps or default_capacity(rps)
    bounds = settings.bounds(capacity)
    first = evaluation_start(rps.size, settings.holdout_days)
    start_s, end_s = first * MINUTE_S, rps.size * MINUTE_S
    ticks = np.arange(start_s, end_s, settings.tick_s)
    demand = rps[(ticks // MINUTE_S).astype(int)]
    initial = min(max(replicas_for(rps[first], bounds), settings.min_replicas), settings.max_replicas)
    echo(
        f"{rps.size} minutes, evaluating the last {rps.size - first} ({_span(rps.size - first)}) "
        f"at {capacity:.3g} requests/s per replica, start-up {settings.startup_s:g} s"
    )

    hpa = _replay_hpa(ticks, demand, initial, settings, capacity)
    peaks, models = _forecast_peaks(rps, first, settings, echo)
    predictive, bases = _replay_predictive(ticks, rps, initial, settings, bounds, peaks)

    minutes = rps.size - first
    per_tick = round(MINUTE_S / settings.tick_s)
    result: dict[str, Any] = {
        "trace": trace,
        "settings": asdict(settings) | {"capacity_rps": capacity, "lead_s": settings.lead_s},
        "simulation": (
            "SIMULATED: per-minute demand from the trace (constant within a minute), pods ready exactly "
            "start-up seconds after creation, a replica serves capacity requests/s"
        ),
        "window": {"first_minute": first, "minutes": minutes, "trace_minutes": int(rps.size)},
        "autoscalers": {},
        "forecaster": {"models": models, "decision_bases": bases},
        "series": {"minute": list(range(first, rps.size)), "demand_rps": _round(rps[first:])},
    }
    for name, run in (("hpa", hpa), ("predictive", predictive)):
        result["autoscalers"][name] = _metrics(run, demand, capacity, settings.tick_s, per_tick)
        ready_capacity = run.ready.reshape(minutes, per_tick).mean(axis=1) * capacity
        result["series"][f"{name}_ready_capacity_rps"] = _round(ready_capacity)
        result["series"][f"{name}_replicas"] = run.replicas[::per_tick].tolist()
    result["ratios"] = _ratios(result["autoscalers"]["predictive"], result["autoscalers"]["hpa"])
    result["goal"] = {
        "under_provisioned_minutes_at_most": GOAL_UNDER_PROVISIONED,
        "replica_hours_at_most": GOAL_REPLICA_HOURS,
        "met": _goal_met(result["autoscalers"]),
    }
    return result


def _replay_hpa(
    ticks: np.ndarray, demand: np.ndarray, initial: int, settings: BacktestSettings, capacity: float
) -> _Run:
    hpa = Hpa(settings.hpa_spec(capacity))
    deployment = Deployment(initial, settings.startup_s, float(ticks[0]))
    run = _Run(np.zeros(ticks.size, dtype=int), np.zeros(ticks.size, dtype=int))
    for i, (now, rps) in enumerate(zip(ticks.tolist(), demand.tolist(), strict=True)):
        desired = hpa.sync(now, deployment.replicas, deployment.ready(now), rps)
        if desired != deployment.replicas:
            deployment.scale(desired, now)
            run.actions += 1
        run.ready[i], run.replicas[i] = deployment.ready(now), deployment.replicas
    return run


def _decision_times(ticks: np.ndarray, settings: BacktestSettings) -> np.ndarray:
    every = round(settings.interval_s / settings.tick_s)
    return ticks[::every]


def _forecast_peaks(
    rps: np.ndarray, first: int, settings: BacktestSettings, echo: Callable[[str], None]
) -> tuple[dict[int, tuple[float, float]], list[dict[str, Any]]]:
    """The forecast (peak, confidence) for the decisions in each evaluated minute, by minute. The model is
    trained on the complete minutes before each refresh; each minute's forecast uses the complete minutes
    before it only (features never look past their own point, and the series is cut at the batch's newest)."""
    forecaster_settings = settings.forecast_settings()
    timestamps = np.arange(rps.size, dtype=float) * MINUTE_S
    refresh_minutes = max(1, round(settings.refresh_s / MINUTE_S))
    peaks: dict[int, tuple[float, float]] = {}
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
        forecasts = forecaster.predict_at(timestamps[: batch[-1]], rps[: batch[-1]], observed)
        for minute, forecast in zip(batch, forecasts, strict=True):
            peaks[minute] = (forecast.peak_rps, forecast.confidence)
    return peaks, models


def _fixed(at: float) -> Callable[[], float]:
    """A clock that always says `at` (the model's "trained at" is the replay's time)."""
    return lambda: at


def _replay_predictive(
    ticks: np.ndarray,
    rps: np.ndarray,
    initial: int,
    settings: BacktestSettings,
    bounds: ScalingBounds,
    peaks: dict[int, tuple[float, float]],
) -> tuple[_Run, dict[str, int]]:
    """Decisions every interval: the demand now (what the HPA's metric reads at the same tick) and the
    forecast made from the complete minutes before this one."""
    deployment = Deployment(initial, settings.startup_s, float(ticks[0]))
    run = _Run(np.zeros(ticks.size, dtype=int), np.zeros(ticks.size, dtype=int))
    decision_times = set(_decision_times(ticks, settings).tolist())
    recent: tuple[Recommendation, ...] = ()
    bases: dict[str, int] = {}
    for i, now in enumerate(ticks.tolist()):
        if now in decision_times:
            minute = int(now // MINUTE_S)
            peak, confidence = peaks.get(minute, (None, 0.0))
            observed = float(rps[minute])
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


def _goal_met(autoscalers: dict[str, dict[str, Any]]) -> bool | None:
    """The issue's goal; None when the HPA was never under-provisioned (nothing to halve)."""
    hpa, predictive = autoscalers["hpa"], autoscalers["predictive"]
    if not hpa["under_provisioned_minutes"]:
        return None
    return bool(
        predictive["under_provisioned_minutes"] <= GOAL_UNDER_PROVISIONED * hpa["under_provisioned_minutes"]
        and predictive["replica_hours"] <= GOAL_REPLICA_HOURS * hpa["replica_hours"]
    )


def _round(values: np.ndarray) -> list[float]:
    return [round(v, 4) for v in values.tolist()]


def plot(result: dict[str, Any], path: Path) -> None:
    """Demand against each autoscaler's ready capacity over the evaluated window: two stacked panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = result["series"]
    hours = np.asarray(series["minute"], dtype=float) / 60
    demand = np.asarray(series["demand_rps"])
    figure, axes = plt.subplots(2, 1, figsize=(13, 7.5), sharex=True, sharey=True, constrained_layout=True)
    names = {"hpa": "Kubernetes HPA", "predictive": "lcp predictive"}
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
    settings = result["settings"]
    figure.suptitle(
        f"SIMULATED backtest of {Path(result['trace']).name or 'a trace'}: "
        f"{settings['capacity_rps']:.3g} requests/s per replica, start-up {settings['startup_s']:g} s",
        fontsize=11,
    )
    figure.savefig(path, dpi=110)
    plt.close(figure)
