"""Text from the API (titles, names, messages, notes, reasons, error messages) made safe to print: stored
text never reaches the terminal raw, so it cannot move the cursor, retitle the window, reorder what follows
it or inject rich markup; and an answer printed as JSON, as the API sent it."""

import re
from collections.abc import Callable
from typing import TypeVar

from pydantic import TypeAdapter
from rich.console import RenderableType
from rich.markup import escape

from cli.runtime import console

Answer = TypeVar("Answer")

# C0/C1 controls and DEL (ESC starts terminal sequences; 0x9B is CSI on its own), bidi embeddings,
# overrides and isolates, and line/paragraph separators: shown as escapes, e.g. \x1b, \u202e.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_UNSAFE_KEEPING_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def plain(value: object, *, lines: bool = False) -> str:
    """`value` as text with every control, bidi and separator character written as an escape (newlines
    and tabs kept when `lines`, for message text). For rich `Text`, which does not read markup."""
    text = value if isinstance(value, str) else str(value)
    return (_UNSAFE_KEEPING_LINES if lines else _UNSAFE).sub(_escaped, text)


def shown(value: object, *, lines: bool = False) -> str:
    """`plain(value)` with rich markup escaped: for strings rich reads as markup (console.print, table
    cells, panels), where `[/red]` in a title would otherwise be markup, or an error."""
    return escape(plain(value, lines=lines))


def json_of(answer: object) -> str:
    """An API answer (one of its response schemas) as the JSON the API sent: its schema's serialisation."""
    return TypeAdapter(type(answer)).dump_json(answer).decode()


def print_answer(answer: Answer, render: Callable[[Answer], RenderableType], as_json: bool) -> int:
    """A command's API answer as the JSON the API sent (`--json`) or as its screen; exit code 0."""
    if as_json:
        console.print_json(json_of(answer))
    else:
        console.print(render(answer))
    return 0
