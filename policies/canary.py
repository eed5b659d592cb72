"""Canary decisions: steps as data, when a step is done, Argo-style analysis and a Kayenta-style judge."""

import math
import re
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Literal, cast

from policies.errors import PermanentError
from policies.ranges import DAY_S, Range, seconds, whole

# ── Steps as data (Argo Rollouts' canary strategy: setWeight / pause / analysis) ─────────────────────────

MAX_STEPS = 50
# The range of each numeric setting of a plan: an analysis measures at most once a second and at most
# MAX_COUNT times, a pause lasts at most a week, and time_scale keeps the standard plan inside both.
MAX_COUNT = 500
PAUSE_RANGE = seconds(0, 7 * DAY_S)
ANALYSIS_INTERVAL_RANGE = seconds(1, DAY_S)
COUNT_RANGE = whole(1, MAX_COUNT)
LIMIT_RANGE = whole(0, MAX_COUNT)
TIME_SCALE_RANGE = Range(0.05, 100)  # × the standard plan's 30 s analysis interval: ≥ 1.5 s
WEIGHT_RANGE = Range(0, 100, low_open=True)  # a metric's weight in the judge's score
MIN_SAMPLES_RANGE = whole(3, 1000)
# Argo's DefaultConsecutiveErrorLimit (analysis/analysis.go in argoproj/argo-rollouts).
DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4
# The standard plan's analysis per judge: the threshold judge reads the canary against fixed bounds (its
# latency metric is its share of slow requests less the stable's), the statistical judge compares
# per-version series itself. Slow: above the stable's p95 bucket edge (policies/analysis.yaml says why).
STANDARD_TEMPLATES = {
    "threshold": ("success-rate", "latency-slow-share-excess"),
    "statistical": ("success-rate", "latency-slow-share"),
}
# The same for a model behind lcp's gateway (a rollout with target "model"), from lcp's own metrics.
STANDARD_MODEL_TEMPLATES = {
    "threshold": ("model-success-rate", "model-latency-p99-ratio"),
    "statistical": ("model-success-rate", "model-latency-p99"),
}


@dataclass(frozen=True)
class SetWeight:
    """Send `percent` of the traffic to the canary."""

    percent: int
    # A tag so that a Temporal payload decodes into the right member of `Step` (the converter tries the
    # union's members in order and rejects a mismatched Literal).
    kind: Literal["set_weight"] = field(default="set_weight", init=False)


@dataclass(frozen=True)
class Pause:
    """Hold the current weight for `duration_s` seconds; None holds it until a human promotes or aborts."""

    duration_s: float | None
    kind: Literal["pause"] = field(default="pause", init=False)


@dataclass(frozen=True)
class RunLimits:
    """How many bad measurements an analysis run tolerates (Argo's metric limits); see `judge_run`."""

    failure_limit: int = 0
    inconclusive_limit: int = 0
    consecutive_error_limit: int = DEFAULT_CONSECUTIVE_ERROR_LIMIT


@dataclass(frozen=True)
class Analyze:
    """Take `count` measurements of each metric template in `templates`, one every `interval_s` seconds,
    and judge each metric's run with Argo's limits (`judge_run`); the step's outcome is the worst of them
    (`combine_runs`). A bare name is taken as a one-template tuple."""

    templates: tuple[str, ...]
    interval_s: float
    count: int
    failure_limit: int = 0
    inconclusive_limit: int = 0
    consecutive_error_limit: int = DEFAULT_CONSECUTIVE_ERROR_LIMIT
    kind: Literal["analyze"] = field(default="analyze", init=False)

    def __post_init__(self) -> None:
        if isinstance(self.templates, str):
            object.__setattr__(self, "templates", (self.templates,))
        elif isinstance(self.templates, list):
            object.__setattr__(self, "templates", tuple(self.templates))

    @property
    def limits(self) -> RunLimits:
        return RunLimits(self.failure_limit, self.inconclusive_limit, self.consecutive_error_limit)

    @property
    def label(self) -> str:
        return ", ".join(self.templates)


Step = SetWeight | Pause | Analyze


def standard_plan(
    scale: float = 1.0, templates: tuple[str, ...] = STANDARD_TEMPLATES["threshold"]
) -> list[Step]:
    """10% → pause 2 min → 20% → pause 2 min → analysis (5 × 30 s) → 50% → pause 5 min → 100%, every
    duration multiplied by `scale` (tests and demos pass e.g. 0.01)."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    return [
        SetWeight(10),
        Pause(120.0 * scale),
        SetWeight(20),
        Pause(120.0 * scale),
        Analyze(templates, interval_s=30.0 * scale, count=5),
        SetWeight(50),
        Pause(300.0 * scale),
        SetWeight(100),
    ]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _weight_problem(step: SetWeight, previous: int | None, allow_decrease: bool) -> str | None:
    if not _is_int(step.percent) or not 0 <= step.percent <= 100:
        return f"weight {step.percent!r} is not a whole percentage from 0 to 100"
    if previous is not None and step.percent < previous and not allow_decrease:
        return (
            f"weight goes down from {previous}% to {step.percent}%: weights may only grow "
            "(set allow_decrease to shift traffic back on purpose)"
        )
    return None


def _pause_problem(step: Pause) -> str | None:
    if step.duration_s is None:
        return None
    problem = PAUSE_RANGE.problem("pause duration_s", step.duration_s)
    return f"{problem} (None waits for a human)" if problem else None


def limits_problem(limits: RunLimits, count: int) -> str | None:
    """Argo's checks on a metric's limits (ValidateMetrics in utils/analysis): limits ≥ 0, and `count` at
    least as large as the failure and inconclusive limits, or the run could never fail on them."""
    for name in ("failure_limit", "inconclusive_limit", "consecutive_error_limit"):
        if problem := LIMIT_RANGE.problem(name, getattr(limits, name)):
            return problem
    if count < limits.failure_limit:
        return f"count ({count}) must be ≥ failure_limit ({limits.failure_limit})"
    if count < limits.inconclusive_limit:
        return f"count ({count}) must be ≥ inconclusive_limit ({limits.inconclusive_limit})"
    return None


def _analyze_problem(step: Analyze, known_templates: Collection[str] | None) -> str | None:
    names = step.templates
    if not names or not all(isinstance(name, str) and name.strip() for name in names):
        return "analysis needs at least one template name"
    if len(set(names)) != len(names):
        return f"analysis names a template twice: {', '.join(names)}"
    unknown = [name for name in names if known_templates is not None and name not in known_templates]
    if unknown and known_templates is not None:
        known = ", ".join(sorted(known_templates)) or "none"
        return f"analysis template {unknown[0]!r} is not defined (known: {known})"
    if problem := ANALYSIS_INTERVAL_RANGE.problem("analysis interval_s", step.interval_s):
        return problem
    if problem := COUNT_RANGE.problem("analysis count", step.count):
        return problem
    return limits_problem(step.limits, step.count)


def plan_problem(
    steps: Sequence[object],
    *,
    allow_decrease: bool = False,
    known_templates: Collection[str] | None = None,
    max_steps: int = MAX_STEPS,
) -> str | None:
    """Why a step list can't be run, as a sentence naming the step; None when it is fine."""
    if not steps:
        return "the plan has no steps: give at least one SetWeight"
    if len(steps) > max_steps:
        return f"the plan has {len(steps)} steps, over the limit of {max_steps}"
    previous: int | None = None
    for index, step in enumerate(steps):
        problem: str | None
        if isinstance(step, SetWeight):
            problem = _weight_problem(step, previous, allow_decrease)
            previous = step.percent
        elif isinstance(step, Pause):
            problem = _pause_problem(step)
        elif isinstance(step, Analyze):
            problem = _analyze_problem(step, known_templates)
        else:
            problem = f"{type(step).__name__} is not a step: use SetWeight, Pause or Analyze"
        if problem is not None:
            return f"step {index}: {problem}"
    return None


def current_weight(steps: Sequence[Step], index: int) -> int:
    """The canary's weight while step `index` runs: the last SetWeight at or before it (0 before any)."""
    for step in reversed(steps[: index + 1]):
        if isinstance(step, SetWeight):
            return step.percent
    return 0


def replicas_for_exact_weights(steps: Sequence[Step], at_least: int) -> int:
    """The fewest replicas, at least `at_least`, that the replica router splits into every SetWeight's
    percent exactly: a multiple of 100 / gcd(percent, 100) for each (10% and 25% need a multiple of 20)."""
    units = [100 // math.gcd(step.percent, 100) for step in steps if isinstance(step, SetWeight)]
    unit = math.lcm(*units) if units else 1
    return unit * max(1, -(-at_least // unit))


def weight_line(asked: int, canary_replicas: int | None = None, total_replicas: int | None = None) -> str:
    """What the rollout's history says of a weight it set. Behind a traffic router (or a model's gateway) the
    weight is the one asked for; with the replica router traffic follows the ready pods, so the canary's
    share is its replicas' share of the total (the nearest to the one asked for, rounded as Argo Rollouts'
    basic canary rounds without surge), said beside the weight asked for when the two differ."""
    if not total_replicas or canary_replicas is None:
        return f"canary at {asked}%"
    achieved = 100 * canary_replicas / total_replicas
    if math.isclose(achieved, asked):
        return f"canary at {asked}%"
    exact = replicas_for_exact_weights([SetWeight(asked)], 1)
    return (
        f"canary at {achieved:.3g}% of the traffic, {asked}% asked: {canary_replicas} of {total_replicas} "
        f"replicas (a multiple of {exact} would make it exact)"
    )


# ── Analysis phases and one measurement (Argo's AnalysisPhase) ───────────────────────────────────────────


class AnalysisPhase(StrEnum):
    RUNNING = "Running"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"


@dataclass(frozen=True)
class Measurement:
    """One measurement of a metric: its phase, the value read (None when there was none) and why."""

    phase: AnalysisPhase
    value: float | None
    message: str


# ── The step function ────────────────────────────────────────────────────────────────────────────────────


class Decision(StrEnum):
    """What a human said about the current step."""

    PROMOTE = "promote"
    ABORT = "abort"


class StepAction(StrEnum):
    SET_WEIGHT = "set_weight"  # route `weight`% to the canary, then report weight_applied
    RUN_ANALYSIS = "run_analysis"  # start (or keep running) the analysis of `templates`, report its phase
    WAIT = "wait"  # nothing to do for `wait_s` seconds; None: until a human decides
    ADVANCE = "advance"  # the step is done: continue at `index`
    ROLLBACK = "rollback"  # abort: send all traffic back to stable
    COMPLETE = "complete"  # every step is done: promote the canary to stable


@dataclass(frozen=True)
class StepProgress:
    """What has happened since the current step began, as the workflow saw it (reset on each step)."""

    elapsed_s: float = 0.0
    weight_applied: bool = False
    analysis: AnalysisPhase | None = None  # None: not started
    decision: Decision | None = None


@dataclass(frozen=True)
class StepDecision:
    """What to do about the current step: `index` is the step to be at afterwards."""

    action: StepAction
    index: int
    reason: str
    weight: int | None = None
    templates: tuple[str, ...] = ()
    wait_s: float | None = None

    @property
    def done(self) -> bool:
        return self.action in (StepAction.ADVANCE, StepAction.COMPLETE)


def _weight_step(step: SetWeight, index: int, progress: StepProgress) -> StepDecision:
    if not progress.weight_applied:
        return StepDecision(
            StepAction.SET_WEIGHT, index, f"route {step.percent}% to the canary", weight=step.percent
        )
    return StepDecision(StepAction.ADVANCE, index + 1, f"canary at {step.percent}%")


def _pause_step(step: Pause, index: int, progress: StepProgress) -> StepDecision:
    if progress.decision is Decision.PROMOTE:
        return StepDecision(StepAction.ADVANCE, index + 1, "promoted by a human")
    if step.duration_s is None:
        return StepDecision(StepAction.WAIT, index, "paused until a human promotes or aborts")
    left = step.duration_s - progress.elapsed_s
    if left <= 0:
        return StepDecision(StepAction.ADVANCE, index + 1, f"paused {step.duration_s:g} s")
    return StepDecision(StepAction.WAIT, index, f"pausing, {left:g} s left", wait_s=left)


def _analyze_step(step: Analyze, index: int, progress: StepProgress) -> StepDecision:
    outcome = progress.analysis
    # Argo: a Failed or Error run aborts the rollout; an Inconclusive run pauses it for a human to resume
    # or abort (docs/features/analysis.md, "Inconclusive Runs"). A human promote ends the step, running
    # analysis included, as `kubectl argo rollouts promote` does (cmd/promote/promote.go: it clears the
    # pause or, mid-analysis, moves the step index on) — but it cannot overrule a failed analysis.
    if outcome in (AnalysisPhase.FAILED, AnalysisPhase.ERROR):
        return StepDecision(StepAction.ROLLBACK, index, f"analysis of {step.label} ended {outcome}")
    if progress.decision is Decision.PROMOTE:
        return StepDecision(StepAction.ADVANCE, index + 1, "promoted by a human")
    if outcome is AnalysisPhase.SUCCESSFUL:
        return StepDecision(StepAction.ADVANCE, index + 1, f"analysis of {step.label} passed")
    if outcome is AnalysisPhase.INCONCLUSIVE:
        return StepDecision(
            StepAction.WAIT,
            index,
            f"analysis of {step.label} was inconclusive: a human must promote, resume (analyse again) "
            "or abort",
        )
    return StepDecision(StepAction.RUN_ANALYSIS, index, f"analysing {step.label}", templates=step.templates)


def decide_step(steps: Sequence[Step], index: int, progress: StepProgress) -> StepDecision:
    """Whether step `index` is done, and if not what the rollout must do or wait for (Argo's idea: the
    steps are data, and one pure function reads them). A human abort wins at any step."""
    if not 0 <= index <= len(steps):
        raise ValueError(f"step index {index} is outside the plan's {len(steps)} steps")
    if progress.decision is Decision.ABORT:
        return StepDecision(StepAction.ROLLBACK, index, "aborted by a human")
    if index == len(steps):
        return StepDecision(StepAction.COMPLETE, index, "every step is done")
    step = steps[index]
    if isinstance(step, SetWeight):
        return _weight_step(step, index, progress)
    if isinstance(step, Pause):
        return _pause_step(step, index, progress)
    return _analyze_step(step, index, progress)


# ── Threshold judge (Argo Rollouts' successCondition / failureCondition and metric limits) ───────────────

Comparison = Literal[">=", ">", "<=", "<"]


@dataclass(frozen=True)
class Condition:
    """`value <op> bound`, e.g. Condition(">=", 0.99)."""

    op: Comparison
    bound: float

    def holds(self, value: float) -> bool:
        if self.op == ">=":
            return value >= self.bound
        if self.op == ">":
            return value > self.bound
        if self.op == "<=":
            return value <= self.bound
        return value < self.bound

    def describe(self) -> str:
        return f"value {self.op} {self.bound:g}"


@dataclass(frozen=True)
class Threshold:
    """A success condition and/or a failure condition on one float."""

    success: Condition | None = None
    failure: Condition | None = None


@dataclass(frozen=True)
class TrafficGuard:
    """A measurement needs `at_least` of what `query` counts (e.g. requests in the window): fewer is too
    little evidence — a p99 of 20 requests is their maximum — so the measurement is Inconclusive."""

    query: str
    at_least: float


@dataclass(frozen=True)
class MetricTemplate:
    """A named metric that an Analyze step measures: the query is for the activity that reads it, the
    threshold for the Argo-style judge, the rest for the statistical judge (see CanaryMetric)."""

    name: str
    threshold: Threshold
    query: str = ""
    direction: "Direction | None" = None  # None: read off the conditions (see `bad_direction`)
    weight: float = 1.0
    allowed_relative: float = 0.10
    allowed_absolute: float = 0.0
    critical: bool = False
    guard: TrafficGuard | None = None  # the threshold judge's minimum traffic for a measurement

    def bad_direction(self) -> "Direction":
        """Which way a change hurts: as given, else the way the failure (or else the success) condition
        points — `< 0.95` fails low values, so a decrease hurts."""
        if self.direction is not None:
            return Direction(self.direction)
        condition = self.threshold.failure
        if condition is not None:
            return Direction.DECREASE if condition.op in ("<", "<=") else Direction.INCREASE
        success = self.threshold.success
        if success is not None:
            return Direction.DECREASE if success.op in (">", ">=") else Direction.INCREASE
        return Direction.EITHER

    def canary_metric(self) -> "CanaryMetric":
        return CanaryMetric(
            name=self.name,
            direction=self.bad_direction(),
            weight=self.weight,
            allowed_relative=self.allowed_relative,
            allowed_absolute=self.allowed_absolute,
            critical=self.critical,
        )


def template_problem(template: MetricTemplate) -> str | None:
    """Why a metric template can't be used; None when it is fine."""
    if not template.name.strip():
        return "a metric template needs a name"
    threshold = template.threshold
    if threshold.success is None and threshold.failure is None:
        # Argo counts every such measurement Successful: a gate that can never close is a mistake here.
        return f"template {template.name!r} has neither a success nor a failure condition"
    for condition in (threshold.success, threshold.failure):
        if condition is not None and condition.op not in (">=", ">", "<=", "<"):
            return f"template {template.name!r}: unknown comparison {condition.op!r}"
        if condition is not None and not math.isfinite(condition.bound):
            return f"template {template.name!r}: bound {condition.bound!r} is not a finite number"
    if problem := WEIGHT_RANGE.problem("weight", template.weight):
        return f"template {template.name!r}: {problem}"
    return None


def measure(value: float | None, error: str | None, threshold: Threshold) -> Measurement:
    """Judge one reading the way Argo's EvaluateResult (utils/evaluate/evaluate.go) does: the failure
    condition wins over the success condition; with both set and neither true, Inconclusive; with only
    one set, the other is its negation; with none, Successful. A read error, a missing value or one that
    is not a finite number is an Error measurement."""
    if error is not None:
        return Measurement(AnalysisPhase.ERROR, None, error)
    if value is None:
        return Measurement(AnalysisPhase.ERROR, None, "the query returned no value")
    if not math.isfinite(value):
        return Measurement(AnalysisPhase.ERROR, None, f"the query returned {value}, not a finite number")
    success, failure = threshold.success, threshold.failure
    if failure is not None and failure.holds(value):
        return Measurement(
            AnalysisPhase.FAILED, value, f"{value:g} meets the failure condition {failure.describe()}"
        )
    if success is not None and success.holds(value):
        return Measurement(AnalysisPhase.SUCCESSFUL, value, f"{value:g} meets {success.describe()}")
    if success is not None and failure is None:
        return Measurement(AnalysisPhase.FAILED, value, f"{value:g} misses {success.describe()}")
    if success is None and failure is not None:
        return Measurement(AnalysisPhase.SUCCESSFUL, value, f"{value:g} avoids {failure.describe()}")
    if success is not None and failure is not None:
        return Measurement(
            AnalysisPhase.INCONCLUSIVE,
            value,
            f"{value:g} meets neither {success.describe()} nor the failure condition {failure.describe()}",
        )
    return Measurement(AnalysisPhase.SUCCESSFUL, value, f"{value:g}: no condition to meet")


@dataclass(frozen=True)
class RunOutcome:
    """Where an analysis run stands, with the counters Argo keeps for a metric."""

    phase: AnalysisPhase
    reason: str
    count: int = 0  # measurements that count towards `count`: all but errors
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    errors: int = 0
    consecutive_errors: int = 0


def guarded_measure(
    template: MetricTemplate,
    value: float | None,
    error: str | None,
    traffic: float | None = None,
) -> Measurement:
    """`measure` against the template's threshold, unless its traffic guard finds too little traffic
    (`traffic` is the guard query's value; None when it had none, i.e. no traffic): Inconclusive then."""
    guard = template.guard
    if guard is not None and error is None and (traffic is None or traffic < guard.at_least):
        seen = 0.0 if traffic is None else traffic
        return Measurement(
            AnalysisPhase.INCONCLUSIVE,
            value,
            f"too little traffic to judge: {seen:g} in the window, {template.name} needs {guard.at_least:g}",
        )
    return measure(value, error, template.threshold)


# Argo reports the worst metric as the run's phase; a failure or error ends the run at once.
_WORST_FIRST = (AnalysisPhase.FAILED, AnalysisPhase.ERROR, AnalysisPhase.RUNNING, AnalysisPhase.INCONCLUSIVE)


def combine_runs(runs: Mapping[str, "RunOutcome"]) -> tuple[AnalysisPhase, str]:
    """The phase of an analysis over several metrics and why: Failed if any metric failed, else Error,
    else Running while any still runs, else Inconclusive, else Successful (Argo's worst-status rule, with
    a failure deciding before the other metrics finish)."""
    if not runs:
        return AnalysisPhase.RUNNING, "no metric measured yet"
    for phase in _WORST_FIRST:
        names = [name for name, run in runs.items() if run.phase is phase]
        if names:
            reasons = "; ".join(f"{name}: {runs[name].reason}" for name in names)
            return phase, reasons
    return AnalysisPhase.SUCCESSFUL, "; ".join(f"{name}: {run.reason}" for name, run in runs.items())


def judge_run(measurements: Sequence[Measurement], limits: RunLimits, expected_count: int) -> RunOutcome:
    """Argo's assessMetricStatus (analysis/analysis.go, argoproj/argo-rollouts), in its order:
    Failed when failed > failure_limit; else Inconclusive when inconclusive > inconclusive_limit; else
    Error when consecutive errors > consecutive_error_limit; else Successful once `expected_count`
    measurements are counted; else Running. Errors don't count towards the count, and any other
    measurement resets the consecutive-error streak. A measurement still in flight (phase Running) at the
    end keeps the run Running; the workflow stops measuring once the phase is anything else."""
    successful = failed = inconclusive = errors = streak = 0
    for m in measurements:
        if m.phase is AnalysisPhase.ERROR:
            errors += 1
            streak += 1
        elif m.phase is not AnalysisPhase.RUNNING:
            streak = 0
            successful += m.phase is AnalysisPhase.SUCCESSFUL
            failed += m.phase is AnalysisPhase.FAILED
            inconclusive += m.phase is AnalysisPhase.INCONCLUSIVE
    count = successful + failed + inconclusive

    def outcome(phase: AnalysisPhase, reason: str) -> RunOutcome:
        return RunOutcome(phase, reason, count, successful, failed, inconclusive, errors, streak)

    last = measurements[-1] if measurements else None
    if last is None:
        return outcome(AnalysisPhase.RUNNING, "no measurement yet")
    if last.phase is AnalysisPhase.RUNNING:
        return outcome(AnalysisPhase.RUNNING, "a measurement is in flight")
    if failed > limits.failure_limit:
        return outcome(
            AnalysisPhase.FAILED,
            f"{failed} failed measurements, over the failure limit of {limits.failure_limit} "
            f"(last: {last.message})",
        )
    if inconclusive > limits.inconclusive_limit:
        return outcome(
            AnalysisPhase.INCONCLUSIVE,
            f"{inconclusive} inconclusive measurements, over the limit of {limits.inconclusive_limit} "
            f"(last: {last.message})",
        )
    if streak > limits.consecutive_error_limit:
        return outcome(
            AnalysisPhase.ERROR,
            f"{streak} errors in a row, over the limit of {limits.consecutive_error_limit} "
            f"(last: {last.message})",
        )
    if count >= expected_count:
        return outcome(
            AnalysisPhase.SUCCESSFUL, f"{count} of {expected_count} measurements taken within limits"
        )
    return outcome(AnalysisPhase.RUNNING, f"{count} of {expected_count} measurements taken")


# ── Statistical judge (Kayenta / NetflixACAJudge style) ──────────────────────────────────────────────────


@dataclass(frozen=True)
class RankTest:
    """A two-sided Mann-Whitney U test of x against y.

    `u` is x's statistic: the number of pairs (xi, yj) with xi > yj, ties counting ½ (scipy's
    `mannwhitneyu(x, y).statistic`); `z` is signed (positive: x tends to be larger)."""

    u: float
    z: float
    p_value: float


def _average_ranks(values: Sequence[float]) -> tuple[list[float], float]:
    """1-based ranks of `values`, tied values sharing the mean of their ranks, and the tie term Σ(t³ − t)
    over each group of t equal values."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    tie_term = 0.0
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        shared = (start + end + 2) / 2
        for k in range(start, end + 1):
            ranks[order[k]] = shared
        tied = end - start + 1
        tie_term += tied**3 - tied
        start = end + 1
    return ranks, tie_term


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> RankTest:
    """Mann-Whitney U by the normal approximation with tie and continuity corrections — the same numbers
    as scipy.stats.mannwhitneyu(x, y, method="asymptotic") and R's wilcox.test(exact=FALSE,
    correct=TRUE). Good for samples of about 5 to a few hundred values each."""
    if not x or not y:
        raise ValueError("both samples need at least one value")
    if not all(math.isfinite(v) for v in (*x, *y)):
        raise ValueError("samples must be finite numbers: drop NaN and infinities first")
    n1, n2 = len(x), len(y)
    n = n1 + n2
    ranks, tie_term = _average_ranks([*x, *y])
    u = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    variance = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1)))
    if variance <= 0:  # every value equal: no evidence of any difference
        return RankTest(u, 0.0, 1.0)
    distance = max(abs(u - mean) - 0.5, 0.0)  # continuity correction towards the mean
    z = math.copysign(distance / math.sqrt(variance), u - mean)
    # Two-sided: 2·(1 − Φ(|z|)) = erfc(|z|/√2); erfc keeps its precision far out in the tail.
    return RankTest(u, z, min(1.0, math.erfc(abs(z) / math.sqrt(2))))


class Direction(StrEnum):
    """Which way a change of a metric hurts (Kayenta's `direction`)."""

    INCREASE = "increase"  # error rate, latency
    DECREASE = "decrease"  # throughput, success rate
    EITHER = "either"


@dataclass(frozen=True)
class CanaryMetric:
    """One metric the judge compares. A significant shift in the bad direction fails the metric only when
    the canary's median moved by more than `allowed_relative` of the baseline's median *and* by more than
    `allowed_absolute` (Kayenta's effect-size gate, on medians), so a tiny but significant shift passes."""

    name: str
    direction: Direction = Direction.INCREASE
    weight: float = 1.0
    allowed_relative: float = 0.10
    allowed_absolute: float = 0.0
    critical: bool = False  # failing it fails the whole judgment, whatever the score


@dataclass(frozen=True)
class JudgeConfig:
    """The statistical judge's settings; the defaults are Kayenta's 98% confidence and 95/75 thresholds."""

    metrics: tuple[CanaryMetric, ...]
    confidence: float = 0.98
    pass_threshold: float = 95.0
    marginal_threshold: float = 75.0
    min_samples: int = 5


@dataclass(frozen=True)
class Samples:
    """Per-interval values of one metric for the canary and for the baseline."""

    canary: list[float]
    baseline: list[float]


MetricVerdictKind = Literal["pass", "high", "low", "nodata"]


@dataclass(frozen=True)
class MetricVerdict:
    """One metric's comparison, with the numbers behind it (for a workflow query to show)."""

    name: str
    verdict: MetricVerdictKind  # high/low: a significant, material shift in the bad direction
    reason: str
    weight: float
    critical: bool
    n_canary: int
    n_baseline: int
    canary_median: float | None = None
    baseline_median: float | None = None
    u: float | None = None
    p_value: float | None = None
    absolute_change: float | None = None  # canary median − baseline median
    relative_change: float | None = None  # of the baseline median; None when that median is 0


@dataclass(frozen=True)
class Judgment:
    """The statistical judge's answer: Successful, Failed or Inconclusive, the score and every metric."""

    phase: AnalysisPhase
    score: float | None  # 100 × weighted share of passing metrics among those with data; None: no data
    reason: str
    metrics: list[MetricVerdict]


def judge_config_problem(config: JudgeConfig) -> str | None:
    """Why a judge configuration can't be used; None when it is fine."""
    if not config.metrics:
        return "the judge needs at least one metric"
    names = [m.name for m in config.metrics]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        return f"metric names must be unique: {', '.join(duplicates)} appear more than once"
    if not 0 < config.confidence < 1:
        return f"confidence must be between 0 and 1 (e.g. 0.98), got {config.confidence}"
    if not 0 <= config.marginal_threshold <= config.pass_threshold <= 100:
        return (
            f"thresholds must satisfy 0 ≤ marginal ({config.marginal_threshold}) ≤ pass "
            f"({config.pass_threshold}) ≤ 100"
        )
    if problem := MIN_SAMPLES_RANGE.problem("min_samples", config.min_samples):
        return problem
    for metric in config.metrics:
        if problem := WEIGHT_RANGE.problem("weight", metric.weight):
            return f"metric {metric.name!r}: {problem}"
        if not (metric.allowed_relative >= 0 and metric.allowed_absolute >= 0):
            return f"metric {metric.name!r}: allowed_relative and allowed_absolute must be ≥ 0"
    return None


def score_phase(score: float, pass_threshold: float, marginal_threshold: float) -> AnalysisPhase:
    """Kayenta's classification, both comparisons inclusive: ≥ pass → Successful, ≥ marginal →
    Inconclusive (Kayenta's "marginal"), else Failed."""
    if score >= pass_threshold:
        return AnalysisPhase.SUCCESSFUL
    if score >= marginal_threshold:
        return AnalysisPhase.INCONCLUSIVE
    return AnalysisPhase.FAILED


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]


def _material(metric: CanaryMetric, change: float, relative: float | None) -> bool:
    """Whether a median shift is larger than both tolerances (a zero baseline median leaves only the
    absolute one)."""
    beyond_relative = relative is None or abs(relative) > metric.allowed_relative
    return abs(change) > metric.allowed_absolute and beyond_relative


def compare_metric(metric: CanaryMetric, samples: Samples | None, config: JudgeConfig) -> MetricVerdict:
    """Classify one metric: nodata with too few finite values on either side; otherwise high/low when the
    Mann-Whitney test is significant at `config.confidence`, the shift goes the way `metric.direction`
    calls bad, and it clears the effect-size gate; otherwise pass."""
    canary = _finite(samples.canary) if samples is not None else []
    baseline = _finite(samples.baseline) if samples is not None else []
    if min(len(canary), len(baseline)) < config.min_samples:
        reason = (
            f"too few samples: canary {len(canary)}, baseline {len(baseline)}, "
            f"need at least {config.min_samples} each"
        )
        return MetricVerdict(
            metric.name, "nodata", reason, metric.weight, metric.critical, len(canary), len(baseline)
        )
    test = mann_whitney_u(canary, baseline)
    canary_median, baseline_median = statistics.median(canary), statistics.median(baseline)
    change = canary_median - baseline_median
    relative = change / abs(baseline_median) if baseline_median != 0 else (0.0 if change == 0 else None)
    numbers = MetricVerdict(
        name=metric.name,
        verdict="pass",
        reason="",
        weight=metric.weight,
        critical=metric.critical,
        n_canary=len(canary),
        n_baseline=len(baseline),
        canary_median=canary_median,
        baseline_median=baseline_median,
        u=test.u,
        p_value=test.p_value,
        absolute_change=change,
        relative_change=relative,
    )
    alpha = 1 - config.confidence
    if test.p_value >= alpha:
        return replace(numbers, reason=f"no significant difference (p = {test.p_value:.3g} ≥ {alpha:.3g})")
    shift: MetricVerdictKind = "high" if test.z > 0 else "low"
    moved = "higher" if shift == "high" else "lower"
    bad = metric.direction is Direction.EITHER or (shift == "high") == (
        metric.direction is Direction.INCREASE
    )
    if not bad:
        return replace(numbers, reason=f"significantly {moved}, which is fine for this metric")
    if not _material(metric, change, relative):
        reason = (
            f"significant (p = {test.p_value:.3g}) but the median moved only {change:+.4g}, within tolerance"
        )
        return replace(numbers, reason=reason)
    reason = f"canary {moved}: median {canary_median:.4g} vs {baseline_median:.4g} (p = {test.p_value:.3g})"
    return replace(numbers, verdict=shift, reason=reason)


def _share(verdicts: Sequence[MetricVerdict], passing: Collection[str]) -> float:
    """100 × the weighted share of `verdicts` whose verdict is in `passing` (0 when there are none)."""
    total = sum(v.weight for v in verdicts)
    return 100 * sum(v.weight for v in verdicts if v.verdict in passing) / total if total > 0 else 0.0


def judge_canary(samples: Mapping[str, Samples], config: JudgeConfig) -> Judgment:
    """Compare canary with baseline metric by metric and score the result (Kayenta's NetflixACAJudge:
    score = 100 × weighted share of passing metrics, ≥ pass_threshold passes, < marginal_threshold fails).

    A failing critical metric fails the judgment with score 0, as in Kayenta. Unlike Kayenta, which leaves
    metrics without data out of the score, a metric with too few samples makes the judgment Inconclusive
    (the rollout waits for a human rather than promoting on partial evidence) — unless the metrics that
    have data fail it even if every missing one passed."""
    verdicts = [compare_metric(metric, samples.get(metric.name), config) for metric in config.metrics]
    if not verdicts:
        return Judgment(AnalysisPhase.INCONCLUSIVE, None, "no metrics to judge", verdicts)
    with_data = [v for v in verdicts if v.verdict != "nodata"]
    score = _share(with_data, {"pass"}) if with_data else None
    critical = [v.name for v in with_data if v.critical and v.verdict != "pass"]
    if critical:
        return Judgment(AnalysisPhase.FAILED, 0.0, f"critical metric failed: {', '.join(critical)}", verdicts)
    failing = [v.name for v in with_data if v.verdict != "pass"]
    best = _share(verdicts, {"pass", "nodata"})
    if best < config.marginal_threshold:
        reason = f"score {best:.1f} even if the metrics without data passed; failing: {', '.join(failing)}"
        return Judgment(AnalysisPhase.FAILED, score, reason, verdicts)
    missing = [v.name for v in verdicts if v.verdict == "nodata"]
    if missing or score is None:
        return Judgment(
            AnalysisPhase.INCONCLUSIVE, score, f"too few samples for: {', '.join(missing)}", verdicts
        )
    phase = score_phase(score, config.pass_threshold, config.marginal_threshold)
    detail = f"failing: {', '.join(failing)}" if failing else "every metric passed"
    return Judgment(phase, score, f"score {score:.1f} ({detail})", verdicts)


def as_measurement(judgment: Judgment) -> Measurement:
    """A judgment as one measurement of an analysis run (as Argo's Kayenta provider maps a score), so an
    Analyze step can repeat the statistical judge and count its results with `judge_run`."""
    return Measurement(judgment.phase, judgment.score, judgment.reason)


def judgment_measurement(
    judgment: Judgment, read_errors: Sequence[str], last_chance: bool
) -> Measurement | None:
    """How one interval's statistical judgment counts in the analysis run: as its measurement, except
    that read errors without a verdict make an Error measurement, and too few samples while intervals
    remain (the rate windows are still filling) count as nothing yet (None)."""
    measured = as_measurement(judgment)
    if judgment.phase is AnalysisPhase.INCONCLUSIVE and judgment.score is None:
        if read_errors:
            return Measurement(AnalysisPhase.ERROR, None, "; ".join(read_errors))
        if not last_chance:
            return None
    return measured


DEFAULT_TEMPLATES_FILE = Path(__file__).with_name("analysis.yaml")
_CONDITION = re.compile(r"^\s*(>=|<=|>|<)\s*(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*$")


class TemplatesError(PermanentError, ValueError):
    """A metric templates document is malformed."""


def parse_condition(text: object, where: str) -> Condition | None:
    if text is None:
        return None
    match = _CONDITION.match(str(text))
    if not match:
        raise TemplatesError(f"{where}: {text!r} is not a condition like '>= 0.99' or '< 0.5'")
    op = cast(Comparison, match[1])
    return Condition(op, float(match[2]))


def parse_templates(document: object) -> dict[str, MetricTemplate]:
    """Metric templates from a parsed YAML document (see policies/analysis.yaml), validated."""
    if not isinstance(document, dict) or not isinstance(document.get("templates"), dict):
        raise TemplatesError("metric templates: top level must be a mapping with a 'templates' mapping")
    templates: dict[str, MetricTemplate] = {}
    for name, entry in document["templates"].items():
        where = f"metric templates: {name}"
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("query"), str)
            or not entry["query"].strip()
        ):
            raise TemplatesError(f"{where} needs a 'query' string")
        threshold = Threshold(
            success=parse_condition(entry.get("success"), f"{where}.success"),
            failure=parse_condition(entry.get("failure"), f"{where}.failure"),
        )
        template = MetricTemplate(
            str(name),
            threshold,
            entry["query"],
            direction=_direction(entry.get("direction"), where),
            weight=_number(entry, "weight", 1.0, where),
            allowed_relative=_number(entry, "allowed_relative", 0.10, where),
            allowed_absolute=_number(entry, "allowed_absolute", 0.0, where),
            critical=bool(entry.get("critical", False)),
            guard=_guard(entry.get("min_traffic"), where),
        )
        if problem := template_problem(template):
            raise TemplatesError(f"{where}: {problem}")
        templates[str(name)] = template
    return templates


def _guard(value: object, where: str) -> TrafficGuard | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("query"), str) or not value["query"].strip():
        raise TemplatesError(f"{where}.min_traffic needs a 'query' (what to count) and 'at_least'")
    at_least = _number(value, "at_least", 0.0, f"{where}.min_traffic")
    return TrafficGuard(value["query"], at_least)


def _direction(value: object, where: str) -> Direction | None:
    if value is None:
        return None
    try:
        return Direction(str(value))
    except ValueError:
        choices = ", ".join(d.value for d in Direction)
        raise TemplatesError(f"{where}.direction: {value!r} is not one of {choices}") from None


def _number(entry: Mapping[str, object], key: str, default: float, where: str) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise TemplatesError(f"{where}.{key}: {value!r} is not a number ≥ 0")
    return float(value)


def render_query(query: str, **values: str) -> str:
    """Fill a template's {{name}} placeholders (PromQL's own braces stay as they are)."""
    for name, value in values.items():
        query = query.replace("{{" + name + "}}", value)
    if missing := re.findall(r"\{\{(\w+)\}\}", query):
        raise TemplatesError(
            f"the query still has placeholders without a value: {', '.join(sorted(set(missing)))}"
        )
    return query
