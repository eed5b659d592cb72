"""Durable turns an API process lets into Temporal at once (policies/concurrency.py's adaptive limit); the
others wait here, the tenants in turn (policies/fair_queue.py), so a tenant's burst of turns waits behind
itself instead of in front of other tenants' turns (40 at once from one tenant made another's turns take
15 to 20 times as long: `lcp bench neighbours`). Bounded: at most `max_waiting` turns wait in a process
(past that, the tenant holding the most gives up its newest) and each at most `max_wait_s`; a turn
refused is a 503 with Retry-After that reached no workflow, so a retry loses and duplicates nothing."""

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from api.errors import ApiError
from policies.concurrency import AdaptiveLimit
from policies.fair_queue import FairQueue
from settings import TurnAdmissionSettings

RETRY_AFTER_S = 2

TURNS_IN_FLIGHT = Gauge("lcp_api_turns_in_flight", "Durable turns this API process has in Temporal now")
TURN_LIMIT = Gauge("lcp_api_turn_limit", "Durable turns this API process lets into Temporal at once now")
TURNS_WAITING = Gauge("lcp_api_turns_waiting", "Durable turns waiting in this API process for their turn")
TURN_WAIT = Histogram(
    "lcp_api_turn_wait_seconds",
    "How long durable turns waited in the API before they were let into Temporal (or refused)",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
TURN_LCP_SECONDS = Histogram(
    "lcp_api_turn_lcp_seconds",
    "lcp's own part of each durable turn that ended (its time in the API, Temporal and the worker, the "
    "model's left out): what the limit keeps near LCP_CONVERSATION__ADMISSION__TARGET_S",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2, 5, 10),
)
TURNS_REFUSED = Counter(
    "lcp_api_turns_refused_total",
    "Durable turns the API refused with 503 before sending them: full (too many waiting, the newest of "
    "the tenant with the most gave way) or max_wait (waited max_wait_s)",
    ["reason"],
)


class Admitted:
    """A turn let in: `follow` its outcome so its slot is given back, with how long lcp's part of it took,
    when it ends (which may be after the request that sent it ended: the turn goes on in its workflow)."""

    def __init__(self, gate: "TurnGate | None") -> None:
        self._gate = gate
        self._started = time.monotonic()

    def follow(self, turn: "asyncio.Future[Any]", model_seconds: Callable[[Any], float]) -> None:
        """`model_seconds(result)`: how much of the turn its model took (not lcp's to limit)."""
        gate = self._gate
        if gate is None:
            return

        def ended(done: "asyncio.Future[Any]") -> None:
            seconds: float | None = None
            if not done.cancelled() and done.exception() is None:
                seconds = max(0.0, time.monotonic() - self._started - model_seconds(done.result()))
            gate.release(seconds)

        turn.add_done_callback(ended)

    def give_back(self) -> None:
        """The turn was never sent (its call failed before Temporal took it)."""
        if self._gate is not None:
            self._gate.release(None)
            self._gate = None


class TurnGate:
    def __init__(self, settings: TurnAdmissionSettings) -> None:
        self.settings = settings
        self.limit = AdaptiveLimit(
            settings.target_s,
            float(settings.initial_limit),
            minimum=settings.min_limit,
            maximum=settings.max_limit,
        )
        self._waiting: FairQueue[asyncio.Future[None]] = FairQueue(settings.max_waiting)
        self.in_flight = 0
        TURN_LIMIT.set(self.limit.limit)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def admit(self, tenant: str) -> Admitted:
        """Let the tenant's turn in now or once it is its turn; a 503 when it cannot wait."""
        if not self.settings.enabled:
            return Admitted(None)
        if self.in_flight < self.limit.allowed and not self._waiting:
            self._enter()
            return Admitted(self)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        refused = self._waiting.add(tenant, waiter)
        if refused is waiter:
            raise self._busy("full", f"{len(self._waiting)} turns are waiting, as many of them yours")
        if refused is not None:
            refused.set_exception(self._busy("full", "other tenants' turns are waiting, fewer than yours"))
        TURNS_WAITING.set(len(self._waiting))
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.settings.max_wait_s):  # not wait_for: 3.11 can swallow a cancel
                await asyncio.shield(waiter)
        except TimeoutError:
            if waiter.done() and waiter.exception() is None:  # let in as the wait ran out
                return Admitted(self)
            self._waiting.remove(tenant, waiter)
            raise self._busy("max_wait", f"it waited {self.settings.max_wait_s:g} s for its turn") from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(None)  # let in, but the request is gone: the slot goes to the next
            else:
                self._waiting.remove(tenant, waiter)
            raise
        finally:
            TURN_WAIT.observe(time.monotonic() - started)
            TURNS_WAITING.set(len(self._waiting))
        return Admitted(self)

    def release(self, lcp_seconds: float | None) -> None:
        """A turn ended (`lcp_seconds`: lcp's part of it, None when it failed or never ran): its slot goes
        to the turn whose turn it is."""
        self.in_flight -= 1
        if lcp_seconds is not None:
            TURN_LCP_SECONDS.observe(lcp_seconds)
            self.limit.observe(lcp_seconds, time.monotonic(), self.in_flight)
            TURN_LIMIT.set(self.limit.limit)
        while self._waiting and self.in_flight < self.limit.allowed:
            self._enter()
            self._waiting.pop().set_result(None)
        TURNS_IN_FLIGHT.set(self.in_flight)
        TURNS_WAITING.set(len(self._waiting))

    def _enter(self) -> None:
        self.in_flight += 1
        TURNS_IN_FLIGHT.set(self.in_flight)

    def _busy(self, reason: str, why: str) -> ApiError:
        TURNS_REFUSED.labels(reason).inc()
        return ApiError(
            503,
            "ConversationsBusy",
            f"durable turns are queueing in lcp and this one was not sent ({why}); "
            f"retry in {RETRY_AFTER_S} s",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )


def reply_model_seconds(result: Any) -> float:
    """How long a turn's reply took its model (its latency_ms), 0 for changes without a reply."""
    latency_ms = getattr(getattr(result, "reply", None), "latency_ms", None)
    return latency_ms / 1000 if isinstance(latency_ms, int | float) and math.isfinite(latency_ms) else 0.0
