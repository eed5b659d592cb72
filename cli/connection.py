"""What every command that calls the lcp API shares: its --api, --home and --api-key options (declared here
once, and added after each command's own), where they point by default (what `lcp dev` wrote to dev.json),
and how it ends: an error in one red line and exit 1, Ctrl-C while watching exit 130."""

import inspect
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from cli import runtime
from cli.show import plain
from policies.errors import LcpError

DEFAULT_API = "http://127.0.0.1:8000"
SRE_KEY = "API key with the sre role (default: dev.json's)."

ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api", help=f"API base URL (default: dev.json's, else {DEFAULT_API}).", show_default=False
    ),
]
Home = Annotated[Path, typer.Option(help="State directory holding dev.json.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's answer as JSON.")]
HOME = Path(".lcp")

Client = TypeVar("Client", bound=AbstractContextManager[object])
Connect = Callable[[str | None, Path, str | None], Client]
Run = Callable[..., int]


class CliError(LcpError):
    """What went wrong, said in one line (the API's own message when it answered)."""

    def __init__(self, message: str, status: int | None = None, type_: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.type = message, status, type_


def dev_info(home: Path) -> dict[str, str]:
    """What `lcp dev` wrote to dev.json (API URL, admin key...), or nothing."""
    dev = home / "dev.json"
    return dict(json.loads(dev.read_text())) if dev.exists() else {}


def api_address(api_url: str | None, home: Path, api_key: str | None) -> tuple[str, str]:
    """The API's URL and the key to call it with: those given, else those `lcp dev` wrote to dev.json."""
    dev = dev_info(home)
    return api_url or dev.get("api", DEFAULT_API), api_key or dev.get("api_key", "")


def guarded(group: str, command: str, err_console: Console, run: Callable[[], int]) -> int:
    """Run `lcp GROUP COMMAND`: an error is one red line naming it (exit 1); Ctrl-C while watching
    exits 130 and leaves the work going on."""
    try:
        return run()
    except CliError as err:
        err_console.print(Text(f"lcp {group} {command}: {plain(err.message)}", style="red"), soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err_console.print(
            Text(f"lcp {group} {command}: stopped watching; it goes on", style="dim"), soft_wrap=True
        )
        return 130


def api_commands(
    app: typer.Typer, group: str, connect: Connect[Client], *, key_help: str = SRE_KEY
) -> Callable[[str], Callable[[Run], Run]]:
    """`@command(NAME)` on `def name(api, <its own options>) -> exit code` declares `lcp GROUP NAME`: its own
    options, then --api, --home and --api-key (last, where they always were: `lcp GROUP NAME ... --api URL`
    still reads), and it runs with `api = connect(api_url, home, api_key)` open, through `guarded`, exiting
    with the code it returns."""
    shared = [
        inspect.Parameter("api_url", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ApiUrl),
        inspect.Parameter("home", inspect.Parameter.KEYWORD_ONLY, default=HOME, annotation=Home),
        inspect.Parameter(
            "api_key",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                str | None, typer.Option(envvar="LCP_API_KEY", help=key_help, show_default=False)
            ],
        ),
    ]

    def command(name: str) -> Callable[[Run], Run]:
        def register(run: Run) -> Run:
            own = list(inspect.signature(run).parameters.values())[1:]  # all but the client

            def invoke(api_url: str | None, home: Path, api_key: str | None, **options: object) -> None:
                def connected() -> int:
                    with connect(api_url, home, api_key) as api:
                        return run(api, **options)

                raise typer.Exit(guarded(group, name, runtime.err_console, connected))

            # Typer reads a command's options from its signature (and its help from the docstring).
            invoke.__signature__ = inspect.Signature([*own, *shared])  # type: ignore[attr-defined]
            invoke.__annotations__ = {p.name: p.annotation for p in (*own, *shared)}
            invoke.__doc__ = run.__doc__
            app.command(name)(invoke)
            return run

        return register

    return command
