"""How `lcp chaos drills` and `lcp chaos drill` show the drills and their reports (kept apart from the
drill harness, so that listing them starts at once)."""

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from chaos.drills import DRILLS, DrillReport


def render_catalogue() -> Table:
    table = Table(title="Drills on lcp's own processes (each on a disposable stack)", title_justify="left")
    table.add_column("drill", no_wrap=True)
    table.add_column("what it does, and what must hold afterwards")
    for drill in DRILLS:
        holds = "".join(f"\n  • {invariant}" for invariant in drill.invariants)
        table.add_row(drill.name, f"{drill.summary} ({drill.moment}){holds}")
    return table


def render_report(report: DrillReport) -> Group:
    verdict = "[green]PASSED[/green]" if report.passed else "[red]FAILED[/red]"
    header = Text.from_markup(f"[bold]{report.drill}[/bold] {verdict} in {report.duration_s:.1f} s")
    timeline = Table(show_header=False, box=None, padding=(0, 1))
    for at, event in report.timeline:
        timeline.add_row(f"{at:6.1f} s", event)
    checks = Table(show_header=True, box=None, padding=(0, 1))
    checks.add_column("")
    checks.add_column("invariant")
    checks.add_column("found", overflow="fold")
    for check in report.checks:
        checks.add_row("[green]ok[/green]" if check.ok else "[red]FAIL[/red]", check.invariant, check.found)
    parts: list[Any] = [header, timeline]
    if report.checks:
        parts.append(checks)
    if report.error:
        parts.append(Text(f"the drill could not finish: {report.error}", style="red"))
    return Group(*parts, Text(""))
