"""`lcp keys`: API keys written straight to the read-model database (cli/keys_db.py), no API needed."""

import asyncio
from typing import Annotated

import typer

from cli.runtime import console, err_console, load_settings
from cli.show import json_of, shown
from cli.tables import Column, ListTable

app = typer.Typer(help="API keys (written straight to the read-model database).", no_args_is_help=True)


@app.command("create")
def create(
    tenant: Annotated[str, typer.Option(help="Tenant the key acts in.")],
    name: Annotated[str, typer.Option(help="What the key is for, e.g. librechat.")],
    role: Annotated[list[str], typer.Option(help="client, admin, sre, platform; repeatable.")] = ["client"],  # noqa: B006
    rpm: Annotated[int | None, typer.Option(help="Requests/minute for this key (default: settings).")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens/minute for this key (default: settings).")] = None,
) -> None:
    """Mint an API key. It is printed once; only its hash is stored."""
    from api.keys import InvalidKeySpec  # SQLAlchemy and the store, as keys_db: not for --help
    from cli import keys_db

    settings = load_settings("keys create")
    try:
        row, key = asyncio.run(
            keys_db.mint(
                settings.resolved_database_url(),
                tenant=tenant,
                name=name,
                roles=role,
                requests_per_minute=rpm,
                tokens_per_minute=tpm,
            )
        )
    except InvalidKeySpec as err:
        err_console.print(f"lcp keys create: {shown(err)}", highlight=False)
        raise typer.Exit(2) from None
    err_console.print(
        f"key {shown(row.id)} for tenant {shown(row.tenant)} ({shown(', '.join(row.roles))}); shown once, "
        "store it now:",
        highlight=False,
    )
    print(key)  # alone on stdout, so `KEY=$(lcp keys create ...)` works


@app.command("list")
def list_(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON, as the API does.")] = False,
) -> None:
    """List keys (never the keys themselves)."""
    from api.schemas import KeyOut  # pydantic schemas: not for --help
    from cli import keys_db  # SQLAlchemy and the store: not for --help

    rows = asyncio.run(keys_db.list_keys(load_settings("keys list").resolved_database_url(), tenant))
    if as_json:
        console.print_json(json_of([KeyOut.model_validate(row, from_attributes=True) for row in rows]))
        return
    columns = [
        Column("id", key=True),
        Column("tenant", key=True),
        Column("name", key=True),
        Column("roles"),
        Column("rpm", drop=2),
        Column("tpm", drop=1),
        Column("created", drop=3),
        Column("revoked"),
    ]
    shown_rows = [
        [
            shown(row.id),
            shown(row.tenant),
            shown(row.name),
            shown(", ".join(row.roles)),
            str(row.requests_per_minute or "default"),
            str(row.tokens_per_minute or "default"),
            f"{row.created_at:%Y-%m-%d %H:%M}",
            f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "",
        ]
        for row in rows
    ]
    console.print(ListTable(columns, shown_rows))


@app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (from `lcp keys list`).")]) -> None:
    """Revoke a key: refused at once by new API processes, within 10 s by running ones."""
    from cli import keys_db  # SQLAlchemy and the store: not for --help

    row = asyncio.run(keys_db.revoke(load_settings("keys revoke").resolved_database_url(), key_id))
    if row is None:
        err_console.print(f"lcp keys revoke: no key {key_id}: see `lcp keys list`", highlight=False)
        raise typer.Exit(1)
    who = shown(f"{row.id} ({row.tenant}/{row.name})")
    console.print(f"key {who} revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S}")
