"""Failed authentications per client address, as token buckets: past the burst, a 429 instead of a lookup."""

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable

MAX_ADDRESSES = 10_000  # buckets kept; the address that failed least recently goes first


def address_key(host: str | None) -> str:
    """What one client is: its IPv4 address, or the /64 of its IPv6 one (a host is usually given a whole
    /64, so counting single IPv6 addresses would give it 2**64 fresh buckets)."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # a test client's or a Unix socket's name: count it as it is
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class FailureThrottle:
    """Each address may fail `burst` times in a row, then earns one attempt back every 60/`per_minute` s;
    while it has none left, its requests are refused before any credential is looked at.

    Per process: each API process keeps its own buckets (bounded to MAX_ADDRESSES), so N replicas let an
    address fail N times as often. It is a guard on the cost of bad credentials (each unknown key is a
    database lookup), not an account lockout; keys carry 256 random bits, so guessing is hopeless anyway.
    Behind a proxy, run uvicorn with --forwarded-allow-ips so that the address is the client's.
    """

    def __init__(
        self,
        burst: int = 20,
        per_minute: float = 10.0,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst, self.rate = float(burst), per_minute / 60.0
        self.max_addresses = max_addresses
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (attempts left, at)

    def _left(self, key: str, now: float) -> float:
        left, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, left + (now - at) * self.rate)

    def retry_after(self, host: str | None) -> float | None:
        """Seconds until `host` may try again, or None when it may try now."""
        key, now = address_key(host), self._clock()
        if key not in self._buckets:
            return None
        left = self._left(key, now)
        return None if left >= 1 else (1 - left) / self.rate

    def failed(self, host: str | None) -> None:
        """Count one failed authentication from `host`."""
        key, now = address_key(host), self._clock()
        self._buckets[key] = (max(self._left(key, now) - 1, 0.0), now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)
