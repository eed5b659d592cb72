"""Waiting in tests: poll a condition until it holds, rather than sleep for a fixed time and hope."""

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

from temporalio.exceptions import ApplicationError

T = TypeVar("T")
Errors = tuple[type[Exception], ...]


class _Deadline:
    def __init__(self, what: str, within: float) -> None:
        self.what, self.within = what, within
        self.ends = time.monotonic() + within

    def give_up_if_late(self, last: object) -> None:
        if time.monotonic() <= self.ends:
            return
        said = f"{type(last).__name__}: {last}" if isinstance(last, Exception) else repr(last)
        cause = last if isinstance(last, Exception) else None
        raise AssertionError(
            f"waited {self.within:g} s for {self.what}; the check last said {said}"
        ) from cause


def _not_yet(also: Errors) -> Errors:
    return (AssertionError, *also)


@overload
async def eventually(
    check: Callable[[], Awaitable[T]],
    *,
    what: str,
    until: Callable[[T], object] = ...,
    within: float = ...,
    interval: float = ...,
    not_yet: Errors = ...,
) -> T: ...
@overload
async def eventually(
    check: Callable[[], T],
    *,
    what: str,
    until: Callable[[T], object] = ...,
    within: float = ...,
    interval: float = ...,
    not_yet: Errors = ...,
) -> T: ...
async def eventually(
    check: Callable[[], Any],
    *,
    what: str,
    until: Callable[[Any], object] = bool,
    within: float = 20.0,
    interval: float = 0.05,
    not_yet: Errors = (),
) -> Any:
    """Call `check` (a plain or an async function) every `interval` seconds until its answer satisfies
    `until` (by default: is truthy), and return that answer. A check also says "not yet" by raising
    AssertionError or one of `not_yet`; any other exception, `pytest.fail` included, ends the wait at
    once. After `within` seconds the test fails, saying what it waited for ("waited 20 s for {what}")
    and what the check said last."""
    deadline, retried = _Deadline(what, within), _not_yet(not_yet)
    while True:
        try:
            answer = check()
            if inspect.isawaitable(answer):
                answer = await answer
            if until(answer):
                return answer
            last: object = answer
        except retried as err:
            last = err
        deadline.give_up_if_late(last)
        await asyncio.sleep(interval)


def eventually_sync(
    check: Callable[[], T],
    *,
    what: str,
    until: Callable[[T], object] = bool,
    within: float = 20.0,
    interval: float = 0.05,
    not_yet: Errors = (),
) -> T:
    """`eventually` for code outside an event loop: it blocks the thread between checks."""
    deadline, retried = _Deadline(what, within), _not_yet(not_yet)
    while True:
        try:
            answer = check()
            if until(answer):
                return answer
            last: object = answer
        except retried as err:
            last = err
        deadline.give_up_if_late(last)
        time.sleep(interval)


async def settle(activity: Callable[[Any], T], arg: Any, within: float = 20.0) -> T:
    """A blocking activity called as Temporal's retry policy calls it: in a thread, again after each
    NotReady, until it returns (whatever it returns, None included); any other error ends it at once."""

    async def attempt() -> T:
        try:
            return await asyncio.to_thread(activity, arg)
        except ApplicationError as err:
            if err.type == "NotReady":
                raise AssertionError(f"NotReady: {err}") from err
            raise

    name = getattr(activity, "__name__", "the activity")
    return await eventually(
        attempt, until=lambda _: True, what=f"{name} to stop answering NotReady", within=within
    )
