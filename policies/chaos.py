"""Chaos decisions: whether an experiment may run now, whether a probe passes, the time to recover and the
resilience score."""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

COMPARATORS = (">=", "<=", ">", "<", "==", "!=")
# Float noise (0.99 - 0.005 = 0.9849999999999999) must not fail a probe that sits exactly on its bound:
# the inclusive comparators get this much relative slack.
_EPSILON = 1e-9


@dataclass(frozen=True)
class FreezeWindow:
    """A declared change freeze: no chaos from `start` to `end` (unix seconds, end excluded)."""

    start: float
    end: float
    reason: str = ""

    def covers(self, now: float) -> bool:
        return self.start <= now < self.end


@dataclass(frozen=True)
class SafetyPolicy:
    """Where chaos may run and how much of a service it may hit at once."""

    allowed_namespaces: tuple[str, ...] = ("lab",)
    max_pods_affected_perc: float = 50.0  # blast radius: the largest share of the target's pods hit at once
    freezes: tuple[FreezeWindow, ...] = ()

    def problem(self) -> str | None:
        """Why this policy can't be used, as one sentence naming the field; None when it is fine."""
        if isinstance(self.allowed_namespaces, str) or not all(
            isinstance(namespace, str) and namespace for namespace in self.allowed_namespaces
        ):
            return f"allowed_namespaces must be a tuple of namespace names, got {self.allowed_namespaces!r}"
        limit = self.max_pods_affected_perc
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not 0 < limit <= 100:
            return f"max_pods_affected_perc must be a share of pods in (0, 100], got {limit!r}"
        for index, window in enumerate(self.freezes):
            if not (math.isfinite(window.start) and math.isfinite(window.end) and window.start < window.end):
                return f"freezes[{index}] must end after it starts, got {window.start!r} to {window.end!r}"
        return None


@dataclass(frozen=True)
class SafetyInput:
    """What is true of the target right now, as the workflow read it."""

    namespace: str
    service: str
    pods_affected_perc: float  # Litmus' PODS_AFFECTED_PERC; 0 means one pod
    replicas: int  # the target's replicas now
    now: float  # unix seconds
    running_rollouts: tuple[str, ...] = ()  # workflow ids of running canary rollouts of this service


def pods_affected(pods_affected_perc: float, replicas: int) -> int:
    """How many of `replicas` pods Litmus hits: max(1, min(perc, 100) × replicas ÷ 100, rounded down)
    (litmus-go's filterPodsByPercentage), so 0 % or an unset percentage means one pod."""
    share = min(max(pods_affected_perc, 0.0), 100.0)
    return max(1, math.floor(share * replicas / 100 + _EPSILON))


def safety_problem(inp: SafetyInput, policy: SafetyPolicy) -> str | None:
    """Why the experiment must not run now, as one sentence; None when it is safe to start."""
    target = f"{inp.namespace}/{inp.service}"
    if inp.namespace not in policy.allowed_namespaces:
        allowed = ", ".join(policy.allowed_namespaces) or "none"
        return f"namespace {inp.namespace!r} is not allowed for chaos (allowed: {allowed})"
    if inp.replicas < 1:
        return f"{target} has no replicas running: there is nothing to inject a fault into"
    hit = pods_affected(inp.pods_affected_perc, inp.replicas)
    share = 100.0 * hit / inp.replicas
    if share > policy.max_pods_affected_perc + _EPSILON:
        return (
            f"the experiment would affect {hit} of {target}'s {inp.replicas} pods ({share:.0f}%), "
            f"more than the blast-radius limit of {policy.max_pods_affected_perc:g}%"
        )
    if inp.running_rollouts:
        names = " and ".join(inp.running_rollouts)
        verb, pronoun = ("is", "it finishes") if len(inp.running_rollouts) == 1 else ("are", "they finish")
        return f"{names} {verb} running: chaos waits until {pronoun}"
    active = [window for window in policy.freezes if window.covers(inp.now)]
    if active:
        window = max(active, key=lambda w: w.end)
        until = datetime.fromtimestamp(window.end, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        why = f"the freeze {window.reason!r}" if window.reason else "a declared freeze"
        return f"chaos is not allowed during {why}, which ends at {until}"
    return None


def probe_passes(comparator: str, measured: float, expected: float, tolerance: float = 0.0) -> bool:
    """Whether `measured <comparator> expected` holds, with `tolerance` of absolute slack in the
    comparator's favour (>= 0.99 with tolerance 0.005 passes 0.985); a NaN never passes."""
    if comparator not in COMPARATORS:
        raise ValueError(f"comparator must be one of {', '.join(COMPARATORS)}, got {comparator!r}")
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise ValueError(f"tolerance must be a finite number ≥ 0, got {tolerance!r}")
    if math.isnan(measured) or math.isnan(expected):
        return False
    slack = _EPSILON * max(1.0, abs(expected))
    if comparator == ">=":
        return measured >= expected - tolerance - slack
    if comparator == ">":
        return measured > expected - tolerance
    if comparator == "<=":
        return measured <= expected + tolerance + slack
    if comparator == "<":
        return measured < expected + tolerance
    if comparator == "==":
        return abs(measured - expected) <= tolerance + slack
    return abs(measured - expected) > tolerance


def probe_success_percentage(passed: int, total: int) -> float:
    """Litmus' probeSuccessPercentage: 100 × passed ÷ total; an experiment without probes scores 100."""
    if total < 0 or not 0 <= passed <= total:
        raise ValueError(f"passed must be between 0 and total, got {passed} of {total}")
    if total == 0:
        return 100.0
    return 100.0 * passed / total


def resilience_score(results: Sequence[tuple[int, float]]) -> float:
    """ChaosCenter's resilience score: Σ(weight × probe success %) ÷ Σ weight, from each experiment's
    (weight 0..10, probe success percentage 0..100); 0.0 when the weights add up to nothing."""
    total_weight = 0
    weighted = 0.0
    for weight, success in results:
        if weight < 0:
            raise ValueError(f"a fault weight must be ≥ 0, got {weight}")
        if not 0 <= success <= 100:
            raise ValueError(f"a probe success percentage must be in [0, 100], got {success!r}")
        total_weight += weight
        weighted += weight * success
    if total_weight == 0:
        return 0.0
    return weighted / total_weight


# What a time to recover was measured from (ChaosView.recovery_measured_from).
FROM_LAST_REPLACED_POD = "last-replaced-pod"
FROM_FAULT_END = "fault-end"


@dataclass(frozen=True)
class Recovery:
    """How long the target took to recover, and from what."""

    seconds: float
    measured_from: str  # FROM_LAST_REPLACED_POD | FROM_FAULT_END

    def describe(self) -> str:
        if self.measured_from == FROM_LAST_REPLACED_POD:
            return (
                f"recovered {self.seconds:.0f} s after the last disruption (from the newest pod replacing a "
                "deleted one to every pod ready, to the second of Kubernetes' timestamps)"
            )
        return f"back to steady state {self.seconds:.1f} s after the fault ended"


def time_to_recover(
    injected_at: float,
    fault_ended_at: float,
    steady_at: float,
    newest_created: float | None,
    last_ready: float | None,
) -> Recovery:
    """From the last disruption to full readiness (unix seconds in, with the target steady at `steady_at`).

    A pod created after the injection replaced one the fault deleted: the last disruption is the newest such
    pod's creation, and full readiness the newest Ready transition (Kubernetes' timestamps, to the second,
    so the creation counts from the injection's second). A pod-delete that ends long before its duration is
    thus measured when it happened, not after cleanup. Without such a pod (a network loss, a CPU hog: the
    fault itself is the disruption, until it ends), from the fault's end to the steady state observed."""
    if newest_created is not None and last_ready is not None and newest_created >= math.floor(injected_at):
        return Recovery(max(0.0, last_ready - newest_created), FROM_LAST_REPLACED_POD)
    return Recovery(max(0.0, steady_at - fault_ended_at), FROM_FAULT_END)
