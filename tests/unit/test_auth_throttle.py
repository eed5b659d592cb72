"""The failed-authentication throttle on a fake clock: burst, refill, per-address buckets, bounded memory."""

import pytest

from api.auth_throttle import FailureThrottle, address_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_refused_after_its_burst_and_earns_attempts_back() -> None:
    clock = Clock()
    throttle = FailureThrottle(burst=3, per_minute=6, clock=clock)  # one attempt back every 10 s
    for _ in range(3):
        assert throttle.retry_after("10.0.0.1") is None
        throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == pytest.approx(10.0)
    assert throttle.retry_after("10.0.0.2") is None  # another address is untouched
    clock.now += 4
    assert throttle.retry_after("10.0.0.1") == pytest.approx(6.0)
    clock.now += 6
    assert throttle.retry_after("10.0.0.1") is None
    throttle.failed("10.0.0.1")  # the one it earned back, spent
    assert throttle.retry_after("10.0.0.1") == pytest.approx(10.0)
    clock.now += 3600  # a long quiet spell refills to the burst, no further
    for _ in range(3):
        throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") is not None


def test_failures_past_the_burst_do_not_dig_a_deeper_hole() -> None:
    clock = Clock()
    throttle = FailureThrottle(burst=2, per_minute=60, clock=clock)
    for _ in range(50):
        throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == pytest.approx(1.0)


def test_memory_is_bounded_by_forgetting_the_least_recent_address() -> None:
    clock = Clock()
    throttle = FailureThrottle(burst=1, per_minute=1, max_addresses=100, clock=clock)
    for n in range(1000):
        throttle.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(throttle._buckets) == 100
    assert throttle.retry_after("10.0.3.231") is not None  # the 1000th, still held
    assert throttle.retry_after("10.0.0.0") is None  # the first, forgotten


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("10.1.2.3", "10.1.2.3"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # the same /64: the same client
        ("::ffff:10.1.2.3", "10.1.2.3"),
        (None, "unknown"),
        ("testclient", "testclient"),
    ],
)
def test_address_key(host: str | None, key: str) -> None:
    assert address_key(host) == key
