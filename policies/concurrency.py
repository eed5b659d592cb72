"""How many durable turns an API process lets run at once: a limit that keeps lcp's own part of a turn
(its time in the API, Temporal and the worker; the model's, and waiting for the conversation's turn before
it, left out) near a target. Once `min_samples` turns let in under the current limit have ended, and at
most every `update_s`, the limit is scaled by the target over their median (the median of each tenant's
median, so the tenant with the most turns does not decide it alone): down to half at a time, up by half
at most, and up only while at least half of it is used. Turns let in before the last change are
not counted: they ran beside what the old limit allowed, and a turn takes a model reply's time to end.
Turns past the limit wait in the API, the tenants in turn (api/turn_gate.py).

A target this process cannot reach even at its minimum (a slower database, or a target set too low) is
raised to a quarter above what turns let in at the minimum took, for `floor_s`: shedding that does not
make turns faster only holds them back. Turns slowed by a burst the limit sheds do not reach that: at
the minimum they are on target again.

A target, not a baseline learned by probing (Envoy's adaptive concurrency drops to a few requests at once
to measure the fastest time): a turn holds its slot through its model's reply, seconds to minutes, so
such a probe would hold every other turn back for as long.

Pure: the caller passes the time.
"""

import math
import statistics
from dataclasses import dataclass, field

MIN_STEP, MAX_STEP = 0.5, 1.5  # the most one update scales the limit by
SAMPLES_KEPT = 10_000  # turns remembered between two updates (past it, the next update comes sooner)
FLOOR_MARGIN = 1.25  # a raised target is this much above what turns took at the minimum


@dataclass
class AdaptiveLimit:
    target_s: float
    limit: float
    minimum: int = 4
    maximum: int = 1000
    update_s: float = 1.0
    min_samples: int = 5
    floor_s: float = 600.0  # how long a raised target holds
    _recent: dict[str, list[float]] = field(default_factory=dict, init=False)  # by tenant, since the change
    _count: int = field(default=0, init=False)
    _changed_at: float = field(default=-math.inf, init=False)
    _next_update: float = field(default=-math.inf, init=False)
    _floor: float = field(default=0.0, init=False)  # the raised target, until _floor_until
    _floor_until: float = field(default=-math.inf, init=False)

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

    def observe(
        self, seconds: float, admitted_at: float, now: float, in_flight: int, tenant: str = ""
    ) -> None:
        """A turn of `tenant` let in at `admitted_at` ended at `now` after `seconds` of lcp's own time;
        `in_flight` turns still run."""
        if not 0 <= seconds < math.inf or admitted_at < self._changed_at:
            return  # nonsense, or let in under another limit
        self._recent.setdefault(tenant, []).append(seconds)
        self._count += 1
        if self._count < self.min_samples or (now < self._next_update and self._count < SAMPLES_KEPT):
            return
        self._next_update = now + self.update_s
        recent = statistics.median(statistics.median(samples) for samples in self._recent.values())
        self._recent, self._count = {}, 0
        target = self.target_at(now)
        if self.limit <= self.minimum and recent > target:
            self._floor, self._floor_until = recent * FLOOR_MARGIN, now + self.floor_s
            target = self._floor
        step = MAX_STEP if recent == 0 else min(MAX_STEP, max(MIN_STEP, target / recent))
        if step > 1 and (in_flight + 1) * 2 < self.limit:
            return  # not grown while half of it is unused: a quiet hour must not leave a limit nothing tested
        limit = min(float(self.maximum), max(float(self.minimum), self.limit * step))
        if int(limit) != int(self.limit):
            self._changed_at = now
        self.limit = limit
