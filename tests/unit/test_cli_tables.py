"""Lists as a person reads them: at 80 columns in a terminal and piped, ids and names are whole, headers are
whole words, other columns fold or are left out (and the caption says which); `--json` has every field."""

import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from rich.console import Console

from cli.tables import Column, ListTable
from tests.http_server import serve_in_thread

RUN_ID = "chat-api-network-loss/20261126-150600"
SERVICE = "lab/chat-api-eu-west-1"
ASSISTANT = "customer-support-assistant-for-acme"
ASSISTANT_NAME = "Customer Support (ACME, tier 2)"

RUNS = [
    {
        "id": RUN_ID,
        "experiment": "chat-api-network-loss",
        "run": "20261126-150600",
        "target": SERVICE,
        "phase": "NotSteady",
        "status": "COMPLETED",
        "started_at": "2026-11-26T15:06:00+00:00",
        "closed_at": "2026-11-26T15:07:00+00:00",
    }
]
ROLLOUTS = [
    {
        "id": f"rollout/{SERVICE}",
        "namespace": "lab",
        "service": SERVICE.removeprefix("lab/"),
        "phase": "RolledBack",
        "status": "COMPLETED",
        "started_at": "2026-11-26T15:06:00+00:00",
        "closed_at": "2026-11-26T15:16:00+00:00",
    }
]
ASSISTANTS = [
    {
        "id": ASSISTANT,
        "name": ASSISTANT_NAME,
        "state": "Experimenting",
        "live_version": "v1",
        "latest_version": "v2",
        "experiment": {
            "id": "tone",
            "arms": [
                {"name": "control", "version": "v1", "share": 50},
                {"name": "b", "version": "v2", "share": 50},
            ],
        },
        "created_by": "ada",
        "created_at": "2026-11-26T15:00:00+00:00",
        "updated_at": "2026-11-26T15:06:00+00:00",
    }
]


def _api() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/chaos")
    def runs() -> dict[str, Any]:
        return {"data": RUNS}

    @app.get("/v1/rollouts")
    def rollouts() -> dict[str, Any]:
        return {"data": ROLLOUTS}

    @app.get("/v1/assistants")
    def assistants() -> dict[str, Any]:
        return {"data": ASSISTANTS}

    return app


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    with serve_in_thread(_api()) as url:
        yield url


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "LCP_API_KEY")}
    return env | {"TERM": "xterm-256color"}


def _piped(api_url: str, *args: str) -> str:
    """`lcp ARGS` with its output in a pipe, as `lcp chaos list | less` gets it."""
    done = subprocess.run(
        [sys.executable, "-m", "cli", *args, "--api", api_url, "--api-key", "k"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _in_terminal(api_url: str, *args: str, columns: int = 80) -> str:
    """`lcp ARGS` in a terminal `columns` wide (a pseudo-terminal, as tmux gives it), colours stripped."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", *args, "--api", api_url, "--api-key", "k"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=_env() | {"NO_COLOR": "1"},
    )
    os.close(follower)
    out = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            process.kill()
            pytest.fail(f"lcp {' '.join(args)} wrote nothing for 60 s; so far: {out!r}")
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert process.wait(timeout=60) == 0, out.decode()
    return out.decode().replace("\r\n", "\n")


def _check_fits(text: str, whole: list[str], width: int = 80) -> str:
    """`text` without colours, once checked: no line over `width`, each of `whole` on one line, no `…`."""
    text = re.sub("\x1b\\[[0-9;]*m", "", text)  # bold headers
    for line in text.splitlines():
        assert len(line.rstrip()) <= width, f"a line over {width} columns: {line!r}"
    for value in whole:
        assert any(value in line for line in text.splitlines()), f"{value!r} cut or wrapped in:\n{text}"
    assert "…" not in text
    return text


@pytest.mark.parametrize("where", ["piped", "terminal"])
@pytest.mark.parametrize(
    ("args", "whole", "headers"),
    [
        (("chaos", "list"), [RUN_ID, SERVICE, "NotSteady"], ["run", "target", "phase"]),
        (("rollout", "list"), [SERVICE, "RolledBack"], ["rollout", "phase"]),
        (
            ("assistants", "list"),
            [ASSISTANT, "Experimenting", *ASSISTANT_NAME.split()],  # a name may wrap between words
            ["assistant", "name", "state"],
        ),
    ],
)
def test_lists_at_80_columns_keep_ids_and_names_whole(
    api_url: str, where: str, args: tuple[str, ...], whole: list[str], headers: list[str]
) -> None:
    text = _piped(api_url, *args) if where == "piped" else _in_terminal(api_url, *args)
    text = _check_fits(text, whole)
    header_line = next(line for line in text.splitlines() if headers[0] in line.split())
    assert headers == [word for word in header_line.split() if word in headers]  # whole, in order


@pytest.mark.parametrize(
    ("args", "answer"),
    [(("chaos", "list"), RUNS), (("rollout", "list"), ROLLOUTS), (("assistants", "list"), ASSISTANTS)],
)
def test_every_list_has_json(api_url: str, args: tuple[str, ...], answer: list[dict[str, Any]]) -> None:
    listed = json.loads(_piped(api_url, *args, "--json"))
    assert [row["id"] for row in listed] == [row["id"] for row in answer]
    assert listed[0][
        "started_at" if "started_at" in answer[0] else "updated_at"
    ]  # the fields the table left out


def _render(renderable: object, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


COLUMNS = [
    Column("id", key=True),
    Column("phase"),
    Column("note", drop=2),
    Column("versions"),
    Column("created", drop=1),
]
ROWS = [
    [
        "tenant-acme/conversation-0123456789abcdef",
        "RolledBack",
        "a long note " * 4,
        "v1",
        "2026-11-26 15:06:00",
    ]
]


def test_a_table_that_fits_is_drawn_as_it_is() -> None:
    text = _render(ListTable(COLUMNS, ROWS), 200)
    assert "a long note a long note a long note a long note" in text and "2026-11-26 15:06:00" in text
    assert "left out" not in text


def test_narrower_leaves_the_least_needed_out_and_says_so_then_folds() -> None:
    narrow = _render(ListTable(COLUMNS, ROWS), 110)
    _check_fits(narrow, [ROWS[0][0], "RolledBack", "versions"], width=110)
    assert "note)" in narrow.split("left out")[1]  # left out, and said
    assert "2026-11-26 15:06:00" in narrow  # left out first, but back in the room the note made
    long_phase = [[*ROWS[0][:1], "RolledBack and then some more words", *ROWS[0][2:]]]
    folded = _render(ListTable(COLUMNS, long_phase), 72)  # nothing more to leave out: the phase folds
    _check_fits(folded, [ROWS[0][0], "RolledBack", "versions"], width=72)
    assert "more" in folded
    squeezed = _render(ListTable(COLUMNS, ROWS), 60)  # even then the id keeps whole, before any header
    _check_fits(squeezed, [ROWS[0][0]], width=60)


def test_when_even_the_ids_do_not_fit_they_fold_whole_rather_than_lose_characters() -> None:
    text = _render(ListTable(COLUMNS, ROWS), 30)
    assert "…" not in text
    assert ROWS[0][0] in "".join(line.strip().split(" ")[0] for line in text.splitlines())


def test_an_empty_list_says_none() -> None:
    assert "(none)" in _render(ListTable(COLUMNS, []), 80)


def test_the_drills_list_has_json_too() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli", "chaos", "drills", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    drills = json.loads(done.stdout)
    assert "worker-kill-mid-turn" in [d["name"] for d in drills] and all(d["invariants"] for d in drills)


def test_a_column_left_out_comes_back_when_a_wider_one_left_out_after_it_made_room() -> None:
    columns = [Column("id", key=True), Column("tag", drop=1), Column("description", drop=2)]
    rows = [["conversation-0123456789", "blue", "a description far too long for sixty columns of terminal"]]
    text = _render(ListTable(columns, rows), 60)
    assert "conversation-0123456789" in text and "blue" in text
    assert "left out at this width: description)" in " ".join(text.split())
