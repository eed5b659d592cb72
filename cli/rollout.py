"""`lcp rollout`: canary rollouts through the lcp REST API — start, watch live, promote, pause, resume,
abort, list. The render functions are pure (a RolloutView as the API answers it → a rich renderable)."""

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cli.connection import AsJson, CliError, api_commands
from cli.live import follow
from cli.runtime import console
from cli.show import json_of, plain, print_answer, shown
from cli.tables import Cell, Column, ListTable
from policies.canary import Pause, SetWeight, Step

if TYPE_CHECKING:
    from api.rollout_schemas import RolloutSummary
    from cli.client import RolloutApi
    from policies.canary import Judgment
    from workflows.canary import RolloutView

FINISHED = ("Succeeded", "RolledBack", "Frozen", "Failed")
PHASE_STYLE = {
    "Progressing": "bold cyan",
    "Paused": "bold yellow",
    "Succeeded": "bold green",
    "RolledBack": "bold red",
    "Frozen": "bold magenta",
    "Failed": "bold white on red",
}
ANALYSIS_STYLE = {
    "Running": "cyan",
    "Successful": "green",
    "Failed": "red",
    "Inconclusive": "yellow",
    "Error": "magenta",
}
VERDICT_STYLE = {"pass": "green", "high": "bold red", "low": "bold red", "nodata": "dim"}
HISTORY_SHOWN = 8
MEASUREMENTS_SHOWN = 10


def _connect(api_url: str | None, home: Path, api_key: str | None) -> "RolloutApi":
    from cli.client import RolloutApi  # the API's schemas load Temporal's workflow code: not for --help

    return RolloutApi.connect(api_url, home, api_key)


app = typer.Typer(help="Canary rollouts through the lcp API (a key with the sre role).", no_args_is_help=True)
command = api_commands(app, "rollout", _connect)


class Router(StrEnum):
    replicas = "replicas"
    istio = "istio"
    gateway_api = "gateway-api"


class Judge(StrEnum):
    threshold = "threshold"
    statistical = "statistical"


Service = Annotated[str, typer.Argument(help="The service being rolled out.")]
Namespace = Annotated[str, typer.Option("--namespace", "-n", help="Its Kubernetes namespace.")]
Reason = Annotated[str, typer.Option(help="Why: kept in the rollout's history.")]
Watch = Annotated[
    bool,
    typer.Option("--watch", "-w", help="Live view until it finishes (exit 0 if it succeeds, 1 if not)."),
]


# ---- the commands ----------------------------------------------------------------------------------------


@command("start")
def start(
    api: "RolloutApi",
    service: Service,
    version: Annotated[str, typer.Option(help="Its version label (lcp.dev/version): metrics carry it.")],
    image: Annotated[
        str | None, typer.Option(help="The new release's image (a Deployment's rollout).", show_default=False)
    ] = None,
    model: Annotated[
        bool,
        typer.Option(
            "--model",
            help="SERVICE is a model of the models policy: shift the gateway's traffic to its canary "
            "VERSION (namespace `models`, no image).",
        ),
    ] = False,
    namespace: Namespace = "default",
    deployment: Annotated[
        str | None, typer.Option(help="The stable Deployment (default: the service).", show_default=False)
    ] = None,
    router: Annotated[Router, typer.Option(help="How traffic is split.")] = Router.replicas,
    judge: Annotated[Judge, typer.Option(help="How analyses are judged.")] = Judge.threshold,
    time_scale: Annotated[
        float | None,
        typer.Option(
            help="Multiplies the default plan's durations (e.g. 0.1); not --steps'.", show_default=False
        ),
    ] = None,
    steps: Annotated[
        Path | None,
        typer.Option(
            help="The plan: a YAML/JSON list of steps (set_weight, pause, analyze).", show_default=False
        ),
    ] = None,
    templates: Annotated[
        Path | None,
        typer.Option(
            help="Metric templates (policies/analysis.yaml's shape) added to the API's.", show_default=False
        ),
    ] = None,
    total_replicas: Annotated[
        int | None,
        typer.Option(help="Replicas of stable + canary (default: the stable's).", show_default=False),
    ] = None,
    exact_weights: Annotated[
        bool,
        typer.Option(
            "--exact-weights",
            help="Raise the replicas of stable + canary to the fewest that split into every weight exactly "
            "(replica router).",
        ),
    ] = False,
    freeze_on_failure: Annotated[
        bool, typer.Option("--freeze-on-failure", help="On failure keep the canary's pods (no traffic).")
    ] = False,
    watch: Watch = False,
) -> int:
    """Start a canary rollout of a Deployment or (--model) a model: answers once the canary exists."""
    body = start_body(
        service,
        image=image,
        version=version,
        model=model,
        namespace=namespace,
        deployment=deployment,
        router=router.value,
        judge=judge.value,
        time_scale=time_scale,
        steps_file=steps,
        templates_file=templates,
        total_replicas=total_replicas,
        exact_weights=exact_weights,
        freeze_on_failure=freeze_on_failure,
    )
    return run_start(api, body, console, watch_it=watch)


@command("status")
def status(
    api: "RolloutApi",
    service: Service,
    namespace: Namespace = "default",
    watch: Watch = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's answer as JSON.")] = False,
) -> int:
    """The rollout as it stands: steps, traffic, the last analysis, the history."""
    return run_status(api, namespace, service, console, watch_it=watch, as_json=as_json)


@command("promote")
def promote(
    api: "RolloutApi",
    service: Service,
    namespace: Namespace = "default",
    full: Annotated[
        bool, typer.Option("--full", help="Skip every remaining step: straight to 100% and promotion.")
    ] = False,
    reason: Reason = "",
) -> int:
    """End the current step now (a pause, an analysis, a wait for a human), or with --full all of them."""
    return run_action(api, "promote", namespace, service, console, reason=reason, full=full)


@command("pause")
def pause(api: "RolloutApi", service: Service, namespace: Namespace = "default", reason: Reason = "") -> int:
    """Hold the rollout at its step until resume or promote (an analysis under way keeps measuring)."""
    return run_action(api, "pause", namespace, service, console, reason=reason)


@command("resume")
def resume(api: "RolloutApi", service: Service, namespace: Namespace = "default", reason: Reason = "") -> int:
    """Lift a pause; at an inconclusive analysis, analyse again."""
    return run_action(api, "resume", namespace, service, console, reason=reason)


@command("abort")
def abort(api: "RolloutApi", service: Service, namespace: Namespace = "default", reason: Reason = "") -> int:
    """Roll back now: all traffic to the stable, the canary scaled down (or frozen)."""
    return run_action(api, "abort", namespace, service, console, reason=reason)


@command("list")
def list_(
    api: "RolloutApi",
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", show_default=False)] = None,
    service: Annotated[str | None, typer.Option(show_default=False)] = None,
    phase: Annotated[
        str | None,
        typer.Option(
            help="Progressing, Paused, Succeeded, RolledBack, Frozen or Failed.", show_default=False
        ),
    ] = None,
    as_json: AsJson = False,
) -> int:
    """Rollouts, newest first."""
    return run_list(api, console, namespace=namespace, service=service, phase=phase, as_json=as_json)


# ---- request bodies from the command line ----------------------------------------------------------------


def _read_data(path: Path, what: str) -> Any:
    try:
        return yaml.safe_load(path.read_text())  # JSON is YAML too
    except OSError as err:
        raise CliError(f"{what} {path}: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        raise CliError(f"{what} {path} is neither YAML nor JSON: {err}") from err


def load_steps(path: Path) -> list[dict[str, Any]]:
    """A plan: a list of steps ({kind: set_weight, percent: 20}, {kind: pause, duration_s: 60},
    {kind: analyze, templates: [...], interval_s: 30, count: 5}), or a mapping with such a `steps` list.
    The API checks each step; this only checks the shape."""
    data = _read_data(path, "--steps")
    if isinstance(data, dict) and "steps" in data:
        data = data["steps"]
    example = "[{kind: set_weight, percent: 20}, {kind: pause, duration_s: 60}, ...]"
    if not isinstance(data, list) or not data:
        raise CliError(f"--steps {path}: expected a non-empty list of steps like {example}")
    for index, step in enumerate(data):
        if not isinstance(step, dict) or "kind" not in step:
            raise CliError(
                f"--steps {path}: step {index} is not a mapping with a `kind` "
                f"(set_weight, pause or analyze): {step!r}"
            )
    return data


def load_templates(path: Path) -> dict[str, Any]:
    """The `templates` mapping of a file shaped like policies/analysis.yaml."""
    data = _read_data(path, "--templates")
    if not isinstance(data, dict) or not isinstance(data.get("templates"), dict) or not data["templates"]:
        raise CliError(
            f"--templates {path}: expected a mapping `templates:` of metric templates, "
            "as in policies/analysis.yaml"
        )
    templates: dict[str, Any] = data["templates"]
    return templates


def start_body(
    service: str,
    *,
    image: str | None,
    version: str,
    model: bool = False,
    namespace: str = "default",
    deployment: str | None = None,
    router: str | None = None,
    judge: str | None = None,
    time_scale: float | None = None,
    steps_file: Path | None = None,
    templates_file: Path | None = None,
    total_replicas: int | None = None,
    exact_weights: bool = False,
    freeze_on_failure: bool = False,
) -> dict[str, Any]:
    """The body of POST /v1/rollouts; what is not given is left to the API's defaults."""
    body: dict[str, Any] = {"service": service, "namespace": namespace, "version": version}
    if model:
        body.update(target="model", namespace="models")
    if image:
        body["image"] = image
    optional = {
        "deployment": deployment,
        "router": router,
        "judge": judge,
        "time_scale": time_scale,
        "total_replicas": total_replicas,
        "steps": load_steps(steps_file) if steps_file else None,
        "templates": load_templates(templates_file) if templates_file else None,
        "on_failure": "freeze" if freeze_on_failure else None,
        "exact_weights": True if exact_weights else None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


# ---- rendering (pure) ------------------------------------------------------------------------------------


def _clock(at: datetime | None) -> str:
    return at.astimezone().strftime("%H:%M:%S") if at else "—"


def duration(seconds: float) -> str:
    """3s, 2m, 2m30s, 1h05m."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s".replace(".0s", "s") if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def number(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    if abs(value) >= 10_000 or abs(value) < 0.001:
        return f"{value:.3g}"
    return f"{value:.4g}"


def _phase(phase: str | None, styles: Mapping[str, str] = PHASE_STYLE) -> Text:
    return Text(phase or "—", style=styles.get(phase or "", ""))


def describe_step(step: Step) -> str:
    if isinstance(step, SetWeight):
        return f"set canary weight {step.percent}%"
    if isinstance(step, Pause):
        return "pause until promoted" if step.duration_s is None else f"pause {duration(step.duration_s)}"
    templates = ", ".join(step.templates)
    return f"analyze {templates}: {step.count} × every {duration(step.interval_s)}"


def step_label(view: "RolloutView") -> str:
    """`step 2/6 (analyze ...)` or `all 6 steps done`; steps count from 0, as the history says."""
    steps, index = view.steps, view.step
    if index >= len(steps):
        return f"all {len(steps)} steps done"
    here = f"step {index}/{len(steps)} ({describe_step(steps[index])})"
    return f"promoted fully at {here}" if view.phase == "Succeeded" else here


def outcome_line(view: "RolloutView") -> Text:
    """One line: the rollout, its phase, its step and its message."""
    line = Text.assemble(
        (f"{view.namespace}/{view.service}", "bold"),
        ": ",
        _phase(view.phase),
        plain(f", {step_label(view)}: {view.message}"),
    )
    if view.paused_by:
        line.append(plain(f" (paused by {view.paused_by})"), style="yellow")
    return line


def render_header(view: "RolloutView", now: datetime | None = None) -> RenderableType:
    title = Text.assemble((f"{view.namespace}/{view.service}", "bold"), "  ", _phase(view.phase))
    if view.paused_by:
        title.append(plain(f"  paused by {view.paused_by}"), style="yellow")
    if view.awaiting_decision:
        title.append("  waiting for a human: promote or abort", style="yellow")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    release = view.image or f"model {view.service}"  # a model's rollout has no image
    grid.add_row("release", shown(f"{release} as {view.version}"))
    stable = view.stable_version
    was = f"{stable or '?'} ({view.stable_image})" if view.stable_image else f"{stable or '(not read yet)'}"
    if view.phase == "Succeeded":
        was += f", now replaced by {view.version}"
    grid.add_row("stable", shown(was))
    when = f"{_clock(view.started_at)} by {view.requested_by or 'someone'}"
    if view.finished_at:
        took = duration((view.finished_at - view.started_at).total_seconds())
        when += f", finished {_clock(view.finished_at)} after {took}"
    else:
        when += f", running {duration(((now or datetime.now(UTC)) - view.started_at).total_seconds())}"
    grid.add_row("started", shown(when))
    how = f"router {view.router}, judge {view.judge}"
    if view.stable_deployment:
        grid.add_row("deployments", shown(f"{view.stable_deployment} → {view.canary_deployment} ({how})"))
    else:
        grid.add_row("split", shown(how))
    grid.add_row("now", Text(plain(view.message, lines=True), style="italic"))
    return Panel(Group(title, grid), title=view.id or "rollout", title_align="left", box=box.ROUNDED)


def render_steps(view: "RolloutView") -> RenderableType:
    index, phase = view.step, view.phase
    waiting = phase == "Paused" or view.awaiting_decision
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(justify="right", style="dim")
    grid.add_column()
    for i, step in enumerate(view.steps):
        text = plain(describe_step(step))
        if i < index:
            grid.add_row(Text("✓", style="green"), str(i), Text(text))
        elif phase == "Succeeded":  # a full promotion skipped the rest
            grid.add_row(Text("↷", style="dim"), str(i), Text(f"{text} (skipped)", style="dim"))
        elif i == index and phase in FINISHED:
            grid.add_row(Text("✗", style="bold red"), str(i), Text(text, style="red"))
        elif i == index:
            mark = Text("⏸", style="bold yellow") if waiting else Text("▶", style="bold cyan")
            grid.add_row(mark, str(i), Text(text, style="bold"))
        else:
            grid.add_row(Text("·", style="dim"), str(i), Text(text, style="dim"))
    return Group(Text("steps", style="bold underline"), grid)


def weight_bar(stable_percent: float, canary_percent: float, width: int = 40) -> Text:
    total = stable_percent + canary_percent
    canary_cells = round(width * canary_percent / total) if total > 0 else 0
    if canary_percent > 0:
        canary_cells = max(1, canary_cells)
    if stable_percent > 0:
        canary_cells = min(width - 1, canary_cells)
    return Text.assemble(("█" * (width - canary_cells), "blue"), ("█" * canary_cells, "yellow"))


def render_weights(view: "RolloutView", width: int = 40) -> RenderableType:
    weights = view.weights
    desired = view.desired_weight
    heading = Text("traffic", style="bold underline")
    if not weights:
        return Group(
            heading, Text(f"not split yet: the stable takes it all (desired canary weight {desired}%)")
        )
    stable_pct, canary_pct = float(weights.stable_percent), float(weights.canary_percent)
    bar = Text.assemble(
        ("stable ", "blue"),
        (f"{stable_pct:5.1f}% ", "bold blue"),
        weight_bar(stable_pct, canary_pct, width),
        (f" {canary_pct:5.1f}%", "bold yellow"),
        (" canary", "yellow"),
    )
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    grid.add_row(
        "versions",
        f"stable {view.stable_version or '?'} · canary {view.version} · "
        f"desired canary weight {desired}% (router {weights.router})",
    )
    if weights.total_replicas:  # a model's split (the gateway's weight) has no replicas
        grid.add_row(
            "replicas",
            f"stable {weights.stable_ready}/{weights.stable_replicas} ready · "
            f"canary {weights.canary_ready}/{weights.canary_replicas} ready "
            f"(of {weights.total_replicas})",
        )
    return Group(heading, bar, grid)


def _judgment_table(judgment: "Judgment") -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column, justify in (
        ("metric", "left"),
        ("canary median", "right"),
        ("stable median", "right"),
        ("change", "right"),
        ("p-value", "right"),
        ("n", "right"),
        ("verdict", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    table.add_column("why", overflow="fold")
    for metric in judgment.metrics:
        relative = metric.relative_change
        change = f"{relative * 100:+.2g}%" if relative is not None else number(metric.absolute_change)
        table.add_row(
            metric.name + (" (critical)" if metric.critical else ""),
            number(metric.canary_median),
            number(metric.baseline_median),
            change,
            number(metric.p_value),
            f"{metric.n_canary}/{metric.n_baseline}",
            Text(metric.verdict, style=VERDICT_STYLE.get(metric.verdict, "")),
            metric.reason,
        )
    score = judgment.score
    line = Text.assemble(
        "score ",
        (number(score) if score is not None else "— (no data)", "bold"),
        " → ",
        _phase(judgment.phase, ANALYSIS_STYLE),
        f": {judgment.reason}",
    )
    return Group(table, line)


def render_analysis(view: "RolloutView") -> RenderableType | None:
    analyses = view.analyses
    if not analyses:
        return None
    analysis = analyses[-1]
    heading = Text.assemble(
        (
            f"analysis {len(analyses)} of {len(analyses)}" if len(analyses) > 1 else "analysis",
            "bold underline",
        ),
        f"  step {analysis.step} · {', '.join(analysis.templates)} · "
        f"{analysis.judge} judge · since {_clock(analysis.started_at)} · ",
        _phase(analysis.phase, ANALYSIS_STYLE),
    )
    parts: list[RenderableType] = [heading]
    if analysis.reason:
        parts.append(Text(plain(analysis.reason, lines=True), style="italic"))
    measurements = analysis.measurements
    if measurements:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        table.add_column("at", no_wrap=True, style="dim")
        table.add_column("template", no_wrap=True)
        table.add_column("phase", no_wrap=True)
        table.add_column("value", justify="right", no_wrap=True)
        table.add_column("message", overflow="fold")
        for measurement in measurements[-MEASUREMENTS_SHOWN:]:
            table.add_row(
                _clock(measurement.at),
                measurement.template,
                Text(measurement.phase, style=ANALYSIS_STYLE.get(measurement.phase, "")),
                number(measurement.value),
                shown(measurement.message),
            )
        if len(measurements) > MEASUREMENTS_SHOWN:
            parts.append(
                Text(f"({len(measurements) - MEASUREMENTS_SHOWN} earlier measurements)", style="dim")
            )
        parts.append(table)
    else:
        parts.append(Text("no measurement yet: the first comes after one interval", style="dim"))
    if analysis.judgment:
        parts.append(_judgment_table(analysis.judgment))
    return Group(*parts)


def render_history(view: "RolloutView", last: int = HISTORY_SHOWN) -> RenderableType:
    events = view.history
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(no_wrap=True, style="bold")
    grid.add_column(overflow="fold")
    for event in events[-last:]:
        by = f" (by {event.by})" if event.by else ""
        grid.add_row(_clock(event.at), shown(event.kind), shown(f"{event.message}{by}"))
    heading = Text("history", style="bold underline")
    if len(events) > last:
        heading.append(f"  (last {last} of {len(events)})", style="dim")
    return Group(heading, grid)


def render_rollout(
    view: "RolloutView", *, now: datetime | None = None, note: str | None = None
) -> RenderableType:
    """The whole rollout: header, steps, traffic, the last analysis and the recent history."""
    parts: list[RenderableType] = [render_header(view, now), render_steps(view), Text(), render_weights(view)]
    analysis = render_analysis(view)
    if analysis is not None:
        parts += [Text(), analysis]
    parts += [Text(), render_history(view)]
    if note:
        parts += [Text(), Text(note, style="bold red")]
    return Group(*parts)


def render_list(rollouts: Sequence["RolloutSummary"]) -> RenderableType:
    if not rollouts:
        return Text("no rollouts")
    columns = [
        Column("rollout", key=True),
        Column("phase"),
        Column("workflow", drop=2),
        Column("started", drop=3),
        Column("closed", drop=1),
    ]
    rows: list[list[Cell]] = [
        [
            shown(f"{rollout.namespace}/{rollout.service}"),
            _phase(rollout.phase),
            shown(rollout.status),
            _date_time(rollout.started_at),
            _date_time(rollout.closed_at),
        ]
        for rollout in rollouts
    ]
    return ListTable(columns, rows)


def _date_time(value: str | None) -> str:
    return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else ""


# ---- what the commands do ---------------------------------------------------------------------------------


def watch(
    api: "RolloutApi",
    namespace: str,
    service: str,
    console: Console,
    *,
    first: "RolloutView | None" = None,
    interval_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> "RolloutView":
    """A live view, refreshed every `interval_s`, until the rollout finishes (Ctrl-C stops watching only).
    An API that stops answering for a while, or a spent rate limit, is shown, not fatal; another 4xx
    ends the watch."""
    return follow(
        lambda: api.get(namespace, service),
        lambda view, note: render_rollout(view, note=note),
        lambda view: view.phase in FINISHED,
        console,
        first=first,
        interval_s=interval_s,
        sleep=sleep,
    )


def _finished_code(view: "RolloutView") -> int:
    return 0 if view.phase == "Succeeded" else 1


def run_start(api: "RolloutApi", body: Mapping[str, Any], console: Console, *, watch_it: bool = False) -> int:
    view = api.start(body)
    console.print(Text("started ").append_text(outcome_line(view)), soft_wrap=True)
    if not watch_it:
        return 0
    view = watch(api, view.namespace, view.service, console, first=view)
    console.print(outcome_line(view), soft_wrap=True)
    return _finished_code(view)


def run_status(
    api: "RolloutApi",
    namespace: str,
    service: str,
    console: Console,
    *,
    watch_it: bool = False,
    as_json: bool = False,
) -> int:
    if as_json and not watch_it:
        console.print_json(json_of(api.get(namespace, service)))
        return 0
    if watch_it:
        view = watch(api, namespace, service, console)
        console.print(outcome_line(view), soft_wrap=True)
        return _finished_code(view)
    console.print(render_rollout(api.get(namespace, service)))
    return 0


def run_action(
    api: "RolloutApi",
    action: str,
    namespace: str,
    service: str,
    console: Console,
    *,
    reason: str = "",
    full: bool = False,
) -> int:
    body: dict[str, Any] = {"reason": reason}
    if action == "promote":
        body["full"] = full
    console.print(outcome_line(api.act(namespace, service, action, body)), soft_wrap=True)
    return 0


def run_list(
    api: "RolloutApi",
    console: Console,
    *,
    namespace: str | None = None,
    service: str | None = None,
    phase: str | None = None,
    as_json: bool = False,
) -> int:
    return print_answer(api.list(namespace, service, phase), render_list, as_json)
