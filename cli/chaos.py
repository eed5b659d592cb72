"""`lcp chaos`: chaos experiments through the lcp REST API — catalogue, run, status, abort, list, game-day
schedules — and the drills on lcp's own processes. The render functions are pure (a ChaosView as the API
answers it → a rich renderable)."""

import asyncio
import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
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
from cli import drill_views, live
from cli.connection import AsJson, CliError, api_commands
from cli.rollout import Reason, number
from cli.runtime import console, err_console
from cli.show import plain, print_answer, shown
from cli.tables import Cell, Column, ListTable

if TYPE_CHECKING:
    from api.chaos_schemas import ChaosSummary, ScheduleSummary
    from cli.client import ChaosApi, ScenariosApi
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
# Options the experiment and the scenario commands share.
RunOption = Annotated[str | None, typer.Option("--run", help="This run's id (default: the time).")]
WatchToEnd = Annotated[
    bool, typer.Option("--watch", "-w", help="Follow it to the end (exit 0 if it passed).")
]
Follow = Annotated[bool, typer.Option("--watch", "-w", help="Follow it to the end.")]
Phase = Annotated[
    str | None,
    typer.Option(help="Passed, Failed, Refused, NotSteady, Aborted, Error, ...", show_default=False),
]
Cron = Annotated[str | None, typer.Option(help='A cron expression (UTC), e.g. "0 14 * * WED".')]
Every = Annotated[float | None, typer.Option(help="Or every this many seconds (at least 60).")]
Paused = Annotated[bool, typer.Option(help="Create it paused (unpause in the Temporal UI).")]


# ---- the commands ----------------------------------------------------------------------------------------


@command("catalogue")
def catalogue(api: "ChaosApi", as_json: AsJson = False) -> int:
    """The experiments the API runs by name."""
    return print_answer(api.catalogue(), render_catalogue, as_json)


@command("run")
def run(
    api: "ChaosApi",
    experiment: Annotated[
        str | None, typer.Argument(help="A catalogue experiment, or the one to pick from --file.")
    ] = None,
    file: ExperimentsFile = None,
    run_id: RunOption = None,
    follow: WatchToEnd = False,
) -> int:
    """Run an experiment: safety policy, steady state, the fault, cleanup, recovery, report."""
    if experiment is None and file is None:
        raise CliError("name an experiment (`lcp chaos catalogue` lists them) or give --file")
    view = api.run(run_body(experiment, file, run_id))
    if follow:
        return watch(api, view.experiment, view.run, console, first=view)
    console.print(render_chaos(view))
    return 0


@command("status")
def status(
    api: "ChaosApi",
    experiment: Experiment,
    run_id: RunId,
    follow: Follow = False,
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
    phase: Phase = None,
    as_json: AsJson = False,
) -> int:
    """Experiment runs, newest first."""
    return print_answer(api.runs(phase), render_list, as_json)


@command("schedule")
def schedule(
    api: "ChaosApi",
    experiment: Annotated[
        str, typer.Argument(help="A catalogue experiment, or the one to pick from --file.")
    ],
    cron: Cron = None,
    every: Every = None,
    file: ExperimentsFile = None,
    paused: Paused = False,
) -> int:
    """A recurring game day on a Temporal Schedule; each run passes the same safety policy."""
    body = run_body(experiment, file, None) | game_day_timing(cron, every, paused)
    console.print(render_schedules([api.schedule(body)]))
    return 0


@command("schedules")
def schedules(api: "ChaosApi", as_json: AsJson = False) -> int:
    """Game-day schedules, with their next and recent runs."""
    return print_answer(api.schedules(), render_schedules, as_json)


@command("unschedule")
def unschedule(
    api: "ChaosApi",
    schedule_id: Annotated[str, typer.Argument(help="The schedule's id (`lcp chaos schedules`).")],
) -> int:
    """Delete a game-day schedule (runs under way finish and clean up)."""
    return delete_game_day(api, schedule_id)


@app.command("drills")
def drills(as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON.")] = False) -> None:
    """The drills `lcp chaos drill` runs against lcp's own processes."""
    if as_json:
        console.print_json(json.dumps([dataclasses.asdict(drill) for drill in DRILLS]))
    else:
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


def game_day_timing(cron: str | None, every: float | None, paused: bool) -> dict[str, Any]:
    """A game day's timing, as the schedule body carries it beside the run_body."""
    return {"cron": cron, "every_s": every, "paused": paused}


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
    columns = [
        Column("step", key=True),
        Column("status"),
        Column("seconds", justify="right"),
        Column("output / error"),
    ]
    rows: list[list[Cell]] = [
        [
            shown(entry.step),
            _styled(entry.status, STEP_STYLE),
            number(entry.duration_s),
            shown(entry.error or ", ".join(f"{k}={v}" for k, v in entry.output.items())),
        ]
        for entry in view.journal
    ]
    return ListTable(columns, rows, title="journal")


def render_probes(view: "ChaosView | ScenarioView", last: int = 12) -> RenderableType:
    columns = [
        Column("when", key=True),
        Column("probe", key=True),
        Column("passed"),
        Column("value", justify="right"),
        Column("detail", drop=1),
    ]
    rows: list[list[Cell]] = [
        [
            shown(probe.when),
            shown(probe.probe),
            Text("yes", style="green") if probe.passed else Text("no", style="bold red"),
            number(probe.value),
            shown(probe.detail),
        ]
        for probe in view.probes[-last:]
    ]
    return ListTable(columns, rows, title="probes (newest last)")


def render_chaos(view: "ChaosView") -> RenderableType:
    return Group(render_header(view), render_journal(view), render_probes(view))


def render_fault(view: "ChaosView", now: datetime) -> Text:
    """Where the fault is: not injected yet, running (for how long, how long is left), or over."""
    inject = next((entry for entry in view.journal if entry.step == "inject"), None)
    line = Text.assemble(("fault  ", "bold"), plain(f"{view.fault} on {view.target}: "))
    if inject is None or not view.injected:
        return line.append("not injected yet", style="dim")
    if inject.ended_at is not None:
        return line.append(f"over after {number(inject.duration_s)} s (of {number(view.fault_duration_s)} s)")
    elapsed = max(0.0, (now - inject.started_at).total_seconds())
    left = max(0.0, view.fault_duration_s - elapsed)
    line.append(f"{elapsed:.0f} s of {view.fault_duration_s:.0f} s, ")
    return line.append(f"{left:.0f} s left" if left else "ending (waiting for Litmus' verdict)", style="bold")


def render_pods(view: "ChaosView") -> Text:
    """While the fault runs, the target's pods ready of all; the pods the fault hit so far (deleted, for
    pod-delete), as Litmus' ChaosResult lists them."""
    verb = "deleted" if view.fault == "pod-delete" else "hit"
    line = Text.assemble(("pods   ", "bold"))
    if view.pods_total is not None and not view.finished_at:
        ready = f"{view.pods_ready}/{view.pods_total} ready"
        line.append(ready if view.pods_ready == view.pods_total else f"{ready} (replacements starting)")
        line.append("; ")
    if not view.pods_hit:
        return line.append(f"none {verb} yet", style="dim")
    names = ", ".join(plain(name) for name in view.pods_hit)
    return line.append(f"{len(view.pods_hit)} {verb}: {names}")


def render_live(view: "ChaosView", now: datetime, note: str | None = None) -> RenderableType:
    """The run as it goes: phase and message, the fault's time left, the pods hit, the probes, the journal."""
    heading = Text.assemble(
        (plain(view.id), "bold"),
        "  ",
        _styled(view.phase, PHASE_STYLE),
        "  ",
        plain(view.message, lines=True),
    )
    parts: list[RenderableType] = [heading, render_fault(view, now), render_pods(view)]
    if view.time_to_recover_s is not None:
        parts.append(
            Text.assemble(("back   ", "bold"), f"steady again after {number(view.time_to_recover_s)} s")
        )
    parts += [render_probes(view), render_journal(view)]
    if note:
        parts.append(Text(note, style="bold red"))
    return Group(*parts)


def render_list(runs: Sequence["ChaosSummary"]) -> RenderableType:
    columns = [
        Column("run", key=True),
        Column("target", key=True),
        Column("phase"),
        Column("status", drop=2),
        Column("started", drop=1),
    ]
    rows: list[list[Cell]] = [
        [
            shown(found.id),
            shown(found.target or "-"),
            _styled(found.phase, PHASE_STYLE),
            shown(found.status or "-"),
            (found.started_at or "-")[:19].replace("T", " "),
        ]
        for found in runs
    ]
    return ListTable(columns, rows)


def render_schedules(schedules: Sequence["ScheduleSummary"]) -> RenderableType:
    columns = [
        Column("schedule", key=True),
        Column("when"),
        Column("paused", drop=1),
        Column("next runs", drop=2),
        Column("recent runs", key=True),
    ]
    rows: list[list[Cell]] = [
        [
            shown(found.id),
            shown(found.spec),
            "yes" if found.paused else "no",
            "\n".join(at[:19].replace("T", " ") for at in found.next_runs) or "-",
            shown("\n".join(found.recent_runs) or "-", lines=True),
        ]
        for found in schedules
    ]
    return ListTable(columns, rows)


def render_catalogue(experiments: Sequence[Mapping[str, Any]]) -> RenderableType:
    columns = [Column("experiment", key=True), Column("fault"), Column("target"), Column("probes", drop=1)]
    rows: list[list[Cell]] = []
    for e in experiments:
        target = e.get("target") or {}
        probes = ((e.get("hypothesis") or {}).get("probes")) or []
        rows.append(
            [
                shown(e["name"]),
                shown((e.get("fault") or {}).get("kind", "-")),
                shown(f"{target.get('namespace')} {target.get('app_label')}"),
                shown(", ".join(p.get("name", "?") for p in probes) or "-"),
            ]
        )
    return ListTable(columns, rows)


# ---- what the commands do ---------------------------------------------------------------------------------


def watch(
    api: "ChaosApi",
    experiment: str,
    run: str,
    console: Console,
    *,
    first: "ChaosView | None" = None,
    interval_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """A live view until the run's report is written: the fault's progress and time left, the pods it hit,
    the probes as they run and the journal; then the report. Exit 0 when it passed, 1 otherwise."""
    view = live.follow(
        lambda: api.get(experiment, run),
        lambda view, note: render_live(view, now(), note),
        lambda view: view.finished_at is not None,  # the report is written (a phase can be final before)
        console,
        first=first,
        interval_s=interval_s,
        sleep=sleep,
    )
    console.print(render_header(view))
    return 0 if view.phase == "Passed" else 1


def delete_game_day(api: "ChaosApi | ScenariosApi", schedule_id: str) -> int:
    """Delete a game-day schedule and say so."""
    api.unschedule(schedule_id)
    console.print(f"deleted {schedule_id}")
    return 0
