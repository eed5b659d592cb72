"""Token-bucket arithmetic for per-minute limits: pure, with the clock passed in."""

import math
from dataclasses import dataclass


@dataclass
class Bucket:
    """`capacity` units per minute, refilled continuously; `level` may go negative (debt) when a
    request turns out to cost more than was left, and then the next requests wait it off."""

    capacity: float
    level: float
    updated_at: float

    @classmethod
    def full(cls, per_minute: int, now: float) -> "Bucket":
        return cls(capacity=float(per_minute), level=float(per_minute), updated_at=now)

    @property
    def rate_per_s(self) -> float:
        return self.capacity / 60.0

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated_at)
        self.level = min(self.capacity, self.level + elapsed * self.rate_per_s)
        self.updated_at = now

    def wait_s(self, cost: float, now: float) -> float:
        """Seconds until `cost` units are available (0 when they are now)."""
        self.refill(now)
        missing = min(cost, self.capacity) - self.level
        return 0.0 if missing <= 0 else missing / self.rate_per_s

    def take(self, cost: float, now: float) -> None:
        """Take `cost` units (a negative cost gives units back, never past the capacity)."""
        self.refill(now)
        self.level = min(self.capacity, self.level - cost)


def retry_after_s(wait_s: float) -> int:
    """The Retry-After header value: whole seconds, at least 1."""
    return max(1, math.ceil(wait_s))
