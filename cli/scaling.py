"""`lcp scaling`: predictive scaling through the lcp REST API — start, status, mode, stop, list — and its
backtest (cli/scaling_backtest.py). The render functions are pure (a ScalingView as the API answers it → a
rich renderable)."""

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cli.connection import AsJson, api_commands
from cli.rollout import Namespace, Reason, number
from cli.runtime import console
from cli.scaling_backtest import backtest_command
from cli.show import plain, print_answer, shown
from cli.tables import Cell, Column, ListTable

if TYPE_CHECKING:
    from api.scaling_schemas import ScalingSummary, StoredDecision
    from cli.client import ScalingApi
    from workflows.scaling import DecisionView, ScalingView

PHASE_STYLE = {"Active": "bold green", "ForecastOnly": "bold cyan", "Stopped": "dim", "Failed": "bold red"}
STATUS_STYLE = {
    "scaled": "bold green",
    "unchanged": "green",
    "recorded": "cyan",
    "no-data": "bold yellow",
    "target-missing": "bold red",
    "cluster-error": "bold red",
}
SPARK = "▁▂▃▄▅▆▇█"
DECISIONS_SHOWN = 10


def _connect(api_url: str | None, home: Path, api_key: str | None) -> "ScalingApi":
    from cli.client import ScalingApi  # the API's schemas load Temporal's workflow code: not for --help

    return ScalingApi.connect(api_url, home, api_key)


app = typer.Typer(
    help="Predictive scaling through the lcp API (a key with the sre role), and its backtest.",
    no_args_is_help=True,
)
app.command("backtest")(backtest_command)
command = api_commands(app, "scaling", _connect)

Deployment = Annotated[str, typer.Argument(help="The Deployment to scale.")]


# ---- the commands ----------------------------------------------------------------------------------------


@command("start")
def start(
    api: "ScalingApi",
    deployment: Deployment,
    capacity: Annotated[float, typer.Option(help="Requests/s one replica serves at its SLO.")],
    namespace: Namespace = "default",
    mode: Annotated[
        str, typer.Option(help="forecast-only (record decisions, scale nothing) or active.")
    ] = "forecast-only",
    min_replicas: Annotated[int, typer.Option("--min", help="Never fewer replicas (at least 1).")] = 1,
    max_replicas: Annotated[int, typer.Option("--max", help="Never more replicas.")] = 50,
    interval: Annotated[float, typer.Option(help="Seconds between decisions.")] = 60.0,
    startup: Annotated[float, typer.Option(help="A new pod's start-up time, seconds.")] = 120.0,
    horizon: Annotated[float, typer.Option(help="How far the forecast looks, seconds.")] = 1800.0,
    step: Annotated[float, typer.Option(help="Resolution of the history it learns from, seconds.")] = 60.0,
    lookback: Annotated[
        float | None,
        typer.Option(
            help="How much history it learns from, seconds (default 14 days; at most 100,000 steps).",
            show_default=False,
        ),
    ] = None,
    query: Annotated[
        str | None,
        typer.Option(
            help="PromQL giving requests/s ({{namespace}}, {{deployment}} filled in).", show_default=False
        ),
    ] = None,
) -> int:
    """Scale a Deployment ahead of demand (forecast-only until you set the mode to active)."""
    body: dict[str, object] = {
        "namespace": namespace,
        "deployment": deployment,
        "mode": mode,
        "capacity_rps": capacity,
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "interval_s": interval,
        "startup_s": startup,
        "horizon_s": horizon,
        "step_s": step,
    }
    if lookback is not None:
        body["lookback_s"] = lookback
    if query:
        body["query"] = query
    console.print(render_scaling(api.start(body)))
    return 0


@command("status")
def status(
    api: "ScalingApi",
    deployment: Deployment,
    namespace: Namespace = "default",
    stored: Annotated[
        bool, typer.Option("--stored", help="Decisions from the read model (all runs), not the live view.")
    ] = False,
) -> int:
    """Mode, health, the latest forecast and model, and recent decisions."""
    return run_status(api, namespace, deployment, console, stored=stored)


@command("mode")
def mode(
    api: "ScalingApi",
    deployment: Deployment,
    mode: Annotated[str, typer.Argument(help="forecast-only or active.")],
    namespace: Namespace = "default",
    reason: Reason = "",
) -> int:
    """Switch between forecast-only (nothing scaled) and active."""
    console.print(render_header(api.set_mode(namespace, deployment, mode, reason)))
    return 0


@command("stop")
def stop(
    api: "ScalingApi", deployment: Deployment, namespace: Namespace = "default", reason: Reason = ""
) -> int:
    """Stop scaling the Deployment (it keeps its replicas)."""
    console.print(render_header(api.stop(namespace, deployment, reason)))
    return 0


@command("list")
def list_(
    api: "ScalingApi",
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", show_default=False)] = None,
    phase: Annotated[
        str | None, typer.Option(help="Active, ForecastOnly, Stopped or Failed.", show_default=False)
    ] = None,
    as_json: AsJson = False,
) -> int:
    """Scaling targets, newest first."""
    return print_answer(api.list(namespace, phase), render_list, as_json)


# ---- rendering -----------------------------------------------------------------------------------------


def sparkline(values: Sequence[float]) -> str:
    """The values as a line of block characters, lowest to highest."""
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low
    return "".join(SPARK[0 if span <= 0 else round((v - low) / span * (len(SPARK) - 1))] for v in values)


def _clock(at: datetime) -> str:
    return at.strftime("%H:%M:%S")


def _styled(value: str | None, styles: Mapping[str, str]) -> Text:
    return Text(value or "-", style=styles.get(value or "", ""))


def replicas_change(decision: "DecisionView | StoredDecision") -> str:
    current, target = decision.current_replicas, decision.target
    if current is None:
        return "-"
    if target is None or target == current:
        return str(current)
    return f"{current} → {target}"


def render_header(view: "ScalingView") -> RenderableType:
    settings = view.settings
    bounds = settings.bounds
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("target", f"{view.namespace}/{view.deployment}  ({view.id})")
    grid.add_row("mode", Text.assemble(_styled(view.phase, PHASE_STYLE), f"  {view.mode}"))
    health = view.health or "-"
    grid.add_row("health", Text(health, style="green" if health == "ok" else "bold yellow"))
    grid.add_row("message", shown(view.message or "-", lines=True))
    grid.add_row(
        "policy",
        f"{bounds.min_replicas}–{bounds.max_replicas} replicas, "
        f"{number(bounds.capacity_rps)} rps each at {number(bounds.target_utilization)} "
        f"utilisation; every {number(settings.interval_s)} s, start-up "
        f"{number(settings.startup_s)} s",
    )
    grid.add_row("decisions", str(view.decisions))
    last = view.last
    if last and last.forecast_status not in ("", "ok"):
        grid.add_row("forecaster", Text(plain(f"{last.forecast_status}: {last.detail}"), style="yellow"))
    forecast = view.forecast
    if forecast and forecast.mean:
        mean = forecast.mean
        grid.add_row(
            "forecast",
            f"{sparkline(mean)}  next {number(len(mean) * forecast.step_s)} s, peak {number(max(mean))} rps",
        )
    if view.model:
        grid.add_row("model", _model_line(view.model))
    return Panel(grid, title="predictive scaling", title_align="left", box=box.ROUNDED)


def _model_line(model: Mapping[str, Any]) -> str:
    parts = [str(model.get("model", "?"))]
    if model.get("samples") is not None:
        parts.append(f"{model['samples']} samples")
    trained = model.get("trained_at")
    if isinstance(trained, int | float):
        parts.append(f"trained {datetime.fromtimestamp(trained).strftime('%H:%M:%S')}")
    for key, value in model.items():
        if "holdout" in key and isinstance(value, int | float):
            parts.append(f"{key} {number(value)}")
    return ", ".join(parts)


def render_decisions(
    decisions: Sequence["DecisionView | StoredDecision"], last: int = DECISIONS_SHOWN
) -> RenderableType:
    """The newest decisions first, one line each (the newest one's reason is the header's message)."""
    columns = [
        Column("#", justify="right", drop=1),
        Column("at", key=True),
        Column("status", key=True),
        Column("rps", justify="right"),
        Column("forecast", justify="right"),
        Column("conf", justify="right", drop=2),
        Column("replicas", key=True, justify="right"),
        Column("ready", justify="right", drop=3),
        Column("basis", drop=4),
    ]
    rows: list[list[Cell]] = [
        [
            str(decision.seq),
            _clock(decision.at),
            _styled(decision.status, STATUS_STYLE),
            number(decision.observed_rps),
            number(decision.forecast_peak_rps),
            number(decision.confidence),
            replicas_change(decision),
            str(decision.ready_replicas if decision.ready_replicas is not None else "-"),
            shown(
                "/".join(filter(None, [decision.basis, decision.limited_by])) or decision.data_status or "-"
            ),
        ]
        for decision in decisions[:last]
    ]
    return ListTable(columns, rows, title="decisions (newest first)")


def render_scaling(view: "ScalingView") -> RenderableType:
    return Group(render_header(view), render_decisions(list(reversed(view.recent))))


def render_list(targets: Sequence["ScalingSummary"]) -> RenderableType:
    columns = [
        Column("target", key=True),
        Column("phase"),
        Column("status", drop=2),
        Column("started", drop=1),
    ]
    rows: list[list[Cell]] = [
        [
            shown(f"{target.namespace}/{target.deployment}"),
            _styled(target.phase, PHASE_STYLE),
            shown(target.status or "-"),
            (target.started_at or "-")[:19].replace("T", " "),
        ]
        for target in targets
    ]
    return ListTable(columns, rows)


# ---- what the commands do ---------------------------------------------------------------------------------


def run_status(api: "ScalingApi", namespace: str, deployment: str, console: Console, *, stored: bool) -> int:
    """The live state; `stored`: the decisions from the read model, not the workflow's recent ones."""
    view = api.get(namespace, deployment)
    if stored:
        console.print(Group(render_header(view), render_decisions(api.decisions(namespace, deployment))))
    else:
        console.print(render_scaling(view))
    return 0
