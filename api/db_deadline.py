"""Database work a request cannot go without (its key, its limits), bounded in time: a database that is
unreachable, or does not answer in time, refuses the request with a 503 and Retry-After, never lets it
through unchecked and never hangs it. The same answer for a database lost later in a request (what the
route reads or writes), instead of a 500."""

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api.errors import ApiError, error_response

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_AFTER_S = 1
# What an unreachable or failing database raises: the driver's errors as SQLAlchemy wraps them, a refused
# or reset connection as it is, and asyncio.timeout's TimeoutError for one that does not answer.
UNREACHABLE = (DBAPIError, OSError, TimeoutError)
# What a database lost after admission raises out of a route: the driver's connection errors as SQLAlchemy
# wraps them, a refused or reset connection as asyncpg raises it, a statement past its timeout, and no
# pooled connection free within it (every one held by requests the database is slow to answer).
LOST = (OperationalError, InterfaceError, ConnectionError, socket.gaierror, TimeoutError, PoolTimeout)


def unavailable(message: str) -> ApiError:
    return ApiError(
        503,
        "DatabaseUnavailable",
        f"{message}: retry in {RETRY_AFTER_S} s",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def install(app: FastAPI) -> None:
    """A route whose database went away (or stopped answering) after the request was admitted answers
    503 and Retry-After: whatever it had not done yet is not done, and the same request may be sent again
    (a durable turn is keyed by its Idempotency-Key, so one that got through is not done twice)."""

    async def _lost(request: Request, exc: Exception) -> JSONResponse:
        log.warning(
            "%s %s: the database was lost during the request: %r", request.method, request.url.path, exc
        )
        return error_response(
            request, unavailable("the database did not answer during this request, so it was not completed")
        )

    for kind in LOST:
        app.add_exception_handler(kind, _lost)


class DatabaseDeadline:
    """Runs `what` (say, "the request and token limits") within `timeout_s`. An outage is logged once
    when it begins and once when it ends, not once per request."""

    def __init__(self, what: str, timeout_s: float) -> None:
        self.what, self.timeout_s = what, timeout_s
        self._down = False

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await work()
        except UNREACHABLE as err:
            if not self._down:
                log.warning("%s: the database is unreachable or slow, requests get a 503: %r", self.what, err)
            self._down = True
            raise unavailable(
                f"{self.what} cannot be checked now (the database did not answer within "
                f"{self.timeout_s:g} s), so the request was not served"
            ) from None
        if self._down:
            log.warning("%s: the database answers again", self.what)
            self._down = False
        return result
