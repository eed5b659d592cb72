"""Durable turns an API process lets into Temporal at once (policies/concurrency.py's adaptive limit); the
others wait here, a free slot going to the waiting tenant holding the fewest (the tenants in turn among
equals: policies/fair_queue.py), so a tenant's burst of turns waits behind itself instead of in front of
other tenants' turns (40 at once from one tenant made another's turns take 11 to 21 times as long: `lcp
bench neighbours`). A tenant with no turn in flight is let in even past the limit: a turn holds its slot
through its model's reply, so a tenant with slow turns in every slot would otherwise keep the others out
for as long. Bounded: at most `max_waiting` turns wait in a process (past
that, the tenant holding the most gives up its newest) and each at most `max_wait_s`; a turn refused is a
503 with Retry-After that reached no workflow, so a retry loses and duplicates nothing."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
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
    "lcp's own part of each durable turn that ended (its time in the API, Temporal and the worker; the "
    "model's, and waiting for the conversation's turn before it, left out): what the limit keeps near "
    "LCP_CONVERSATION__ADMISSION__TARGET_S",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2, 5, 10),
)
TURNS_REFUSED = Counter(
    "lcp_api_turns_refused_total",
    "Durable turns the API refused with 503 before sending them: full (too many waiting, the newest of "
    "the tenant with the most gave way) or max_wait (waited max_wait_s)",
    ["reason"],
)


def _waited_s(result: Any) -> float | None:
    """A TurnResult's waited_ms in seconds: from its update's arrival to its model's reply."""
    waited_ms = getattr(result, "waited_ms", None)
    return waited_ms / 1000 if isinstance(waited_ms, int | float) else None


@dataclass(eq=False)
class _Waiter:
    tenant: str
    let_in: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Admitted:
    """A turn let in: `follow` its outcome so its slot is given back when it ends (which may be after the
    request that sent it ended: the turn goes on in its workflow), with lcp's part of it for the limit."""

    def __init__(self, gate: "TurnGate | None", tenant: str) -> None:
        self._gate, self._tenant = gate, tenant
        self._started = gate.clock() if gate else 0.0

    def follow(self, turn: "asyncio.Future[Any]", *, counted: bool = True) -> None:
        """`counted=False`: the turn's time teaches the limit nothing (a keyed repeat answered before)."""
        gate, tenant, started = self._gate, self._tenant, self._started
        if gate is None:
            return
        self._gate = None  # the turn gives the slot back now, not give_back

        def ended(done: "asyncio.Future[Any]") -> None:
            lcp_s: float | None = None
            if counted and not done.cancelled() and done.exception() is None:
                waited_s = _waited_s(done.result())
                if waited_s is not None and (mine := gate.clock() - started - waited_s) >= 0:
                    lcp_s = mine  # less than nothing: a result answered before (a repeat), no sample
            gate.release(tenant, lcp_s, started)

        turn.add_done_callback(ended)

    def give_back(self) -> None:
        """The turn was never sent (its call failed before Temporal took it); nothing once followed."""
        if self._gate is not None:
            self._gate.release(self._tenant, None, self._started)
            self._gate = None


class TurnGate:
    def __init__(self, settings: TurnAdmissionSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings, self.clock = settings, clock
        self.limit = AdaptiveLimit(
            settings.target_s,
            float(settings.initial_limit),
            minimum=settings.min_limit,
            maximum=settings.max_limit,
        )
        self._waiting: FairQueue[_Waiter] = FairQueue(settings.max_waiting)
        self._held: dict[str, int] = {}  # turns in flight by tenant
        self.in_flight = 0
        TURN_LIMIT.set(self.limit.limit)
        TURNS_IN_FLIGHT.set(0)
        TURNS_WAITING.set(0)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def held_by(self, tenant: str) -> int:
        return self._held.get(tenant, 0)

    @contextlib.asynccontextmanager
    async def slot(self, tenant: str) -> AsyncIterator[Admitted]:
        """A slot for one turn of `tenant`, given back on the way out unless the turn was followed."""
        admitted = await self.admit(tenant)
        try:
            yield admitted
        finally:
            admitted.give_back()

    async def admit(self, tenant: str) -> Admitted:
        """Let the tenant's turn in now or once it is its turn; a 503 when it cannot wait."""
        if not self.settings.enabled:
            return Admitted(None, tenant)
        if not self.held_by(tenant) or (self.in_flight < self.limit.allowed and not self._waiting):
            self._enter(tenant)
            return Admitted(self, tenant)
        waiter = _Waiter(tenant)
        refused = self._waiting.add(tenant, waiter)
        if refused is waiter:
            raise self._busy("full", f"{len(self._waiting)} turns are waiting, as many of them yours")
        if refused is not None:
            refused.let_in.set_exception(
                self._busy("full", "other tenants' turns are waiting, fewer than yours")
            )
        TURNS_WAITING.set(len(self._waiting))
        started = self.clock()
        try:
            async with asyncio.timeout(self.settings.max_wait_s):  # not wait_for: 3.11 can swallow a cancel
                await asyncio.shield(waiter.let_in)
        except TimeoutError:
            if waiter.let_in.done():  # let in, or refused to make room, as the wait ran out
                if (refusal := waiter.let_in.exception()) is not None:
                    raise refusal from None
                return Admitted(self, tenant)
            self._waiting.remove(tenant, waiter)
            raise self._busy("max_wait", f"it waited {self.settings.max_wait_s:g} s for its turn") from None
        except asyncio.CancelledError:
            if waiter.let_in.done() and not waiter.let_in.cancelled() and waiter.let_in.exception() is None:
                self.release(tenant, None, started)  # let in, but the request is gone: the slot goes on
            else:
                self._waiting.remove(tenant, waiter)
            raise
        finally:
            TURN_WAIT.observe(self.clock() - started)
            TURNS_WAITING.set(len(self._waiting))
        return Admitted(self, tenant)

    def release(self, tenant: str, lcp_s: float | None, admitted_at: float) -> None:
        """A turn of `tenant` let in at `admitted_at` ended (`lcp_s`: lcp's part of it, None when it failed,
        never ran or was no turn): its slot goes to the turn whose turn it is."""
        self.in_flight -= 1
        if held := self.held_by(tenant) - 1:
            self._held[tenant] = held
        else:
            self._held.pop(tenant, None)
            if (oldest := self._waiting.oldest_of(tenant)) is not None:  # it holds none now: in at once
                self._waiting.take(tenant, oldest)
                self._let_in(oldest)
        if lcp_s is not None:
            TURN_LCP_SECONDS.observe(lcp_s)
            self.limit.observe(lcp_s, admitted_at, self.clock(), self.in_flight, tenant)
            TURN_LIMIT.set(self.limit.limit)
        while self._waiting and self.in_flight < self.limit.allowed:
            # To the waiting tenant holding the fewest, the tenants in turn among equals: a tenant whose
            # turns run for minutes must not keep most slots by taking every other free one.
            fewest = min(self._waiting.tenants(), key=self.held_by)
            oldest = self._waiting.oldest_of(fewest)
            assert oldest is not None
            self._waiting.take(fewest, oldest)
            self._let_in(oldest)
        TURNS_IN_FLIGHT.set(self.in_flight)
        TURNS_WAITING.set(len(self._waiting))

    def _let_in(self, waiter: _Waiter) -> None:
        self._enter(waiter.tenant)
        waiter.let_in.set_result(None)

    def _enter(self, tenant: str) -> None:
        self.in_flight += 1
        self._held[tenant] = self.held_by(tenant) + 1
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
