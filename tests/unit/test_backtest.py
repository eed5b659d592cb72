"""The scaling backtest: what it counts, that it never peeks, the equal-cost search, what it writes, and its
command line."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from cli.scaling_backtest import backtest_command
from lab.backtest import (
    MATCH_MIN_WIDTH,
    MATCH_TOLERANCE,
    BacktestError,
    BacktestSettings,
    Deployment,
    NoEqualCost,
    match_replica_hours,
    run_backtest,
)

# 10 requests/s for 20 minutes, then 100 requests/s: replicas serve 10 requests/s, ready 120 s after creation.
STEP_MINUTE = 24
STEP_TRACE = [600.0] * STEP_MINUTE + [6000.0] * 16
STEP_SETTINGS = BacktestSettings(capacity_rps=10.0, startup_s=120.0, holdout_days=20 / 1440)


def test_the_deployment_readies_pods_after_startup_and_drops_unready_ones_first() -> None:
    deployment = Deployment(2, startup_s=120, now=0)
    deployment.scale(5, now=10)
    assert (deployment.replicas, deployment.ready(129), deployment.ready(130)) == (5, 2, 5)
    deployment.scale(3, now=20)
    assert (deployment.replicas, deployment.ready(1000)) == (3, 3)
    deployment.scale(1, now=200)
    assert deployment.replicas == 1


def test_a_step_up_leaves_the_hpa_short_for_the_startup_and_one_sync() -> None:
    result = run_backtest(STEP_TRACE, STEP_SETTINGS)
    hpa, predictive = result["autoscalers"]["hpa"], result["autoscalers"]["predictive"]
    series = result["series"]
    step = series["minute"].index(STEP_MINUTE)

    # The HPA sees 100 requests/s at once and adds 4 pods, then 6 (max(4 pods, 100%) per 15 s; 12 is
    # within the tolerance of 12.5): none ready in the step's minute or the next, 6 at the third's start.
    assert series["hpa_ready_capacity_rps"][step : step + 3] == [20.0, 20.0, 105.0]
    assert hpa["under_provisioned_minutes"] == 2
    assert hpa["served_late_requests"] == pytest.approx(2 * 4 * 80 * 15 + 40 * 15)
    # Too short a trace to forecast: lcp scales on the demand now, every 15 s as the HPA does, but at most
    # ×2 per decision (2 → 4 → 8 → 16, where the HPA goes 2 → 6 → 12), so its third minute is short on
    # average too.
    assert result["forecaster"]["decision_bases"] == {"no-forecast": 80}
    assert series["predictive_ready_capacity_rps"][step : step + 4] == [20.0, 20.0, 95.0, 130.0]
    assert predictive["under_provisioned_minutes"] == 3
    # Both start the window on what its first minute needs (2 replicas) and never go below the minimum.
    assert series["hpa_replicas"][0] == series["predictive_replicas"][0] == 2
    assert result["window"] == {"first_minute": 20, "minutes": 20, "trace_minutes": 40}


def test_the_oracle_sees_the_step_coming_and_is_short_only_while_doubling_up_to_it() -> None:
    oracle = run_backtest(STEP_TRACE, STEP_SETTINGS)["oracle"]

    # Fed the true peak over its lead (start-up + one interval: the step's minute and the two before),
    # lcp's policy scales from the first tick of minute 22 on: 2 → 4 → 8 → 13, one ×2 step per 15 s, so
    # the step's minute has 40, 80, 130 and 130 requests/s ready: 95 on average, short of 100.
    assert oracle["under_provisioned_minutes"] == 1
    assert oracle["served_late_requests"] == pytest.approx(60 * 15 + 20 * 15)
    # The HPA at the oracle's replica-hours is short both minutes of its start-up.
    assert oracle["hpa_at_equal_cost"]["under_provisioned_minutes"] == 2
    assert oracle["ratio_at_equal_cost"] == 0.5


def synthetic_days(minutes: int, seed: int = 0) -> list[float]:
    """Requests per minute with an hourly pattern (a compressed "day") and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(minutes)
    values = 600 * (1.5 + np.sin(2 * np.pi * t / 60)) * rng.lognormal(0, 0.05, minutes)
    return [float(v) for v in values]


def test_decisions_before_a_minute_never_depend_on_the_trace_after_it() -> None:
    settings = BacktestSettings(capacity_rps=1.0, holdout_days=120 / 1440, refresh_s=1800)
    trace = synthetic_days(480)
    cut = 480 - 120 + 70  # a minute inside the evaluated window, after a retraining
    changed = trace[:cut] + [3 * v for v in trace[cut:]]

    result, other = run_backtest(trace, settings), run_backtest(changed, settings)

    assert result["forecaster"]["decision_bases"].get("forecast", 0) > 0  # the forecaster took part
    before = cut - result["window"]["first_minute"]
    for name in (
        "hpa_replicas",
        "predictive_replicas",
        "hpa_ready_capacity_rps",
        "predictive_ready_capacity_rps",
    ):
        assert result["series"][name][:before] == other["series"][name][:before], name
    assert result["series"]["predictive_replicas"] != other["series"]["predictive_replicas"]
    assert result["forecaster"]["models"][:3] == other["forecaster"]["models"][:3]  # trained before the cut


# ---- the equal-cost search -------------------------------------------------------------------------------


def test_the_search_finds_the_target_whose_replica_hours_are_asked_for() -> None:
    asked: list[float] = []

    def hours(target: float) -> float:  # replica-hours proportional to 1 / target, as for a steady demand
        asked.append(target)
        return 100 / target

    match = match_replica_hours(hours, 125.0)

    assert match.below <= 0.8 <= match.above
    assert hours(match.below) - hours(match.above) <= MATCH_TOLERANCE * 125
    assert match.target == pytest.approx(0.8, abs=1e-3)
    assert match.runs == len(asked) - 2 < 20


def test_between_two_replica_counts_the_search_narrows_on_the_jump_and_interpolates() -> None:
    # 10 requests/s, a replica serving 1 at full use, for 24 hours: the HPA holds ceil(10 / target) replicas,
    # 16 below a target of 2/3 and 15 from it. No target costs 15.5 replicas all day: the answer is halfway.
    def hours(target: float) -> float:
        return 24.0 * math.ceil(10 / target)

    match = match_replica_hours(hours, 24 * 15.5)

    assert match.below < 2 / 3 <= match.above and match.above - match.below <= MATCH_MIN_WIDTH
    assert match.weight == 0.5


def test_replica_hours_no_target_reaches_are_said_not_guessed() -> None:
    with pytest.raises(
        NoEqualCost, match=r"from 100.0 \(target 1\) to 2,000.0 \(target 0.05\), not through 50.0"
    ):
        match_replica_hours(lambda target: 100 / target, 50.0)


def test_on_a_steady_trace_the_hpa_curve_is_the_replica_count_each_target_needs() -> None:
    # 10 requests/s, a replica serving 1: lcp (no forecast on so short a trace) and the HPA at 0.8 both hold
    # 13 replicas, so the HPA matches lcp's cost at the targets that also give 13: [10/13, 10/12).
    settings = BacktestSettings(capacity_rps=1.0, holdout_days=20 / 1440)
    result = run_backtest([600.0] * 40, settings)

    for point in result["curves"]["hpa"]:
        replicas = min(math.ceil(10 / point["target_utilization"] - 1e-9), settings.max_replicas)
        assert point["replica_hours"] == pytest.approx(replicas * 20 / 60, abs=0.01), point
        assert point["under_provisioned_minutes"] == 0
    headline = result["equal_cost"]
    assert headline["replica_hours"] == pytest.approx(13 * 20 / 60, abs=0.01)
    assert 10 / 13 <= headline["hpa_target_utilization"] < 10 / 12
    assert headline["hpa_under_provisioned_minutes"] == headline["predictive_under_provisioned_minutes"] == 0
    assert headline["ratio"] is None and result["goal"]["met"] is None  # nothing to halve
    # lcp at every planning quantile: the same 13 replicas, with no forecast to plan on.
    curve = result["curves"]["predictive"]
    assert [point["planning_quantile"] for point in curve] == [0.5, 0.7, 0.8, 0.9, 0.95]
    assert {point["replica_hours"] for point in curve} == {headline["replica_hours"]}


def test_bad_settings_and_traces_are_refused() -> None:
    with pytest.raises(BacktestError, match="capacity must be a positive"):
        run_backtest(STEP_TRACE, BacktestSettings(capacity_rps=-1))
    with pytest.raises(BacktestError, match="no requests"):
        run_backtest([0.0] * 30, BacktestSettings())
    with pytest.raises(BacktestError, match="can't evaluate the last"):
        run_backtest(STEP_TRACE, BacktestSettings(holdout_days=1))
    with pytest.raises(BacktestError, match="planning quantiles must be in"):
        run_backtest(STEP_TRACE, BacktestSettings(curve_quantiles=(0.5, 1.0)))


# ---- the command line ----------------------------------------------------------------------------------


def cli() -> typer.Typer:
    app = typer.Typer()
    scaling = typer.Typer()
    scaling.command("backtest")(backtest_command)
    app.add_typer(scaling, name="scaling")
    return app


def minute_csv(path: Path, per_minute: list[float]) -> Path:
    path.write_text("minute,requests\n" + "".join(f"{m},{v}\n" for m, v in enumerate(per_minute)))
    return path


def test_the_command_prints_a_table_and_writes_json_and_a_png(tmp_path: Path) -> None:
    trace = minute_csv(tmp_path / "step.csv", STEP_TRACE)
    out_json, out_png = tmp_path / "result.json", tmp_path / "result.png"

    result = CliRunner().invoke(
        cli(),
        [
            "scaling",
            "backtest",
            "--trace",
            str(trace),
            "--capacity",
            "10",
            "--holdout-days",
            str(20 / 1440),
            "--json",
            str(out_json),
            "--plot",
            str(out_png),
        ],
    )

    assert result.exit_code == 0, result.output
    assert "under-provisioned minutes" in result.output and "replica-hours" in result.output
    written = json.loads(out_json.read_text())
    assert written["trace"] == str(trace) and written["autoscalers"]["hpa"]["under_provisioned_minutes"] == 2
    # At lcp's cost the HPA runs at a lower target, short as often: lcp, ×2 per decision, is short 3 minutes.
    assert (
        "at equal cost" in result.output
        and "goal (≤ 0.5× the HPA's under-provisioned minutes" in result.output
    )
    headline = written["equal_cost"]
    assert headline["hpa_target_utilization"] < 0.8 and headline["ratio"] == 1.5
    assert written["goal"]["met"] is False
    assert [p["planning_quantile"] for p in written["curves"]["predictive"]] == [0.5, 0.7, 0.8, 0.9, 0.95]
    assert len(written["series"]["demand_rps"]) == 20 and written["settings"]["startup_s"] == 120
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--trace", "/no/such/trace.csv"], "/no/such/trace.csv: no such file or directory"),
        (["--trace", "{bad}"], "can't read the trace: "),
        (["--trace", "{good}", "--startup", "-5"], "startup must be positive"),
        (["--trace", "{good}", "--curve-quantiles", "0.5,high"], "curve quantiles must be numbers"),
        (["--trace", "{good}", "--curve-quantiles", "0.5,1.5"], "planning quantiles must be in (0, 1)"),
        (
            ["--trace", "{good}", "--target-utilization", "1.5"],
            "target_utilization must be a number > 0 and ≤ 1",
        ),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(tmp_path: Path, arguments: list[str], message: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("when,what\n1,2\n")
    good = minute_csv(tmp_path / "good.csv", STEP_TRACE)
    arguments = [a.format(bad=bad, good=good) for a in arguments]

    result = CliRunner().invoke(cli(), ["scaling", "backtest", *arguments])

    assert result.exit_code == 2
    assert f"lcp scaling backtest: {message}" in result.output
    assert "Traceback" not in result.output
