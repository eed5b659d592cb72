"""Following a run the API shows (a rollout, a chaos experiment) until it ends: one live view, redrawn
every interval in place (in a terminal; piped, the last one is printed), through an API that stops
answering for a while or a spent rate limit, which the view says rather than ending."""

import time
from collections.abc import Callable
from typing import TypeVar

from rich.console import Console, RenderableType
from rich.live import Live

from cli.connection import CliError

View = TypeVar("View")


def follow(
    fetch: Callable[[], View],
    render: Callable[[View, str | None], RenderableType],
    finished: Callable[[View], bool],
    console: Console,
    *,
    first: View | None = None,
    interval_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> View:
    """`render(view, note)` of each `fetch()` until `finished(view)`, and that last view. A 5xx, a 429 or
    an unreachable API is the `note` under the last view (retrying); another 4xx ends it (raised)."""
    view = first if first is not None else fetch()
    with Live(render(view, None), console=console, auto_refresh=False, transient=False) as live:
        while not finished(view):
            sleep(interval_s)
            note = None
            try:
                view = fetch()
            except CliError as err:
                if err.status is not None and err.status < 500 and err.status != 429:
                    raise  # a 429 (the key's limit) passes, like an API that is briefly down
                note = f"{err.message} (retrying)"
            live.update(render(view, note), refresh=True)
    return view
