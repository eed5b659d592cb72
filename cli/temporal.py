"""`lcp temporal`: the Temporal cluster lcp runs on."""

import asyncio

import typer

from cli.runtime import console, load_settings

app = typer.Typer(help="The Temporal cluster lcp runs on.", no_args_is_help=True)


@app.command("setup")
def setup() -> None:
    """Register lcp's search attributes on the configured cluster (once per namespace)."""
    from temporal.client import connect  # Temporal's client: not for --help
    from temporal.setup import ensure_search_attributes

    settings = load_settings("temporal setup")

    async def _run() -> list[str]:
        return await ensure_search_attributes(await connect(settings.temporal))

    added = asyncio.run(_run())
    where = f"{settings.temporal.address}/{settings.temporal.namespace}"
    console.print(f"search attributes added on {where}: {', '.join(added)}" if added else f"{where}: ready")
