"""How many durable turns an API process lets run at once: a limit that keeps lcp's own part of a turn
(its time in the API, Temporal and the worker; the model's time left out) near a target. Every `update_s`
the limit is scaled by the target over the median of the turns that ended since, by 0.5 to 2 at a time,
and it grows only while at least half of it is used. Turns past the limit wait in the API, the tenants in
turn (api/turn_gate.py), where one tenant's burst cannot slow another's.

A target this process cannot reach, even at its minimum (a slower database, or a target set too low), is
raised to a quarter above what turns take at the minimum, for `floor_s`: shedding that does not make
turns faster only holds turns back. Turns slowed by a burst never reach that: the limit comes down until
they are on target.

A target, not a baseline learned by probing (Envoy's adaptive concurrency drops to a few requests at once
to measure the fastest time): a turn holds its slot through its model's reply, seconds to minutes, so
such a probe would hold every other turn back for as long.

Pure: the caller passes the time.
"""

import math
import statistics
from dataclasses import dataclass, field

MIN_STEP, MAX_STEP = 0.5, 2.0  # the most one update scales the limit by
SAMPLES_KEPT = 10_000  # turns remembered between two updates (past it, the next update comes sooner)
FLOOR_FROM = 5  # turns an update at the minimum needs for its median to raise the target
FLOOR_MARGIN = 1.25  # a raised target is this much above what turns took at the minimum


@dataclass
class AdaptiveLimit:
    target_s: float
    limit: float
    minimum: int = 4
    maximum: int = 1000
    update_s: float = 1.0
    floor_s: float = 600.0  # how long a raised target holds
    _floor: float = field(default=0.0, init=False)  # the raised target, until _floor_until
    _floor_until: float = field(default=0.0, init=False)
    _recent: list[float] = field(default_factory=list, init=False)  # lcp's part of turns since the update
    _next_update: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.limit <= self.maximum:
            raise ValueError("a concurrency limit needs 1 <= minimum <= limit <= maximum")
        if not self.target_s > 0:
            raise ValueError("a concurrency limit needs a positive target time")

    @property
    def allowed(self) -> int:
        return int(self.limit)

    def target_at(self, now: float) -> float:
        return max(self.target_s, self._floor) if now < self._floor_until else self.target_s

    def observe(self, seconds: float, now: float, in_flight: int) -> None:
        """A turn ended at `now` after `seconds` of lcp's own time; `in_flight` turns still run."""
        if not 0 <= seconds < math.inf:
            return  # NaN, infinite, or a clock gone wrong: nothing to learn from
        self._recent.append(seconds)
        if now < self._next_update and len(self._recent) < SAMPLES_KEPT:
            return
        self._next_update = now + self.update_s
        recent, count, self._recent = statistics.median(self._recent), len(self._recent), []
        if self.limit <= self.minimum and count >= FLOOR_FROM and recent > self.target_at(now):
            self._floor, self._floor_until = recent * FLOOR_MARGIN, now + self.floor_s
        step = MAX_STEP if recent == 0 else min(MAX_STEP, max(MIN_STEP, self.target_at(now) / recent))
        if step > 1 and (in_flight + 1) * 2 < self.limit:
            return  # not grown while half of it is unused: a quiet hour must not leave a limit nothing tested
        self.limit = min(float(self.maximum), max(float(self.minimum), self.limit * step))
