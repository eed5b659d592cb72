"""Per-minute limits as GCRA (the generic cell rate algorithm): pure arithmetic, with the clock passed in.

A bucket is one number, its theoretical arrival time (TAT): the moment it is full again. A limit of N
units a minute spaces units 60/N s apart and lets a whole minute's worth through at once, so a request
that needs `need_s` seconds of the bucket fits while max(TAT, now) + need_s <= now + 60. Taking moves
the TAT on; a reply that used more than was left moves it further (debt, waited off by later requests);
giving back moves it back, never before now (a bucket is never more than full). store/limit_buckets.py
runs the same arithmetic in SQL, where every API process shares it.
"""

import math

WINDOW_S = 60.0
# Steps of limits that do not divide a minute (60/7 s) add up to a minute plus a rounding error: that
# much slack keeps the last unit of a whole minute admissible.
SLACK_S = 1e-6


def step_s(units: float, per_minute: int) -> float:
    """How much of a bucket's minute `units` take under a limit of `per_minute` (negative: give back)."""
    return units * WINDOW_S / per_minute


def wait_s(tat: float, now: float, need_s: float) -> float:
    """Seconds until `need_s` fits in a bucket whose TAT is `tat` (0 when it fits now)."""
    late = max(tat, now) + need_s - (now + WINDOW_S + SLACK_S)
    return max(0.0, late)


def after_taking(tat: float, now: float, take_s: float) -> float:
    """The TAT once `take_s` is taken (or given back, when negative)."""
    return max(max(tat, now) + take_s, now)


def retry_after_s(wait_s: float) -> int:
    """The Retry-After header value: whole seconds, at least 1."""
    return max(1, math.ceil(wait_s))
