"""The gateway's view of the inference fleet: each model version's deployments, their health, their
load as last read from their vLLM /metrics plus lcp's own calls since, and which prompt prefixes were
routed where. One per process (API or worker); the picker (policies/picker.py) decides from it."""

import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Gauge

from policies.cooldown import Failure, Health, record_failure, record_success
from policies.models import Deployment, ModelRoute
from policies.picker import (
    Candidate,
    FlowControl,
    NoDeployment,
    PrefixIndex,
    Request,
    Strategy,
    Unavailable,
    eligible,
    pick,
    pick_or_hold,
    saturated,
    uncached,
)

# About what one simulated H200 replica caches (~700k tokens) in blocks of 256 characters (~64 tokens): the
# index should not expect a replica to hold more than it can; small in memory (an int per block).
PREFIX_INDEX_BLOCKS = 16_384
RECENT_CALLS = 100  # calls per deployment kept for its recent latency and error count
STATES = ("healthy", "cooling_down", "draining")

DEPLOYMENT_STATE = Gauge(
    "lcp_gateway_deployment_state",
    "1 for the state each deployment of a model version is in (healthy, cooling_down, draining), else 0",
    ["model", "version", "deployment", "state"],
)


@dataclass
class Replica:
    """A deployment and what the gateway knows of it."""

    deployment: Deployment
    health: Health = field(default_factory=Health)
    draining: bool = False
    in_flight: int = 0
    pending_prefill: float = 0.0  # prompt tokens of lcp's calls to it that have no first token yet
    in_flight_at_read: int = 0
    read_at: float | None = None  # when its /metrics were last read (monotonic), None: never
    waiting: float = 0.0
    running: float = 0.0
    kv_cache_usage: float = 0.0
    prefix_queries: float = 0.0  # vLLM's counters, as last read
    prefix_hits: float = 0.0
    # (when, ok, seconds) of its recent calls
    recent: deque[tuple[float, bool, float]] = field(default_factory=lambda: deque(maxlen=RECENT_CALLS))

    def candidate(self, request: Request, held_blocks: int) -> Candidate:
        d = self.deployment
        return Candidate(
            id=d.id,
            weight=d.weight,
            max_in_flight=d.max_in_flight,
            context_window=d.context_window,
            labels=dict(d.labels),
            draining=self.draining,
            cooling_until=self.health.cooling_until,
            in_flight=self.in_flight,
            in_flight_at_read=self.in_flight_at_read,
            waiting=self.waiting,
            running=self.running,
            kv_cache_usage=self.kv_cache_usage,
            prefix_blocks_held=held_blocks,
            pending_prefill_tokens=self.pending_prefill,
        )

    def state(self, now: float) -> str:
        if self.draining:
            return "draining"
        return "cooling_down" if self.health.cooling(now) else "healthy"


class _Group:
    """The deployments of one model version."""

    def __init__(self) -> None:
        self.replicas: dict[str, Replica] = {}
        self.prefixes = PrefixIndex(PREFIX_INDEX_BLOCKS)
        self.turn = 0  # round-robin's


class Fleet:
    """Every model version's deployments: from the policy file, or as discovery last saw them."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None
    ) -> None:
        self.clock = clock
        self._rng = rng or random.Random()
        self._groups: dict[tuple[str, str], _Group] = {}
        self._discovered: dict[str, tuple[Deployment, ...]] = {}  # by model name
        self._watchers: list[Callable[[], None]] = []

    def watch(self, changed: Callable[[], None]) -> None:
        """Call `changed` whenever a deployment may have room again: a call's first token or end, a
        reading of its /metrics (the gateway's flow control sends the requests it holds then)."""
        self._watchers.append(changed)

    def _changed(self) -> None:
        for changed in self._watchers:
            changed()

    def discovered(self, model: str, deployments: Sequence[Deployment]) -> None:
        """Discovery saw these ready deployments of `model` (every version that discovers them)."""
        self._discovered[model] = tuple(deployments)

    def replicas(self, route: ModelRoute) -> list[Replica]:
        """The route's deployments now, with what is known of each (a deployment that left is forgotten)."""
        group = self._groups.setdefault((route.name, route.version), _Group())
        if route.discovery is not None:
            listed = [_as_version(d, route) for d in self._discovered.get(route.name, ())] or list(
                route.listed_deployments()
            )
        else:
            listed = list(route.listed_deployments())
        current = {d.id for d in listed}
        for gone in [id_ for id_ in group.replicas if id_ not in current]:
            del group.replicas[gone]
            group.prefixes.forget(gone)
            for state in STATES:
                DEPLOYMENT_STATE.remove(route.name, route.version, gone, state)
        for d in listed:
            replica = group.replicas.get(d.id)
            if replica is None:
                group.replicas[d.id] = Replica(d)
            elif replica.deployment != d:
                replica.deployment = d
        return [group.replicas[d.id] for d in listed]

    def choose(
        self,
        route: ModelRoute,
        request: Request,
        blocks: Sequence[int],
        exclude: set[str] | frozenset[str] = frozenset(),
        flow: FlowControl | None = None,
    ) -> Replica | NoDeployment | None:
        """The replica that serves this request, why none can now, or None: every one is in `exclude`
        (tried already for this request). With `flow`, SATURATED when the gateway should hold the
        request (policies/picker.py pick_or_hold)."""
        group = self._groups.setdefault((route.name, route.version), _Group())
        replicas = [r for r in self.replicas(route) if r.deployment.id not in exclude]
        if not replicas:
            return None
        by_id = {r.deployment.id: r for r in replicas}
        candidates = [r.candidate(request, group.prefixes.held(r.deployment.id, blocks)) for r in replicas]
        ready = eligible(candidates, request, self.clock())
        if isinstance(ready, NoDeployment):
            return ready
        strategy, weights = route.routing.strategy, route.routing.scorer_weights
        if flow is None:
            chosen = pick(strategy, ready, request, self._rng, group.turn, weights)
        else:
            placed = pick_or_hold(strategy, ready, request, self._rng, flow, group.turn, weights)
            if isinstance(placed, NoDeployment):
                return placed
            chosen = placed
        if strategy is Strategy.ROUND_ROBIN:
            group.turn += 1
        return by_id[chosen.id]

    def no_room(self, route: ModelRoute, flow: FlowControl) -> NoDeployment | None:
        """None when some deployment of the route could take a request now without being saturated; else
        why none can (SATURATED, or why none is ready: cooling down, full, draining)."""
        nothing = Request(prompt_tokens=0)
        ready = eligible([r.candidate(nothing, 0) for r in self.replicas(route)], nothing, self.clock())
        if isinstance(ready, NoDeployment):
            return ready
        return None if any(not saturated(c, flow) for c in ready) else NoDeployment(Unavailable.SATURATED)

    def started(self, route: ModelRoute, replica: Replica, request: Request, blocks: Sequence[int]) -> float:
        """A call to `replica` starts; returns the prompt tokens it is expected to prefill (the part of the
        prompt it does not hold), counted as pending until `answering`."""
        group = self._groups[(route.name, route.version)]
        candidate = replica.candidate(request, group.prefixes.held(replica.deployment.id, blocks))
        prefill = uncached(candidate, request, route.routing.scorer_weights)
        replica.in_flight += 1
        replica.pending_prefill += prefill
        group.prefixes.routed(replica.deployment.id, blocks)
        return prefill

    def place(
        self,
        route: ModelRoute,
        request: Request,
        blocks: Sequence[int],
        exclude: set[str] | frozenset[str] = frozenset(),
        flow: FlowControl | None = None,
    ) -> tuple[Replica, float] | NoDeployment | None:
        """`choose`, and when a replica is chosen, the call to it `started` at once: (the replica, the
        prompt tokens it is expected to prefill)."""
        choice = self.choose(route, request, blocks, exclude, flow)
        if not isinstance(choice, Replica):
            return choice
        return choice, self.started(route, choice, request, blocks)

    def abandoned(self, replica: Replica, prefill: float) -> None:
        """A call placed on `replica` is not made after all (its request went away before it was sent)."""
        replica.in_flight = max(0, replica.in_flight - 1)
        self.answering(replica, prefill)

    def answering(self, replica: Replica, prefill: float) -> None:
        """A call's first token came (or the call ended): its prompt is no longer waiting to be prefilled."""
        replica.pending_prefill = max(0.0, replica.pending_prefill - prefill)
        self._changed()

    def finished(self, route: ModelRoute, replica: Replica, failure: Failure | None, seconds: float) -> None:
        """A call to `replica` ended: well (None), or with `failure`, which may cool it down. A group of
        one never cools down (as LiteLLM): there is nowhere else to send its requests."""
        replica.in_flight = max(0, replica.in_flight - 1)
        now = self.clock()
        replica.recent.append((now, failure is None, seconds))
        if failure is None:
            replica.health = record_success(replica.health)
        elif len(self._groups[(route.name, route.version)].replicas) > 1:
            replica.health = record_failure(replica.health, failure, now, route.routing.cooldown)
        self.show(route)
        self._changed()

    def read(self, replica: Replica, values: dict[str, float]) -> None:
        """A reading of the replica's /metrics (vLLM's names, summed over its models)."""
        replica.read_at = self.clock()
        replica.in_flight_at_read = replica.in_flight
        replica.waiting = values.get("vllm:num_requests_waiting", 0.0)
        replica.running = values.get("vllm:num_requests_running", 0.0)
        replica.kv_cache_usage = values.get(
            "vllm:kv_cache_usage_perc", values.get("vllm:gpu_cache_usage_perc", 0.0)
        )
        replica.prefix_queries = values.get("vllm:prefix_cache_queries_total", 0.0)
        replica.prefix_hits = values.get("vllm:prefix_cache_hits_total", 0.0)
        self._changed()

    def show(self, route: ModelRoute) -> None:
        """Set lcp_gateway_deployment_state for the route's deployments."""
        now = self.clock()
        for replica in self._groups[(route.name, route.version)].replicas.values():
            current = replica.state(now)
            for state in STATES:
                DEPLOYMENT_STATE.labels(route.name, route.version, replica.deployment.id, state).set(
                    1 if state == current else 0
                )

    def status(self, route: ModelRoute) -> list[dict[str, Any]]:
        """Each deployment's state as an admin sees it."""
        now = self.clock()
        rows = []
        for replica in self.replicas(route):
            calls = list(replica.recent)
            latencies = sorted(s for _, ok, s in calls if ok)
            cooling = replica.health.cooling(now)
            rows.append(
                {
                    "deployment": replica.deployment.id,
                    "base_url": replica.deployment.base_url,
                    "version": route.version,
                    "state": replica.state(now),
                    "cooling_down_for_s": round(replica.health.cooling_until - now, 1)
                    if cooling and replica.health.cooling_until is not None
                    else None,
                    "cooling_down_because": replica.health.reason if cooling else None,
                    "in_flight": replica.in_flight,
                    "waiting": replica.waiting,
                    "running": replica.running,
                    "kv_cache_usage": replica.kv_cache_usage,
                    "prefix_cache_hit_rate": replica.prefix_hits / replica.prefix_queries
                    if replica.prefix_queries
                    else None,
                    "metrics_read_s_ago": round(now - replica.read_at, 1)
                    if replica.read_at is not None
                    else None,
                    "recent_calls": len(calls),
                    "recent_errors": sum(1 for _, ok, _ in calls if not ok),
                    "recent_latency_p50_s": round(latencies[len(latencies) // 2], 3) if latencies else None,
                    "labels": dict(replica.deployment.labels),
                }
            )
        return rows


def _as_version(deployment: Deployment, route: ModelRoute) -> Deployment:
    """A discovered endpoint as a deployment of `route`: its upstream model and key."""
    return Deployment(
        deployment.id,
        deployment.base_url,
        route.upstream_model,
        route.api_key,
        deployment.weight,
        deployment.max_in_flight,
        deployment.context_window,
        deployment.labels,
    )
