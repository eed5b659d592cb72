"""Every request body before a route reads it: refused with a 413 once it passes LCP_API__MAX_BODY_BYTES
(by its Content-Length, or while a chunked body arrives: never read whole), and with a 422 when its JSON
holds a lone surrogate or a NUL character in any key or value, or its URL a NUL, which no route could
store or answer (PostgreSQL refuses NUL in text)."""

import json
import re
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_body_for

# What may decode to a lone surrogate or NUL: a \uD800-\uDFFF or \u0000 escape, or a surrogate encoded
# as UTF-8 bytes (which json.loads lets through). A body without any skips the full check.
_SUSPECT = re.compile(rb"\\u(?:[dD][89a-fA-F]|0000)|\xed[\xa0-\xbf]")
_REFUSED = re.compile("[\x00\ud800-\udfff]")
_MAX_SHOWN = 80  # characters of a key shown in an error


def text_problem(body: bytes) -> str | None:
    """Where the JSON `body` holds a lone surrogate or NUL, as a sentence; None when it is clean (or is not
    JSON: the route answers that itself)."""
    if not body:
        return None
    try:
        utf8 = json.detect_encoding(body) == "utf-8"
    except (ValueError, TypeError):
        return None
    if utf8 and not _SUSPECT.search(body):
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    found = _find(data)
    if found is None:
        return None
    where, character = found
    if character == "\x00":
        return (
            f"the request has a NUL character (\\u0000) in {where}: remove it; text is stored as sent, "
            "and NUL cannot be"
        )
    return (
        f"the request has a lone surrogate (\\u{ord(character):04x} without its pair) in {where}: JSON text "
        "must be valid Unicode; send a character outside the BMP as a surrogate pair or as UTF-8"
    )


def _find(data: Any) -> tuple[str, str] | None:
    """The first string (value or key) holding a refused character: where it is and the character."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if found := _REFUSED.search(value):
                return _where(path), found.group()
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                if found := _REFUSED.search(key):
                    return f"a key of {_where(path)} ({_shown(key)!r})", found.group()
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, index)) for index, item in reversed(list(enumerate(value))))
    return None


def _shown(part: str) -> str:
    escaped = ascii(part)[1:-1]  # control characters, surrogates and all non-ASCII as escapes
    return escaped if len(escaped) <= _MAX_SHOWN else escaped[:_MAX_SHOWN] + "…"


def _where(path: tuple[str | int, ...]) -> str:
    return ".".join(_shown(part) if isinstance(part, str) else str(part) for part in path) or "the body"


class BodyGuard:
    """Plain ASGI middleware: reads the body (up to the limit) before the app does, checks it, and hands the
    app the same bytes. A refused body's connection is closed rather than drained."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if b"%00" in scope.get("raw_path", b"") or b"%00" in scope.get("query_string", b""):
            await _answer(scope, send, 422, "InvalidText", "the URL has a NUL character (%00): remove it")
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(scope, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: no one to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if problem := text_problem(body):
            await _answer(scope, send, 422, "InvalidText", problem)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # later calls wait for the client to go away, as before
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        message = (
            f"the request body is over this API's limit of {self.max_body_bytes:,} bytes "
            "(LCP_API__MAX_BODY_BYTES): send less, e.g. a shorter history or content split over turns"
        )
        await _answer(scope, send, 413, "BodyTooLarge", message, close=True)


async def _answer(
    scope: Scope, send: Send, status: int, type_: str, message: str, close: bool = False
) -> None:
    headers = {"Connection": "close"} if close else None
    response = JSONResponse(error_body_for(scope["path"], status, type_, message), status, headers=headers)
    await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}
