"""`lcp scaling backtest`: lcp's predictive scaling against the Kubernetes HPA, replayed on a trace."""

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from cli.runtime import console, err_console

METRICS = (
    ("under_provisioned_minutes", "under-provisioned minutes", "{:,}"),
    ("served_late_requests", "requests above ready capacity", "{:,.0f}"),
    ("replica_hours", "replica-hours", "{:,.1f}"),
    ("scaling_actions", "scaling actions", "{:,}"),
)


def span(minutes: int) -> str:
    return f"{minutes / 1440:.1f} days" if minutes >= 1440 else f"{minutes / 60:.1f} hours"


def table(result: dict[str, Any]) -> Table:
    """The metrics of both autoscalers side by side, and their ratio."""
    settings, window = result["settings"], result["window"]
    out = Table(
        title=f"SIMULATED: {Path(result['trace']).name}, the last {span(window['minutes'])}",
        caption=(
            f"{settings['capacity_rps']:.3g} requests/s per replica, start-up {settings['startup_s']:g} s, "
            f"target utilisation {settings['target_utilization']:g}"
        ),
        box=box.SIMPLE_HEAD,
    )
    for column in ("", "HPA", "predictive", "ratio"):
        out.add_column(column, justify="left" if not column else "right", no_wrap=True)
    hpa, predictive = result["autoscalers"]["hpa"], result["autoscalers"]["predictive"]
    for key, label, number in METRICS:
        ratio = result["ratios"][key]
        shown = "–" if ratio is None else f"{ratio:.2f}"
        out.add_row(label, number.format(hpa[key]), number.format(predictive[key]), shown)
    return out


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The goal, and what the forecaster did."""
    goal, ratios = result["goal"], result["ratios"]
    under, hours = ratios["under_provisioned_minutes"], ratios["replica_hours"]
    verdict = {True: "met", False: "NOT met", None: "n/a, the HPA was never under-provisioned"}[goal["met"]]
    shown = "" if under is None else f"{under:.2f}× and "
    lines = [
        "ratio: predictive / HPA (the Kubernetes HPA, synced every 15 s; lcp's predictive policy)",
        f"goal (≤ {goal['under_provisioned_minutes_at_most']:g}× the under-provisioned minutes at ≤ "
        f"{goal['replica_hours_at_most']:g}× the replica-hours): {verdict} ({shown}{hours:.2f}×)",
    ]
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
    seed: Annotated[int, typer.Option(help="The forecaster's random seed.")] = 0,
) -> None:
    """Backtest predictive scaling against the Kubernetes HPA on a recorded trace (simulated Deployment)."""
    from lab.backtest import BacktestError, BacktestSettings, plot, run_backtest
    from lab.traces import read_trace

    def fail(message: str) -> typer.Exit:
        err_console.print(f"lcp scaling backtest: {message}", highlight=False, soft_wrap=True)
        return typer.Exit(2)

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
    for line in summary_lines(result):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"took {time.perf_counter() - started:.1f} s", highlight=False)
    if json_file:
        json_file.write_text(json.dumps(result, indent=1) + "\n")
        console.print(f"written to {json_file}")
    if plot_file:
        plot(result, plot_file)
        console.print(f"plot drawn in {plot_file}")
