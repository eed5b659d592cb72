"""`lcp assistants`: assistants through the lcp REST API — create, edit, versions, publish, rollback,
experiments, archive, stats. The render functions are pure (the API's answer → a rich renderable)."""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from rich import box
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cli.rest import ApiClient, CliError
from cli.rollout import number
from cli.show import plain, shown

View = Mapping[str, Any]
STATE_STYLE = {
    "Draft": "bold yellow",
    "Published": "bold green",
    "Experimenting": "bold cyan",
    "Archived": "dim",
}
SPEC_FIELDS = ("name", "model", "instructions", "params", "tools", "max_tool_rounds")
HISTORY_SHOWN = 8


class AssistantsApi(ApiClient):
    """The assistant routes of the lcp API (role admin for changes, client for reading)."""

    def all(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call("GET", "/v1/assistants")["data"]
        return found

    def get(self, assistant_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/assistants/{assistant_id}"))

    def versions(self, assistant_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call("GET", f"/v1/assistants/{assistant_id}/versions")["data"]
        return found

    def stats(self, assistant_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/assistants/{assistant_id}/stats"))

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/v1/assistants", json=dict(body)))

    def edit(self, assistant_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._call("PATCH", f"/v1/assistants/{assistant_id}", json=dict(body)))

    def post(self, assistant_id: str, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """publish, rollback, archive, experiments, experiments/{id}/adjust|stop."""
        return dict(self._call("POST", f"/v1/assistants/{assistant_id}/{action}", json=dict(body)))


connect = AssistantsApi.connect


# ---- request bodies from the command line ----------------------------------------------------------------


def spec_body(
    file: Path | None,
    *,
    name: str | None = None,
    model: str | None = None,
    instructions: str | None = None,
    params: Sequence[str] = (),
) -> dict[str, Any]:
    """The spec fields of a create or edit: those of `file` (YAML or JSON, the API's field names), then
    the ones given on the command line over them (`params` as NAME=VALUE). The API checks the values;
    this checks the shape."""
    body: dict[str, Any] = {}
    if file is not None:
        try:
            data = yaml.safe_load(file.read_text())  # JSON is YAML too
        except OSError as err:
            raise CliError(f"--file {file}: {err.strerror or err}") from err
        except yaml.YAMLError as err:
            raise CliError(f"--file {file} is neither YAML nor JSON: {err}") from err
        if not isinstance(data, dict):
            raise CliError(f"--file {file}: expected a mapping of {', '.join(SPEC_FIELDS)}")
        if unknown := sorted(set(data) - set(SPEC_FIELDS) - {"id", "note"}):
            fields = ", ".join(SPEC_FIELDS)
            raise CliError(f"--file {file}: unknown field(s) {', '.join(unknown)}; the fields are {fields}")
        body.update(data)
    given = {"name": name, "model": model, "instructions": instructions, "params": parse_params(params)}
    body.update({key: value for key, value in given.items() if value is not None})
    return body


def parse_params(pairs: Sequence[str]) -> dict[str, Any] | None:
    """--param temperature=0.2 --param max_tokens=300: values read as YAML scalars (numbers, true)."""
    if not pairs:
        return None
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CliError(f"--param {pair!r}: expected NAME=VALUE, e.g. temperature=0.2")
        params[name] = yaml.safe_load(value)
    return params


def parse_arms(specs: Sequence[str]) -> list[dict[str, Any]]:
    """--arm control=v1:50 --arm treatment=v2:50 → the API's arms."""
    arms = []
    for spec in specs:
        name, _, rest = spec.partition("=")
        version, _, share = rest.partition(":")
        if not (name and version and share.isdigit()):
            raise CliError(f"--arm {spec!r}: expected NAME=VERSION:SHARE, e.g. control=v1:50")
        arms.append({"name": name, "version": version, "share": int(share)})
    if len(arms) < 2:
        raise CliError("an experiment needs at least two --arm NAME=VERSION:SHARE")
    return arms


# ---- rendering --------------------------------------------------------------------------------------------


def _state(state: str | None) -> Text:
    return Text(state or "—", style=STATE_STYLE.get(state or "", ""))


def _when(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")


def _arms(experiment: View | None) -> str:
    if not experiment:
        return ""
    arms = ", ".join(f"{a['name']}={a['version']} {a['share']}" for a in experiment.get("arms") or [])
    return shown(f"{experiment['id']}: {arms}")


def render_list(assistants: Sequence[View]) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("assistant", "name", "state", "live", "latest", "experiment", "updated"):
        table.add_column(column, overflow="fold")
    for found in assistants:
        table.add_row(
            shown(found["id"]),
            shown(found.get("name") or ""),
            _state(found.get("state")),
            shown(found.get("live_version") or "—"),
            shown(found.get("latest_version") or ""),
            _arms(found.get("experiment")),
            _when(found.get("updated_at")),
        )
    if not assistants:
        table.add_row("(none)", "", "", "", "", "", "")
    return table


def render_versions(versions: Sequence[View], live: str | None = None) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("version", "model", "tools", "changed", "note", "by", "created", "published"):
        table.add_column(column, overflow="fold")
    for version in versions:
        spec = version.get("spec") or {}
        label = Text(plain(version["version"]), style="bold green" if version["version"] == live else "")
        table.add_row(
            label,
            shown(spec.get("model") or ""),
            shown(", ".join(tool["name"] for tool in spec.get("tools") or []) or "—"),
            shown(", ".join(version.get("changed") or [])) if version.get("number", 1) > 1 else "(first)",
            shown(version.get("note") or ""),
            shown(version.get("created_by") or ""),
            _when(version.get("created_at")),
            _when(version.get("published_at")) or "—",
        )
    return table


def render_assistant(view: View) -> RenderableType:
    """One assistant: state, live version, versions, the running experiment, recent changes."""
    versions = view.get("versions") or []
    latest = versions[-1] if versions else {}
    title = Text.assemble(
        (plain(view["assistant_id"]), "bold"),
        "  ",
        _state(view.get("state")),
        plain(f"  live {view.get('live_version') or '—'}"),
    )
    lines: list[RenderableType] = [
        Text(
            plain(f"{(latest.get('spec') or {}).get('name', '')} · created by {view.get('created_by', '')}")
        ),
        render_versions(versions, view.get("live_version")),
    ]
    if experiment := view.get("experiment"):
        started_by = plain(experiment.get("started_by"))
        lines.append(Text.from_markup(f"experiment {_arms(experiment)} (started by {escape(started_by)})"))
    for past in (view.get("past_experiments") or [])[-3:]:
        winner = f", winner {past['winner']}" if past.get("winner") else ""
        lines.append(Text(plain(f"past experiment {past['id']}: {past['state']}{winner}"), style="dim"))
    history = (view.get("history") or [])[-HISTORY_SHOWN:]
    if history:
        table = Table(box=None, show_header=False, padding=(0, 1))
        for event in history:
            table.add_row(
                _when(event.get("at")),
                shown(event.get("kind", "")),
                shown(event.get("by", "")),
                shown(event.get("message", "")),
            )
        lines.append(table)
    return Panel(Group(*lines), title=title, title_align="left", box=box.ROUNDED)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _usage_row(label: Sequence[str], usage: View) -> list[str]:
    return [
        *(shown(part) for part in label),
        str(usage["conversations"]),
        str(usage["turns"]),
        f"{usage['errors']} ({_percent(usage.get('error_rate'))})",
        str(usage["prompt_tokens"] + usage["completion_tokens"]),
        f"{number(usage.get('latency_p50_ms'))} / {number(usage.get('latency_p95_ms'))}",
        f"{usage['thumbs_up']}↑ {usage['thumbs_down']}↓",
        _percent(usage.get("satisfaction")),
    ]


USAGE_COLUMNS = ("convs", "turns", "errors", "tokens", "latency p50/p95 ms", "feedback", "satisfied")


def _difference(diff: View) -> str:
    """treatment − control [low, high]: rates in points, latency in ms."""
    if diff.get("value") is None:
        return "not enough data"
    scale, unit = (1, " ms") if diff["metric"].endswith("_ms") else (100, " pts")
    shown = f"{diff['value'] * scale:+.1f}{unit}"
    if diff.get("low") is None or diff.get("high") is None:
        return f"{shown} (too few samples for an interval)"
    confidence = f"{diff['confidence'] * 100:.0f}% CI"
    return f"{shown} [{diff['low'] * scale:+.1f}, {diff['high'] * scale:+.1f}] {confidence}"


def render_stats(stats: View) -> RenderableType:
    """Per-version usage, then each experiment's arms and each arm minus the control."""
    versions = Table(box=box.SIMPLE_HEAD, title=f"{stats['assistant_id']}: per version", title_justify="left")
    for column in ("version", *USAGE_COLUMNS):
        versions.add_column(column, justify="left" if column == "version" else "right")
    for usage in stats.get("versions") or []:
        versions.add_row(*_usage_row([usage["version"]], usage))
    if not stats.get("versions"):
        versions.add_row("(no turns yet)", *[""] * len(USAGE_COLUMNS))
    parts: list[RenderableType] = [versions]
    for experiment in stats.get("experiments") or []:
        state, control = experiment["state"], experiment["control"]
        arms = Table(
            box=box.SIMPLE_HEAD,
            title=f"experiment {experiment['id']} ({state}; control arm {control})",
            title_justify="left",
        )
        for column in ("arm", "version", *USAGE_COLUMNS):
            arms.add_column(column, justify="left" if column in ("arm", "version") else "right")
        for usage in experiment.get("arms") or []:
            arms.add_row(*_usage_row([usage["arm"], usage["version"]], usage))
        parts.append(arms)
        if experiment.get("differences"):
            diffs = Table(box=box.SIMPLE_HEAD, title="arm − control", title_justify="left")
            for column in ("arm", "metric", "difference"):
                diffs.add_column(column)
            for diff in experiment["differences"]:
                diffs.add_row(shown(diff["arm"]), shown(diff["metric"]), _difference(diff))
            parts.append(diffs)
    return Group(*parts)
