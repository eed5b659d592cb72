"""The scaling backtest: what it counts, that it never peeks, what it writes, and its command line."""

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from cli.scaling_backtest import backtest_command
from lab.backtest import BacktestError, BacktestSettings, Deployment, run_backtest

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


def test_bad_settings_and_traces_are_refused() -> None:
    with pytest.raises(BacktestError, match="capacity must be a positive"):
        run_backtest(STEP_TRACE, BacktestSettings(capacity_rps=-1))
    with pytest.raises(BacktestError, match="no requests"):
        run_backtest([0.0] * 30, BacktestSettings())
    with pytest.raises(BacktestError, match="can't evaluate the last"):
        run_backtest(STEP_TRACE, BacktestSettings(holdout_days=1))


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
    assert len(written["series"]["demand_rps"]) == 20 and written["settings"]["startup_s"] == 120
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--trace", "/no/such/trace.csv"], "/no/such/trace.csv: no such file or directory"),
        (["--trace", "{bad}"], "can't read the trace: "),
        (["--trace", "{good}", "--startup", "-5"], "startup must be positive"),
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
