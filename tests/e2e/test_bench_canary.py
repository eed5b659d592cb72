"""`lcp bench canary`: the CLI end to end (shape and plausibility only, no timing assertions), its
histogram_quantile against hand-computed values, and an obviously broken canary rolled back by both
judges."""

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from activities.contracts.prometheus import load_templates
from bench.canary import (
    BROKEN_ERROR_SHARE,
    CANARY_REPLICAS,
    COUNT,
    INTERVAL_S,
    JUDGES,
    MIN_WINDOW_S,
    RATE_RPS,
    SAMPLES_PER_INTERVAL,
    SCENARIO_NAMES,
    STABLE_REPLICAS,
    AnalysisPlan,
    BenchError,
    Counters,
    Scenario,
    histogram_quantile,
    p99,
    run_seed,
    simulate_run,
    success_rate,
)
from cli import app
from lab.workload import Fault
from policies.canary import STANDARD_TEMPLATES, Analyze, JudgeConfig, SetWeight, current_weight, standard_plan

INF = math.inf


def test_bench_canary_reports_every_scenario_and_judge(tmp_path: Path) -> None:
    out = tmp_path / "bench-canary.json"
    args = ["bench", "canary", "--runs", "3", "--seed", "7", "--workers", "2", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "cli", *args], check=True, timeout=300, capture_output=True, text=True
    )
    assert "SIMULATION" in done.stdout and "SIMULATED canary analysis" in done.stdout
    result = json.loads(out.read_text())
    assert "SIMULATION" in result["simulation"]
    assert result["settings"]["runs"] == 3 and result["settings"]["seed"] == 7
    assert result["settings"]["interval_s"] == 30 and result["settings"]["count"] == 5
    assert result["settings"]["judges"] == {judge: list(STANDARD_TEMPLATES[judge]) for judge in JUDGES}
    assert result["machine"]["cpus"] and result["machine"]["workers"] == 2
    assert set(result["scenarios"]) == set(SCENARIO_NAMES) == set(result["results"])
    for name, per_judge in result["results"].items():
        assert set(per_judge) == set(JUDGES), name
        for judge, row in per_judge.items():
            where = f"{name}/{judge}"
            assert row["runs"] == 3, where
            assert sum(row["counts"].values()) == 3 and sum(row["phases"].values()) == 3, where
            assert sum(sum(by.values()) for by in row["decisions_by_interval"].values()) == 3, where
            assert all(0 <= rate <= 1 for rate in row["rates"].values()), where
            assert math.isclose(sum(row["rates"].values()), 1, abs_tol=1e-3), where
            caught = row["caught_within_2_intervals"]
            assert 0 <= caught <= row["rates"]["rolled_back"], where
            intervals = row["intervals_to_decision"]
            assert 1 <= intervals["median"] <= intervals["p95"] <= result["settings"]["max_intervals"], where
            assert row["seconds_to_decision"]["median"] == intervals["median"] * 30, where
    goals = {(g["judge"], g["scenario"]): g for g in result["goals"]}
    goal_scenarios = ("errors+5pp", "latency+50%", "busy-latency+50%", "aa", "busy-aa")
    assert set(goals) == {(j, s) for j in JUDGES for s in goal_scenarios}
    assert all(isinstance(g["passed"], bool) and 0 <= g["value"] <= 1 for g in goals.values())
    assert result["goals_passed"] == all(g["passed"] for g in goals.values())


def test_bench_canary_runs_a_subset_and_refuses_unknown_scenarios(tmp_path: Path) -> None:
    out = tmp_path / "subset.json"
    runner = CliRunner()
    args = ["bench", "canary", "--runs", "2", "--workers", "1", "--scenarios", "aa,latency+50%"]
    done = runner.invoke(app, [*args, "--json", str(out)])
    assert done.exit_code == 0, done.output
    result = json.loads(out.read_text())
    assert set(result["results"]) == {"aa", "latency+50%"}
    assert {g["scenario"] for g in result["goals"]} == {"aa", "latency+50%"}  # the others did not run
    refused = runner.invoke(app, ["bench", "canary", "--runs", "2", "--scenarios", "nope"])
    assert refused.exit_code == 2 and "no scenario 'nope'" in refused.output


# ---- histogram_quantile, by hand ---------------------------------------------------------------------

# Prometheus' own test histogram (promql/testdata/histograms.test, "positive"): le 0.1: 50, 0.2: 70,
# 1: 110, +Inf: 120.
POSITIVE = [(0.1, 50.0), (0.2, 70.0), (1.0, 110.0), (INF, 120.0)]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.25, 0.06),  # rank 30, lowest bucket, from 0: 0.1 × 30/50
        (0.5, 0.15),  # rank 60: 0.1 + 0.1 × (60 − 50)/20
        (0.9, 0.96),  # rank 108: 0.2 + 0.8 × (108 − 70)/40
        (110 / 120, 1.0),  # rank 110, exactly the top of the highest finite bucket
        (0.99, 1.0),  # rank 118.8 is in the +Inf bucket: the highest finite bound
        (1.0, 1.0),
        (0.0, 0.0),
    ],
)
def test_histogram_quantile_interpolates_as_prometheus(q: float, expected: float) -> None:
    assert math.isclose(histogram_quantile(q, POSITIVE), expected, abs_tol=1e-12)


def test_histogram_quantile_edge_cases() -> None:
    assert math.isclose(histogram_quantile(0.5, list(reversed(POSITIVE))), 0.15)  # order does not matter
    assert math.isnan(histogram_quantile(0.5, [(0.1, 0.0), (1.0, 0.0), (INF, 0.0)]))  # no observations
    assert math.isnan(histogram_quantile(0.5, [(0.1, 5.0), (1.0, 10.0)]))  # no +Inf bucket
    assert math.isnan(histogram_quantile(0.5, [(INF, 10.0)]))  # fewer than two buckets
    assert math.isnan(histogram_quantile(0.5, []))
    assert histogram_quantile(1.5, POSITIVE) == INF and histogram_quantile(-0.1, POSITIVE) == -INF
    # Buckets with one bound add up, and a count below a lower bucket's is raised to it (monotonic).
    assert math.isclose(histogram_quantile(0.5, [(0.1, 20.0), (0.1, 30.0), (0.2, 70.0), (INF, 120.0)]), 0.15)
    # (0.2: 40 becomes 50), so rank 60 falls in (0.2, 1]: 0.2 + 0.8 × (60 − 50)/(110 − 50)
    assert math.isclose(
        histogram_quantile(0.5, [(0.1, 50.0), (0.2, 40.0), (1.0, 110.0), (INF, 120.0)]), 1 / 3
    )
    # A lowest bucket with a bound ≤ 0 gives that bound.
    assert histogram_quantile(0.1, [(0.0, 5.0), (1.0, 10.0), (INF, 10.0)]) == 0.0
    # 99 of 100 requests at most 0.1 s, one in (0.1, 0.15]: the p99 is 0.1; 98 of 100: 0.125.
    assert math.isclose(
        histogram_quantile(0.99, [(0.05, 60.0), (0.1, 99.0), (0.15, 100.0), (INF, 100.0)]), 0.1
    )
    assert math.isclose(
        histogram_quantile(0.99, [(0.05, 60.0), (0.1, 98.0), (0.15, 100.0), (INF, 100.0)]), 0.125
    )


def test_window_values_are_nan_without_traffic() -> None:
    buckets = ((0.1, 3.0), (INF, 4.0))
    assert math.isclose(success_rate(Counters(4.0, 3.0, buckets)), 0.75)
    assert math.isnan(success_rate(Counters(0.0, 0.0, ((0.1, 0.0), (INF, 0.0)))))
    assert math.isnan(p99(Counters(0.0, 0.0, ((0.1, 0.0), (INF, 0.0)))))
    assert p99(Counters(4.0, 4.0, buckets)) == 0.1  # rank 3.96 in +Inf: the highest finite bound


# ---- the simulation ------------------------------------------------------------------------------------


def test_an_obviously_broken_canary_is_rolled_back_by_both_judges() -> None:
    broken = Scenario(
        "broken", RATE_RPS, Fault(error_share=BROKEN_ERROR_SHARE), True, "half the requests fail"
    )
    plan = AnalysisPlan(load_templates())
    for run in range(3):
        decided = simulate_run(broken, run_seed(0, broken.name, run), plan)
        assert set(decided) == set(JUDGES)
        for judge, decision in decided.items():
            assert decision.outcome == "rolled_back", (judge, decision)
            assert decision.interval == 1, (judge, decision)  # 50% errors: the first interval decides
            assert decision.seconds == INTERVAL_S


def test_simulation_is_deterministic_per_seed() -> None:
    spec = Scenario("aa-like", RATE_RPS, Fault(), False, "no fault")
    plan = AnalysisPlan(load_templates())
    assert simulate_run(spec, 11, plan) == simulate_run(spec, 11, plan)
    assert run_seed(0, "aa", 1) != run_seed(0, "aa", 2) != run_seed(0, "errors+5pp", 2)


def test_a_template_the_bench_cannot_evaluate_is_refused() -> None:
    templates = load_templates()
    templates["success-rate"] = dataclasses.replace(templates["success-rate"], query="up")
    with pytest.raises(BenchError, match="success-rate"):
        simulate_run(Scenario("x", RATE_RPS, Fault(), False, "x"), 1, AnalysisPlan(templates))


def test_bench_mirrors_the_standard_plan_and_the_workflow_defaults() -> None:
    """The simulated step is the standard plan's analysis with the workflow's defaults: when those
    change, the bench's constants must follow."""
    from workflows.canary import JudgeSettings, RolloutInput

    steps = standard_plan()
    index, analysis = next((i, s) for i, s in enumerate(steps) if isinstance(s, Analyze))
    assert (analysis.interval_s, analysis.count) == (INTERVAL_S, COUNT)
    assert isinstance(steps[index - 2], SetWeight)
    weight = current_weight(steps, index)
    assert weight == 100 * CANARY_REPLICAS // (STABLE_REPLICAS + CANARY_REPLICAS)
    settings, config = JudgeSettings(), JudgeConfig(metrics=())
    assert settings.samples_per_interval == SAMPLES_PER_INTERVAL
    for name in ("confidence", "pass_threshold", "marginal_threshold", "min_samples"):
        assert getattr(settings, name) == getattr(config, name), name  # the bench uses JudgeConfig's
    min_window = {f.name: f.default for f in dataclasses.fields(RolloutInput)}["min_window_s"]
    assert min_window == MIN_WINDOW_S
