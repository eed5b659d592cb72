"""Numeric ranges of the ops settings (scaling, rollouts, chaos): one table that the API's schemas, the
workflows' own checks and the CLI (through the API) refuse alike, so no setting can make a loop spin or a
count run away."""

import math
from dataclasses import dataclass

MINUTE_S = 60.0
HOUR_S = 3600.0
DAY_S = 86400.0


def _text(number: float) -> str:
    """A bound as people write it: 86400, 0.05, 1000000."""
    if isinstance(number, int) or (math.isfinite(number) and float(number).is_integer()):
        return str(int(number))
    return f"{number:g}"


@dataclass(frozen=True)
class Range:
    """Values from `low` to `high` (each end included unless `low_open` / `high_open`), finite, and whole
    numbers only when `whole`; a bool is never a number here."""

    low: float
    high: float
    whole: bool = False
    low_open: bool = False
    high_open: bool = False
    what: str = ""  # "a number of seconds"; default "a number" or "a whole number"

    def holds(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.whole and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self) -> str:
        """What a value must be, e.g. "a number of seconds from 1 to 86400"."""
        what = self.what or ("a whole number" if self.whole else "a number")
        low, high = _text(self.low), _text(self.high)
        if not self.low_open and not self.high_open:
            return f"{what} from {low} to {high}"
        return f"{what} {'>' if self.low_open else '≥'} {low} and {'<' if self.high_open else '≤'} {high}"

    def problem(self, name: str, value: object, separator: str = " ") -> str | None:
        """None when `value` is in range, else "<name> must be <describe>, got <value>"."""
        if self.holds(value):
            return None
        return f"{name}{separator}must be {self.describe()}, got {value!r}"


def seconds(low: float, high: float, *, low_open: bool = False) -> Range:
    return Range(low, high, low_open=low_open, what="a number of seconds")


def whole(low: int, high: int, what: str = "") -> Range:
    return Range(low, high, whole=True, what=what)


MAX_REPLICAS = 10_000  # of one Deployment, as any lcp input may ask for
SHARE = Range(0, 1)  # a fraction, both ends allowed
PERCENT = Range(0, 100, what="a percentage")
REPLICAS = Range(1, MAX_REPLICAS, whole=True, what="a whole number of replicas")
