"""`lcp chaos`: chaos experiments through the lcp REST API — catalogue, run, status, abort, list, game-day
schedules — and the drills on lcp's own processes. The render functions are pure (a ChaosView as the API
answers it → a rich renderable)."""

import asyncio
import json
import shutil
import tempfile
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

from chaos.drills import DRILLS, DrillReport, UnknownDrill, find_drill
from cli import drill_views
from cli.connection import CliError, api_commands
from cli.rollout import Reason, number
from cli.runtime import console, err_console
from cli.show import plain, shown

if TYPE_CHECKING:
    from api.chaos_schemas import ChaosSummary, ScheduleSummary
    from cli.client import ChaosApi
    from workflows.chaos import ChaosView
    from workflows.chaos_scenario import ScenarioView

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


def _connect(api_url: str | None, home: Path, api_key: str | None) -> "ChaosApi":
    from cli.client import ChaosApi  # the API's schemas load Temporal's workflow code: not for --help

    return ChaosApi.connect(api_url, home, api_key)


app = typer.Typer(
    help="Chaos experiments (LitmusChaos) and scenarios (Argo Workflows) through the lcp API (a key with the "
    "sre role).",
    no_args_is_help=True,
)
command = api_commands(app, "chaos", _connect)

Experiment = Annotated[str, typer.Argument(help="The experiment's name.")]
RunId = Annotated[str, typer.Argument(help="The run's id (`lcp chaos list` shows them).")]
ExperimentsFile = Annotated[
    Path | None,
    typer.Option(help="A YAML file of experiments (the catalogue's shape).", show_default=False),
]


# ---- the commands ----------------------------------------------------------------------------------------


@command("catalogue")
def catalogue(api: "ChaosApi") -> int:
    """The experiments the API runs by name."""
    console.print(render_catalogue(api.catalogue()))
    return 0


@command("run")
def run(
    api: "ChaosApi",
    experiment: Annotated[
        str | None, typer.Argument(help="A catalogue experiment, or the one to pick from --file.")
    ] = None,
    file: ExperimentsFile = None,
    run_id: Annotated[str | None, typer.Option("--run", help="This run's id (default: the time).")] = None,
    follow: Annotated[
        bool, typer.Option("--watch", "-w", help="Follow it to the end (exit 0 if it passed).")
    ] = False,
) -> int:
    """Run an experiment: safety policy, steady state, the fault, cleanup, recovery, report."""
    if experiment is None and file is None:
        raise CliError("name an experiment (`lcp chaos catalogue` lists them) or give --file")
    view = api.run(run_body(experiment, file, run_id))
    if follow:
        return watch(api, view.experiment, view.run, console)
    console.print(render_chaos(view))
    return 0


@command("status")
def status(
    api: "ChaosApi",
    experiment: Experiment,
    run_id: RunId,
    follow: Annotated[bool, typer.Option("--watch", "-w", help="Follow it to the end.")] = False,
) -> int:
    """A run's phase, journal, probes, verdict and score."""
    if follow:
        return watch(api, experiment, run_id, console)
    console.print(render_chaos(api.get(experiment, run_id)))
    return 0


@command("abort")
def abort(api: "ChaosApi", experiment: Experiment, run_id: RunId, reason: Reason = "") -> int:
    """Stop the fault now; cleanup and the recovery check still run."""
    console.print(render_header(api.abort(experiment, run_id, reason)))
    return 0


@command("list")
def list_(
    api: "ChaosApi",
    phase: Annotated[
        str | None,
        typer.Option(help="Passed, Failed, Refused, NotSteady, Aborted, Error, ...", show_default=False),
    ] = None,
) -> int:
    """Experiment runs, newest first."""
    console.print(render_list(api.runs(phase)))
    return 0


@command("schedule")
def schedule(
    api: "ChaosApi",
    experiment: Annotated[
        str, typer.Argument(help="A catalogue experiment, or the one to pick from --file.")
    ],
    cron: Annotated[str | None, typer.Option(help='A cron expression (UTC), e.g. "0 14 * * WED".')] = None,
    every: Annotated[float | None, typer.Option(help="Or every this many seconds (at least 60).")] = None,
    file: ExperimentsFile = None,
    paused: Annotated[bool, typer.Option(help="Create it paused (unpause in the Temporal UI).")] = False,
) -> int:
    """A recurring game day on a Temporal Schedule; each run passes the same safety policy."""
    body = run_body(experiment, file, None) | {"cron": cron, "every_s": every, "paused": paused}
    console.print(render_schedules([api.schedule(body)]))
    return 0


@command("schedules")
def schedules(api: "ChaosApi") -> int:
    """Game-day schedules, with their next and recent runs."""
    console.print(render_schedules(api.schedules()))
    return 0


@command("unschedule")
def unschedule(
    api: "ChaosApi",
    schedule_id: Annotated[str, typer.Argument(help="The schedule's id (`lcp chaos schedules`).")],
) -> int:
    """Delete a game-day schedule (runs under way finish and clean up)."""
    api.unschedule(schedule_id)
    console.print(f"deleted {schedule_id}")
    return 0


@app.command("drills")
def drills() -> None:
    """The drills `lcp chaos drill` runs against lcp's own processes."""
    console.print(drill_views.render_catalogue())


@app.command("drill")
def drill(
    name: Annotated[str, typer.Argument(help="A drill (`lcp chaos drills` lists them), or `all`.")],
    home: Annotated[
        Path | None,
        typer.Option(
            help="Where the disposable stack keeps its state and logs (default: a new temp dir).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON report per drill, one per line.")] = False,
    split: Annotated[
        bool,
        typer.Option(
            "--split", help="In `lcp dev --split`'s shape: PostgreSQL, two API processes behind HAProxy."
        ),
    ] = False,
) -> None:
    """Break lcp's own processes on a disposable stack (Temporal, API, workers; simulated model and
    cluster) and check nothing was lost or duplicated. Exit 0 if every check held."""
    try:
        chosen = list(DRILLS) if name == "all" else [find_drill(name)]
    except UnknownDrill as err:
        err_console.print(f"lcp chaos drill: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    from cli.drills import run_drills  # the harness loads the Kubernetes client: only once the name is known

    state = home or Path(tempfile.mkdtemp(prefix="lcp-drill-"))
    if split and home is None:
        state.chmod(0o755)  # as root, PostgreSQL runs as `postgres`, which must reach its folder

    def report(drill_report: DrillReport) -> None:
        if as_json:
            console.print_json(json.dumps(drill_report.to_dict()), indent=None)
        else:
            console.print(drill_views.render_report(drill_report))

    if not as_json:
        console.print(f"starting a disposable lcp in {state} (Temporal, API, workers, LLM simulator)")
    try:
        passed = asyncio.run(run_drills(state, chosen, report, split))
    except RuntimeError as err:
        err_console.print(f"lcp chaos drill: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if passed and home is None:
        shutil.rmtree(state, ignore_errors=True)
    elif not passed:
        err_console.print(f"logs of every process: {state / 'logs'}", highlight=False, soft_wrap=True)
    raise typer.Exit(0 if passed else 1)


# ---- request bodies from the command line ----------------------------------------------------------------


def run_body(
    name: str | None, file: Path | None, run: str | None, kind: str = "experiment"
) -> dict[str, Any]:
    """The POST body: a catalogue name, or the one `kind` (experiment or scenario) a YAML file holds (the
    catalogue's shape)."""
    body: dict[str, Any] = {"run": run} if run else {}
    if file is None:
        return body | {kind: name}
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise CliError(f"cannot read {file}: {err}") from err
    entries = data.get(f"{kind}s") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise CliError(f"{file}: expected `{kind}s:` with at least one {kind}")
    chosen = [e for e in entries if isinstance(e, dict) and (name is None or e.get("name") == name)]
    if len(chosen) != 1:
        raise CliError(f"{file}: name the {kind} to run (it holds {len(entries)})")
    return body | {"definition": chosen[0]}


# ---- rendering -----------------------------------------------------------------------------------------


def _styled(value: str | None, styles: Mapping[str, str]) -> Text:
    return Text(value or "-", style=styles.get(value or "", ""))


def _recovery(view: "ChaosView") -> str:
    """The time to recover, and what it was measured from."""
    if view.time_to_recover_s is None:
        return "not recovered"
    from policies.chaos import FROM_LAST_REPLACED_POD

    if view.recovery_measured_from == FROM_LAST_REPLACED_POD:
        return f"recovered {view.time_to_recover_s:.0f} s after the last pod deleted (to every pod ready)"
    return f"steady {number(view.time_to_recover_s)} s after the fault ended"


def render_header(view: "ChaosView") -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("run", f"{view.id}  ({view.fault} on {view.target}, engine {view.engine})")
    grid.add_row("phase", _styled(view.phase, PHASE_STYLE))
    grid.add_row("message", shown(view.message or "-", lines=True))
    if view.verdict:
        grid.add_row("litmus verdict", view.verdict)
    if view.probe_success_percentage is not None:
        grid.add_row(
            "result",
            f"probes {number(view.probe_success_percentage)}% passed, resilience score "
            f"{number(view.resilience_score)}, {_recovery(view)}",
        )
    grid.add_row("cleaned up", "yes" if view.cleaned_up else ("n/a" if not view.injected else "no"))
    return Panel(grid, title="chaos experiment", title_align="left", box=box.ROUNDED)


def render_journal(view: "ChaosView | ScenarioView") -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, title="journal", title_justify="left")
    for column in ("step", "status", "seconds", "output / error"):
        table.add_column(column, overflow="fold")
    for entry in view.journal:
        detail = entry.error or ", ".join(f"{k}={v}" for k, v in entry.output.items())
        table.add_row(
            shown(entry.step),
            _styled(entry.status, STEP_STYLE),
            number(entry.duration_s),
            shown(detail),
        )
    return table


def render_probes(view: "ChaosView | ScenarioView", last: int = 12) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, title="probes (newest last)", title_justify="left")
    for column in ("when", "probe", "passed", "value", "detail"):
        table.add_column(column, overflow="fold")
    for probe in view.probes[-last:]:
        passed = Text("yes", style="green") if probe.passed else Text("no", style="bold red")
        table.add_row(shown(probe.when), shown(probe.probe), passed, number(probe.value), shown(probe.detail))
    return table


def render_chaos(view: "ChaosView") -> RenderableType:
    return Group(render_header(view), render_journal(view), render_probes(view))


def render_list(runs: Sequence["ChaosSummary"]) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("run", "target", "phase", "status", "started"):
        table.add_column(column)
    for found in runs:
        table.add_row(
            shown(found.id),
            shown(found.target or "-"),
            _styled(found.phase, PHASE_STYLE),
            found.status or "-",
            (found.started_at or "-")[:19].replace("T", " "),
        )
    if not runs:
        table.add_row("(none)", "", "", "", "")
    return table


def render_schedules(schedules: Sequence["ScheduleSummary"]) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("schedule", "when", "paused", "next runs", "recent runs"):
        table.add_column(column, overflow="fold")
    for found in schedules:
        table.add_row(
            shown(found.id),
            shown(found.spec),
            "yes" if found.paused else "no",
            "\n".join(at[:19].replace("T", " ") for at in found.next_runs) or "-",
            "\n".join(found.recent_runs) or "-",
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


# ---- what the commands do ---------------------------------------------------------------------------------


def watch(api: "ChaosApi", experiment: str, run: str, console: Console, poll_s: float = 1.0) -> int:
    """Print the phase as it changes until the run ends; exit 0 when it passed, 1 otherwise."""
    last = ""
    while True:
        view = api.get(experiment, run)
        if view.phase != last:
            last = view.phase
            console.print(Text.assemble(_styled(last, PHASE_STYLE), plain(f"  {view.message}")))
        if view.finished_at:  # the report is written (a phase can be final before cleanup ends)
            console.print(render_chaos(view))
            return 0 if last == "Passed" else 1
        time.sleep(poll_s)
