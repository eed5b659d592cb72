"""The tests' one way to wait: eventually() polls until a check holds, and says what it waited for."""

import itertools
from collections.abc import Iterator

import pytest
from temporalio.exceptions import ApplicationError

from tests.waiting import eventually, eventually_sync, settle


async def test_the_first_answer_that_holds_is_returned() -> None:
    counter = itertools.count()
    assert await eventually(lambda: next(counter) >= 3 and "third", what="the third call") == "third"


async def test_an_async_check_is_awaited_and_until_judges_its_answer() -> None:
    counter = itertools.count()

    async def calls() -> int:
        return next(counter)

    assert await eventually(calls, until=lambda n: n == 2, what="two calls") == 2


async def test_an_assertion_means_not_yet_and_any_other_error_ends_the_wait() -> None:
    answers: Iterator[AssertionError | str] = iter([AssertionError("not yet"), "done"])

    def check() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await eventually(check, what="done") == "done"
    with pytest.raises(KeyError):
        await eventually(lambda: {"present": 1}["missing"], what="a key", within=5)


async def test_giving_up_says_what_was_awaited_and_the_last_answer() -> None:
    with pytest.raises(AssertionError, match=r"waited 0.1 s for the pods to start; .* said \[\]"):
        await eventually(list, what="the pods to start", within=0.1)

    def failing() -> None:
        raise AssertionError("2 of 4 ready")

    with pytest.raises(AssertionError, match="said AssertionError: 2 of 4 ready"):
        eventually_sync(failing, what="the pods to start", within=0.1)


def test_not_yet_errors_are_retried_too() -> None:
    counter = itertools.count()

    def check() -> int:
        if (n := next(counter)) < 2:
            raise ConnectionError("starting")
        return n

    assert eventually_sync(check, what="an answer", not_yet=(ConnectionError,)) == 2


async def test_settle_retries_not_ready_and_nothing_else() -> None:
    attempts = itertools.count()

    def rolls_out(_: object) -> str | None:
        if next(attempts) < 2:
            raise ApplicationError("2 of 4 ready", type="NotReady")
        return None

    assert await settle(rolls_out, None) is None  # an activity's None is an answer too
    assert next(attempts) == 3

    def refuses(_: object) -> None:
        raise ApplicationError("no such Deployment", type="TargetNotFound")

    with pytest.raises(ApplicationError, match="no such Deployment"):
        await settle(refuses, None)
