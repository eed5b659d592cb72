"""`lcp models`: the models' deployments (the inference fleet), through the lcp API (role sre)."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.connection import api_commands
from cli.runtime import console

if TYPE_CHECKING:
    from cli.client import FleetApi

app = typer.Typer(
    help="The models' deployments through the lcp API (a key with the sre role).", no_args_is_help=True
)


def _connect(api_url: str | None, home: Path, api_key: str | None) -> "FleetApi":
    from cli.client import FleetApi  # the API's schemas: not for --help

    return FleetApi.connect(api_url, home, api_key)


command = api_commands(app, "models", _connect)


@command("status")
def status(
    api: "FleetApi",
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's answer as JSON.")] = False,
) -> int:
    """Each model's deployments as the API's gateway sees them: healthy, cooling down (for how long,
    why) or draining; load and KV cache as last read, prefix-cache hits, recent latency and errors."""
    from cli.fleet_view import fleet_tables

    view = api.status()
    if as_json:
        typer.echo(view.model_dump_json(indent=2))
        return 0
    if view.simulated:
        console.print("[yellow]a simulated fleet (lcp's LLM simulator), not GPUs[/yellow]")
    console.print(*fleet_tables(view))
    console.print(
        "load: this API's calls in flight + the replica's running (r) / waiting (w) requests, as last "
        "read from its /metrics; hits: its prefix-cache hit rate",
        highlight=False,
    )
    return 0
