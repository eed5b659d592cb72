"""The cooldown policy as a table: which failures cool a deployment down, for how long, and why."""

import pytest

from policies.cooldown import CooldownSettings, Failure, Health, record_failure, record_success

SETTINGS = CooldownSettings(allowed_fails=3, window_s=60, cooldown_s=5)
F = Failure


def run(events: list[tuple[float, Failure | None]]) -> Health:
    health = Health()
    for now, failure in events:
        health = record_success(health) if failure is None else record_failure(health, failure, now, SETTINGS)
    return health


@pytest.mark.parametrize(
    ("events", "at", "cooling", "reason"),
    [
        ([], 0, False, None),
        ([(0, F.RATE_LIMITED)], 1, True, "rate_limited"),
        ([(0, F.UNREACHABLE)], 4.9, True, "unreachable"),
        ([(0, F.BROKEN_STREAM)], 1, True, "broken_stream"),  # the replica died mid-reply
        ([(0, F.UNREACHABLE)], 5.0, False, "unreachable"),  # comes back by itself
        ([(0, F.SERVER_ERROR)] * 3, 1, False, None),  # allowed_fails tolerated
        (
            [(0, F.SERVER_ERROR), (1, F.TIMEOUT), (2, F.SERVER_ERROR), (3, F.SERVER_ERROR)],
            4,
            True,
            "4 failures in 60 s, the last server_error",
        ),
        # failures older than the window do not count
        (
            [(0, F.SERVER_ERROR), (1, F.SERVER_ERROR), (2, F.SERVER_ERROR), (70, F.SERVER_ERROR)],
            71,
            False,
            None,
        ),
        # a success clears the count
        ([(0, F.SERVER_ERROR)] * 3 + [(1, None), (2, F.SERVER_ERROR)], 3, False, None),
        # a success does not end a cooldown under way
        ([(0, F.RATE_LIMITED), (1, None)], 2, True, "rate_limited"),
    ],
)
def test_cooldown(
    events: list[tuple[float, Failure | None]], at: float, cooling: bool, reason: str | None
) -> None:
    health = run(events)
    assert health.cooling(at) is cooling
    assert health.reason == reason


def test_a_new_cooldown_never_shortens_one_under_way() -> None:
    long = CooldownSettings(cooldown_s=60)
    health = record_failure(Health(), F.RATE_LIMITED, 0, long)
    health = record_failure(health, F.RATE_LIMITED, 1, SETTINGS)
    assert health.cooling_until == 60


def test_the_count_restarts_after_a_cooldown() -> None:
    health = run([(0, F.SERVER_ERROR)] * 4)
    assert health.failures == ()
    health = record_failure(health, F.SERVER_ERROR, 6, SETTINGS)
    assert not health.cooling(6)  # cooled until 5; one new failure is within allowed_fails
