"""Database work a request cannot go without (its key, its limits), bounded in time: a database that is
unreachable, or does not answer in time, refuses the request with a 503 and Retry-After, never lets it
through unchecked and never hangs it."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from api.errors import ApiError

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_AFTER_S = 1
# What an unreachable or failing database raises: the driver's errors as SQLAlchemy wraps them, a refused
# or reset connection as it is, and asyncio.timeout's TimeoutError for one that does not answer.
UNREACHABLE = (DBAPIError, OSError, TimeoutError)


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
            raise ApiError(
                503,
                "DatabaseUnavailable",
                f"{self.what} cannot be checked now (the database did not answer within "
                f"{self.timeout_s:g} s), so the request was not served: retry in {RETRY_AFTER_S} s",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from None
        if self._down:
            log.warning("%s: the database answers again", self.what)
            self._down = False
        return result
