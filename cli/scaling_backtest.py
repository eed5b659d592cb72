"""`lcp scaling backtest`: lcp's predictive scaling against the Kubernetes HPA, replayed on a trace and
compared at equal cost."""

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from cli.runtime import console, err_console

METRICS = (
    ("under_provisioned_minutes", "under-provisioned minutes", "{:,.1f}"),
    ("served_late_requests", "requests above capacity", "{:,.0f}"),
    ("replica_hours", "replica-hours", "{:,.1f}"),
    ("scaling_actions", "scaling actions", "{:,.0f}"),
)


def span(minutes: int) -> str:
    return f"{minutes / 1440:.1f} days" if minutes >= 1440 else f"{minutes / 60:.1f} hours"


def _number(value: float | None, shape: str) -> str:
    return "–" if value is None else shape.format(value).removesuffix(".0")


def table(result: dict[str, Any]) -> Table:
    """The HPA at its configured target, the HPA at lcp's cost, lcp, and lcp's ratio to the HPA at equal
    cost."""
    settings, window = result["settings"], result["window"]
    matched = _number(result["equal_cost"]["hpa_target_utilization"], "{:.3f}")
    out = Table(
        title=f"SIMULATED: {Path(result['trace']).name}, the last {span(window['minutes'])}",
        caption=(
            f"{settings['capacity_rps']:.3g} requests/s per replica, start-up {settings['startup_s']:g} s"
        ),
        box=box.SIMPLE_HEAD,
    )
    out.add_column("", no_wrap=True)
    for column in ("HPA", "HPA at\nlcp's cost", "lcp", "lcp / HPA\nat lcp's\ncost"):
        out.add_column(column, justify="right", no_wrap=True)
    out.add_row(
        "setting",
        f"target {settings['target_utilization']:g}",
        f"target {matched}",
        f"q {settings['planning_quantile']:g}",
        "",
        end_section=True,
    )
    hpa, predictive = result["autoscalers"]["hpa"], result["autoscalers"]["predictive"]
    equal = next(
        p for p in result["curves"]["predictive"] if p["planning_quantile"] == settings["planning_quantile"]
    )
    at_cost = equal["hpa_at_equal_cost"] or {}
    for key, label, shape in METRICS:
        ratio = predictive[key] / at_cost[key] if at_cost.get(key) else None
        out.add_row(
            label,
            _number(hpa[key], shape),
            _number(at_cost.get(key), shape),
            _number(predictive[key], shape),
            _number(ratio, "{:.2f}"),
        )
    return out


def curve_table(result: dict[str, Any]) -> Table:
    """lcp at each planning quantile, and the HPA at the same replica-hours."""
    out = Table(title="at equal cost, by lcp's planning quantile", box=box.SIMPLE_HEAD)
    for column in ("quantile", "replica-hours", "lcp minutes", "HPA target", "HPA minutes", "ratio"):
        out.add_column(column, justify="right", no_wrap=True)
    for point in result["curves"]["predictive"]:
        hpa = point["hpa_at_equal_cost"] or {}
        out.add_row(
            f"{point['planning_quantile']:g}",
            _number(point["replica_hours"], "{:,.1f}"),
            _number(point["under_provisioned_minutes"], "{:,}"),
            _number(hpa.get("target_utilization"), "{:.3f}"),
            _number(hpa.get("under_provisioned_minutes"), "{:,.1f}"),
            _number(point["ratio_at_equal_cost"], "{:.2f}"),
        )
    return out


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The headline at equal cost, the goal, and what the forecaster did."""
    from lab.backtest import MATCH_TOLERANCE  # numpy and scikit-learn: only when a backtest runs

    goal, headline = result["goal"], result["equal_cost"]
    lines = ["(the Kubernetes HPA, synced every 15 s; lcp's predictive policy, deciding as often)"]
    if headline["hpa_target_utilization"] is None:
        lines.append(
            f"no HPA run costs lcp's {headline['replica_hours']:,.1f} replica-hours: "
            f"{headline['no_equal_cost']}"
        )
    else:
        ratio = headline["ratio"]
        lines.append(
            f"at equal cost ({headline['replica_hours']:,.1f} replica-hours) the HPA, at target "
            f"{headline['hpa_target_utilization']:.3f}, is under-provisioned "
            f"{_number(headline['hpa_under_provisioned_minutes'], '{:,.1f}')} minutes and lcp "
            f"{headline['predictive_under_provisioned_minutes']:,}"
            + ("" if ratio is None else f": {ratio:.2f}×")
        )
    verdict = {True: "met", False: "NOT met", None: "n/a, no HPA minutes to halve at equal cost"}[goal["met"]]
    lines.append(
        f"goal (≤ {goal['under_provisioned_minutes_at_equal_cost_at_most']:g}× the HPA's under-provisioned "
        f"minutes at equal replica-hours): {verdict}"
    )
    oracle, matched = result["oracle"], result["oracle"]["hpa_at_equal_cost"]
    lines.append(
        f"oracle (lcp's policy fed the true peak ahead): {oracle['under_provisioned_minutes']:,} "
        f"under-provisioned minutes at {oracle['replica_hours']:,.1f} replica-hours"
        + (
            ""
            if matched is None
            else f", the HPA {_number(matched['under_provisioned_minutes'], '{:,.1f}')} at that cost"
        )
        + ("" if oracle["ratio_at_equal_cost"] is None else f": {oracle['ratio_at_equal_cost']:.2f}×")
    )
    lines.append(
        f"equal cost: the HPA's target found by bisection ({len(result['curves']['hpa'])} replays; "
        f"replica-hours within {100 * MATCH_TOLERANCE:g} %, then interpolated)"
    )
    models = result["forecaster"]["models"]
    trained = [m for m in models if "error" not in m]
    if trained:
        low, high = min(m["confidence"] for m in trained), max(m["confidence"] for m in trained)
        lines.append(f"forecaster: trained {len(trained)} times, confidence {low:.2f}–{high:.2f}")
    if failed := [m for m in models if "error" in m]:
        lines.append(f"no forecast after {len(failed)} of {len(models)} trainings: {failed[0]['error']}")
    bases = ", ".join(f"{n} {basis}" for basis, n in sorted(result["forecaster"]["decision_bases"].items()))
    lines.append(f"predictive decisions by basis: {bases}")
    return lines


def backtest_command(
    trace: Annotated[
        Path,
        typer.Option(
            help="Request trace: a ServeGen directory, an Azure LLM CSV or a minute,requests CSV "
            "(see lab/traces.py)."
        ),
    ],
    capacity: Annotated[
        float | None,
        typer.Option(
            help="Requests/s one replica serves (default: the trace's busiest minute needs 40 replicas at "
            "full capacity, 50 at the target utilisation).",
            show_default=False,
        ),
    ] = None,
    startup: Annotated[float, typer.Option(help="Seconds from a pod's creation until it is ready.")] = 120.0,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the results (with per-minute series) here.")
    ] = None,
    plot_file: Annotated[
        Path | None, typer.Option("--plot", help="Draw demand against ready capacity in this PNG.")
    ] = None,
    holdout_days: Annotated[
        float | None,
        typer.Option(
            help="Evaluate the last this many days (default: 4 for a trace of 7 days or more, else the "
            "second half); the forecaster learns only from what comes before each decision.",
            show_default=False,
        ),
    ] = None,
    target_utilization: Annotated[
        float, typer.Option(help="Share of a replica's capacity both autoscalers plan for.")
    ] = 0.8,
    min_replicas: Annotated[int, typer.Option(help="Fewest replicas (≥ 1).")] = 1,
    max_replicas: Annotated[int, typer.Option(help="Most replicas.")] = 100,
    interval: Annotated[
        float,
        typer.Option(help="Seconds between the predictive policy's decisions (the HPA syncs every 15 s)."),
    ] = 15.0,
    refresh: Annotated[float, typer.Option(help="Seconds between retrainings of the forecaster.")] = 21600.0,
    planning_quantile: Annotated[
        float, typer.Option(help="Plan capacity on this quantile of the forecast peak.")
    ] = 0.8,
    curve_quantiles: Annotated[
        str,
        typer.Option(
            help="lcp's cost curve: also replay at these planning quantiles (comma-separated), each against "
            "the HPA at the target utilisation that costs the same replica-hours."
        ),
    ] = "0.5,0.7,0.9,0.95",
    seed: Annotated[int, typer.Option(help="The forecaster's random seed.")] = 0,
) -> None:
    """Backtest predictive scaling against the Kubernetes HPA on a recorded trace (simulated Deployment), also
    at equal cost: the HPA at the target utilisation that matches lcp's replica-hours."""
    from lab.backtest import BacktestError, BacktestSettings, plot, run_backtest
    from lab.traces import read_trace

    def fail(message: str) -> typer.Exit:
        err_console.print(f"lcp scaling backtest: {message}", highlight=False, soft_wrap=True)
        return typer.Exit(2)

    try:
        quantiles = tuple(float(q) for q in curve_quantiles.split(",") if q.strip())
    except ValueError:
        raise fail(f"curve quantiles must be numbers separated by commas, got {curve_quantiles!r}") from None
    settings = BacktestSettings(
        capacity_rps=capacity,
        startup_s=startup,
        target_utilization=target_utilization,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        interval_s=interval,
        refresh_s=refresh,
        holdout_days=holdout_days,
        planning_quantile=planning_quantile,
        curve_quantiles=quantiles,
        seed=seed,
    )
    if problem := settings.problem():
        raise fail(problem)
    if not trace.exists():
        raise fail(f"{trace}: no such file or directory")
    try:
        per_minute = read_trace(trace)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise fail(f"can't read the trace: {err}") from None
    started = time.perf_counter()
    try:
        result = run_backtest(
            per_minute,
            settings,
            trace=str(trace),
            echo=lambda line: console.print(f"lcp scaling backtest: {line}", highlight=False, soft_wrap=True),
        )
    except BacktestError as err:
        raise fail(str(err)) from None
    console.print(table(result))
    console.print(curve_table(result))
    for line in summary_lines(result):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"took {time.perf_counter() - started:.1f} s", highlight=False)
    if json_file:
        json_file.write_text(json.dumps(result, indent=1) + "\n")
        console.print(f"written to {json_file}")
    if plot_file:
        plot(result, plot_file)
        console.print(f"plot drawn in {plot_file}")
