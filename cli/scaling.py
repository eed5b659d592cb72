"""`lcp scaling`: predictive scaling through the lcp REST API — start, status, mode, stop, list. The render
functions are pure (a ScalingView as the API answers it → a rich renderable)."""

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cli import rest
from cli.rest import ApiClient
from cli.rollout import number
from cli.show import plain, shown

View = Mapping[str, Any]
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


class ScalingApi(ApiClient):
    """The predictive-scaling routes of the lcp API (role sre)."""

    def start(self, body: Mapping[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = self._call("POST", "/v1/scaling", json=dict(body))
        return view

    def get(self, namespace: str, deployment: str) -> dict[str, Any]:
        view: dict[str, Any] = self._call("GET", f"/v1/scaling/{namespace}/{deployment}")
        return view

    def decisions(self, namespace: str, deployment: str, limit: int = 50) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call(
            "GET", f"/v1/scaling/{namespace}/{deployment}/decisions", params={"limit": limit}
        )["data"]
        return found

    def set_mode(self, namespace: str, deployment: str, mode: str, reason: str = "") -> dict[str, Any]:
        body = {"mode": mode, "reason": reason}
        view: dict[str, Any] = self._call("POST", f"/v1/scaling/{namespace}/{deployment}/mode", json=body)
        return view

    def stop(self, namespace: str, deployment: str, reason: str = "") -> dict[str, Any]:
        body = {"reason": reason}
        view: dict[str, Any] = self._call("POST", f"/v1/scaling/{namespace}/{deployment}/stop", json=body)
        return view

    def list(self, namespace: str | None = None, phase: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("namespace", namespace), ("phase", phase)) if v}
        found: list[dict[str, Any]] = self._call("GET", "/v1/scaling", params=params)["data"]
        return found


connect = ScalingApi.connect


# ---- rendering -----------------------------------------------------------------------------------------


def sparkline(values: Sequence[float]) -> str:
    """The values as a line of block characters, lowest to highest."""
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low
    return "".join(SPARK[0 if span <= 0 else round((v - low) / span * (len(SPARK) - 1))] for v in values)


def _clock(value: str | None) -> str:
    return datetime.fromisoformat(value).strftime("%H:%M:%S") if value else "-"


def _styled(value: str | None, styles: Mapping[str, str]) -> Text:
    return Text(value or "-", style=styles.get(value or "", ""))


def replicas_change(decision: Mapping[str, Any]) -> str:
    current, target = decision.get("current_replicas"), decision.get("target")
    if current is None:
        return "-"
    if target is None or target == current:
        return str(current)
    return f"{current} → {target}"


def render_header(view: View) -> RenderableType:
    settings = view.get("settings") or {}
    bounds = settings.get("bounds") or {}
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("target", f"{view['namespace']}/{view['deployment']}  ({view['id']})")
    grid.add_row("mode", Text.assemble(_styled(view.get("phase"), PHASE_STYLE), f"  {view.get('mode', '')}"))
    health = view.get("health") or "-"
    grid.add_row("health", Text(health, style="green" if health == "ok" else "bold yellow"))
    grid.add_row("message", shown(view.get("message") or "-", lines=True))
    grid.add_row(
        "policy",
        f"{bounds.get('min_replicas')}–{bounds.get('max_replicas')} replicas, "
        f"{number(bounds.get('capacity_rps'))} rps each at {number(bounds.get('target_utilization'))} "
        f"utilisation; every {number(settings.get('interval_s'))} s, start-up "
        f"{number(settings.get('startup_s'))} s",
    )
    grid.add_row("decisions", str(view.get("decisions", 0)))
    last = view.get("last") or {}
    if last.get("forecast_status") not in (None, "", "ok"):
        grid.add_row(
            "forecaster",
            Text(plain(f"{last['forecast_status']}: {last.get('detail') or ''}"), style="yellow"),
        )
    forecast = view.get("forecast")
    if forecast and forecast.get("mean"):
        mean = forecast["mean"]
        grid.add_row(
            "forecast",
            f"{sparkline(mean)}  next {number(len(mean) * forecast['step_s'])} s, "
            f"peak {number(max(mean))} rps",
        )
    model = view.get("model")
    if model:
        grid.add_row("model", _model_line(model))
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


def render_decisions(decisions: Sequence[Mapping[str, Any]], last: int = DECISIONS_SHOWN) -> RenderableType:
    """The newest decisions first, one line each (the newest one's reason is the header's message)."""
    table = Table(box=box.SIMPLE_HEAD, title="decisions (newest first)", title_justify="left")
    for column in ("#", "at", "status", "rps", "forecast", "conf", "replicas", "ready", "basis"):
        table.add_column(column, justify="left" if column in ("status", "basis") else "right", no_wrap=True)
    for decision in list(decisions)[:last]:
        table.add_row(
            str(decision.get("seq", "")),
            _clock(decision.get("at")),
            _styled(decision.get("status"), STATUS_STYLE),
            number(decision.get("observed_rps")),
            number(decision.get("forecast_peak_rps")),
            number(decision.get("confidence")),
            replicas_change(decision),
            str(decision.get("ready_replicas") if decision.get("ready_replicas") is not None else "-"),
            "/".join(filter(None, [decision.get("basis"), decision.get("limited_by")]))
            or decision.get("data_status")
            or "-",
        )
    return table


def render_scaling(view: View) -> RenderableType:
    decisions = list(reversed(view.get("recent") or []))
    return Group(render_header(view), render_decisions(decisions))


def render_list(targets: Sequence[Mapping[str, Any]]) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("target", "phase", "status", "started"):
        table.add_column(column)
    for target in targets:
        table.add_row(
            f"{target['namespace']}/{target['deployment']}",
            _styled(target.get("phase"), PHASE_STYLE),
            target.get("status") or "-",
            (target.get("started_at") or "-")[:19].replace("T", " "),
        )
    if not targets:
        table.add_row("(none)", "", "", "")
    return table


# ---- commands --------------------------------------------------------------------------------------------


def run_status(api: ScalingApi, namespace: str, deployment: str, console: Console, *, stored: bool) -> int:
    """The live state; `stored`: the decisions from the read model, not the workflow's recent ones."""
    view = api.get(namespace, deployment)
    if stored:
        console.print(Group(render_header(view), render_decisions(api.decisions(namespace, deployment))))
    else:
        console.print(render_scaling(view))
    return 0


def guarded(command: str, err_console: Console, run: Callable[[], int]) -> int:
    return rest.guarded("scaling", command, err_console, run)
