"""`lcp assistants`: assistants through the lcp REST API — create, edit, versions, publish, rollback,
experiments, archive, stats. The render functions are pure (the API's answer → a rich renderable)."""

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich import box
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cli.connection import AsJson, CliError, api_commands
from cli.rollout import number
from cli.runtime import console
from cli.show import plain, print_answer, shown
from cli.tables import Cell, Column, ListTable

if TYPE_CHECKING:
    from api.assistant_schemas import ArmDifference, AssistantStats, AssistantSummary, StoredVersion, Usage
    from cli.client import AssistantsApi
    from policies.assistants import AssistantSpec
    from workflows.assistant import AssistantView, ExperimentView, VersionView

STATE_STYLE = {
    "Draft": "bold yellow",
    "Published": "bold green",
    "Experimenting": "bold cyan",
    "Archived": "dim",
}
SPEC_FIELDS = ("name", "model", "instructions", "params", "tools", "max_tool_rounds")
HISTORY_SHOWN = 8
KEY_HELP = "API key: the admin role to change, client to read (default: dev.json's)."


def _connect(api_url: str | None, home: Path, api_key: str | None) -> "AssistantsApi":
    from cli.client import AssistantsApi  # the API's schemas load Temporal's workflow code: not for --help

    return AssistantsApi.connect(api_url, home, api_key)


app = typer.Typer(
    help="Assistants through the lcp API: versions, publish, rollback, A/B experiments, stats "
    "(changes need a key with the admin role).",
    no_args_is_help=True,
)
experiment_app = typer.Typer(help="A/B experiments between an assistant's versions.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")
command = api_commands(app, "assistants", _connect, key_help=KEY_HELP)
experiment_command = api_commands(experiment_app, "assistants experiment", _connect, key_help=KEY_HELP)

AssistantId = Annotated[str, typer.Argument(help="The assistant's id.")]
ExperimentId = Annotated[str, typer.Argument(help="The experiment's id.")]
SpecFile = Annotated[
    Path | None,
    typer.Option(
        "--file",
        "-f",
        help="YAML/JSON spec: name, model, instructions, params, tools, max_tool_rounds.",
        show_default=False,
    ),
]
Name = Annotated[str | None, typer.Option(help="Display name.", show_default=False)]
Model = Annotated[str | None, typer.Option(help="The model it runs on.", show_default=False)]
Instructions = Annotated[str | None, typer.Option(help="The system prompt.", show_default=False)]
Params = Annotated[
    list[str] | None,
    typer.Option("--param", help="A generation param, NAME=VALUE (repeatable).", show_default=False),
]
Note = Annotated[str, typer.Option(help="What this version is for, or what changed and why.")]
Arms = Annotated[
    list[str], typer.Option("--arm", help="NAME=VERSION:SHARE, e.g. control=v1:50 (two or more).")
]
Reason = Annotated[str, typer.Option(help="Why: kept in the assistant's history.")]


# ---- the commands ----------------------------------------------------------------------------------------


@command("list")
def list_(api: "AssistantsApi", as_json: AsJson = False) -> int:
    """Your tenant's assistants: state, live version, a running experiment."""
    return print_answer(api.all(), render_list, as_json)


@command("show")
def show(api: "AssistantsApi", assistant: AssistantId, as_json: AsJson = False) -> int:
    """One assistant: every version, the live one, experiments and recent changes."""
    return print_answer(api.get(assistant), render_assistant, as_json)


@command("versions")
def versions(api: "AssistantsApi", assistant: AssistantId, as_json: AsJson = False) -> int:
    """Every version: model, tools, what changed, who and when, when published."""
    return print_answer(api.versions(assistant), render_versions, as_json)


@command("create")
def create(
    api: "AssistantsApi",
    assistant: AssistantId,
    file: SpecFile = None,
    name: Name = None,
    model: Model = None,
    instructions: Instructions = None,
    param: Params = None,
    note: Note = "",
    publish: Annotated[bool, typer.Option("--publish", help="Publish v1 at once.")] = False,
) -> int:
    """A new assistant; its first version is v1 (a draft unless --publish)."""
    body = spec_body(file, name=name, model=model, instructions=instructions, params=param or ())
    body |= {"id": assistant, "note": note, "publish": publish}
    console.print(render_assistant(api.create(body)))
    return 0


@command("edit")
def edit(
    api: "AssistantsApi",
    assistant: AssistantId,
    file: SpecFile = None,
    name: Name = None,
    model: Model = None,
    instructions: Instructions = None,
    param: Params = None,
    note: Note = "",
    expected_version: Annotated[
        str | None,
        typer.Option(help="The latest version you read: refused if another came since.", show_default=False),
    ] = None,
) -> int:
    """A new version: the fields given replace the latest version's (live stays until you publish)."""
    body = spec_body(file, name=name, model=model, instructions=instructions, params=param or ())
    body["note"] = note
    if expected_version:
        body["expected_version"] = expected_version
    console.print(render_assistant(api.edit(assistant, body)))
    return 0


@command("publish")
def publish(
    api: "AssistantsApi",
    assistant: AssistantId,
    version: Annotated[str, typer.Argument(help="The version to make live, e.g. v2.")],
    reason: Reason = "",
) -> int:
    """Make a version live: new conversations start on it; running ones keep theirs."""
    return _act(api, assistant, "publish", {"version": version, "reason": reason})


@command("rollback")
def rollback(
    api: "AssistantsApi",
    assistant: AssistantId,
    to: Annotated[
        str | None,
        typer.Option(help="The version to go back to (default: the one live before).", show_default=False),
    ] = None,
    reason: Reason = "",
) -> int:
    """Go back to an earlier published version in one step (ending a running experiment)."""
    return _act(api, assistant, "rollback", {"to_version": to, "reason": reason})


@command("archive")
def archive(api: "AssistantsApi", assistant: AssistantId, reason: Reason = "") -> int:
    """Retire the assistant: it starts no conversations; running ones go on; it stays readable."""
    return _act(api, assistant, "archive", {"reason": reason})


@experiment_command("start")
def experiment_start(
    api: "AssistantsApi", assistant: AssistantId, experiment: ExperimentId, arm: Arms, reason: Reason = ""
) -> int:
    """Split new conversations between versions; each user keeps the arm they were assigned."""
    body = {"id": experiment, "arms": parse_arms(arm), "reason": reason}
    return _act(api, assistant, "experiments", body)


@experiment_command("adjust")
def experiment_adjust(
    api: "AssistantsApi", assistant: AssistantId, experiment: ExperimentId, arm: Arms, reason: Reason = ""
) -> int:
    """New shares for the same arms, in the same order."""
    body = {"arms": parse_arms(arm), "reason": reason}
    return _act(api, assistant, f"experiments/{experiment}/adjust", body)


@experiment_command("stop")
def experiment_stop(
    api: "AssistantsApi",
    assistant: AssistantId,
    experiment: ExperimentId,
    promote: Annotated[
        str | None,
        typer.Option(help="An arm's name or version to make live (default: abort).", show_default=False),
    ] = None,
    reason: Reason = "",
) -> int:
    """End the experiment: promote a winner, or abort (the live version stays)."""
    return _act(api, assistant, f"experiments/{experiment}/stop", {"promote": promote, "reason": reason})


@command("stats")
def stats(api: "AssistantsApi", assistant: AssistantId, as_json: AsJson = False) -> int:
    """Usage per version (turns, errors, tokens, latency, feedback); per experiment, each arm minus the
    control with a 95% interval."""
    return print_answer(api.stats(assistant), render_stats, as_json)


def _act(api: "AssistantsApi", assistant: str, action: str, body: Mapping[str, Any]) -> int:
    """POST an action (what is not given left out) and show the assistant as it answers."""
    given = {key: value for key, value in body.items() if value is not None}
    console.print(render_assistant(api.post(assistant, action, given)))
    return 0


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


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else ""


def _arms(experiment: "ExperimentView | Mapping[str, Any] | None") -> str:
    """`tone: control=v1 50, treatment=v2 50`, from the view's experiment or the list's (a mapping there)."""
    if not experiment:
        return ""
    if isinstance(experiment, Mapping):
        experiment_id = experiment["id"]
        arms = [(a["name"], a["version"], a["share"]) for a in experiment.get("arms") or []]
    else:
        experiment_id = experiment.id
        arms = [(a.name, a.version, a.share) for a in experiment.arms]
    return shown(
        f"{experiment_id}: {', '.join(f'{name}={version} {share}' for name, version, share in arms)}"
    )


def render_list(assistants: Sequence["AssistantSummary"]) -> RenderableType:
    columns = [
        Column("assistant", key=True),
        Column("name", key=True),
        Column("state"),
        Column("live"),
        Column("latest", drop=3),
        Column("experiment", drop=2),
        Column("updated", drop=1),
    ]
    rows: list[list[Cell]] = [
        [
            shown(found.id),
            shown(found.name),
            _state(found.state),
            shown(found.live_version or "—"),
            shown(found.latest_version),
            _arms(found.experiment),
            _when(found.updated_at),
        ]
        for found in assistants
    ]
    return ListTable(columns, rows)


def _model_and_tools(spec: "AssistantSpec | Mapping[str, Any]") -> tuple[str, list[str]]:
    """A spec's model and tool names: the view's spec, or the versions list's (a mapping there)."""
    if isinstance(spec, Mapping):
        return spec.get("model") or "", [tool["name"] for tool in spec.get("tools") or []]
    return spec.model, [tool.name for tool in spec.tools]


def render_versions(
    versions: Sequence["VersionView | StoredVersion"], live: str | None = None
) -> RenderableType:
    columns = [
        Column("version", key=True),
        Column("model", key=True),
        Column("tools", drop=5),
        Column("changed", drop=3),
        Column("note", drop=4),
        Column("by", drop=2),
        Column("created", drop=1),
        Column("published", drop=6),
    ]
    rows: list[list[Cell]] = []
    for version in versions:
        model, tools = _model_and_tools(version.spec)
        rows.append(
            [
                Text(plain(version.version), style="bold green" if version.version == live else ""),
                shown(model),
                shown(", ".join(tools) or "—"),
                shown(", ".join(version.changed)) if version.number > 1 else "(first)",
                shown(version.note),
                shown(version.created_by),
                _when(version.created_at),
                _when(version.published_at) or "—",
            ]
        )
    return ListTable(columns, rows)


def render_assistant(view: "AssistantView") -> RenderableType:
    """One assistant: state, live version, versions, the running experiment, recent changes."""
    title = Text.assemble(
        (plain(view.assistant_id), "bold"),
        "  ",
        _state(view.state),
        plain(f"  live {view.live_version or '—'}"),
    )
    name = view.versions[-1].spec.name if view.versions else ""
    lines: list[RenderableType] = [
        Text(plain(f"{name} · created by {view.created_by}")),
        render_versions(view.versions, view.live_version),
    ]
    if experiment := view.experiment:
        started_by = plain(experiment.started_by)
        lines.append(Text.from_markup(f"experiment {_arms(experiment)} (started by {escape(started_by)})"))
    for past in view.past_experiments[-3:]:
        winner = f", winner {past.winner}" if past.winner else ""
        lines.append(Text(plain(f"past experiment {past.id}: {past.state}{winner}"), style="dim"))
    history = view.history[-HISTORY_SHOWN:]
    if history:
        table = Table(box=None, show_header=False, padding=(0, 1))
        for event in history:
            table.add_row(_when(event.at), shown(event.kind), shown(event.by), shown(event.message))
        lines.append(table)
    return Panel(Group(*lines), title=title, title_align="left", box=box.ROUNDED)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _usage_row(label: Sequence[str], usage: "Usage") -> list[str]:
    return [
        *(shown(part) for part in label),
        str(usage.conversations),
        str(usage.turns),
        f"{usage.errors} ({_percent(usage.error_rate)})",
        str(usage.prompt_tokens + usage.completion_tokens),
        f"{number(usage.latency_p50_ms)} / {number(usage.latency_p95_ms)}",
        f"{usage.thumbs_up}↑ {usage.thumbs_down}↓",
        _percent(usage.satisfaction),
    ]


USAGE_COLUMNS = ("convs", "turns", "errors", "tokens", "latency p50/p95 ms", "feedback", "satisfied")


def _difference(diff: "ArmDifference") -> str:
    """treatment − control [low, high]: rates in points, latency in ms."""
    if diff.value is None:
        return "not enough data"
    scale, unit = (1, " ms") if diff.metric.endswith("_ms") else (100, " pts")
    value = f"{diff.value * scale:+.1f}{unit}"
    if diff.low is None or diff.high is None:
        return f"{value} (too few samples for an interval)"
    confidence = f"{diff.confidence * 100:.0f}% CI"
    return f"{value} [{diff.low * scale:+.1f}, {diff.high * scale:+.1f}] {confidence}"


def render_stats(stats: "AssistantStats") -> RenderableType:
    """Per-version usage, then each experiment's arms and each arm minus the control."""
    versions = Table(box=box.SIMPLE_HEAD, title=f"{stats.assistant_id}: per version", title_justify="left")
    for column in ("version", *USAGE_COLUMNS):
        versions.add_column(column, justify="left" if column == "version" else "right")
    for usage in stats.versions:
        versions.add_row(*_usage_row([usage.version], usage))
    if not stats.versions:
        versions.add_row("(no turns yet)", *[""] * len(USAGE_COLUMNS))
    parts: list[RenderableType] = [versions]
    for experiment in stats.experiments:
        arms = Table(
            box=box.SIMPLE_HEAD,
            title=f"experiment {experiment.id} ({experiment.state}; control arm {experiment.control})",
            title_justify="left",
        )
        for column in ("arm", "version", *USAGE_COLUMNS):
            arms.add_column(column, justify="left" if column in ("arm", "version") else "right")
        for arm in experiment.arms:
            arms.add_row(*_usage_row([arm.arm, arm.version], arm))
        parts.append(arms)
        if experiment.differences:
            diffs = Table(box=box.SIMPLE_HEAD, title="arm − control", title_justify="left")
            for column in ("arm", "metric", "difference"):
                diffs.add_column(column)
            for diff in experiment.differences:
                diffs.add_row(shown(diff.arm), shown(diff.metric), _difference(diff))
            parts.append(diffs)
    return Group(*parts)
