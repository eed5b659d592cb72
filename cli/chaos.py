"""`lcp chaos`: chaos experiments through the lcp REST API — catalogue, run, status, abort, list. The render
functions are pure (a ChaosView as the API answers it → a rich renderable)."""

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cli import rest
from cli.rest import ApiClient, CliError
from cli.rollout import number
from cli.show import plain, shown

View = Mapping[str, Any]
PHASE_STYLE = {
    "Checking": "bold cyan",
    "Injecting": "bold magenta",
    "CleaningUp": "bold yellow",
    "Verifying": "bold cyan",
    "Passed": "bold green",
    "Failed": "bold red",
    "Refused": "bold yellow",
    "NotSteady": "bold yellow",
    "Aborted": "bold yellow",
    "Error": "bold white on red",
}
STEP_STYLE = {"succeeded": "green", "failed": "red", "running": "cyan", "skipped": "dim"}


class ChaosApi(ApiClient):
    """The chaos routes of the lcp API (role sre)."""

    def catalogue(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call("GET", "/v1/chaos/catalogue")["data"]
        return found

    def run(self, body: Mapping[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = self._call("POST", "/v1/chaos", json=dict(body))
        return view

    def get(self, experiment: str, run: str) -> dict[str, Any]:
        view: dict[str, Any] = self._call("GET", f"/v1/chaos/{experiment}/{run}")
        return view

    def abort(self, experiment: str, run: str, reason: str = "") -> dict[str, Any]:
        view: dict[str, Any] = self._call(
            "POST", f"/v1/chaos/{experiment}/{run}/abort", json={"reason": reason}
        )
        return view

    def runs(self, phase: str | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call(
            "GET", "/v1/chaos", params={"phase": phase} if phase else {}
        )["data"]
        return found

    def schedule(self, body: Mapping[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = self._call("POST", "/v1/chaos/schedules", json=dict(body))
        return found

    def schedules(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call("GET", "/v1/chaos/schedules")["data"]
        return found

    def unschedule(self, schedule_id: str) -> None:
        self._call("DELETE", f"/v1/chaos/schedules/{schedule_id}")


connect = ChaosApi.connect


def run_body(name: str | None, file: Path | None, run: str | None) -> dict[str, Any]:
    """The POST body: a catalogue name, or the one experiment a YAML file holds (the catalogue's shape)."""
    body: dict[str, Any] = {"run": run} if run else {}
    if file is None:
        return body | {"experiment": name}
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise CliError(f"cannot read {file}: {err}") from err
    entries = data.get("experiments") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise CliError(f"{file}: expected `experiments:` with at least one experiment")
    chosen = [e for e in entries if isinstance(e, dict) and (name is None or e.get("name") == name)]
    if len(chosen) != 1:
        raise CliError(f"{file}: name the experiment to run (it holds {len(entries)})")
    return body | {"definition": chosen[0]}


# ---- rendering -----------------------------------------------------------------------------------------


def _styled(value: str | None, styles: Mapping[str, str]) -> Text:
    return Text(value or "-", style=styles.get(value or "", ""))


def render_header(view: View) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("run", f"{view['id']}  ({view['fault']} on {view['target']}, engine {view['engine']})")
    grid.add_row("phase", _styled(view.get("phase"), PHASE_STYLE))
    grid.add_row("message", shown(view.get("message") or "-", lines=True))
    if view.get("verdict"):
        grid.add_row("litmus verdict", view["verdict"])
    if view.get("probe_success_percentage") is not None:
        grid.add_row(
            "result",
            f"probes {number(view['probe_success_percentage'])}% passed, resilience score "
            f"{number(view.get('resilience_score'))}, recovered in {number(view.get('time_to_recover_s'))} s",
        )
    grid.add_row(
        "cleaned up", "yes" if view.get("cleaned_up") else ("n/a" if not view.get("injected") else "no")
    )
    return Panel(grid, title="chaos experiment", title_align="left", box=box.ROUNDED)


def render_journal(view: View) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, title="journal", title_justify="left")
    for column in ("step", "status", "seconds", "output / error"):
        table.add_column(column, overflow="fold")
    for entry in view.get("journal") or []:
        detail = entry.get("error") or ", ".join(f"{k}={v}" for k, v in (entry.get("output") or {}).items())
        table.add_row(
            shown(entry["step"]),
            _styled(entry.get("status"), STEP_STYLE),
            number(entry.get("duration_s")),
            shown(detail),
        )
    return table


def render_probes(view: View, last: int = 12) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, title="probes (newest last)", title_justify="left")
    for column in ("when", "probe", "passed", "value", "detail"):
        table.add_column(column, overflow="fold")
    for probe in (view.get("probes") or [])[-last:]:
        passed = Text("yes", style="green") if probe["passed"] else Text("no", style="bold red")
        table.add_row(
            shown(probe["when"]),
            shown(probe["probe"]),
            passed,
            number(probe.get("value")),
            shown(probe.get("detail", "")),
        )
    return table


def render_chaos(view: View) -> RenderableType:
    return Group(render_header(view), render_journal(view), render_probes(view))


def render_list(runs: Sequence[Mapping[str, Any]]) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("run", "target", "phase", "status", "started"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            shown(run["id"]),
            shown(run.get("target") or "-"),
            _styled(run.get("phase"), PHASE_STYLE),
            run.get("status") or "-",
            (run.get("started_at") or "-")[:19].replace("T", " "),
        )
    if not runs:
        table.add_row("(none)", "", "", "", "")
    return table


def render_schedules(schedules: Sequence[Mapping[str, Any]]) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("schedule", "when", "paused", "next runs", "recent runs"):
        table.add_column(column, overflow="fold")
    for found in schedules:
        table.add_row(
            shown(found["id"]),
            shown(found["spec"]),
            "yes" if found["paused"] else "no",
            "\n".join(at[:19].replace("T", " ") for at in found["next_runs"]) or "-",
            "\n".join(found["recent_runs"]) or "-",
        )
    if not schedules:
        table.add_row("(none)", "", "", "", "")
    return table


def render_catalogue(experiments: Sequence[Mapping[str, Any]]) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("experiment", "fault", "target", "probes"):
        table.add_column(column)
    for e in experiments:
        target = e.get("target") or {}
        probes = ((e.get("hypothesis") or {}).get("probes")) or []
        table.add_row(
            e["name"],
            (e.get("fault") or {}).get("kind", "-"),
            f"{target.get('namespace')} {target.get('app_label')}",
            ", ".join(p.get("name", "?") for p in probes) or "-",
        )
    return table


# ---- commands ------------------------------------------------------------------------------------------


def watch(api: ChaosApi, experiment: str, run: str, console: Console, poll_s: float = 1.0) -> int:
    """Print the phase as it changes until the run ends; exit 0 when it passed, 1 otherwise."""
    last = ""
    while True:
        view = api.get(experiment, run)
        if view["phase"] != last:
            last = view["phase"]
            console.print(Text.assemble(_styled(last, PHASE_STYLE), plain(f"  {view.get('message', '')}")))
        if view.get("finished_at"):  # the report is written (a phase can be final before cleanup ends)
            console.print(render_chaos(view))
            return 0 if last == "Passed" else 1
        time.sleep(poll_s)


def guarded(command: str, err_console: Console, run: Callable[[], int]) -> int:
    return rest.guarded("chaos", command, err_console, run)
