"""What every `lcp` command runs with: the consoles it prints to, the settings (or one clear line and exit 1
when one is wrong) and the log format."""

import logging
from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError
from rich.console import Console

if TYPE_CHECKING:
    from settings import Settings

console = Console()
err_console = Console(stderr=True)


def load_settings(command: str) -> "Settings":
    """Settings from the environment and .env, or one clear line and exit 1 when one is wrong."""
    from settings import Settings  # pydantic-settings and Temporal's client: only for commands that need them

    try:
        return Settings()
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in err.errors()
        )
        err_console.print(f"lcp {command}: invalid settings: {problems}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
