"""`lcp bench canary`: how well lcp's canary analysis decides, measured by simulation.

Each run is a fresh lab workload (`lab/workload.py`: a stable version and a canary at the standard plan's
analysis weight, a fault on the canary per scenario), stepped in virtual time one second at a time; after
every step the cumulative counters of each version are read from the workload's Prometheus registry (its
public `collect()`), as a 1 s scrape would. The templates of policies/analysis.yaml are evaluated over
those counters the way Prometheus evaluates their PromQL over a window (ratios of counter increases,
`histogram_quantile`), and the decisions come from the same pure functions the CanaryRollout workflow
calls (`measure`, `judge_run`, `combine_runs`, `judge_canary`, `judgment_measurement`), in the same order
(`workflows/canary.py`: `_analyze`, `_measure_thresholds`, `_judge_statistically`). No Prometheus, no
Temporal, no sleeping: a simulation of the analysis step only.

Both judges read the same simulated traffic in each run (a paired comparison).
"""

import asyncio
import contextlib
import hashlib
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from statistics import NormalDist
from typing import Any

from rich import box
from rich.table import Table

from lab.traces import Constant
from lab.workload import Fault, InMemoryCluster, ServiceSpec, VersionState, Workload, latency_quantile_s
from policies.canary import (
    STANDARD_TEMPLATES,
    AnalysisPhase,
    JudgeConfig,
    Measurement,
    MetricTemplate,
    RunLimits,
    Samples,
    combine_runs,
    guarded_measure,
    judge_canary,
    judge_run,
    judgment_measurement,
)
from policies.errors import PermanentError

# ---- the simulated service ---------------------------------------------------------------------------

NAMESPACE, SERVICE = "bench", "svc"
STABLE, CANARY = "v1", "v2"  # version labels (lcp.dev/version)
STABLE_REPLICAS, CANARY_REPLICAS = 16, 4  # ready replicas set the split: 20%, the standard plan's analysis
RATE_RPS = 50.0  # requests per second to the service (10/s reach the canary)
LOW_RATE_RPS = 4.0  # the low-traffic scenarios (0.8/s reach the canary)
# Far above the offered load (2.5 requests/s per replica): utilisation 0.25%, so nothing saturates and the
# workload's queueing term is negligible (latency ≈ the lognormal service time).
CAPACITY_PER_REPLICA_RPS = 1000.0
BASE_LATENCY_MS = 50.0  # the median service time (the lab's default)
LATENCY_SIGMA = 0.4  # the lognormal's sigma (the lab's default)
Z_99 = NormalDist().inv_cdf(0.99)  # 2.326
STABLE_P99_MS = BASE_LATENCY_MS * math.exp(Z_99 * LATENCY_SIGMA)  # p99 of the unsaturated service time
ADDED_LATENCY_MS = STABLE_P99_MS / 2  # on the canary: its p99 becomes 1.5 × the stable's
# The "busy" scenarios load every replica 20%, as the lab's end-to-end rollouts do (tests/rollout_lab.py:
# 400 requests/s over 4 + 1 replicas of 400/s). The queueing wait then doubles the p99 (126 → 247 ms), so
# a +50% p99 regression is +124 ms there, and the +65 ms those tests once injected is only +27%.
BUSY_UTILIZATION = 0.2
BUSY_CAPACITY_PER_REPLICA_RPS = RATE_RPS / ((STABLE_REPLICAS + CANARY_REPLICAS) * BUSY_UTILIZATION)
BUSY_STABLE_P99_MS = 1000 * latency_quantile_s(
    0.99, median_s=BASE_LATENCY_MS / 1000, sigma=LATENCY_SIGMA, utilization=BUSY_UTILIZATION
)
OLD_E2E_ADDED_LATENCY_MS = 65.0
ERRORS_1PP, ERRORS_5PP = 0.01, 0.05  # error share injected on the canary
BROKEN_ERROR_SHARE = 0.5  # an obviously broken canary (the tests' sanity check)
STEP_S = 1.0  # the workload's virtual time step, and the simulated scrape interval

# ---- the analysis, as the workflow runs it ------------------------------------------------------------

INTERVAL_S = 30.0  # the standard plan's analysis: 5 measurements, one every 30 s
COUNT = 5
MIN_WINDOW_S = 10.0  # RolloutInput.min_window_s: the shortest rate window a query uses
SAMPLES_PER_INTERVAL = 6  # JudgeSettings.samples_per_interval: the statistical judge's sampling
RUN_LIMITS = RunLimits()  # the standard plan's limits: failure 0, inconclusive 0, consecutive errors 4
JUDGES = ("threshold", "statistical")
CATCH_INTERVALS = 2  # "caught" = rolled back at interval ≤ this
# The workflow measures until the run is decided; a run errors out after 5 errors in a row and needs only
# `count` counted measurements, so this safety stop is never reached in practice (it reports "undecided").
MAX_INTERVALS_PER_COUNT = 4

# ---- goals ----------------------------------------------------------------------------------------------

GOAL_CAUGHT_SCENARIOS, GOAL_CAUGHT_MIN = ("errors+5pp", "latency+50%", "busy-latency+50%"), 0.99
GOAL_FALSE_ABORT_SCENARIOS, GOAL_FALSE_ABORT_MAX = ("aa", "busy-aa"), 0.01

SIMULATION_NOTE = (
    "a SIMULATION of the analysis step: traffic, errors and latency from the lab's workload model "
    "(lab/workload.py) in virtual time; templates evaluated over its counters as Prometheus would; "
    "decisions by lcp's policy functions (policies/canary.py); no Prometheus, no Temporal"
)


class BenchError(PermanentError, RuntimeError):
    """The benchmark cannot run as asked (an unknown scenario, templates it cannot evaluate)."""


@dataclass(frozen=True)
class Scenario:
    name: str
    rate_rps: float
    fault: Fault
    bad: bool  # a canary that should be rolled back
    description: str
    capacity_per_replica_rps: float = CAPACITY_PER_REPLICA_RPS


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("aa", RATE_RPS, Fault(), False, "no fault (A/A)"),
    Scenario("errors+1pp", RATE_RPS, Fault(error_share=ERRORS_1PP), True, "1% of the canary's requests fail"),
    Scenario("errors+5pp", RATE_RPS, Fault(error_share=ERRORS_5PP), True, "5% of the canary's requests fail"),
    Scenario(
        "latency+50%",
        RATE_RPS,
        Fault(added_latency_ms=ADDED_LATENCY_MS),
        True,
        f"+{ADDED_LATENCY_MS:.1f} ms on every canary request: its p99 is 1.5 × the stable's",
    ),
    Scenario("low-traffic-aa", LOW_RATE_RPS, Fault(), False, "no fault, 4 requests/s to the service"),
    Scenario(
        "low-traffic+5pp",
        LOW_RATE_RPS,
        Fault(error_share=ERRORS_5PP),
        True,
        "5% of the canary's requests fail, 4 requests/s to the service",
    ),
    Scenario(
        "busy-aa",
        RATE_RPS,
        Fault(),
        False,
        f"no fault, every replica {BUSY_UTILIZATION:.0%} busy: the stable's p99 is "
        f"{BUSY_STABLE_P99_MS:.0f} ms",
        BUSY_CAPACITY_PER_REPLICA_RPS,
    ),
    Scenario(
        "busy-latency+50%",
        RATE_RPS,
        Fault(added_latency_ms=BUSY_STABLE_P99_MS / 2),
        True,
        f"+{BUSY_STABLE_P99_MS / 2:.1f} ms on every canary request, every replica {BUSY_UTILIZATION:.0%} "
        "busy: its p99 is 1.5 × the stable's",
        BUSY_CAPACITY_PER_REPLICA_RPS,
    ),
    Scenario(
        "busy-latency+65ms",
        RATE_RPS,
        Fault(added_latency_ms=OLD_E2E_ADDED_LATENCY_MS),
        True,
        f"+{OLD_E2E_ADDED_LATENCY_MS:g} ms, every replica {BUSY_UTILIZATION:.0%} busy: only +27% at the p99, "
        "inside the judges' tolerance (the end-to-end test's old, mis-sized regression)",
        BUSY_CAPACITY_PER_REPLICA_RPS,
    ),
)
SCENARIO_NAMES = tuple(s.name for s in SCENARIOS)


def scenario(name: str) -> Scenario:
    for found in SCENARIOS:
        if found.name == name:
            return found
    raise BenchError(f"no scenario {name!r}: choose from {', '.join(SCENARIO_NAMES)}")


@dataclass(frozen=True)
class AnalysisPlan:
    """The Analyze step simulated: `count` intervals of `interval_s` seconds with the given templates."""

    templates: dict[str, MetricTemplate]
    interval_s: float = INTERVAL_S
    count: int = COUNT
    limits: RunLimits = RUN_LIMITS
    min_window_s: float = MIN_WINDOW_S
    samples_per_interval: int = SAMPLES_PER_INTERVAL

    @property
    def threshold_window_s(self) -> int:
        return _window(self.interval_s, self.min_window_s)

    @property
    def sample_s(self) -> float:
        return self.interval_s / self.samples_per_interval

    @property
    def sample_window_s(self) -> int:
        return _window(self.sample_s, self.min_window_s)

    @property
    def warmup_s(self) -> int:
        """Traffic before the analysis starts: one window (the longest either judge reads), so that every
        window the analysis reads is full."""
        return max(self.threshold_window_s, self.sample_window_s)

    @property
    def max_intervals(self) -> int:
        return MAX_INTERVALS_PER_COUNT * self.count


def _window(seconds: float, minimum: float) -> int:
    """The workflow's rate window (`workflows.canary._window`), in whole seconds."""
    return max(math.ceil(seconds), math.ceil(minimum))


# ---- PromQL over the simulated counters ------------------------------------------------------------------


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over classic buckets (promql/quantile.go, bucketQuantile):
    `buckets` are (upper bound `le`, cumulative count). Linear interpolation within the bucket holding the
    rank q·count, from 0 for the lowest bucket (when its bound is > 0); a rank in the +Inf bucket gives the
    highest finite bound. NaN without a +Inf bucket, with fewer than 2 buckets, or with no observations."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets)
    if not ordered or not math.isinf(ordered[-1][0]):
        return math.nan
    merged: list[list[float]] = []  # buckets with the same bound add up
    for bound, count in ordered:
        if merged and merged[-1][0] == bound:
            merged[-1][1] += count
        else:
            merged.append([bound, count])
    for below, entry in zip(merged, merged[1:], strict=False):  # counts forced monotonic, as Prometheus does
        entry[1] = max(entry[1], below[1])
    if len(merged) < 2:
        return math.nan
    observations = merged[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next((i for i in range(len(merged) - 1) if merged[i][1] >= rank), len(merged) - 1)
    if b == len(merged) - 1:  # the rank is in the +Inf bucket
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start, end, count = 0.0, merged[b][0], merged[b][1]
    if b > 0:
        start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    return start + (end - start) * (rank / count)


@dataclass(frozen=True)
class Counters:
    """One version's cumulative counters at one moment (or their increase over a window)."""

    requests: float  # every code
    not_5xx: float
    buckets: tuple[tuple[float, float], ...]  # (le, cumulative count), +Inf included

    def minus(self, earlier: "Counters") -> "Counters":
        return Counters(
            self.requests - earlier.requests,
            self.not_5xx - earlier.not_5xx,
            tuple((le, a - b) for (le, a), (_, b) in zip(self.buckets, earlier.buckets, strict=True)),
        )


EMPTY = Counters(0.0, 0.0, ())


def success_rate(window: Counters) -> float:
    """sum(rate(http_requests_total{code!~"5.."}[w])) / sum(rate(http_requests_total[w])); NaN at 0/0."""
    return window.not_5xx / window.requests if window.requests > 0 else math.nan


def p99(window: Counters) -> float:
    """histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[w])))."""
    return histogram_quantile(0.99, window.buckets) if window.buckets else math.nan


SLOW_BOUND_SHARE = 0.95  # the slow-share templates' bound: the stable's p95 bucket edge


def slow_bound(reference: Counters) -> float | None:
    """The smallest finite `le` holding ≥ 95% of the reference's requests (the slow-share templates'
    `bottomk(1, share by le >= 0.95)`, whose cumulative shares rise with `le`); None without traffic."""
    total = reference.buckets[-1][1] if reference.buckets else 0.0
    if total <= 0:
        return None
    return next((le for le, count in reference.buckets[:-1] if count / total >= SLOW_BOUND_SHARE), None)


def slow_share(window: Counters, reference: Counters) -> float:
    """The share of the window's requests slower than the reference's bound (exact: the bound is an `le`)."""
    bound = slow_bound(reference)
    total = window.buckets[-1][1] if window.buckets else 0.0
    if bound is None or total <= 0:
        return math.nan
    return 1 - dict(window.buckets)[bound] / total


def _ratio(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return math.nan
    if b == 0:
        return math.nan if a == 0 else math.copysign(math.inf, a)
    return a / b


# Each template's meaning, read from one window of the measured version's and the stable's counters (the
# stable's own reading, for the statistical judge, passes the stable twice). The queries in
# policies/analysis.yaml are checked to say this (`_check_templates`), so a changed file is refused rather
# than measured wrongly.
MEANINGS: dict[str, Callable[[Counters, Counters], float]] = {
    "success-rate": lambda canary, stable: success_rate(canary),
    "latency-p99": lambda canary, stable: p99(canary),
    "latency-p99-ratio": lambda canary, stable: _ratio(p99(canary), p99(stable)),
    "latency-slow-share": lambda measured, stable: slow_share(measured, stable),
    "latency-slow-share-excess": lambda canary, stable: (
        slow_share(canary, stable) - slow_share(stable, stable)
    ),
}
_QUERY_MARKS = {
    "success-rate": ('code!~"5.."', "http_requests_total"),
    "latency-p99": ("histogram_quantile(0.99", "http_request_duration_seconds_bucket"),
    "latency-p99-ratio": ("histogram_quantile(0.99", "{{baseline_version}}"),
    "latency-slow-share": ('version="{{reference_version}}",le!="+Inf"', ">= 0.95"),
    "latency-slow-share-excess": ('version="{{baseline_version}}",le!="+Inf"', ">= 0.95", "- sum("),
}


def _check_templates(templates: dict[str, MetricTemplate], names: Sequence[str]) -> None:
    for name in names:
        template = templates.get(name)
        if template is None or name not in MEANINGS:
            raise BenchError(f"template {name!r}: the benchmark evaluates only {', '.join(MEANINGS)}")
        compact = template.query.replace(" ", "")
        missing = [mark for mark in _QUERY_MARKS[name] if mark.replace(" ", "") not in compact]
        if template.guard is not None and not all(
            mark in template.guard.query for mark in ("_count{", 'version="{{version}}"')
        ):
            missing.append("a min_traffic query counting the canary's requests")
        if missing:
            raise BenchError(
                f"template {name!r} no longer reads as the benchmark evaluates it (missing {missing}): "
                "update bench/canary.py"
            )


# ---- one run: the workload in virtual time ---------------------------------------------------------------


@contextlib.contextmanager
def _quiet_workload() -> Iterator[None]:
    """The workload logs every fault it is given (a warning): thousands of runs would flood stderr."""
    workload_logger = logging.getLogger("lab.workload")
    level = workload_logger.level
    workload_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        workload_logger.setLevel(level)


class Trace:
    """A fresh workload for one run, and its counters per version read after every second."""

    def __init__(self, spec: Scenario, seed: int) -> None:
        cluster = InMemoryCluster()
        cluster.set_versions(
            NAMESPACE,
            SERVICE,
            [
                VersionState(STABLE, SERVICE, STABLE_REPLICAS),
                VersionState(CANARY, f"{SERVICE}-canary", CANARY_REPLICAS),
            ],
        )
        self.workload = Workload(cluster, seed=seed)
        self.workload.add_service(
            ServiceSpec(
                NAMESPACE,
                SERVICE,
                Constant(spec.rate_rps),
                capacity_per_replica_rps=spec.capacity_per_replica_rps,
                base_latency_ms=BASE_LATENCY_MS,
                latency_sigma=LATENCY_SIGMA,
            )
        )
        if spec.fault != Fault():
            self.workload.set_fault(NAMESPACE, SERVICE, CANARY, spec.fault)
        self.scrapes: list[dict[str, Counters]] = [self._scrape()]  # index = simulated second

    async def run_until(self, t: float) -> None:
        while len(self.scrapes) - 1 < t:
            await self.workload.step(STEP_S)
            self.scrapes.append(self._scrape())

    def _scrape(self) -> dict[str, Counters]:
        requests: dict[str, list[float]] = {}
        buckets: dict[str, list[tuple[float, float]]] = {}
        for family in self.workload.registry.collect():
            for sample in family.samples:
                labels = sample.labels
                if labels.get("namespace") != NAMESPACE or labels.get("service") != SERVICE:
                    continue
                version = labels.get("version", "")
                if sample.name == "http_requests_total":
                    counts = requests.setdefault(version, [0.0, 0.0])
                    counts[0] += sample.value
                    if not labels["code"].startswith("5"):
                        counts[1] += sample.value
                elif sample.name == "http_request_duration_seconds_bucket":
                    buckets.setdefault(version, []).append((float(labels["le"]), sample.value))
        return {
            version: Counters(counts[0], counts[1], tuple(buckets.get(version, ())))
            for version, counts in requests.items()
        }

    def window(self, version: str, end: float, seconds: float) -> Counters:
        """The increase of a version's counters over (end − seconds, end]: what rate() over that window
        divides by its length (the division cancels in every template, all ratios or quantiles). The
        newest scrape at or before a moment stands for it, as Prometheus' lookback does."""
        last = self.scrapes[_second(end)].get(version, EMPTY)
        first = self.scrapes[max(_second(end - seconds), 0)].get(version, EMPTY)
        if not last.buckets:
            return EMPTY
        return last.minus(first) if first.buckets else last

    def value(self, name: str, version: str, end: float, seconds: float) -> float:
        return MEANINGS[name](self.window(version, end, seconds), self.window(STABLE, end, seconds))


def _second(t: float) -> int:
    return max(math.floor(t + 1e-9), 0)


# ---- the two judges, as the workflow drives them ---------------------------------------------------------


@dataclass
class RunDecision:
    phase: AnalysisPhase  # Running: undecided at the safety stop
    interval: int
    seconds: float
    reason: str

    @property
    def outcome(self) -> str:
        if self.phase in (AnalysisPhase.FAILED, AnalysisPhase.ERROR):
            return "rolled_back"
        if self.phase is AnalysisPhase.INCONCLUSIVE:
            return "inconclusive"
        if self.phase is AnalysisPhase.SUCCESSFUL:
            return "promoted"
        return "undecided"


class _Analysis:
    """One Analyze step's run: measurements per template, judged after each interval (workflow `_analyze`)."""

    def __init__(self, plan: AnalysisPlan, names: tuple[str, ...], start: float) -> None:
        self.plan, self.names, self.start = plan, names, start
        self.taken: dict[str, list[Measurement]] = {name: [] for name in names}

    def after_interval(self, trace: Trace, now: float) -> tuple[AnalysisPhase, str]:
        self.measure(trace, now)
        plan = self.plan
        runs = {name: judge_run(ms, plan.limits, plan.count) for name, ms in self.taken.items()}
        return combine_runs(runs) if all(self.taken.values()) else (AnalysisPhase.RUNNING, "")

    def measure(self, trace: Trace, now: float) -> None:
        raise NotImplementedError


class ThresholdAnalysis(_Analysis):
    """`_measure_thresholds`: one reading per template still running, over the interval's window, judged
    against the template's threshold (NaN, e.g. no traffic, is an Error measurement)."""

    def measure(self, trace: Trace, now: float) -> None:
        plan = self.plan
        for name, taken in self.taken.items():
            if judge_run(taken, plan.limits, plan.count).phase is not AnalysisPhase.RUNNING:
                continue
            value = trace.value(name, CANARY, now, plan.threshold_window_s)
            error = None if math.isfinite(value) else f"the query returned {value}, not a finite number"
            template = plan.templates[name]
            # The guard counts the canary's requests in the window (its query is checked to say so).
            traffic = trace.window(CANARY, now, plan.threshold_window_s).requests if template.guard else None
            taken.append(guarded_measure(template, value if error is None else None, error, traffic))


class StatisticalAnalysis(_Analysis):
    """`_judge_statistically`: every template's canary and baseline samples since the analysis began, one
    every interval/6 over a window of max(interval/6, min_window), NaN left out; Kayenta's judge over them
    counts as one measurement of every template."""

    def __init__(self, plan: AnalysisPlan, names: tuple[str, ...], start: float) -> None:
        super().__init__(plan, names, start)
        self.config = JudgeConfig(metrics=tuple(plan.templates[name].canary_metric() for name in names))
        self._cache: dict[tuple[str, str, int], float] = {}

    def _sample(self, trace: Trace, name: str, version: str, index: int) -> float:
        key = (name, version, index)
        if key not in self._cache:
            at = self.start + index * self.plan.sample_s
            self._cache[key] = trace.value(name, version, at, self.plan.sample_window_s)
        return self._cache[key]

    def measure(self, trace: Trace, now: float) -> None:
        plan = self.plan
        points = math.floor((now - self.start) / plan.sample_s + 1e-9) + 1  # a range query's steps
        samples: dict[str, Samples] = {}
        for name in self.names:
            canary = [self._sample(trace, name, CANARY, i) for i in range(points)]
            baseline = [self._sample(trace, name, STABLE, i) for i in range(points)]
            samples[name] = Samples(
                [v for v in canary if math.isfinite(v)], [v for v in baseline if math.isfinite(v)]
            )
        judgment = judge_canary(samples, self.config)
        last_chance = all(len(ms) + 1 >= plan.count for ms in self.taken.values())
        measured = judgment_measurement(judgment, [], last_chance)  # every series exists: no read errors
        if measured is not None:
            for taken in self.taken.values():
                taken.append(measured)


ANALYSES: dict[str, type[_Analysis]] = {"threshold": ThresholdAnalysis, "statistical": StatisticalAnalysis}


def judge_templates(judge: str) -> tuple[str, ...]:
    return tuple(STANDARD_TEMPLATES[judge])


async def _simulate(
    spec: Scenario, seed: int, plan: AnalysisPlan, judges: Sequence[str]
) -> dict[str, RunDecision]:
    trace = Trace(spec, seed)
    start = float(plan.warmup_s)
    await trace.run_until(start)
    running = {judge: ANALYSES[judge](plan, judge_templates(judge), start) for judge in judges}
    decided: dict[str, RunDecision] = {}
    for k in range(1, plan.max_intervals + 1):
        now = start + k * plan.interval_s
        await trace.run_until(now)
        for judge, analysis in list(running.items()):
            phase, reason = analysis.after_interval(trace, now)
            if phase is not AnalysisPhase.RUNNING:
                decided[judge] = RunDecision(phase, k, k * plan.interval_s, reason)
                del running[judge]
        if not running:
            break
    for judge in running:
        k = plan.max_intervals
        decided[judge] = RunDecision(
            AnalysisPhase.RUNNING, k, k * plan.interval_s, "undecided at the safety stop"
        )
    return {judge: decided[judge] for judge in judges}


def simulate_run(
    spec: Scenario, seed: int, plan: AnalysisPlan, judges: Sequence[str] = JUDGES
) -> dict[str, RunDecision]:
    """One simulated analysis of `spec`'s canary (a fresh workload seeded with `seed`) by each judge."""
    for judge in judges:
        _check_templates(plan.templates, judge_templates(judge))
    with _quiet_workload():
        return asyncio.run(_simulate(spec, seed, plan, judges))


def run_seed(base_seed: int, scenario_name: str, run: int) -> int:
    """Each run's workload seed: distinct per (seed, scenario, run), independent of the order runs go in."""
    digest = hashlib.sha256(f"{base_seed}/{scenario_name}/{run}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


# ---- many runs, summarised -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    runs: int
    seed: int = 0
    interval_s: float = INTERVAL_S
    count: int = COUNT
    scenarios: tuple[str, ...] = SCENARIO_NAMES
    workers: int = 1
    judges: tuple[str, ...] = JUDGES


def _task(
    args: tuple[str, int, int, AnalysisPlan, tuple[str, ...]],
) -> tuple[str, int, dict[str, RunDecision]]:
    name, run, seed, plan, judges = args
    return name, run, simulate_run(scenario(name), seed, plan, judges)


def _percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest rank, as the other benchmarks report (bench.chat.percentile)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summarize(decisions: Sequence[RunDecision], interval_s: float) -> dict[str, Any]:
    runs = len(decisions)
    outcomes = {key: 0 for key in ("rolled_back", "inconclusive", "promoted", "undecided")}
    phases: dict[str, int] = {}
    for d in decisions:
        outcomes[d.outcome] += 1
        phases[d.phase.value] = phases.get(d.phase.value, 0) + 1
    caught = sum(1 for d in decisions if d.outcome == "rolled_back" and d.interval <= CATCH_INTERVALS)
    intervals = [d.interval for d in decisions if d.outcome != "undecided"]
    by_interval: dict[str, dict[str, int]] = {}
    for d in decisions:
        row = by_interval.setdefault(str(d.interval), {})
        row[d.outcome] = row.get(d.outcome, 0) + 1
    examples: dict[str, list[str]] = {}
    for d in decisions:
        if d.outcome != "promoted" and len(examples.setdefault(d.outcome, [])) < 3:
            examples[d.outcome].append(f"interval {d.interval}: {d.phase.value}: {d.reason}")
    median = statistics.median(intervals) if intervals else None
    p95 = _percentile(intervals, 95)
    return {
        "runs": runs,
        "counts": outcomes,
        "phases": dict(sorted(phases.items())),
        "rates": {key: round(count / runs, 4) if runs else None for key, count in outcomes.items()},
        f"caught_within_{CATCH_INTERVALS}_intervals": round(caught / runs, 4) if runs else None,
        "intervals_to_decision": {"median": median, "p95": p95},
        "seconds_to_decision": {
            "median": median * interval_s if median is not None else None,
            "p95": p95 * interval_s if p95 is not None else None,
        },
        "decisions_by_interval": dict(sorted(by_interval.items(), key=lambda kv: int(kv[0]))),
        "examples": examples,
    }


def goals(results: dict[str, dict[str, Any]], judges: Sequence[str]) -> list[dict[str, Any]]:
    """The goals for each judge, checked where their scenario ran."""
    checked: list[dict[str, Any]] = []
    caught_key = f"caught_within_{CATCH_INTERVALS}_intervals"
    for judge in judges:
        for name in GOAL_CAUGHT_SCENARIOS:
            if name in results:
                value = results[name][judge][caught_key]
                checked.append(
                    {
                        "judge": judge,
                        "scenario": name,
                        "metric": caught_key,
                        "target": f">= {GOAL_CAUGHT_MIN}",
                        "value": value,
                        "passed": value >= GOAL_CAUGHT_MIN,
                    }
                )
        for name in GOAL_FALSE_ABORT_SCENARIOS:
            if name in results:
                value = results[name][judge]["rates"]["rolled_back"]
                checked.append(
                    {
                        "judge": judge,
                        "scenario": name,
                        "metric": "false_abort_rate (rolled_back)",
                        "target": f"<= {GOAL_FALSE_ABORT_MAX}",
                        "value": value,
                        "passed": value <= GOAL_FALSE_ABORT_MAX,
                    }
                )
    return checked


def run_canary_bench(
    settings: Settings,
    templates: dict[str, MetricTemplate] | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    if settings.runs < 1:
        raise BenchError(f"--runs must be at least 1, got {settings.runs}")
    if not (math.isfinite(settings.interval_s) and settings.interval_s > 0) or settings.count < 1:
        raise BenchError("--interval-s must be > 0 and --count at least 1")
    chosen = [scenario(name) for name in settings.scenarios]  # unknown names refused before any work
    if not chosen:
        raise BenchError("no scenario to run")
    if templates is None:
        from activities.contracts.prometheus import load_templates

        templates = load_templates()
    plan = AnalysisPlan(templates, settings.interval_s, settings.count)
    for judge in settings.judges:
        _check_templates(templates, judge_templates(judge))
    tasks = [
        (spec.name, run, run_seed(settings.seed, spec.name, run), plan, settings.judges)
        for spec in chosen
        for run in range(settings.runs)
    ]
    echo(
        f"{len(tasks)} simulated analyses × {len(settings.judges)} judges "
        f"({settings.runs} per scenario, {len(chosen)} scenarios) on {settings.workers} process(es)…"
    )
    started = time.perf_counter()
    collected: dict[str, dict[str, list[RunDecision]]] = {
        s.name: {j: [] for j in settings.judges} for s in chosen
    }
    if settings.workers > 1:
        # fork: `python -m cli` runs the CLI at import, so a spawned child would start it again.
        with ProcessPoolExecutor(settings.workers, mp_context=get_context("fork")) as pool:
            done = pool.map(_task, tasks, chunksize=max(1, len(tasks) // (settings.workers * 8)))
            for name, _, decided in done:
                for judge, decision in decided.items():
                    collected[name][judge].append(decision)
    else:
        for task in tasks:
            name, _, decided = _task(task)
            for judge, decision in decided.items():
                collected[name][judge].append(decision)
    wall_s = time.perf_counter() - started

    from bench.chat import machine

    results = {
        name: {judge: summarize(decisions, plan.interval_s) for judge, decisions in per_judge.items()}
        for name, per_judge in collected.items()
    }
    checked = goals(results, settings.judges)
    return {
        "simulation": SIMULATION_NOTE,
        "machine": {**machine(), "workers": settings.workers},
        "wall_s": round(wall_s, 2),
        "settings": {
            **{k: v for k, v in asdict(settings).items() if k not in ("scenarios", "judges")},
            "judges": {judge: list(judge_templates(judge)) for judge in settings.judges},
            "limits": asdict(plan.limits),
            "threshold_window_s": plan.threshold_window_s,
            "statistical_sample_s": plan.sample_s,
            "statistical_sample_window_s": plan.sample_window_s,
            "statistical_judge": {k: v for k, v in asdict(JudgeConfig(metrics=())).items() if k != "metrics"},
            "warmup_s": plan.warmup_s,
            "max_intervals": plan.max_intervals,
            "service": {
                "stable": {"version": STABLE, "ready_replicas": STABLE_REPLICAS},
                "canary": {"version": CANARY, "ready_replicas": CANARY_REPLICAS},
                "canary_share": CANARY_REPLICAS / (STABLE_REPLICAS + CANARY_REPLICAS),
                "capacity_per_replica_rps": CAPACITY_PER_REPLICA_RPS,
                "base_latency_ms": BASE_LATENCY_MS,
                "latency_sigma": LATENCY_SIGMA,
                "stable_p99_ms": round(STABLE_P99_MS, 3),
                "busy": {
                    "utilization": BUSY_UTILIZATION,
                    "capacity_per_replica_rps": BUSY_CAPACITY_PER_REPLICA_RPS,
                    "stable_p99_ms": round(BUSY_STABLE_P99_MS, 3),
                },
            },
            "step_s": STEP_S,
            "scrape": (
                "the workload's registry read after every simulated second; a window's value is the "
                "counters' increase over it (rate()'s extrapolation cancels in these ratios and quantiles)"
            ),
            "seeds": (
                "sha256 of 'seed/scenario/run': each run a fresh workload; both judges read the same one"
            ),
        },
        "scenarios": {
            s.name: {
                "rate_rps": s.rate_rps,
                "fault": s.fault.model_dump(),
                "bad": s.bad,
                "description": s.description,
            }
            for s in chosen
        },
        "results": results,
        "goals": checked,
        "goals_passed": all(goal["passed"] for goal in checked),
    }


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def table(result: dict[str, Any]) -> Table:
    """One row per scenario × judge: what share of runs each outcome took, and when it came."""
    settings, m = result["settings"], result["machine"]
    out = Table(
        title=(
            f"SIMULATED canary analysis: {settings['runs']} runs per scenario, "
            f"{settings['count']} × {settings['interval_s']:g} s at "
            f"{100 * settings['service']['canary_share']:.0f}%"
        ),
        caption=f"lab workload model in virtual time; {m['cpus']} CPUs ({m['cpu']})",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        collapse_padding=True,
    )
    columns = (
        "scenario",
        "judge",
        "rolled\nback",
        "paused\n(incon.)",
        "promoted",
        f"caught\n≤{CATCH_INTERVALS} int.",
        "median\nint.",
        "p95\nint.",
    )
    for column in columns:
        out.add_column(column, justify="left" if column in ("scenario", "judge") else "right", no_wrap=True)
    for name, per_judge in result["results"].items():
        for judge, row in per_judge.items():
            rates = row["rates"]
            out.add_row(
                name,
                judge,
                _pct(rates["rolled_back"]),
                _pct(rates["inconclusive"]),
                _pct(rates["promoted"]),
                _pct(row[f"caught_within_{CATCH_INTERVALS}_intervals"]),
                _num(row["intervals_to_decision"]["median"]),
                _num(row["intervals_to_decision"]["p95"]),
            )
    return out


def goal_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for goal in result["goals"]:
        verdict = "PASS" if goal["passed"] else "FAIL"
        lines.append(
            f"{verdict}  {goal['judge']}: {goal['scenario']} {goal['metric']} = {_pct(goal['value'])} "
            f"(goal {goal['target']})"
        )
    return lines
