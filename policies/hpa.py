"""The Kubernetes Horizontal Pod Autoscaler (autoscaling/v2, default behaviour) reproduced for backtests."""

import math
from dataclasses import dataclass

from policies.scaling import Recommendation, ScalingBounds, is_finite_number, is_whole, robust_ceil

# Kubernetes' defaults that HpaSpec does not expose (autoscaling/v2 HPAScalingRules defaults):
# scale-up has no stabilisation window; scale-down may remove 100% of the pods per 15 s, so only the
# stabilisation window limits it.
_SCALE_UP_STABILIZATION_S = 0.0
_SCALE_DOWN_PERCENT = 100.0
_SCALE_DOWN_PERIOD_S = 15.0
# Relative slack on the tolerance band, against float noise (the controller works on milli-units).
_EPSILON = 1e-9


@dataclass(frozen=True)
class HpaSpec:
    """One HPA: a Pods metric (requests/s per pod, target = capacity × target_utilization) and the
    autoscaling/v2 default behaviour."""

    min_replicas: int = 1
    max_replicas: int = 50
    capacity_rps: float = 10.0
    target_utilization: float = 0.8
    tolerance: float = 0.1  # --horizontal-pod-autoscaler-tolerance
    sync_period_s: float = 15.0  # --horizontal-pod-autoscaler-sync-period: how often a backtest calls sync
    scale_down_stabilization_s: float = 300.0
    scale_up_pods: int = 4  # scale-up policies: max(4 pods, 100%) per 15 s (selectPolicy: Max)
    scale_up_percent: float = 100.0
    scale_up_period_s: float = 15.0
    # scale-down policy: Kubernetes' default (100% per 15 s), i.e. only the stabilisation window limits it

    def problem(self) -> str | None:
        """Why this spec can't be used, as one sentence naming the field; None when it is fine."""
        shared = ScalingBounds(
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            capacity_rps=self.capacity_rps,
            target_utilization=self.target_utilization,
            tolerance=self.tolerance,
            scale_down_stabilization_s=self.scale_down_stabilization_s,
        )
        if problem := shared.problem():
            return problem
        for name in ("sync_period_s", "scale_up_period_s"):
            value = getattr(self, name)
            if not (is_finite_number(value) and value > 0):
                return f"{name} must be a positive number of seconds, got {value!r}"
        if not is_whole(self.scale_up_pods) or self.scale_up_pods < 1:
            return f"scale_up_pods must be a whole number ≥ 1, got {self.scale_up_pods!r}"
        if not (is_finite_number(self.scale_up_percent) and self.scale_up_percent > 0):
            return f"scale_up_percent must be a positive number, got {self.scale_up_percent!r}"
        return None


@dataclass(frozen=True)
class ScaleEvent:
    """A scale the controller made: `change` replicas (> 0 up, < 0 down) at `at`."""

    at: float
    change: int


class Hpa:
    """Mutable reproduction of the HPA controller for one target (keeps its recommendation history and
    scale events), after kubernetes pkg/controller/podautoscaler/horizontal.go (reconcileAutoscaler,
    normalizeDesiredReplicasWithBehaviors) and replica_calculator.go (calcPlainMetricReplicas).

    Call `sync` every `spec.sync_period_s` with the replicas the previous sync asked for. The model:
    the Service sends traffic only to ready pods, so each of `ready_replicas` serves demand / ready;
    the other `current_replicas − ready_replicas` pods are not running yet (Pending).

    Simplifications:
    - metrics are exact and current: no metrics-server or Prometheus scrape lag, no rate() window, no
      milli-unit rounding of the per-pod average (a ceiling ignores float noise, like lcp's policy);
    - every ready pod has a metric (no "missing" pods), and every pod that is not ready is Pending
      (a Running-but-unready pod that exported 0 rps would count as ready for a Pods metric);
    - the scale the controller asks for is applied at once (the caller passes it back as current);
    - one metric (requests/s per pod); no CPU initialisation period, no deleted or failed pods;
    - with 0 current replicas Kubernetes disables autoscaling (ScalingDisabled); here min_replicas ≥ 1 and
      the "below minReplicas" rule scales it back to min_replicas, so the HPA never answers 0;
    - old recommendations and scale events are dropped once out of every window rather than reused in place.
    """

    def __init__(self, spec: HpaSpec) -> None:
        if problem := spec.problem():
            raise ValueError(f"invalid HPA spec: {problem}")
        self.spec = spec
        self._recommendations: list[Recommendation] = []
        self._initialized = False
        self._events: list[ScaleEvent] = []
        self._last_sync: float | None = None

    @property
    def recommendations(self) -> tuple[Recommendation, ...]:
        """The unstabilised recommendations still inside a stabilisation window, oldest first."""
        return tuple(self._recommendations)

    @property
    def scale_events(self) -> tuple[ScaleEvent, ...]:
        """The scales made within the longest policy period, oldest first."""
        return tuple(self._events)

    def sync(self, now: float, current_replicas: int, ready_replicas: int, demand_rps: float) -> int:
        """One reconcile: the desired replicas after this sync (== current_replicas: no scale)."""
        self._check(now, current_replicas, ready_replicas, demand_rps)
        self._last_sync = now
        spec = self.spec
        ready = min(ready_replicas, current_replicas)
        # reconcileAutoscaler: out-of-range counts are brought into range without a metric.
        if current_replicas > spec.max_replicas:
            desired = spec.max_replicas
        elif current_replicas < spec.min_replicas:
            desired = spec.min_replicas
        else:
            metric_desired = self._metric_replicas(current_replicas, ready, demand_rps)
            if metric_desired is None:  # no metrics: the controller errors and leaves the scale alone
                return current_replicas
            desired = self._normalize(now, current_replicas, metric_desired)
        if desired != current_replicas:
            self._store_scale_event(now, desired - current_replicas)
        return desired

    def _check(self, now: float, current: int, ready: int, demand: float) -> None:
        if not is_finite_number(now):
            raise ValueError(f"now must be a finite number of seconds, got {now!r}")
        if self._last_sync is not None and now < self._last_sync:
            raise ValueError(f"now ({now}) is before the previous sync ({self._last_sync})")
        if not is_whole(current) or current < 0:
            raise ValueError(f"current_replicas must be a whole number ≥ 0, got {current!r}")
        if not is_whole(ready) or ready < 0:
            raise ValueError(f"ready_replicas must be a whole number ≥ 0, got {ready!r}")
        if not (is_finite_number(demand) and demand >= 0):
            raise ValueError(f"demand_rps must be a finite number ≥ 0, got {demand!r}")

    def _within_tolerance(self, ratio: float) -> bool:
        return abs(1.0 - ratio) <= self.spec.tolerance + _EPSILON

    def _metric_replicas(self, current: int, ready: int, demand: float) -> int | None:
        """replica_calculator.go calcPlainMetricReplicas for a Pods metric (AverageValue target).

        The usage ratio is first taken over the pods with metrics, the ready ones: demand / ready per pod
        against the target. Kubernetes then distrusts a scale-up computed without the unready pods: when
        that ratio is above 1 and some pods are unready, it re-runs it counting each unready pod as using
        0 ("on a scale-up, treat unready pods as using 0% of the resource request"), so the ratio becomes
        demand / (current × capacity) / target — the new pods will share the load. It keeps the current
        count if the re-run ratio falls within the tolerance or changes the direction of the scale.
        When demand falls, unready pods are left out and the fast path uses the ready count."""
        if ready == 0:
            return None  # "did not receive metrics for targeted pods (pods might be unready)"
        per_pod_target = self.spec.capacity_rps * self.spec.target_utilization
        usage_ratio = (demand / ready) / per_pod_target
        unready = current - ready
        scale_up_with_unready = unready > 0 and usage_ratio > 1.0
        if not scale_up_with_unready:
            if self._within_tolerance(usage_ratio):
                return current
            return robust_ceil(usage_ratio * ready)
        new_ratio = (demand / current) / per_pod_target
        if self._within_tolerance(new_ratio) or new_ratio < 1.0:
            return current  # too small a change, or the unready pods would turn it into a scale-down
        new_replicas = robust_ceil(new_ratio * current)
        return max(new_replicas, current)  # a shrinking count would reverse the scale-up's direction

    def _normalize(self, now: float, current: int, desired: int) -> int:
        """horizontal.go normalizeDesiredReplicasWithBehaviors: stabilise, then apply the rate policies
        and min/max."""
        self._maybe_init_stabilization_window(now, current)
        stabilized = self._stabilize(now, current, desired)
        return self._rate_limited(now, current, stabilized)

    def _maybe_init_stabilization_window(self, now: float, current: int) -> None:
        # maybeInitScaleDownStabilizationWindow: a new controller first remembers the current count, so it
        # doesn't scale down before a whole window has passed.
        if not self._initialized:
            self._initialized = True
            if self.spec.scale_down_stabilization_s > 0:
                self._recommendations.append(Recommendation(now, current))

    def _stabilize(self, now: float, current: int, desired: int) -> int:
        """stabilizeRecommendationWithBehaviors: at least the lowest recommendation in the scale-up window
        and at most the highest in the scale-down window (each including this one), starting from current.
        Records the unstabilised recommendation."""
        up_cutoff = now - _SCALE_UP_STABILIZATION_S
        down_cutoff = now - self.spec.scale_down_stabilization_s
        up_recommendation = desired
        down_recommendation = desired
        for rec in self._recommendations:
            if rec.at > up_cutoff:  # Go's timestamp.After(cutoff): strictly later
                up_recommendation = min(rec.replicas, up_recommendation)
            if rec.at > down_cutoff:
                down_recommendation = max(rec.replicas, down_recommendation)
        recommendation = min(max(current, up_recommendation), down_recommendation)
        oldest = min(up_cutoff, down_cutoff)
        self._recommendations = [r for r in self._recommendations if r.at > oldest]
        self._recommendations.append(Recommendation(now, desired))
        return recommendation

    def _change_in_period(self, now: float, period_s: float, up: bool) -> int:
        """getReplicasChangePerPeriod: replicas added (up) or removed (down) by scales after now − period."""
        cutoff = now - period_s
        return sum(abs(e.change) for e in self._events if e.at > cutoff and (e.change > 0) == up)

    def _period_start(self, now: float, period_s: float, current: int) -> int:
        """The replicas at the start of the policy period: current − added + removed since."""
        added = self._change_in_period(now, period_s, up=True)
        removed = self._change_in_period(now, period_s, up=False)
        return current - added + removed

    def _rate_limited(self, now: float, current: int, desired: int) -> int:
        """convertDesiredReplicasWithBehaviorRate with calculateScaleUpLimitWithScalingRules and
        calculateScaleDownLimitWithBehaviors (selectPolicy Max, i.e. the biggest change allowed)."""
        spec = self.spec
        if desired > current:
            period = spec.scale_up_period_s
            start = self._period_start(now, period, current)
            by_pods = start + spec.scale_up_pods
            by_percent = math.ceil(start * (1 + spec.scale_up_percent / 100))
            scale_up_limit = max(max(by_pods, by_percent), current)  # no further up until events expire
            return min(desired, spec.max_replicas, scale_up_limit)
        if desired < current:
            period = _SCALE_DOWN_PERIOD_S
            start = self._period_start(now, period, current)
            scale_down_limit = min(int(start * (1 - _SCALE_DOWN_PERCENT / 100)), current)
            return max(desired, spec.min_replicas, scale_down_limit)
        return desired

    def _store_scale_event(self, now: float, change: int) -> None:
        """storeScaleEvent, keeping only the events a policy period can still see."""
        longest = max(self.spec.scale_up_period_s, _SCALE_DOWN_PERIOD_S)
        self._events = [e for e in self._events if e.at > now - longest]
        self._events.append(ScaleEvent(now, change))
