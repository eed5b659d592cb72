"""`lcp chaos scenario`: chaos scenarios (several faults under one hypothesis, run as an Argo Workflow)
through the lcp REST API — catalogue, run, status, abort, list, game-day schedules. The render functions are
pure (a ScenarioView as the API answers it → a rich renderable)."""

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cli.chaos import (
    PHASE_STYLE,
    Cron,
    Every,
    Follow,
    Paused,
    Phase,
    RunOption,
    WatchToEnd,
    _styled,
    delete_game_day,
    game_day_timing,
    render_journal,
    render_probes,
    render_schedules,
    run_body,
)
from cli.connection import CliError, api_commands
from cli.rollout import Reason, number
from cli.runtime import console, err_console
from cli.show import plain, shown

if TYPE_CHECKING:
    from api.chaos_schemas import ScenarioSummary
    from cli.client import ScenariosApi
    from workflows.chaos_scenario import ScenarioView

NODE_STYLE = {
    "Pending": "dim",
    "Running": "bold magenta",
    "Succeeded": "green",
    "Failed": "bold red",
    "Error": "bold white on red",
}


def _connect(api_url: str | None, home: Path, api_key: str | None) -> "ScenariosApi":
    from cli.client import ScenariosApi  # the API's schemas load Temporal's workflow code: not for --help

    return ScenariosApi.connect(api_url, home, api_key)


app = typer.Typer(
    help="Chaos scenarios: faults in sequence and in parallel under one steady-state hypothesis, run as an "
    "Argo Workflow (a key with the sre role).",
    no_args_is_help=True,
)
command = api_commands(app, "chaos scenario", _connect)

Scenario = Annotated[str, typer.Argument(help="The scenario's name.")]
RunId = Annotated[str, typer.Argument(help="The run's id (`lcp chaos scenario list` shows them).")]
ScenariosFile = Annotated[
    Path | None, typer.Option(help="A YAML file of scenarios (the catalogue's shape).", show_default=False)
]


@command("catalogue")
def catalogue(api: "ScenariosApi") -> int:
    """The scenarios the API runs by name."""
    console.print(render_catalogue(api.catalogue()))
    return 0


@command("run")
def run(
    api: "ScenariosApi",
    scenario: Annotated[
        str | None, typer.Argument(help="A catalogue scenario, or the one to pick from --file.")
    ] = None,
    file: ScenariosFile = None,
    run_id: RunOption = None,
    follow: WatchToEnd = False,
) -> int:
    """Run a scenario: safety policy for every fault, steady state, the Argo Workflow, cleanup, recovery."""
    if scenario is None and file is None:
        raise CliError("name a scenario (`lcp chaos scenario catalogue` lists them) or give --file")
    view = api.run(run_body(scenario, file, run_id, kind="scenario"))
    if follow:
        return watch(api, view.scenario, view.run, console)
    console.print(render_scenario(view))
    return 0


@command("status")
def status(
    api: "ScenariosApi",
    scenario: Scenario,
    run_id: RunId,
    follow: Follow = False,
) -> int:
    """A run's phase, each fault's progress, the journal, probes, verdict and score."""
    if follow:
        return watch(api, scenario, run_id, console)
    console.print(render_scenario(api.get(scenario, run_id)))
    return 0


@command("abort")
def abort(api: "ScenariosApi", scenario: Scenario, run_id: RunId, reason: Reason = "") -> int:
    """Stop every fault now (the Argo Workflow is terminated); cleanup and the recovery check still run."""
    console.print(render_header(api.abort(scenario, run_id, reason)))
    return 0


@command("list")
def list_(
    api: "ScenariosApi",
    phase: Phase = None,
) -> int:
    """Scenario runs, newest first."""
    console.print(render_list(api.runs(phase)))
    return 0


@command("schedule")
def schedule(
    api: "ScenariosApi",
    scenario: Annotated[str, typer.Argument(help="A catalogue scenario, or the one to pick from --file.")],
    cron: Cron = None,
    every: Every = None,
    file: ScenariosFile = None,
    paused: Paused = False,
) -> int:
    """A recurring game day of a scenario on a Temporal Schedule; each run passes the safety policy."""
    body = run_body(scenario, file, None, kind="scenario") | game_day_timing(cron, every, paused)
    console.print(render_schedules([api.schedule(body)]))
    return 0


@command("schedules")
def schedules(api: "ScenariosApi") -> int:
    """Scenario game-day schedules, with their next and recent runs."""
    console.print(render_schedules(api.schedules()))
    return 0


@command("unschedule")
def unschedule(
    api: "ScenariosApi",
    schedule_id: Annotated[str, typer.Argument(help="The schedule's id (`lcp chaos scenario schedules`).")],
) -> int:
    """Delete a scenario game-day schedule (runs under way finish and clean up)."""
    return delete_game_day(api, schedule_id)


@app.command("render")
def render(
    scenario: Annotated[str, typer.Argument(help="A catalogue scenario, or one from --file.")],
    file: ScenariosFile = None,
    run_id: Annotated[str, typer.Option("--run", help="The run id the names carry.")] = "manual",
) -> None:
    """Print the Argo Workflow a scenario runs as (YAML, no API needed): `kubectl create -f -` runs it on a
    cluster with Argo Workflows and Litmus."""
    from activities.argo_workflow import render_workflow  # the argo-workflows models: only for this command
    from chaos.experiments import ExperimentError
    from chaos.scenarios import DEFAULT_SCENARIOS, load_scenarios

    try:
        known = {s.name: s for s in load_scenarios(file or DEFAULT_SCENARIOS)}
        if scenario not in known:
            raise ExperimentError(
                f"no scenario {scenario!r} (there are: {', '.join(sorted(known)) or 'none'})"
            )
        manifest = render_workflow(known[scenario], run_id)
    except ExperimentError as err:
        err_console.print(f"lcp chaos scenario render: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    sys.stdout.write(yaml.dump(manifest, Dumper=_BlockDumper, sort_keys=False))


class _BlockDumper(yaml.SafeDumper):  # type: ignore[misc]  # PyYAML has no type stubs here
    """YAML with multi-line strings (the embedded manifests) as `|` blocks, as people write them."""


def _block(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_BlockDumper.add_representer(str, _block)


# ---- rendering -----------------------------------------------------------------------------------------


def render_header(view: "ScenarioView") -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("run", shown(view.id))
    progress = f"  (Argo progress {view.progress})" if view.progress else ""
    grid.add_row("argo workflow", f"{shown(view.workflow)}{progress}")
    grid.add_row("phase", _styled(view.phase, PHASE_STYLE))
    grid.add_row("message", shown(view.message or "-", lines=True))
    if view.verdict:
        grid.add_row("argo verdict", view.verdict)
    if view.probe_success_percentage is not None:
        grid.add_row(
            "result",
            f"probes {number(view.probe_success_percentage)}% passed, resilience score "
            f"{number(view.resilience_score)}, recovered in {number(view.time_to_recover_s)} s",
        )
    grid.add_row("cleaned up", "yes" if view.cleaned_up else ("n/a" if not view.injected else "no"))
    return Panel(grid, title="chaos scenario", title_align="left", box=box.ROUNDED)


def render_faults(view: "ScenarioView") -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, title="faults", title_justify="left")
    for column in ("step", "fault", "kind", "target", "phase"):
        table.add_column(column, overflow="fold")
    for fault in view.faults:
        phase = _styled(fault.phase, NODE_STYLE)
        if fault.message:
            phase.append(f" {fault.message}", style="dim")
        table.add_row(str(fault.step + 1), shown(fault.name), fault.kind, shown(fault.target), phase)
    return table


def render_scenario(view: "ScenarioView") -> RenderableType:
    return Group(render_header(view), render_faults(view), render_journal(view), render_probes(view))


def render_list(runs: Sequence["ScenarioSummary"]) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("run", "phase", "status", "started"):
        table.add_column(column)
    for found in runs:
        table.add_row(
            shown(found.id),
            _styled(found.phase, PHASE_STYLE),
            found.status or "-",
            (found.started_at or "-")[:19].replace("T", " "),
        )
    if not runs:
        table.add_row("(none)", "", "", "")
    return table


def render_catalogue(scenarios: Sequence[Mapping[str, Any]]) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("scenario", "steps", "probes"):
        table.add_column(column, overflow="fold")
    for s in scenarios:
        steps = [
            " + ".join(f"{f['name']} ({f['fault']['kind']})" for f in step) for step in s.get("steps") or []
        ]
        probes = ((s.get("hypothesis") or {}).get("probes")) or []
        table.add_row(
            shown(s["name"]),
            "\n".join(f"{i}. {step}" for i, step in enumerate(steps, 1)),
            ", ".join(p.get("name", "?") for p in probes) or "-",
        )
    return table


# ---- what the commands do ---------------------------------------------------------------------------------


def watch(api: "ScenariosApi", scenario: str, run: str, console: Console, poll_s: float = 1.0) -> int:
    """Print the phase as it changes until the run ends; exit 0 when it passed, 1 otherwise."""
    last = ""
    while True:
        view = api.get(scenario, run)
        if view.phase != last:
            last = view.phase
            console.print(Text.assemble(_styled(last, PHASE_STYLE), plain(f"  {view.message}")))
        if view.finished_at:
            console.print(render_scenario(view))
            return 0 if last == "Passed" else 1
        time.sleep(poll_s)
