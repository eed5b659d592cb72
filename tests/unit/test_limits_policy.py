"""policies/limits.py as tables: GCRA's waits and what taking or giving back does to a bucket."""

import pytest

from policies.limits import after_taking, retry_after_s, step_s, wait_s

NOW = 1000.0
ONE = step_s(1, 60)  # a limit of 60 a minute: one unit a second


@pytest.mark.parametrize(
    ("tat", "need_s", "wait"),
    [
        (0.0, ONE, 0.0),  # a bucket full long since
        (NOW, 60.0, 0.0),  # full: a whole minute fits at once
        (NOW, 60.5, 0.5),  # more than a minute never fits at once
        (NOW + 59, ONE, 0.0),  # the last unit of the minute
        (NOW + 60, ONE, 1.0),  # spent: the next unit in one step
        (NOW + 90, ONE, 31.0),  # in debt by 30 s: repaid first
        (NOW + 60, 0.0, 0.0),  # a check of nothing always fits
    ],
)
def test_wait(tat: float, need_s: float, wait: float) -> None:
    assert wait_s(tat, NOW, need_s) == pytest.approx(wait, abs=1e-5)


@pytest.mark.parametrize(
    ("tat", "take_s", "after"),
    [
        (0.0, ONE, NOW + 1),  # a full bucket's TAT starts from now
        (NOW + 10, ONE, NOW + 11),
        (NOW + 10, -4.0, NOW + 6),  # given back
        (NOW + 10, -40.0, NOW),  # never more than full
        (NOW + 10, 100.0, NOW + 110),  # a charge past the minute: debt
    ],
)
def test_after_taking(tat: float, take_s: float, after: float) -> None:
    assert after_taking(tat, NOW, take_s) == pytest.approx(after)


def test_a_minute_of_steps_that_do_not_divide_it_still_fits() -> None:
    tat = NOW
    for _ in range(7):
        assert wait_s(tat, NOW, step_s(1, 7)) == 0.0
        tat = after_taking(tat, NOW, step_s(1, 7))
    assert wait_s(tat, NOW, step_s(1, 7)) > 0


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert [retry_after_s(s) for s in (0.0, 0.2, 1.0, 1.01, 30.5)] == [1, 1, 1, 2, 31]
