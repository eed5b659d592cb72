"""Passive health of a deployment: failures put it in a cooldown it comes back from by itself.

As LiteLLM does it (its defaults are ours): a 429 or a refused connection cools a deployment down at
once, and so does a stream cut off mid-reply; other failures (5xx, timeouts) are counted, and more
than `allowed_fails` of them within `window_s` cool it down. A cooldown lasts `cooldown_s`; a success
clears the count. Pure: the clock is passed in, the state is a value.
"""

from dataclasses import dataclass, field, replace
from enum import StrEnum


class Failure(StrEnum):
    """What went wrong with a call, as far as the deployment's health goes."""

    RATE_LIMITED = "rate_limited"  # 429: the deployment says "not now"
    UNREACHABLE = "unreachable"  # connection refused or reset before any answer
    SERVER_ERROR = "server_error"  # 5xx
    TIMEOUT = "timeout"  # no answer (or no first byte) in time
    BROKEN_STREAM = "broken_stream"  # the reply was cut off mid-stream


# A refused connection or a stream cut off mid-reply says the replica is gone (or going): no point in
# sending it the next requests until the cooldown has passed.
IMMEDIATE = frozenset({Failure.RATE_LIMITED, Failure.UNREACHABLE, Failure.BROKEN_STREAM})


@dataclass(frozen=True)
class CooldownSettings:
    allowed_fails: int = 3  # counted failures tolerated within window_s; one more cools down
    window_s: float = 60.0
    cooldown_s: float = 5.0


@dataclass(frozen=True)
class Health:
    """A deployment's recent failures and, while it cools down, until when and why."""

    failures: tuple[float, ...] = field(default=())  # times of counted failures within the window
    cooling_until: float | None = None
    reason: str | None = None

    def cooling(self, now: float) -> bool:
        return self.cooling_until is not None and now < self.cooling_until


def record_failure(health: Health, failure: Failure, now: float, settings: CooldownSettings) -> Health:
    """The health after a failed call at `now`."""
    if failure in IMMEDIATE:
        return _cool(health, now, settings, failure.value)
    recent = tuple(t for t in health.failures if now - t < settings.window_s) + (now,)
    if len(recent) > settings.allowed_fails:
        reason = f"{len(recent)} failures in {settings.window_s:g} s, the last {failure.value}"
        return _cool(replace(health, failures=()), now, settings, reason)
    return replace(health, failures=recent)


def record_success(health: Health) -> Health:
    """A success clears the counted failures; a cooldown under way runs its course."""
    return replace(health, failures=())


def _cool(health: Health, now: float, settings: CooldownSettings, reason: str) -> Health:
    until = now + settings.cooldown_s
    if health.cooling_until is not None and health.cooling_until > until:
        until = health.cooling_until
    return replace(health, cooling_until=until, reason=reason)
