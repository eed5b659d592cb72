"""How `lcp models status` shows the inference fleet: a table per model version, one row per deployment.
Names are shown as Text (never read as markup), escaped by cli.show.plain."""

from rich.console import RenderableType
from rich.text import Text

from api.fleet_schemas import DeploymentStatus, FleetView
from cli.show import plain
from cli.tables import Cell, Column, ListTable

STATE_STYLE = {"healthy": "green", "cooling_down": "yellow", "draining": "cyan"}


def _state(row: DeploymentStatus) -> Text:
    text = row.state
    if row.cooling_down_for_s is not None:
        text = f"cooling {row.cooling_down_for_s:.0f}s"
    return Text(text, style=STATE_STYLE.get(row.state, ""))


def _load(row: DeploymentStatus) -> str:
    if row.metrics_read_s_ago is None:
        return f"{row.in_flight} in flight"
    return f"{row.in_flight}+{row.running:.0f}r/{row.waiting:.0f}w"


def fleet_tables(view: FleetView) -> list[RenderableType]:
    tables: list[RenderableType] = []
    for model in view.models:
        source = "discovered" if model.discovered else "listed"
        title = f"{plain(model.model)} {plain(model.version)} · {model.strategy} · {source}"
        if model.fallbacks:
            title += f" · falls back to {', '.join(plain(f) for f in model.fallbacks)}"
        why = [
            f"{row.deployment} cools down: {row.cooling_down_because}"
            for row in model.deployments
            if row.cooling_down_because
        ]
        columns = [
            Column("deployment", key=True),
            Column("state"),
            Column("load", justify="right"),
            Column("KV", justify="right", drop=3),
            Column("hits", justify="right", drop=2),
            Column("p50", justify="right", drop=1),
            Column("errors", justify="right", drop=4),
        ]
        rows: list[list[Cell]] = [
            [
                Text(plain(row.deployment)),
                _state(row),
                _load(row),
                f"{row.kv_cache_usage:.0%}" if row.metrics_read_s_ago is not None else "-",
                f"{row.prefix_cache_hit_rate:.0%}" if row.prefix_cache_hit_rate is not None else "-",
                f"{row.recent_latency_p50_s:.2f}s" if row.recent_latency_p50_s is not None else "-",
                f"{row.recent_errors}/{row.recent_calls}",
            ]
            for row in model.deployments
        ]
        tables.append(ListTable(columns, rows, title=Text(title), empty="(none ready)"))
        if why:
            tables.append(Text(plain("\n".join(why)), style="yellow"))
    return tables
