"""Which characters the API accepts in tenants' text: names and titles carry no control or bidi-override
characters, prose (system prompts, notes, reasons) no control characters but newlines and tabs."""

import re
from typing import Annotated

from pydantic import AfterValidator

# C0 and C1 control characters (Unicode category Cc) and DEL.
CONTROL = "\x00-\x1f\x7f-\x9f"
# Bidi embeddings, overrides and isolates: they reorder the text shown after them (CVE-2021-42574).
BIDI = "\u202a-\u202e\u2066-\u2069"
# Line and paragraph separators: a name shown on one line must stay on it.
SEPARATORS = "\u2028\u2029"

_NAME_REFUSED = re.compile(f"[{CONTROL}{BIDI}{SEPARATORS}]")
_PROSE_REFUSED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # all but \t \n \r


def _first(pattern: re.Pattern[str], value: str) -> str | None:
    found = pattern.search(value)
    return None if found is None else f"U+{ord(found.group()):04X} at character {found.start()}"


def _name(value: str) -> str:
    if where := _first(_NAME_REFUSED, value):
        raise ValueError(
            f"control and bidi-override characters are not allowed in names, titles and ids (found {where}): "
            "send plain text on one line"
        )
    return value


def _prose(value: str) -> str:
    if where := _first(_PROSE_REFUSED, value):
        raise ValueError(
            f"control characters other than newline, tab and carriage return are not allowed here "
            f"(found {where}): remove them"
        )
    return value


Name = Annotated[str, AfterValidator(_name)]
"""A name, title or id someone reads in a list or a terminal: one line, shown as it reads."""

Prose = Annotated[str, AfterValidator(_prose)]
"""Free text (a system prompt, a note, a reason): lines and tabs, but no terminal or other control codes."""
