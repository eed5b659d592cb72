"""`lcp rollout`: canary rollouts through the lcp REST API — start, watch live, promote, pause, resume,
abort, list. The render functions are pure (a RolloutView as the API answers it → a rich renderable)."""

import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cli import rest
from cli.rest import ApiClient, CliError
from cli.show import plain, shown

View = Mapping[str, Any]
FINISHED = ("Succeeded", "RolledBack", "Frozen", "Failed")
ACTIONS = ("promote", "pause", "resume", "abort")
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


class RolloutApi(ApiClient):
    """The rollout routes of the lcp API (role sre)."""

    def start(self, body: Mapping[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = self._call("POST", "/v1/rollouts", json=dict(body))
        return view

    def get(self, namespace: str, service: str) -> dict[str, Any]:
        view: dict[str, Any] = self._call("GET", f"/v1/rollouts/{namespace}/{service}")
        return view

    def act(self, namespace: str, service: str, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        view: dict[str, Any] = self._call(
            "POST", f"/v1/rollouts/{namespace}/{service}/{action}", json=dict(body)
        )
        return view

    def list(
        self, namespace: str | None = None, service: str | None = None, phase: str | None = None
    ) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("namespace", namespace), ("service", service), ("phase", phase)) if v}
        found: list[dict[str, Any]] = self._call("GET", "/v1/rollouts", params=params)["data"]
        return found


connect = RolloutApi.connect


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
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


# ---- rendering (pure) ------------------------------------------------------------------------------------


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _clock(value: str | None) -> str:
    at = _time(value)
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


def describe_step(step: Mapping[str, Any]) -> str:
    kind = step.get("kind")
    if kind == "set_weight":
        return f"set canary weight {step.get('percent')}%"
    if kind == "pause":
        seconds = step.get("duration_s")
        return "pause until promoted" if seconds is None else f"pause {duration(float(seconds))}"
    if kind == "analyze":
        templates = ", ".join(step.get("templates") or ())
        every = duration(float(step.get("interval_s") or 0))
        return f"analyze {templates}: {step.get('count')} × every {every}"
    return str(kind)


def step_label(view: View) -> str:
    """`step 2/6 (analyze ...)` or `all 6 steps done`; steps count from 0, as the history says."""
    steps, index = list(view.get("steps") or ()), int(view.get("step") or 0)
    if index >= len(steps):
        return f"all {len(steps)} steps done"
    here = f"step {index}/{len(steps)} ({describe_step(steps[index])})"
    return f"promoted fully at {here}" if view.get("phase") == "Succeeded" else here


def outcome_line(view: View) -> Text:
    """One line: the rollout, its phase, its step and its message."""
    line = Text.assemble(
        (f"{view.get('namespace')}/{view.get('service')}", "bold"),
        ": ",
        _phase(view.get("phase")),
        plain(f", {step_label(view)}: {view.get('message') or ''}"),
    )
    if view.get("paused_by"):
        line.append(plain(f" (paused by {view['paused_by']})"), style="yellow")
    return line


def render_header(view: View, now: datetime | None = None) -> RenderableType:
    phase = view.get("phase")
    title = Text.assemble((f"{view.get('namespace')}/{view.get('service')}", "bold"), "  ", _phase(phase))
    if view.get("paused_by"):
        title.append(plain(f"  paused by {view['paused_by']}"), style="yellow")
    if view.get("awaiting_decision"):
        title.append("  waiting for a human: promote or abort", style="yellow")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    release = view.get("image") or f"model {view.get('service')}"  # a model's rollout has no image
    grid.add_row("release", shown(f"{release} as {view.get('version')}"))
    stable = view.get("stable_version")
    stable_image = view.get("stable_image")
    was = f"{stable or '?'} ({stable_image})" if stable_image else f"{stable or '(not read yet)'}"
    if view.get("phase") == "Succeeded":
        was += f", now replaced by {view.get('version')}"
    grid.add_row("stable", shown(was))
    started = _time(view.get("started_at"))
    finished = _time(view.get("finished_at"))
    when = f"{_clock(view.get('started_at'))} by {view.get('requested_by') or 'someone'}"
    if started and finished:
        took = duration((finished - started).total_seconds())
        when += f", finished {_clock(view.get('finished_at'))} after {took}"
    elif started:
        when += f", running {duration(((now or datetime.now(UTC)) - started).total_seconds())}"
    grid.add_row("started", shown(when))
    how = f"router {view.get('router')}, judge {view.get('judge')}"
    if view.get("stable_deployment"):
        grid.add_row(
            "deployments", shown(f"{view['stable_deployment']} → {view.get('canary_deployment')} ({how})")
        )
    else:
        grid.add_row("split", shown(how))
    grid.add_row("now", Text(plain(view.get("message") or "", lines=True), style="italic"))
    return Panel(
        Group(title, grid), title=str(view.get("id") or "rollout"), title_align="left", box=box.ROUNDED
    )


def render_steps(view: View) -> RenderableType:
    steps = list(view.get("steps") or ())
    index = int(view.get("step") or 0)
    phase = view.get("phase")
    waiting = phase == "Paused" or bool(view.get("awaiting_decision"))
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(justify="right", style="dim")
    grid.add_column()
    for i, step in enumerate(steps):
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


def render_weights(view: View, width: int = 40) -> RenderableType:
    weights = view.get("weights")
    desired = view.get("desired_weight") or 0
    heading = Text("traffic", style="bold underline")
    if not weights:
        return Group(
            heading, Text(f"not split yet: the stable takes it all (desired canary weight {desired}%)")
        )
    stable_pct, canary_pct = float(weights["stable_percent"]), float(weights["canary_percent"])
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
        f"stable {view.get('stable_version') or '?'} · canary {view.get('version')} · "
        f"desired canary weight {desired}% (router {weights.get('router')})",
    )
    if weights.get("total_replicas"):  # a model's split (the gateway's weight) has no replicas
        grid.add_row(
            "replicas",
            f"stable {weights.get('stable_ready')}/{weights.get('stable_replicas')} ready · "
            f"canary {weights.get('canary_ready')}/{weights.get('canary_replicas')} ready "
            f"(of {weights['total_replicas']})",
        )
    return Group(heading, bar, grid)


def _judgment_table(judgment: Mapping[str, Any]) -> RenderableType:
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
    for metric in judgment.get("metrics") or ():
        relative = metric.get("relative_change")
        change = f"{relative * 100:+.2g}%" if relative is not None else number(metric.get("absolute_change"))
        verdict = str(metric.get("verdict"))
        table.add_row(
            metric.get("name", "") + (" (critical)" if metric.get("critical") else ""),
            number(metric.get("canary_median")),
            number(metric.get("baseline_median")),
            change,
            number(metric.get("p_value")),
            f"{metric.get('n_canary')}/{metric.get('n_baseline')}",
            Text(verdict, style=VERDICT_STYLE.get(verdict, "")),
            metric.get("reason", ""),
        )
    score = judgment.get("score")
    line = Text.assemble(
        "score ",
        (number(score) if score is not None else "— (no data)", "bold"),
        " → ",
        _phase(judgment.get("phase"), ANALYSIS_STYLE),
        f": {judgment.get('reason') or ''}",
    )
    return Group(table, line)


def render_analysis(view: View) -> RenderableType | None:
    analyses = list(view.get("analyses") or ())
    if not analyses:
        return None
    analysis = analyses[-1]
    heading = Text.assemble(
        (
            f"analysis {len(analyses)} of {len(analyses)}" if len(analyses) > 1 else "analysis",
            "bold underline",
        ),
        f"  step {analysis.get('step')} · {', '.join(analysis.get('templates') or ())} · "
        f"{analysis.get('judge')} judge · since {_clock(analysis.get('started_at'))} · ",
        _phase(analysis.get("phase"), ANALYSIS_STYLE),
    )
    parts: list[RenderableType] = [heading]
    if analysis.get("reason"):
        parts.append(Text(plain(analysis["reason"], lines=True), style="italic"))
    measurements = list(analysis.get("measurements") or ())
    if measurements:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        table.add_column("at", no_wrap=True, style="dim")
        table.add_column("template", no_wrap=True)
        table.add_column("phase", no_wrap=True)
        table.add_column("value", justify="right", no_wrap=True)
        table.add_column("message", overflow="fold")
        for measurement in measurements[-MEASUREMENTS_SHOWN:]:
            phase = str(measurement.get("phase"))
            table.add_row(
                _clock(measurement.get("at")),
                str(measurement.get("template")),
                Text(phase, style=ANALYSIS_STYLE.get(phase, "")),
                number(measurement.get("value")),
                shown(measurement.get("message") or ""),
            )
        if len(measurements) > MEASUREMENTS_SHOWN:
            parts.append(
                Text(f"({len(measurements) - MEASUREMENTS_SHOWN} earlier measurements)", style="dim")
            )
        parts.append(table)
    else:
        parts.append(Text("no measurement yet: the first comes after one interval", style="dim"))
    if analysis.get("judgment"):
        parts.append(_judgment_table(analysis["judgment"]))
    return Group(*parts)


def render_history(view: View, last: int = HISTORY_SHOWN) -> RenderableType:
    events = list(view.get("history") or ())
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(no_wrap=True, style="bold")
    grid.add_column(overflow="fold")
    for event in events[-last:]:
        by = f" (by {event['by']})" if event.get("by") else ""
        grid.add_row(_clock(event.get("at")), shown(event.get("kind")), shown(f"{event.get('message')}{by}"))
    heading = Text("history", style="bold underline")
    if len(events) > last:
        heading.append(f"  (last {last} of {len(events)})", style="dim")
    return Group(heading, grid)


def render_rollout(view: View, *, now: datetime | None = None, note: str | None = None) -> RenderableType:
    """The whole rollout: header, steps, traffic, the last analysis and the recent history."""
    parts: list[RenderableType] = [render_header(view, now), render_steps(view), Text(), render_weights(view)]
    analysis = render_analysis(view)
    if analysis is not None:
        parts += [Text(), analysis]
    parts += [Text(), render_history(view)]
    if note:
        parts += [Text(), Text(note, style="bold red")]
    return Group(*parts)


def render_list(rollouts: Sequence[Mapping[str, Any]]) -> RenderableType:
    if not rollouts:
        return Text("no rollouts")
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("rollout", "phase", "workflow", "started", "closed"):
        table.add_column(column, no_wrap=True)
    for rollout in rollouts:
        table.add_row(
            f"{rollout.get('namespace')}/{rollout.get('service')}",
            _phase(rollout.get("phase")),
            str(rollout.get("status") or ""),
            _date_time(rollout.get("started_at")),
            _date_time(rollout.get("closed_at")),
        )
    return table


def _date_time(value: str | None) -> str:
    at = _time(value)
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if at else ""


# ---- the commands ----------------------------------------------------------------------------------------


def watch(
    api: RolloutApi,
    namespace: str,
    service: str,
    console: Console,
    *,
    first: View | None = None,
    interval_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> View:
    """A live view, refreshed every `interval_s`, until the rollout finishes (Ctrl-C stops watching only).
    An API that stops answering for a while, or a spent rate limit, is shown, not fatal; another 4xx
    ends the watch."""
    view: View = first if first is not None else api.get(namespace, service)
    with Live(render_rollout(view), console=console, auto_refresh=False, transient=False) as live:
        while view.get("phase") not in FINISHED:
            sleep(interval_s)
            note = None
            try:
                view = api.get(namespace, service)
            except CliError as err:
                if err.status is not None and err.status < 500 and err.status != 429:
                    raise  # a 429 (the key's limit) passes, like an API that is briefly down
                note = f"{err.message} (retrying)"
            live.update(render_rollout(view, note=note), refresh=True)
    return view


def _finished_code(view: View) -> int:
    return 0 if view.get("phase") == "Succeeded" else 1


def run_start(api: RolloutApi, body: Mapping[str, Any], console: Console, *, watch_it: bool = False) -> int:
    view: View = api.start(body)
    console.print(Text("started ").append_text(outcome_line(view)), soft_wrap=True)
    if not watch_it:
        return 0
    view = watch(api, view["namespace"], view["service"], console, first=view)
    console.print(outcome_line(view), soft_wrap=True)
    return _finished_code(view)


def run_status(
    api: RolloutApi,
    namespace: str,
    service: str,
    console: Console,
    *,
    watch_it: bool = False,
    as_json: bool = False,
) -> int:
    if as_json and not watch_it:
        console.print_json(json.dumps(api.get(namespace, service)))
        return 0
    if watch_it:
        view = watch(api, namespace, service, console)
        console.print(outcome_line(view), soft_wrap=True)
        return _finished_code(view)
    console.print(render_rollout(api.get(namespace, service)))
    return 0


def run_action(
    api: RolloutApi,
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
    api: RolloutApi,
    console: Console,
    *,
    namespace: str | None = None,
    service: str | None = None,
    phase: str | None = None,
) -> int:
    console.print(render_list(api.list(namespace, service, phase)))
    return 0


def guarded(command: str, err_console: Console, run: Callable[[], int]) -> int:
    return rest.guarded("rollout", command, err_console, run)
