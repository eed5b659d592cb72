"""Canary policy as tables: the plan, the step function, Argo's analysis counting, the statistical judge."""

import json
import math
import random
from collections.abc import Sequence
from dataclasses import replace

import pytest
from temporalio.converter import DataConverter

from policies.canary import (
    MAX_STEPS,
    STANDARD_TEMPLATES,
    AnalysisPhase,
    Analyze,
    CanaryMetric,
    Condition,
    Decision,
    Direction,
    JudgeConfig,
    Judgment,
    Measurement,
    MetricTemplate,
    Pause,
    RunLimits,
    RunOutcome,
    Samples,
    SetWeight,
    Step,
    StepAction,
    StepProgress,
    Threshold,
    TrafficGuard,
    as_measurement,
    combine_runs,
    compare_metric,
    current_weight,
    decide_step,
    guarded_measure,
    judge_canary,
    judge_config_problem,
    judge_run,
    mann_whitney_u,
    measure,
    plan_problem,
    replicas_for_exact_weights,
    score_phase,
    standard_plan,
    template_problem,
    weight_line,
)

STANDARD_ANALYSIS = "analyse " + ", ".join(STANDARD_TEMPLATES["threshold"])
OK, FAIL, INCON, ERR, RUN = (
    AnalysisPhase.SUCCESSFUL,
    AnalysisPhase.FAILED,
    AnalysisPhase.INCONCLUSIVE,
    AnalysisPhase.ERROR,
    AnalysisPhase.RUNNING,
)

# ── the plan ─────────────────────────────────────────────────────────────────────────────────────────────


def test_the_standard_plan_moves_traffic_gradually_and_checks_the_canary_before_half() -> None:
    """What a rollout without steps does: a valid plan that ends with all traffic on the canary, in
    growing steps from a small first one; it holds each share a while before the next, and analyses
    the canary with the standard templates before it takes half the traffic."""
    plan = standard_plan()
    assert plan_problem(plan) is None
    weights = [step.percent for step in plan if isinstance(step, SetWeight)]
    assert weights == sorted(set(weights)) and weights[0] <= 10
    assert plan[-1] == SetWeight(100)
    for step, after in zip(plan, plan[1:], strict=False):
        if isinstance(step, SetWeight):
            assert isinstance(after, Pause) and (after.duration_s or 0) > 0, (step, after)
    half = next(i for i, step in enumerate(plan) if isinstance(step, SetWeight) and step.percent >= 50)
    analyses = [step for step in plan[:half] if isinstance(step, Analyze)]
    assert [a.templates for a in analyses] == [STANDARD_TEMPLATES["threshold"]]
    assert analyses[0].count > 1


@pytest.mark.parametrize("scale", [0.5, 0.1, 0.05])
def test_standard_plan_scales_durations_only(scale: float) -> None:
    """`scale` makes a plan for tests and demos: every wait shorter by that factor, and nothing else."""

    def shrunk(step: Step) -> Step:
        if isinstance(step, Pause):
            return Pause(step.duration_s * scale if step.duration_s is not None else None)
        if isinstance(step, Analyze):
            return replace(step, interval_s=step.interval_s * scale)
        return step

    plan = standard_plan(scale)
    assert plan == [shrunk(step) for step in standard_plan()]
    assert plan_problem(plan) is None


@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan, math.inf])
def test_standard_plan_rejects_a_meaningless_scale(scale: float) -> None:
    with pytest.raises(ValueError, match="scale must be a positive number"):
        standard_plan(scale)


@pytest.mark.parametrize(
    ("index", "weight"), [(0, 10), (1, 10), (2, 20), (4, 20), (5, 50), (6, 50), (7, 100)]
)
def test_current_weight_is_the_last_weight_set(index: int, weight: int) -> None:
    analysis = Analyze(("success-rate",), interval_s=10, count=3)
    plan: list[Step] = [
        SetWeight(10),
        Pause(1),
        SetWeight(20),
        Pause(1),
        analysis,
        SetWeight(50),
        Pause(None),
        SetWeight(100),
    ]
    assert current_weight(plan, index) == weight


def test_current_weight_before_any_set_weight_is_zero() -> None:
    assert current_weight([Pause(None), SetWeight(30)], 0) == 0


@pytest.mark.parametrize(
    ("weights", "at_least", "total"),
    [
        ([10, 20, 50, 100], 4, 10),  # the standard plan: 10% needs a multiple of 10
        ([10, 25, 100], 4, 20),  # 10% and 25%: a multiple of 20
        ([25, 50, 100], 4, 4),  # 4 already splits exactly: kept
        ([25, 50, 100], 6, 8),  # at least 6: the next multiple of 4
        ([20, 100], 1, 5),
        ([33, 100], 4, 100),  # 33% is exact only in hundreds
        ([], 3, 3),  # no weights: nothing to make exact
    ],
)
def test_exact_weights_take_the_fewest_replicas_that_split_into_every_weight(
    weights: list[int], at_least: int, total: int
) -> None:
    steps: list[Step] = [SetWeight(w) for w in weights]
    assert replicas_for_exact_weights([Pause(1), *steps], at_least) == total
    for weight in weights:
        assert total * weight % 100 == 0


@pytest.mark.parametrize(
    ("asked", "canary", "total", "line"),
    [
        (
            10,
            1,
            4,
            "canary at 25% of the traffic, 10% asked: 1 of 4 replicas (a multiple of 10 would make it exact)",
        ),
        (
            20,
            1,
            4,
            "canary at 25% of the traffic, 20% asked: 1 of 4 replicas (a multiple of 5 would make it exact)",
        ),
        (
            50,
            2,
            3,
            "canary at 66.7% of the traffic, 50% asked: 2 of 3 replicas "
            "(a multiple of 2 would make it exact)",
        ),
        (10, 1, 10, "canary at 10%"),
        (100, 4, 4, "canary at 100%"),
        (10, None, None, "canary at 10%"),  # behind a traffic router the weight is the one asked for
    ],
)
def test_the_history_says_the_weight_the_replicas_give(
    asked: int, canary: int | None, total: int | None, line: str
) -> None:
    assert weight_line(asked, canary, total) == line


GOOD = Analyze(("success-rate",), interval_s=10, count=3)


@pytest.mark.parametrize(
    ("steps", "options", "problem"),
    [
        ([SetWeight(10), Pause(None), GOOD, SetWeight(100)], {}, None),
        ([SetWeight(0), SetWeight(0), SetWeight(100)], {}, None),
        ([Pause(0)], {}, None),
        ([], {}, "the plan has no steps"),
        ([SetWeight(10)] * (MAX_STEPS + 1), {}, f"{MAX_STEPS + 1} steps, over the limit of {MAX_STEPS}"),
        ([SetWeight(10)] * 6, {"max_steps": 5}, "6 steps, over the limit of 5"),
        ([SetWeight(101)], {}, "step 0: weight 101 is not a whole percentage from 0 to 100"),
        ([SetWeight(10), SetWeight(-1)], {}, "step 1: weight -1 is not"),
        ([SetWeight(12.5)], {}, "step 0: weight 12.5 is not a whole percentage"),  # type: ignore[arg-type]
        ([SetWeight(50), Pause(1), SetWeight(20)], {}, "step 2: weight goes down from 50% to 20%"),
        ([SetWeight(50), Pause(1), SetWeight(20)], {"allow_decrease": True}, None),
        (
            [SetWeight(10), Pause(-1)],
            {},
            "step 1: pause duration_s must be a number of seconds from 0 to 604800, got -1",
        ),
        (
            [Pause(math.nan)],
            {},
            "step 0: pause duration_s must be a number of seconds from 0 to 604800, got nan",
        ),
        (
            [Analyze(("x",), interval_s=0, count=3)],
            {},
            "step 0: analysis interval_s must be a number of seconds from 1",
        ),
        (
            [Analyze(("x",), interval_s=-5, count=3)],
            {},
            "interval_s must be a number of seconds from 1 to 86400, got -5",
        ),
        (
            [Analyze(("x",), interval_s=10, count=0)],
            {},
            "analysis count must be a whole number from 1 to 500, got 0",
        ),
        ([Analyze(("",), interval_s=10, count=1)], {}, "analysis needs at least one template name"),
        ([Analyze(("x",), 10, 2, failure_limit=3)], {}, "count (2) must be ≥ failure_limit (3)"),
        ([Analyze(("x",), 10, 2, inconclusive_limit=3)], {}, "count (2) must be ≥ inconclusive_limit (3)"),
        (
            [Analyze(("x",), 10, 2, failure_limit=-1)],
            {},
            "failure_limit must be a whole number from 0 to 500, got -1",
        ),
        ([Analyze(("x",), 10, 2, consecutive_error_limit=-1)], {}, "consecutive_error_limit must be a whole"),
        ([GOOD], {"known_templates": {"success-rate"}}, None),
        (
            [SetWeight(5), GOOD],
            {"known_templates": {"latency"}},
            "step 1: analysis template 'success-rate' is",
        ),
        ([SetWeight(5), "setWeight: 10"], {}, "step 1: str is not a step"),
    ],
)
def test_plan_problem(steps: list[object], options: dict[str, object], problem: str | None) -> None:
    found = plan_problem(steps, **options)  # type: ignore[arg-type]
    assert (found is None) if problem is None else (found is not None and problem in found), found


def test_steps_survive_a_temporal_payload_round_trip() -> None:
    converter = DataConverter.default.payload_converter
    plan = standard_plan(0.01) + [Pause(None), Analyze(("latency",), 5, 4, 1, 2, 3)]
    payloads = converter.to_payloads([plan])
    assert converter.from_payloads(payloads, [list[Step]]) == [plan]
    # each step says what it is, for anyone reading the payload (a query result, another SDK)
    kinds = [step["kind"] for step in json.loads(payloads[0].data)]
    assert kinds[:3] == ["set_weight", "pause", "set_weight"]
    assert kinds[-2:] == ["pause", "analyze"]


# ── the step function ────────────────────────────────────────────────────────────────────────────────────

PLAN: list[Step] = [SetWeight(10), Pause(120.0), Pause(None), Analyze(("success-rate",), 30.0, 5)]


@pytest.mark.parametrize(
    ("index", "progress", "action", "next_index", "wait_s"),
    [
        (0, StepProgress(), StepAction.SET_WEIGHT, 0, None),
        (0, StepProgress(weight_applied=True), StepAction.ADVANCE, 1, None),
        (0, StepProgress(decision=Decision.PROMOTE), StepAction.SET_WEIGHT, 0, None),
        (0, StepProgress(decision=Decision.ABORT), StepAction.ROLLBACK, 0, None),
        (1, StepProgress(elapsed_s=0.0), StepAction.WAIT, 1, 120.0),
        (1, StepProgress(elapsed_s=30.0), StepAction.WAIT, 1, 90.0),
        (1, StepProgress(elapsed_s=120.0), StepAction.ADVANCE, 2, None),
        (1, StepProgress(elapsed_s=500.0), StepAction.ADVANCE, 2, None),
        (1, StepProgress(elapsed_s=10.0, decision=Decision.PROMOTE), StepAction.ADVANCE, 2, None),
        (1, StepProgress(elapsed_s=10.0, decision=Decision.ABORT), StepAction.ROLLBACK, 1, None),
        (2, StepProgress(elapsed_s=1e9), StepAction.WAIT, 2, None),
        (2, StepProgress(decision=Decision.PROMOTE), StepAction.ADVANCE, 3, None),
        (2, StepProgress(decision=Decision.ABORT), StepAction.ROLLBACK, 2, None),
        (3, StepProgress(), StepAction.RUN_ANALYSIS, 3, None),
        (3, StepProgress(analysis=RUN), StepAction.RUN_ANALYSIS, 3, None),
        (3, StepProgress(analysis=OK), StepAction.ADVANCE, 4, None),
        (3, StepProgress(analysis=FAIL), StepAction.ROLLBACK, 3, None),
        (3, StepProgress(analysis=ERR), StepAction.ROLLBACK, 3, None),
        (3, StepProgress(analysis=INCON), StepAction.WAIT, 3, None),
        (3, StepProgress(analysis=INCON, decision=Decision.PROMOTE), StepAction.ADVANCE, 4, None),
        (3, StepProgress(analysis=INCON, decision=Decision.ABORT), StepAction.ROLLBACK, 3, None),
        (3, StepProgress(analysis=FAIL, decision=Decision.PROMOTE), StepAction.ROLLBACK, 3, None),
        (3, StepProgress(analysis=OK, decision=Decision.ABORT), StepAction.ROLLBACK, 3, None),
        (4, StepProgress(), StepAction.COMPLETE, 4, None),
    ],
)
def test_decide_step(
    index: int, progress: StepProgress, action: StepAction, next_index: int, wait_s: float | None
) -> None:
    decision = decide_step(PLAN, index, progress)
    assert (decision.action, decision.index) == (action, next_index), decision.reason
    assert decision.wait_s == (pytest.approx(wait_s) if wait_s is not None else None)
    assert decision.done == (action in (StepAction.ADVANCE, StepAction.COMPLETE))


def test_decide_step_names_what_to_do() -> None:
    assert decide_step(PLAN, 0, StepProgress()).weight == 10
    assert decide_step(PLAN, 3, StepProgress()).templates == ("success-rate",)
    assert "human" in decide_step(PLAN, 3, StepProgress(analysis=INCON)).reason


@pytest.mark.parametrize("index", [-1, len(PLAN) + 1])
def test_decide_step_rejects_an_index_outside_the_plan(index: int) -> None:
    with pytest.raises(ValueError, match="outside the plan"):
        decide_step(PLAN, index, StepProgress())


def drive(steps: list[Step], analysis: AnalysisPhase, human: Decision | None) -> tuple[list[str], StepAction]:
    """Run a plan the way a workflow would, with a fake clock: what it did, and how it ended."""
    log: list[str] = []
    index, progress = 0, StepProgress()
    for _ in range(100):
        decision = decide_step(steps, index, progress)
        if decision.action in (StepAction.COMPLETE, StepAction.ROLLBACK):
            return log, decision.action
        if decision.action is StepAction.ADVANCE:
            index, progress = decision.index, StepProgress()
        elif decision.action is StepAction.SET_WEIGHT:
            log.append(f"weight {decision.weight}")
            progress = replace(progress, weight_applied=True)
        elif decision.action is StepAction.RUN_ANALYSIS:
            log.append(f"analyse {', '.join(decision.templates)}")
            progress = replace(progress, analysis=analysis)
        elif decision.wait_s is not None:
            log.append(f"wait {decision.wait_s:g}")
            progress = replace(progress, elapsed_s=progress.elapsed_s + decision.wait_s)
        else:
            log.append("ask a human")
            if human is None:
                return log, StepAction.WAIT
            progress = replace(progress, decision=human)
    raise AssertionError("the plan never finished")


def test_a_healthy_rollout_walks_every_step() -> None:
    log, end = drive(standard_plan(0.01), OK, None)
    assert end is StepAction.COMPLETE
    assert log == [
        "weight 10",
        "wait 1.2",
        "weight 20",
        "wait 1.2",
        STANDARD_ANALYSIS,
        "weight 50",
        "wait 3",
        "weight 100",
    ]


@pytest.mark.parametrize(
    ("analysis", "human", "end", "last"),
    [
        (FAIL, None, StepAction.ROLLBACK, STANDARD_ANALYSIS),
        (ERR, None, StepAction.ROLLBACK, STANDARD_ANALYSIS),
        (INCON, None, StepAction.WAIT, "ask a human"),
        (INCON, Decision.ABORT, StepAction.ROLLBACK, "ask a human"),
        (INCON, Decision.PROMOTE, StepAction.COMPLETE, "weight 100"),
    ],
)
def test_analysis_outcome_decides_the_rollout(
    analysis: AnalysisPhase, human: Decision | None, end: StepAction, last: str
) -> None:
    log, finished = drive(standard_plan(0.01), analysis, human)
    assert (finished, log[-1]) == (end, last)
    assert ("weight 50" in log) == (end is StepAction.COMPLETE)


def test_a_human_pause_waits_until_someone_decides() -> None:
    steps: list[Step] = [SetWeight(25), Pause(None), SetWeight(100)]
    assert drive(steps, OK, None) == (["weight 25", "ask a human"], StepAction.WAIT)
    assert drive(steps, OK, Decision.PROMOTE) == (
        ["weight 25", "ask a human", "weight 100"],
        StepAction.COMPLETE,
    )


# ── threshold judge ──────────────────────────────────────────────────────────────────────────────────────

BOTH = Threshold(success=Condition(">=", 0.99), failure=Condition("<", 0.95))


@pytest.mark.parametrize(
    ("value", "error", "threshold", "phase", "message"),
    [
        (0.995, None, BOTH, OK, "meets value >= 0.99"),
        (0.99, None, BOTH, OK, "meets value >= 0.99"),
        (0.97, None, BOTH, INCON, "meets neither"),
        (0.95, None, BOTH, INCON, "meets neither"),
        (0.94, None, BOTH, FAIL, "failure condition value < 0.95"),
        # both conditions true: the failure condition wins (Argo's EvaluateResult)
        (0.95, None, Threshold(Condition(">", 0.5), Condition(">", 0.9)), FAIL, "failure condition"),
        # only a success condition: missing it is a failure
        (0.98, None, Threshold(success=Condition(">=", 0.99)), FAIL, "misses value >= 0.99"),
        (0.999, None, Threshold(success=Condition(">=", 0.99)), OK, "meets"),
        # only a failure condition: avoiding it is a success
        (0.5, None, Threshold(failure=Condition(">", 0.9)), OK, "avoids value > 0.9"),
        (0.91, None, Threshold(failure=Condition(">", 0.9)), FAIL, "failure condition"),
        (0.9, None, Threshold(failure=Condition(">", 0.9)), OK, "avoids"),
        (0.2, None, Threshold(failure=Condition("<=", 0.2)), FAIL, "failure condition value <= 0.2"),
        (0.5, None, Threshold(), OK, "no condition"),
        (None, None, BOTH, ERR, "no value"),
        (math.nan, None, BOTH, ERR, "not a finite number"),
        (math.inf, None, BOTH, ERR, "not a finite number"),
        (0.999, "prometheus: timeout", BOTH, ERR, "prometheus: timeout"),
    ],
)
def test_measure(
    value: float | None, error: str | None, threshold: Threshold, phase: AnalysisPhase, message: str
) -> None:
    found = measure(value, error, threshold)
    assert found.phase is phase
    assert message in found.message
    assert found.value == (value if phase is not ERR else None)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        (MetricTemplate("success-rate", BOTH, "sum(rate(ok[1m])) / sum(rate(all[1m]))"), None),
        (MetricTemplate("success-rate", Threshold()), "neither a success nor a failure condition"),
        (MetricTemplate(" ", BOTH), "needs a name"),
        (MetricTemplate("x", Threshold(Condition(">=", math.inf))), "not a finite number"),
        (MetricTemplate("x", Threshold(Condition("==", 1.0))), "unknown comparison '=='"),  # type: ignore[arg-type]
    ],
)
def test_template_problem(template: MetricTemplate, problem: str | None) -> None:
    found = template_problem(template)
    assert (found is None) if problem is None else (found is not None and problem in found), found


def run_of(phases: str) -> list[Measurement]:
    """Measurements from letters: S successful, F failed, I inconclusive, E error, R still in flight."""
    by_letter = {"S": OK, "F": FAIL, "I": INCON, "E": ERR, "R": RUN}
    return [Measurement(by_letter[c], None, f"#{n} {c}") for n, c in enumerate(phases)]


@pytest.mark.parametrize(
    ("phases", "limits", "count", "expected"),
    [
        ("", RunLimits(), 3, RUN),
        ("SS", RunLimits(), 3, RUN),
        ("SSS", RunLimits(), 3, OK),
        ("SSSS", RunLimits(), 3, OK),
        # failure_limit 0: the first failure fails the run, even before the count is reached
        ("F", RunLimits(), 3, FAIL),
        ("SSF", RunLimits(), 3, FAIL),
        # failure_limit 1: one failure is tolerated, the second is not
        ("F", RunLimits(failure_limit=1), 3, RUN),
        ("FSS", RunLimits(failure_limit=1), 3, OK),
        ("FSF", RunLimits(failure_limit=1), 3, FAIL),
        # inconclusive_limit works the same way
        ("I", RunLimits(), 3, INCON),
        ("SSI", RunLimits(), 3, INCON),
        ("ISS", RunLimits(inconclusive_limit=1), 3, OK),
        ("ISI", RunLimits(inconclusive_limit=1), 3, INCON),
        # Argo checks failed before inconclusive
        ("IF", RunLimits(), 3, FAIL),
        ("FI", RunLimits(failure_limit=1), 3, INCON),
        # errors: only more than consecutive_error_limit in a row end the run
        ("EEEE", RunLimits(), 3, RUN),
        ("EEEEE", RunLimits(), 3, ERR),
        ("E", RunLimits(consecutive_error_limit=0), 3, ERR),
        ("EE", RunLimits(consecutive_error_limit=1), 3, ERR),
        ("EEEESEEEE", RunLimits(), 3, RUN),
        ("EEEESEEEEE", RunLimits(), 3, ERR),
        ("EEEEFEEEE", RunLimits(failure_limit=1), 3, RUN),
        ("EEEEIEEEE", RunLimits(inconclusive_limit=1), 3, RUN),
        # errors don't count towards the count
        ("SSE", RunLimits(), 3, RUN),
        ("SESES", RunLimits(), 3, OK),
        # a measurement still in flight keeps the run running, even past a limit
        ("FR", RunLimits(), 3, RUN),
        ("SSR", RunLimits(), 3, RUN),
        ("SSRS", RunLimits(), 3, OK),
    ],
)
def test_judge_run_counts_like_argo(
    phases: str, limits: RunLimits, count: int, expected: AnalysisPhase
) -> None:
    outcome = judge_run(run_of(phases), limits, count)
    assert outcome.phase is expected, outcome.reason


def test_judge_run_reports_counters_and_the_last_message() -> None:
    outcome = judge_run(run_of("SFEEIS"), RunLimits(failure_limit=1, inconclusive_limit=1), 5)
    assert outcome.phase is RUN
    assert (outcome.count, outcome.successful, outcome.failed, outcome.inconclusive) == (4, 2, 1, 1)
    assert (outcome.errors, outcome.consecutive_errors) == (2, 0)
    failed = judge_run(run_of("SEEF"), RunLimits(), 5)
    assert "1 failed measurements, over the failure limit of 0" in failed.reason
    assert "#3 F" in failed.reason


def test_an_analyze_step_carries_its_limits() -> None:
    step = Analyze(("x",), 10, 4, failure_limit=1, inconclusive_limit=2, consecutive_error_limit=3)
    assert step.limits == RunLimits(1, 2, 3)
    assert Analyze(("x",), 10, 4).limits == RunLimits(0, 0, 4)


# ── Mann-Whitney U ───────────────────────────────────────────────────────────────────────────────────────


# Reference values: scipy 1.17.1, scipy.stats.mannwhitneyu(x, y, method="asymptotic") (two-sided, tie and
# continuity corrections); the first case is the example in scipy's documentation.
@pytest.mark.parametrize(
    ("x", "y", "u", "p"),
    [
        ([19, 22, 16, 29, 24], [20, 11, 17, 12], 17.0, 0.11134688653314041),
        ([1, 2, 2, 3, 3, 3], [2, 3, 4, 4, 5, 5, 5], 5.5, 0.02773088616647723),
        ([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], 0.0, 0.012185780355344813),
        ([(i * 7) % 13 for i in range(40)], [(i * 5) % 11 + 1 for i in range(50)], 972.0, 0.8227289315558817),
        (
            [((i * 37) % 101) / 10 for i in range(200)],
            [((i * 53) % 97) / 10 + 0.5 for i in range(180)],
            17083.0,
            0.3912820450929373,
        ),
        (list(range(51, 101)), list(range(1, 51)), 2500.0, 7.066071930388932e-18),
    ],
)
def test_mann_whitney_matches_scipy(x: list[float], y: list[float], u: float, p: float) -> None:
    test = mann_whitney_u(x, y)
    assert test.u == u
    assert test.p_value == pytest.approx(p, rel=1e-9)


def pairs_above(x: Sequence[float], y: Sequence[float]) -> float:
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y)


@pytest.mark.parametrize("seed", range(5))
def test_u_counts_pairs_and_the_test_is_symmetric(seed: int) -> None:
    rng = random.Random(seed)
    x = [float(rng.randint(0, 9)) for _ in range(rng.randint(5, 30))]
    y = [float(rng.randint(0, 12)) for _ in range(rng.randint(5, 30))]
    forward, backward = mann_whitney_u(x, y), mann_whitney_u(y, x)
    assert forward.u == pairs_above(x, y)
    assert forward.u + backward.u == len(x) * len(y)
    assert forward.p_value == pytest.approx(backward.p_value, rel=1e-12)
    assert forward.z == pytest.approx(-backward.z)
    shifted = mann_whitney_u([v + 100 for v in x], [v + 100 for v in y])
    assert (shifted.u, shifted.p_value) == (forward.u, forward.p_value)


def test_mann_whitney_edges() -> None:
    same = mann_whitney_u([3.0] * 6, [3.0] * 8)
    assert (same.u, same.z, same.p_value) == (24.0, 0.0, 1.0)
    assert mann_whitney_u([1, 2, 3], [1, 2, 3]).p_value == 1.0
    assert mann_whitney_u([10, 11, 12, 13, 14], [1, 2, 3, 4, 5]).z > 0
    with pytest.raises(ValueError, match="at least one value"):
        mann_whitney_u([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        mann_whitney_u([1.0, math.nan], [1.0, 2.0])


def test_p_values_are_calibrated_on_identical_distributions() -> None:
    rng = random.Random(7)
    p_values = [
        mann_whitney_u([rng.gauss(0, 1) for _ in range(30)], [rng.gauss(0, 1) for _ in range(30)]).p_value
        for _ in range(400)
    ]
    below_alpha = sum(p < 0.02 for p in p_values) / len(p_values)
    below_half = sum(p < 0.5 for p in p_values) / len(p_values)
    assert below_alpha <= 0.045
    assert 0.4 <= below_half <= 0.6


# ── statistical judge ────────────────────────────────────────────────────────────────────────────────────

ERRORS = CanaryMetric("error_rate", allowed_absolute=0.005)
LATENCY = CanaryMetric("latency_p95_ms")
CONFIG = JudgeConfig((ERRORS, LATENCY))


def interval_values(
    rng: random.Random, error_rate: float, latency_ms: float, n: int = 20
) -> tuple[list[float], ...]:
    """Per-interval error rates (2000 requests an interval) and p95 latencies."""
    sd = math.sqrt(error_rate * (1 - error_rate) / 2000)
    errors = [max(0.0, rng.gauss(error_rate, sd)) for _ in range(n)]
    latency = [rng.gauss(latency_ms, 15.0) for _ in range(n)]
    return errors, latency


def judge_pair(rng: random.Random, canary_error: float, config: JudgeConfig = CONFIG) -> Judgment:
    canary_errors, canary_latency = interval_values(rng, canary_error, 250.0)
    baseline_errors, baseline_latency = interval_values(rng, 0.01, 250.0)
    samples = {
        "error_rate": Samples(canary_errors, baseline_errors),
        "latency_p95_ms": Samples(canary_latency, baseline_latency),
    }
    return judge_canary(samples, config)


def test_identical_versions_are_not_failed() -> None:
    rng = random.Random(20240611)
    judgments = [judge_pair(rng, 0.01) for _ in range(200)]
    not_failed = sum(j.phase is not FAIL for j in judgments)
    assert not_failed >= 198, [j.reason for j in judgments if j.phase is FAIL]


@pytest.mark.parametrize("critical", [False, True])
def test_five_more_points_of_errors_fail(critical: bool) -> None:
    config = replace(CONFIG, metrics=(replace(ERRORS, critical=critical), LATENCY))
    rng = random.Random(11)
    for _ in range(20):
        judgment = judge_pair(rng, 0.06, config)
        assert judgment.phase is FAIL, judgment.reason
        errors = judgment.metrics[0]
        assert errors.verdict == "high"
        assert judgment.score == (0.0 if critical else 50.0)
        assert errors.absolute_change is not None and errors.absolute_change == pytest.approx(0.05, abs=0.005)


def steady(level: float, n: int = 30) -> list[float]:
    """Values tightly around `level`: any shift bigger than 1 is highly significant."""
    return [level + (i % 10) * 0.1 for i in range(n)]


@pytest.mark.parametrize(
    ("metric", "canary", "baseline", "verdict"),
    [
        # significant but small: the effect-size gate lets it pass
        (CanaryMetric("m"), steady(105), steady(100), "pass"),
        (CanaryMetric("m"), steady(115), steady(100), "high"),
        (CanaryMetric("m", allowed_relative=0.2), steady(115), steady(100), "pass"),
        (CanaryMetric("m", allowed_absolute=20.0), steady(115), steady(100), "pass"),
        (CanaryMetric("m", allowed_absolute=10.0), steady(115), steady(100), "high"),
        # direction: which way hurts
        (CanaryMetric("m"), steady(85), steady(100), "pass"),
        (CanaryMetric("m", Direction.DECREASE), steady(85), steady(100), "low"),
        (CanaryMetric("m", Direction.DECREASE), steady(115), steady(100), "pass"),
        (CanaryMetric("m", Direction.EITHER), steady(85), steady(100), "low"),
        (CanaryMetric("m", Direction.EITHER), steady(115), steady(100), "high"),
        # a baseline median of zero leaves only the absolute tolerance
        (CanaryMetric("m"), [0.002] * 10, [0.0] * 10, "high"),
        (CanaryMetric("m", allowed_absolute=0.01), [0.002] * 10, [0.0] * 10, "pass"),
        # not significant: passes however large the median moved
        (CanaryMetric("m"), [1, 2, 3, 100, 200], [1, 2, 3, 4, 5], "pass"),
    ],
)
def test_compare_metric(
    metric: CanaryMetric, canary: list[float], baseline: list[float], verdict: str
) -> None:
    found = compare_metric(metric, Samples(canary, baseline), JudgeConfig((metric,)))
    assert found.verdict == verdict, found.reason


@pytest.mark.parametrize(
    ("direction", "confidence", "verdict"),
    [
        (Direction.DECREASE, 0.98, "pass"),
        (Direction.DECREASE, 0.95, "low"),
        (Direction.EITHER, 0.95, "low"),
        (Direction.INCREASE, 0.95, "pass"),
    ],
)
def test_confidence_sets_the_significance_level(
    direction: Direction, confidence: float, verdict: str
) -> None:
    # scipy's p for these samples is 0.0277 (see the Mann-Whitney table): significant at 95%, not at 98%
    metric = CanaryMetric("throughput", direction)
    samples = Samples([1, 2, 2, 3, 3, 3], [2, 3, 4, 4, 5, 5, 5])
    found = compare_metric(metric, samples, JudgeConfig((metric,), confidence=confidence))
    assert found.verdict == verdict, found.reason
    assert found.relative_change == pytest.approx(-0.375)


def test_a_tiny_significant_shift_passes_and_shows_its_numbers() -> None:
    found = compare_metric(LATENCY, Samples(steady(255), steady(250)), CONFIG)
    assert found.verdict == "pass"
    assert found.p_value is not None and found.p_value < 0.02
    assert "within tolerance" in found.reason
    assert found.canary_median == pytest.approx(255.45)
    assert found.baseline_median == pytest.approx(250.45)
    assert found.absolute_change == pytest.approx(5.0)
    assert found.relative_change == pytest.approx(5.0 / 250.45)
    assert found.u == 900.0
    assert (found.n_canary, found.n_baseline) == (30, 30)


def test_non_finite_samples_are_dropped_before_comparing() -> None:
    canary = [1.0, math.nan, 2.0, math.inf, 3.0, 4.0, 5.0]
    found = compare_metric(LATENCY, Samples(canary, [1.0, 2.0, 3.0, 4.0, 5.0]), CONFIG)
    assert (found.n_canary, found.verdict) == (5, "pass")


def test_too_few_samples_make_the_judgment_inconclusive() -> None:
    samples = {
        "error_rate": Samples([0.01] * 4, [0.01] * 20),
        "latency_p95_ms": Samples(steady(250), steady(250)),
    }
    judgment = judge_canary(samples, CONFIG)
    assert judgment.phase is INCON
    assert "too few samples for: error_rate" in judgment.reason
    assert judgment.metrics[0].verdict == "nodata"
    assert "canary 4, baseline 20, need at least 5" in judgment.metrics[0].reason
    assert judgment.score == 100.0


def test_a_missing_metric_is_nodata() -> None:
    judgment = judge_canary({}, CONFIG)
    assert (judgment.phase, judgment.score) == (INCON, None)
    assert [m.verdict for m in judgment.metrics] == ["nodata", "nodata"]


def test_missing_data_cannot_save_a_failing_canary() -> None:
    metrics = (CanaryMetric("a", weight=3.0), CanaryMetric("b"))
    samples = {"a": Samples(steady(200), steady(100))}
    judgment = judge_canary(samples, JudgeConfig(metrics))
    assert judgment.phase is FAIL
    assert "even if the metrics without data passed" in judgment.reason


def failing_share_config(
    weights: tuple[float, float], **thresholds: float
) -> tuple[JudgeConfig, dict[str, Samples]]:
    """Metric `good` passes and metric `bad` fails; their weights set the score."""
    metrics = (CanaryMetric("good", weight=weights[0]), CanaryMetric("bad", weight=weights[1]))
    samples = {"good": Samples(steady(100), steady(100)), "bad": Samples(steady(200), steady(100))}
    return JudgeConfig(metrics, **thresholds), samples  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("weights", "thresholds", "score", "phase"),
    [
        ((1.0, 0.0001), {}, 99.99, OK),
        ((95.0, 5.0), {}, 95.0, OK),
        ((94.0, 6.0), {}, 94.0, INCON),
        ((80.0, 20.0), {}, 80.0, INCON),
        ((75.0, 25.0), {}, 75.0, INCON),
        ((74.0, 26.0), {}, 74.0, FAIL),
        ((1.0, 1.0), {}, 50.0, FAIL),
        ((1.0, 1.0), {"pass_threshold": 50.0, "marginal_threshold": 25.0}, 50.0, OK),
        ((1.0, 1.0), {"pass_threshold": 60.0, "marginal_threshold": 50.0}, 50.0, INCON),
    ],
)
def test_score_thresholds(
    weights: tuple[float, float], thresholds: dict[str, float], score: float, phase: AnalysisPhase
) -> None:
    config, samples = failing_share_config(weights, **thresholds)
    judgment = judge_canary(samples, config)
    assert judgment.score == pytest.approx(score, abs=0.01)
    assert judgment.phase is phase, judgment.reason


@pytest.mark.parametrize(
    ("score", "phase"), [(100.0, OK), (95.0, OK), (94.999, INCON), (75.0, INCON), (74.999, FAIL), (0.0, FAIL)]
)
def test_score_phase(score: float, phase: AnalysisPhase) -> None:
    assert score_phase(score, 95.0, 75.0) is phase


def test_a_failing_critical_metric_fails_whatever_the_score() -> None:
    metrics = (CanaryMetric("good", weight=99.0), CanaryMetric("bad", weight=1.0, critical=True))
    samples = {"good": Samples(steady(100), steady(100)), "bad": Samples(steady(200), steady(100))}
    judgment = judge_canary(samples, JudgeConfig(metrics))
    assert (judgment.phase, judgment.score) == (FAIL, 0.0)
    assert "critical metric failed: bad" in judgment.reason


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (CONFIG, None),
        (JudgeConfig(()), "at least one metric"),
        (JudgeConfig((LATENCY, LATENCY)), "latency_p95_ms appear more than once"),
        (JudgeConfig((LATENCY,), confidence=1.0), "confidence must be between 0 and 1"),
        (JudgeConfig((LATENCY,), pass_threshold=70.0), "marginal (75.0) ≤ pass (70.0)"),
        (JudgeConfig((LATENCY,), min_samples=2), "min_samples must be a whole number from 3 to 1000, got 2"),
        (JudgeConfig((replace(LATENCY, weight=0.0),)), "weight must be a number > 0 and ≤ 100, got 0.0"),
        (JudgeConfig((replace(LATENCY, allowed_relative=-0.1),)), "must be ≥ 0"),
    ],
)
def test_judge_config_problem(config: JudgeConfig, problem: str | None) -> None:
    found = judge_config_problem(config)
    assert (found is None) if problem is None else (found is not None and problem in found), found


def test_repeated_judgments_count_as_an_analysis_run() -> None:
    rng = random.Random(3)
    good = [as_measurement(judge_pair(rng, 0.01)) for _ in range(3)]
    assert [m.phase for m in good] == [OK, OK, OK]
    assert judge_run(good, RunLimits(), 3).phase is OK
    bad = as_measurement(judge_pair(rng, 0.06))
    assert (bad.phase, bad.value) == (FAIL, 50.0)
    assert judge_run([*good[:2], bad], RunLimits(), 3).phase is FAIL


def test_a_judgment_survives_a_temporal_payload_round_trip() -> None:
    converter = DataConverter.default.payload_converter
    judgment = judge_pair(random.Random(5), 0.06)
    payloads = converter.to_payloads([judgment, CONFIG])
    assert converter.from_payloads(payloads, [Judgment, JudgeConfig]) == [judgment, CONFIG]


# ── several metrics in one analysis ──────────────────────────────────────────────────────────────────────


def _run(phase: AnalysisPhase) -> RunOutcome:
    return RunOutcome(phase, f"it was {phase}")


@pytest.mark.parametrize(
    ("phases", "expected"),
    [
        ([OK, OK], OK),
        ([OK, RUN], RUN),
        ([RUN, FAIL], FAIL),  # a failure decides before the other metric finishes
        ([INCON, OK], INCON),
        ([INCON, RUN], RUN),  # inconclusive waits for the others: one of them may still fail
        ([ERR, INCON], ERR),
        ([ERR, FAIL], FAIL),
    ],
)
def test_the_worst_metric_decides_the_analysis(phases: list[AnalysisPhase], expected: AnalysisPhase) -> None:
    phase, reason = combine_runs({f"m{i}": _run(p) for i, p in enumerate(phases)})
    assert phase is expected
    assert f"it was {expected}" in reason


def test_an_analysis_names_each_template_once() -> None:
    # the bare-name shorthand, which the field's type leaves out
    assert Analyze("success-rate", 10, 3).templates == ("success-rate",)  # type: ignore[arg-type]
    problem = plan_problem([Analyze(("a", "a"), 10, 3)])
    assert problem is not None and "names a template twice" in problem
    problem = plan_problem([Analyze(("a", "b"), 10, 3)], known_templates={"a"})
    assert problem is not None and "'b' is not defined (known: a)" in problem


@pytest.mark.parametrize(
    ("threshold", "direction"),
    [
        (Threshold(failure=Condition("<", 0.95)), Direction.DECREASE),
        (Threshold(success=Condition("<=", 0.5)), Direction.INCREASE),
        (Threshold(Condition(">=", 0.99), Condition(">", 1.5)), Direction.INCREASE),  # the failure side wins
    ],
)
def test_a_templates_bad_direction_is_read_off_its_conditions(
    threshold: Threshold, direction: Direction
) -> None:
    assert MetricTemplate("m", threshold).canary_metric().direction is direction
    assert MetricTemplate("m", threshold, direction=Direction.EITHER).bad_direction() is Direction.EITHER


# ── the traffic guard ─────────────────────────────────────────────────────────────────────────────────────

GUARDED = MetricTemplate(
    "latency-p99-ratio",
    Threshold(Condition("<=", 1.2), Condition(">", 1.3)),
    guard=TrafficGuard("sum(increase(requests[1m]))", at_least=100),
)


@pytest.mark.parametrize(
    ("value", "error", "traffic", "phase", "said"),
    [
        (
            1.8,
            None,
            24.0,
            INCON,
            "too little traffic to judge: 24 in the window, latency-p99-ratio needs 100",
        ),
        (1.8, None, None, INCON, "too little traffic to judge: 0 in the window"),
        (1.8, None, 100.0, FAIL, "failure condition"),
        (1.0, None, 300.0, OK, "meets"),
        (None, "no data", 24.0, ERR, "no data"),  # an error stays an error: the guard does not hide it
    ],
)
def test_a_guarded_metric_needs_enough_traffic(
    value: float | None, error: str | None, traffic: float | None, phase: AnalysisPhase, said: str
) -> None:
    measured = guarded_measure(GUARDED, value, error, traffic)
    assert measured.phase is phase and said in measured.message
    unguarded = replace(GUARDED, guard=None)
    assert guarded_measure(unguarded, 1.8, None, 3.0).phase is FAIL


@pytest.mark.parametrize(
    ("target", "router", "refused"),
    [("deployment", "replicas", False), ("deployment", "istio", True), ("model", "replicas", True)],
)
def test_exact_weights_are_for_a_deployment_behind_the_replica_router(
    target: str, router: str, refused: bool
) -> None:
    from workflows.canary import MODELS_NAMESPACE, RolloutInput, input_problem

    request = RolloutInput(
        namespace=MODELS_NAMESPACE if target == "model" else "lab",
        service="shop",
        image="" if target == "model" else "lab.local/shop:v2",
        version="v2",
        steps=[SetWeight(10), SetWeight(100)],
        templates={},
        target=target,  # type: ignore[arg-type]
        router=router,  # type: ignore[arg-type]
        exact_weights=True,
    )
    problem = input_problem(request)
    assert (problem or "").startswith("exact_weights is for a Deployment") if refused else problem is None
