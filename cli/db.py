"""`lcp db`: the read-model database."""

import asyncio

import typer

from cli.runtime import console, load_settings

app = typer.Typer(help="The read-model database.", no_args_is_help=True)


@app.command("upgrade")
def upgrade() -> None:
    """Bring the read-model database to the newest schema."""
    from store.migrate import upgrade_database  # Alembic and SQLAlchemy: not for --help

    settings = load_settings("db upgrade")
    asyncio.run(upgrade_database(settings.resolved_database_url()))
    console.print(f"database at newest schema: {settings.resolved_database_url()}")
