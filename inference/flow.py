"""The gateway's flow control: a request that finds the deployments it could go to saturated (policies/
picker.py FlowControl: a long prefill queue) is held here instead of piled onto a replica's queue, and
sent to the first deployment that frees up, the tenants in turn (policies/fair_queue.py). Bounded: at
most `max_held` requests per model version (past that a 503 with Retry-After) and `max_wait_s` each
(then it is sent to the best deployment anyway), always within the request's own deadline.

A deployment frees up when one of lcp's calls to it gets its first token or ends, or when a reading of
its /metrics shows its queue shorter (the fleet tells the gate: Fleet.watch). A request held for one
deployment (with cache_aware: the one where it delays first tokens least) does not keep those after it
from going to another that has room."""

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from prometheus_client import Counter, Gauge, Histogram

from inference.fleet import Fleet, Replica
from policies.fair_queue import FairQueue
from policies.models import ModelRoute
from policies.picker import NoDeployment, Request, Unavailable

REFUSED_RETRY_AFTER = timedelta(seconds=1)
MAX_TRIED = 16  # held requests tried per release (each a pick over the deployments): bounds its work
ANY_TENANT = ""  # the lane of requests whose tenant the gateway is not told

HELD_REQUESTS = Gauge(
    "lcp_gateway_held_requests",
    "Requests the gateway holds now because every deployment of their model version is saturated",
    ["model", "version"],
)
HOLD_SECONDS = Histogram(
    "lcp_gateway_hold_seconds",
    "How long held requests waited in the gateway before they were sent (or gave up), by model and version",
    ["model", "version"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 20, 30, 60),
)
HOLD_OUTCOMES = Counter(
    "lcp_gateway_held_total",
    "Requests the gateway held, by how the hold ended: sent (a deployment freed up), max_wait (sent "
    "anyway after the model's max_wait_s), unavailable (no deployment ready: every one cooling down or "
    "draining), refused (the hold queue was full: 503), cancelled",
    ["model", "version", "outcome"],
)

Placed = tuple[Replica, float] | NoDeployment | None  # Fleet.place's answer


@dataclass(eq=False)
class _Held:
    route: ModelRoute
    request: Request
    blocks: Sequence[int]
    exclude: set[str]
    tenant: str
    placed: asyncio.Future[Placed] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Saturated(Exception):
    """The hold queue is full: the request is refused (the gateway answers 503 with Retry-After)."""


class FlowGate:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._held: dict[tuple[str, str], FairQueue[_Held]] = {}  # by (model, version)
        self._next_try: dict[tuple[str, str], int] = {}  # where a release starts trying, in turn order
        fleet.watch(self.release)

    def held(self, route: ModelRoute) -> int:
        queue = self._held.get((route.name, route.version))
        return len(queue) if queue else 0

    async def place(
        self,
        route: ModelRoute,
        request: Request,
        blocks: Sequence[int],
        exclude: set[str],
        tenant: str | None,
        deadline: float,
    ) -> Placed:
        """A deployment for the request with its call started (Fleet.place), why none can take it, or None
        (every one tried): at once when its model has no flow control or a deployment has room and nobody
        is held before it; else once it is its turn and a deployment frees up (or it waited `max_wait_s`).
        Raises Saturated when the model's hold queue is full."""
        flow = route.routing.flow_control
        if flow is None:
            return self.fleet.place(route, request, blocks, exclude)
        key = (route.name, route.version)
        queue = self._held.setdefault(key, FairQueue(flow.max_held))
        if not queue:
            placed = self.fleet.place(route, request, blocks, exclude, flow)
            if not (isinstance(placed, NoDeployment) and placed.reason is Unavailable.SATURATED):
                return placed
        waiter = _Held(route, request, blocks, exclude, tenant or ANY_TENANT)
        refused = queue.add(waiter.tenant, waiter)
        if refused is waiter:
            HOLD_OUTCOMES.labels(route.name, route.version, "refused").inc()
            raise Saturated(f"{route.name}: every deployment is saturated and {len(queue)} requests are held")
        if refused is not None:
            HOLD_OUTCOMES.labels(route.name, route.version, "refused").inc()
            refused.placed.set_exception(
                Saturated(f"{route.name}: every deployment is saturated and other tenants' requests are held")
            )
        HELD_REQUESTS.labels(route.name, route.version).set(len(queue))
        self.release()  # someone ahead of it may have been waiting for a replica that has room now
        started = time.monotonic()
        outcome: str | None = "cancelled"  # None: counted already (refused to make room for another tenant)
        try:
            wait_s = max(0.0, min(flow.max_wait_s, deadline - started))
            try:
                async with asyncio.timeout(wait_s):  # not wait_for: on 3.11 it can swallow a cancellation
                    placed = await asyncio.shield(waiter.placed)
                outcome = "unavailable" if isinstance(placed, NoDeployment) else "sent"
                return placed
            except TimeoutError:
                if waiter.placed.done():  # placed as the wait ran out
                    outcome = "sent"
                    return waiter.placed.result()
                queue.remove(waiter.tenant, waiter)
                outcome = "max_wait"
                return self.fleet.place(route, request, blocks, exclude)
        except asyncio.CancelledError:
            if waiter.placed.done() and not waiter.placed.cancelled() and waiter.placed.exception() is None:
                placed = waiter.placed.result()
                if isinstance(placed, tuple):
                    self.fleet.abandoned(*placed)
            else:
                queue.remove(waiter.tenant, waiter)
            raise
        except Saturated:
            outcome = None
            raise
        finally:
            if outcome is not None:
                HOLD_OUTCOMES.labels(route.name, route.version, outcome).inc()
            HOLD_SECONDS.labels(route.name, route.version).observe(time.monotonic() - started)
            HELD_REQUESTS.labels(route.name, route.version).set(len(queue))

    def release(self) -> None:
        """Send the held requests that can go now, in turn: one held for a deployment that is still
        saturated (cache_aware holds a request for its prefix holder) lets those after it go to others,
        and keeps its place. A release tries at most MAX_TRIED held requests, starting after those the
        last one found still waiting, so that each is tried in its turn; none once no deployment has room.
        When no deployment is ready at all (every one cooling down or draining), every held request gets
        that answer at once, as a request that was never held would (the gateway waits for the first to
        come back, or refuses)."""
        for key, queue in self._held.items():
            head = queue.peek()
            flow = head.route.routing.flow_control if head is not None else None
            if head is None or flow is None:
                self._next_try.pop(key, None)
                continue
            why = self.fleet.no_room(head.route, flow)
            if why is not None:
                if _not_worth_holding(why):
                    for tenant, waiter in queue.in_turn():
                        queue.take(tenant, waiter)
                        waiter.placed.set_result(why)
                    HELD_REQUESTS.labels(*key).set(0)
                continue
            order = queue.in_turn()
            start = self._next_try.get(key, 0) % len(order)
            waiting, sent = 0, False
            for tenant, waiter in (order[start:] + order[:start])[:MAX_TRIED]:
                if self.fleet.no_room(waiter.route, flow) is not None:
                    break
                placed = self.fleet.place(waiter.route, waiter.request, waiter.blocks, waiter.exclude, flow)
                if isinstance(placed, NoDeployment) and placed.reason is Unavailable.SATURATED:
                    waiting += 1
                    continue
                queue.take(tenant, waiter)
                waiter.placed.set_result(placed)
                sent = True
            self._next_try[key] = start + waiting
            if sent:
                HELD_REQUESTS.labels(*key).set(len(queue))


def _not_worth_holding(why: NoDeployment) -> bool:
    """No deployment is ready and none will be because one frees up: all are draining, or cooling down
    (rather than full: a full one takes the next request once a call of its own ends)."""
    return why.reason is Unavailable.DRAINING or (
        why.reason is Unavailable.COOLING_DOWN and why.retry_at is not None
    )
