"""Workload simulator: lab traffic split across a service's versions, with outcomes, latency and metrics.

No request is ever sent: each tick draws how many requests each version got, with which status codes
and latencies, and adds them to Prometheus counters and histograms, so that PromQL over the lab sees a
service under load (canary analysis, forecasting, chaos steady-state probes).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lab.traces import Constant, Replay, TrafficSource
from policies.errors import PermanentError

logger = logging.getLogger(__name__)

VERSION_LABEL = "lcp.dev/version"
NO_VERSION = "none"  # version label of requests no version could take: nothing ready and no router weights
CODES = ("200", "500", "503")
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2.5, 5, 7.5, 10)
REJECT_LATENCY_S = 0.001  # a 503 for want of capacity or endpoints is answered at once, by the proxy
MAX_UTILIZATION = 0.95  # admitted requests queue as if utilisation were at most this (a bounded queue)
MAX_LATENCY_SAMPLES = 1000  # latencies drawn per version per tick; beyond that, each draw stands for several
MAX_STEP_S = 5.0  # after a stall (a suspended machine, a debugger) the loop simulates at most this much


# ---- the cluster, as the workload sees it ---------------------------------------------------------------


@dataclass(frozen=True)
class VersionState:
    """One Deployment behind a service: its version, name and ready replicas."""

    name: str  # the version: label lcp.dev/version, else the Deployment's name
    deployment: str
    ready_replicas: int


class ClusterView(Protocol):
    """How the workload reads the cluster; awaited for every service on every tick.

    `versions(namespace, service)`: one VersionState per Deployment in `namespace` that backs the Service
    `service`, i.e. whose pod template labels match the Service's spec.selector. name = the pod template's
    label `lcp.dev/version` (else the Deployment's metadata label, else the Deployment's name); deployment =
    metadata.name; ready_replicas = status.readyReplicas (0 when absent). [] when there is no such Service
    or Deployment. Several Deployments may share a version: their ready replicas add up.

    `weights(namespace, service)`: traffic weights set by a router object, or None when none applies (then
    traffic follows ready replicas, as a plain Service's endpoints do). Keys are version names; a key equal
    to a Deployment's name is also accepted and means that Deployment's version. The adapter returns:
    - Istio: for the VirtualService in `namespace` whose spec.hosts holds `service` (short name or
      `service.namespace.svc.cluster.local`), its first spec.http route: {destination.subset: weight};
      a destination without weight counts 100 when it is the only one, else 0. A route without subsets
      means no split: return None.
    - Gateway API (when no VirtualService applies): for the HTTPRoute in `namespace` whose first rule's
      backendRefs name Deployments of this service (one Service per version, named like its Deployment),
      {backendRef.name: weight}, weight 1 when absent.
    Weights need not sum to 100; only their ratios count. A key that matches no version keeps its share
    and fails it with 503, as a route to a subset without endpoints does. All weights 0: everything fails.

    Both are async so that an adapter over a blocking client (the kubernetes package) can run it in a
    thread (asyncio.to_thread) instead of blocking the loop, which may also serve the lab's API emulator.
    An exception is logged, and the workload keeps using the last answer it had.
    """

    async def versions(self, namespace: str, service: str) -> list[VersionState]: ...

    async def weights(self, namespace: str, service: str) -> dict[str, float] | None: ...


class InMemoryCluster:
    """A ClusterView kept in memory, for tests and for demos without a cluster."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], list[VersionState]] = {}
        self._weights: dict[tuple[str, str], dict[str, float]] = {}
        self.error: Exception | None = None  # raised by every call while set: an unreachable cluster

    def set_versions(self, namespace: str, service: str, versions: Iterable[VersionState]) -> None:
        self._versions[namespace, service] = list(versions)

    def set_ready(self, namespace: str, service: str, deployment: str, ready_replicas: int) -> None:
        """Change the ready replicas of one Deployment already set with set_versions."""
        current = self._versions[namespace, service]
        if not any(v.deployment == deployment for v in current):
            raise KeyError(f"no Deployment {deployment!r} behind {namespace}/{service}")
        self._versions[namespace, service] = [
            replace(v, ready_replicas=ready_replicas) if v.deployment == deployment else v for v in current
        ]

    def set_weights(self, namespace: str, service: str, weights: Mapping[str, float] | None) -> None:
        if weights is None:
            self._weights.pop((namespace, service), None)
        else:
            self._weights[namespace, service] = dict(weights)

    async def versions(self, namespace: str, service: str) -> list[VersionState]:
        if self.error is not None:
            raise self.error
        return list(self._versions.get((namespace, service), []))

    async def weights(self, namespace: str, service: str) -> dict[str, float] | None:
        if self.error is not None:
            raise self.error
        found = self._weights.get((namespace, service))
        return None if found is None else dict(found)


# ---- configuration ------------------------------------------------------------------------------------


class Fault(BaseModel):
    """Faults injected into one version of a service; the defaults mean no fault."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    error_share: float = Field(default=0.0, ge=0, le=1, description="share of served requests answered 500")
    added_latency_ms: float = Field(default=0.0, ge=0, le=60_000, description="added to every served request")
    cpu_saturation: float = Field(
        default=1.0, ge=1, le=100, description="multiplies service time, so divides capacity per replica"
    )


NO_FAULT = Fault()


@dataclass(frozen=True)
class ServiceSpec:
    """A service to simulate: where its traffic comes from and how fast one replica serves it."""

    namespace: str
    service: str
    source: TrafficSource
    capacity_per_replica_rps: float = 50.0  # requests per second one replica serves before saturating
    base_latency_ms: float = 50.0  # median service time of a request on an idle replica
    latency_sigma: float = 0.4  # spread of the lognormal service time (the sigma of its logarithm)

    def __post_init__(self) -> None:
        if not self.namespace or not self.service:
            raise ValueError("namespace and service must not be empty")
        for name in ("capacity_per_replica_rps", "base_latency_ms"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value}")
        if not (math.isfinite(self.latency_sigma) and 0 <= self.latency_sigma <= 3):
            raise ValueError(f"latency_sigma must be between 0 and 3, got {self.latency_sigma}")


class UnknownService(PermanentError, LookupError):
    """The workload does not simulate this service."""


# ---- the model: pure functions -------------------------------------------------------------------------


def traffic_shares(versions: Sequence[VersionState], weights: Mapping[str, float] | None) -> dict[str, float]:
    """Share of a service's requests each version gets, summing to 1: by router weights when given, else
    by ready replicas. A weighted version with no ready replica keeps its share (and fails it with 503);
    when no version gets any share, all of it goes to NO_VERSION."""
    if weights is None:
        basis: dict[str, float] = {}
        for v in versions:
            basis[v.name] = basis.get(v.name, 0.0) + max(v.ready_replicas, 0)
    else:
        names = {v.name for v in versions}
        version_of = {v.deployment: v.name for v in versions}
        basis = {}
        for key, weight in weights.items():
            name = key if key in names else version_of.get(key, key)
            basis[name] = basis.get(name, 0.0) + max(weight, 0.0)
    total = sum(basis.values())
    if total <= 0:
        return {NO_VERSION: 1.0}
    return {name: share / total for name, share in basis.items() if share > 0}


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson-distributed count with this mean."""
    if mean <= 0:
        return 0
    if mean > 50:  # the normal approximation is close here, and costs the same at any mean
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def sample_latency_s(
    rng: random.Random, *, median_s: float, sigma: float, utilization: float, added_s: float = 0.0
) -> float:
    """One served request's latency: a lognormal service time, a queueing wait as in an M/M/1 queue at
    this per-replica utilisation (a request waits with probability rho, exponentially long with mean
    service time / (1 - rho)), and injected latency."""
    latency = added_s + rng.lognormvariate(math.log(median_s), sigma)
    rho = min(max(utilization, 0.0), MAX_UTILIZATION)
    if rho > 0 and rng.random() < rho:
        latency += rng.expovariate((1 - rho) / median_s)
    return latency


def latency_quantile_s(
    q: float, *, median_s: float, sigma: float, utilization: float, samples: int = 200_000, seed: int = 0
) -> float:
    """The latency model's `q`-quantile (no injected latency), from `samples` seeded draws: what a
    "+50% p99" fault must be sized against, since the queueing wait can double the tail's length."""
    rng = random.Random(seed)
    drawn = sorted(
        sample_latency_s(rng, median_s=median_s, sigma=sigma, utilization=utilization) for _ in range(samples)
    )
    return drawn[min(samples - 1, int(q * samples))]


# ---- state ----------------------------------------------------------------------------------------------


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))  # last: +Inf
    sum_s: float = 0.0

    def observe(self, latency_s: float, count: int = 1) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_S, latency_s)] += count
        self.sum_s += latency_s * count

    def cumulative(self) -> list[tuple[str, float]]:
        bounds = [*map(floatToGoString, LATENCY_BUCKETS_S), "+Inf"]
        running, out = 0, []
        for bound, count in zip(bounds, self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


@dataclass
class _Version:
    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CODES, 0))
    duration: _Histogram = field(default_factory=_Histogram)
    deployments: list[str] = field(default_factory=list)
    ready_replicas: int = 0
    share: float = 0.0
    offered_rps: float = 0.0
    utilization: float = 0.0


@dataclass
class _Service:
    spec: ServiceSpec
    elapsed_s: float = 0.0  # simulated seconds since the spec was set: the traffic source's clock
    offered_rps: float = 0.0
    cluster: list[VersionState] = field(default_factory=list)
    weights: dict[str, float] | None = None
    cluster_error: str | None = None
    faults: dict[str, Fault] = field(default_factory=dict)
    versions: dict[str, _Version] = field(default_factory=dict)  # every version seen: counters never reset

    def version(self, name: str) -> _Version:
        return self.versions.setdefault(name, _Version())


# ---- the simulator --------------------------------------------------------------------------------------


class Workload:
    """Simulated traffic to registered services, read through a ClusterView, exposed as metrics.

    Drive it with `await step(dt)` (deterministic for a given seed) or let `start()` tick it every
    `tick_s` seconds of wall-clock time until `stop()`.
    """

    def __init__(self, cluster: ClusterView, *, seed: int | None = None, tick_s: float = 0.5) -> None:
        if not (math.isfinite(tick_s) and tick_s > 0):
            raise ValueError(f"tick_s must be > 0, got {tick_s}")
        self.cluster = cluster
        self.tick_s = tick_s
        self.rng = random.Random(seed)
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        self._services: dict[tuple[str, str], _Service] = {}
        self._task: asyncio.Task[None] | None = None

    # -- services and faults

    def add_service(self, spec: ServiceSpec) -> None:
        """Simulate `spec`, or replace the spec of a service already simulated (its counters and faults
        stay; its traffic source starts again from t = 0)."""
        key = (spec.namespace, spec.service)
        if key in self._services:
            self._services[key].spec, self._services[key].elapsed_s = spec, 0.0
        else:
            self._services[key] = _Service(spec)
        logger.info(
            "workload simulator: simulating traffic to %s/%s: %s",
            spec.namespace,
            spec.service,
            spec.source.describe(),
        )

    def remove_service(self, namespace: str, service: str) -> bool:
        """Stop simulating a service, and drop its metrics; False if it was not simulated."""
        removed = self._services.pop((namespace, service), None) is not None
        if removed:
            logger.info("workload simulator: no longer simulating %s/%s", namespace, service)
        return removed

    def services(self) -> list[ServiceSpec]:
        return [s.spec for s in self._services.values()]

    def _service(self, namespace: str, service: str) -> _Service:
        found = self._services.get((namespace, service))
        if found is None:
            known = ", ".join(f"{ns}/{name}" for ns, name in self._services) or "none"
            raise UnknownService(
                f"the workload does not simulate {namespace}/{service}; it simulates: {known}"
            )
        return found

    def set_fault(self, namespace: str, service: str, version: str, fault: Fault) -> None:
        """Inject `fault` into one version (it need not exist yet), replacing any fault it had."""
        self._service(namespace, service).faults[version] = fault
        logger.warning(
            "workload simulator: simulated fault set on %s/%s version %s: %s",
            namespace,
            service,
            version,
            fault.model_dump(),
        )

    def clear_faults(
        self, namespace: str | None = None, service: str | None = None, version: str | None = None
    ) -> int:
        """Clear the faults that match (None matches everything); returns how many were cleared."""
        if service is not None and namespace is None:
            raise ValueError("give namespace with service")
        if version is not None and service is None:
            raise ValueError("give namespace and service with version")
        if service is not None and namespace is not None:
            self._service(namespace, service)
        cleared = 0
        for (ns, name), svc in self._services.items():
            if namespace not in (None, ns) or service not in (None, name):
                continue
            for v in [v for v in svc.faults if version in (None, v)]:
                del svc.faults[v]
                cleared += 1
        logger.warning(
            "workload simulator: %d simulated fault(s) cleared (namespace=%s service=%s version=%s)",
            cleared,
            namespace,
            service,
            version,
        )
        return cleared

    def faults(self) -> list[dict[str, object]]:
        return [
            {"namespace": ns, "service": name, "version": version, **fault.model_dump()}
            for (ns, name), svc in self._services.items()
            for version, fault in svc.faults.items()
        ]

    # -- simulation

    async def step(self, dt: float) -> None:
        """Advance every service by `dt` simulated seconds: read the cluster, then draw the requests."""
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be > 0, got {dt}")
        for svc in list(self._services.values()):
            await self._observe(svc)
            self._simulate(svc, dt)

    async def _observe(self, svc: _Service) -> None:
        ns, name = svc.spec.namespace, svc.spec.service
        try:
            versions = await self.cluster.versions(ns, name)
            weights = await self.cluster.weights(ns, name)
        except Exception as exc:
            if svc.cluster_error is None:
                logger.warning("workload simulator: cannot read %s/%s from the cluster: %r", ns, name, exc)
            svc.cluster_error = f"{type(exc).__name__}: {exc}"
            return
        if svc.cluster_error is not None:
            logger.info("workload simulator: reading %s/%s from the cluster again", ns, name)
        svc.cluster, svc.weights, svc.cluster_error = versions, weights, None

    def _simulate(self, svc: _Service, dt: float) -> None:
        spec = svc.spec
        rate = max(spec.source.rate_at(svc.elapsed_s + dt / 2), 0.0)
        svc.elapsed_s += dt
        svc.offered_rps = rate
        for state in svc.versions.values():
            state.ready_replicas, state.deployments = 0, []
            state.share = state.offered_rps = state.utilization = 0.0
        for v in svc.cluster:
            state = svc.version(v.name)
            state.ready_replicas += max(v.ready_replicas, 0)
            state.deployments.append(v.deployment)
        for name, share in traffic_shares(svc.cluster, svc.weights).items():
            state = svc.version(name)
            fault = NO_FAULT if name == NO_VERSION else svc.faults.get(name, NO_FAULT)
            offered = rate * share
            capacity = state.ready_replicas * spec.capacity_per_replica_rps / fault.cpu_saturation
            utilization = offered / capacity if capacity > 0 else 0.0
            state.share, state.offered_rps, state.utilization = share, offered, utilization
            if capacity <= 0:  # no ready replica: no endpoint to send to
                rejected = 1.0
            elif utilization > 1:  # the excess over capacity is turned away
                rejected = 1 - 1 / utilization
            else:
                rejected = 0.0
            # Arrivals are Poisson, so the counts of each outcome are independent Poisson draws.
            expected = offered * dt
            n503 = poisson(self.rng, expected * rejected)
            n500 = poisson(self.rng, expected * (1 - rejected) * fault.error_share)
            n200 = poisson(self.rng, expected * (1 - rejected) * (1 - fault.error_share))
            for code, n in (("200", n200), ("500", n500), ("503", n503)):
                state.requests[code] += n
            self._record_latencies(state, n200 + n500, spec, fault, utilization)
            if n503:
                state.duration.observe(REJECT_LATENCY_S, n503)

    def _record_latencies(
        self, state: _Version, served: int, spec: ServiceSpec, fault: Fault, utilization: float
    ) -> None:
        draws = min(served, MAX_LATENCY_SAMPLES)
        for i in range(draws):
            latency = sample_latency_s(
                self.rng,
                median_s=spec.base_latency_ms / 1000 * fault.cpu_saturation,
                sigma=spec.latency_sigma,
                utilization=utilization,
                added_s=fault.added_latency_ms / 1000,
            )
            state.duration.observe(latency, served // draws + (1 if i < served % draws else 0))

    # -- the loop

    async def run(self) -> None:
        """Tick every `tick_s` seconds of wall-clock time until cancelled."""
        logger.warning(
            "workload simulator running: simulated traffic (no real requests), a tick every %.2f s",
            self.tick_s,
        )
        last = time.monotonic()
        try:
            while True:
                await asyncio.sleep(self.tick_s)
                now = time.monotonic()
                try:
                    await self.step(min(now - last, MAX_STEP_S))
                except Exception:
                    logger.exception("workload simulator: a tick failed; carrying on")
                last = now
        finally:
            logger.info("workload simulator stopped")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Run the loop as a task of the running event loop (no-op if it is running already)."""
        if not self.running:
            self._task = asyncio.create_task(self.run(), name="lab-workload")

    async def stop(self) -> None:
        """Cancel the loop and wait for it to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    # -- reading it

    def status(self) -> dict[str, object]:
        return {
            "simulated": True,
            "running": self.running,
            "tick_s": self.tick_s,
            "services": [_service_status(svc) for svc in self._services.values()],
        }

    def service_status(self, namespace: str, service: str) -> dict[str, object]:
        return _service_status(self._service(namespace, service))

    def metrics_text(self) -> bytes:
        return generate_latest(self.registry)

    def _iter_versions(self) -> Iterator[tuple[ServiceSpec, str, _Version]]:
        for svc in self._services.values():
            for name, state in svc.versions.items():
                yield svc.spec, name, state


def _service_status(svc: _Service) -> dict[str, object]:
    spec = svc.spec
    return {
        "namespace": spec.namespace,
        "service": spec.service,
        "source": spec.source.describe(),
        "elapsed_s": svc.elapsed_s,
        "offered_rps": svc.offered_rps,
        "capacity_per_replica_rps": spec.capacity_per_replica_rps,
        "base_latency_ms": spec.base_latency_ms,
        "latency_sigma": spec.latency_sigma,
        "weights": svc.weights,
        "cluster_error": svc.cluster_error,
        "faults": {version: fault.model_dump() for version, fault in svc.faults.items()},
        "versions": [
            {
                "version": name,
                "deployments": state.deployments,
                "ready_replicas": state.ready_replicas,
                "share": state.share,
                "offered_rps": state.offered_rps,
                "utilization": state.utilization,
                "requests": dict(state.requests),
            }
            for name, state in svc.versions.items()
        ],
    }


class _Collector:
    """Renders the workload's state as Prometheus metrics at scrape time."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload

    def collect(self) -> Iterator[Metric]:
        labels = ["namespace", "service", "version"]
        requests = CounterMetricFamily(
            "http_requests",
            "Requests to a service by version and status code (simulated by the lab workload: "
            "aggregated counts, no real HTTP requests).",
            labels=[*labels, "code"],
        )
        duration = HistogramMetricFamily(
            "http_request_duration_seconds",
            "Request latency by version (simulated by the lab workload: sampled from a latency model, "
            "no real HTTP requests; 503s for want of capacity or of a ready replica count at 1 ms).",
            labels=labels,
        )
        offered = GaugeMetricFamily(
            "lab_workload_offered_rps",
            "Requests per second the simulated traffic source offers the service now (simulated).",
            labels=["namespace", "service"],
        )
        ready = GaugeMetricFamily(
            "lab_workload_ready_replicas",
            "Ready replicas of each version as the workload simulator last read them from the cluster "
            "(simulated workload).",
            labels=labels,
        )
        utilization = GaugeMetricFamily(
            "lab_workload_utilization_ratio",
            "Offered requests per second over the ready replicas' capacity, per version; above 1 the "
            "excess fails with 503 (simulated; 0 when no replica is ready).",
            labels=labels,
        )
        for svc in self.workload._services.values():
            offered.add_metric([svc.spec.namespace, svc.spec.service], svc.offered_rps)
        for spec, name, state in self.workload._iter_versions():
            values = [spec.namespace, spec.service, name]
            for code, count in state.requests.items():
                requests.add_metric([*values, code], count)
            duration.add_metric(values, state.duration.cumulative(), state.duration.sum_s)
            ready.add_metric(values, state.ready_replicas)
            utilization.add_metric(values, state.utilization)
        yield from (requests, duration, offered, ready, utilization)


# ---- the app --------------------------------------------------------------------------------------------


class ConstantSourceBody(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["constant"]
    rps: float = Field(ge=0)


class TraceSourceBody(BaseModel):
    """A trace replay; `path` is read on the simulator's machine (relative to its working directory)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["trace"]
    path: str = Field(min_length=1)
    speedup: float = Field(default=1.0, gt=0)
    at_end: Literal["loop", "hold"] = "loop"
    scale: float | None = Field(default=None, ge=0)
    peak_rps: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_scale(self) -> TraceSourceBody:
        if self.scale is not None and self.peak_rps is not None:
            raise ValueError("give scale or peak_rps, not both")
        return self


class ServiceBody(BaseModel):
    """Body of PUT /admin/services."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    namespace: str = Field(min_length=1)
    service: str = Field(min_length=1)
    source: ConstantSourceBody | TraceSourceBody = Field(discriminator="kind")
    capacity_per_replica_rps: float = Field(default=50.0, gt=0)
    base_latency_ms: float = Field(default=50.0, gt=0)
    latency_sigma: float = Field(default=0.4, ge=0, le=3)


class FaultBody(Fault):
    """Body of PUT /admin/faults: the fault for one version of a service."""

    namespace: str = Field(min_length=1)
    service: str = Field(min_length=1)
    version: str = Field(min_length=1)


_Body = TypeVar("_Body", bound=BaseModel)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


async def _parse(request: Request, model: type[_Body]) -> _Body | JSONResponse:
    """The request's JSON body as `model`, or a 422 that says what is wrong."""
    try:
        body = await request.json()
    except ValueError:
        return _error(422, "the body is not valid JSON")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        return _error(422, _first_error(exc.errors()))


def _first_error(errors: Sequence[Any]) -> str:
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


async def _source(body: ConstantSourceBody | TraceSourceBody) -> TrafficSource:
    if isinstance(body, ConstantSourceBody):
        return Constant(body.rps)
    # Reading a trace can take a second (ServeGen directories): not on the event loop.
    return await asyncio.to_thread(
        Replay.from_file,
        body.path,
        speedup=body.speedup,
        at_end=body.at_end,
        scale=body.scale,
        peak_rps=body.peak_rps,
    )


def create_app(workload: Workload, *, run_loop: bool = True) -> FastAPI:
    """The workload simulator's HTTP face: metrics and admin endpoints. With `run_loop`, the app's
    lifespan starts the simulation loop (unless it runs already) and stops it if it started it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = run_loop and not workload.running
        if started:
            workload.start()
        try:
            yield
        finally:
            if started:
                await workload.stop()

    app = FastAPI(title="lcp lab workload simulator (simulated traffic)", lifespan=lifespan)
    app.state.workload = workload

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _first_error(exc.errors()))

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "simulated": True}

    # Routes are async so that they read the state on the loop that changes it, never concurrently.
    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(workload.metrics_text(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/admin/status")
    async def status() -> dict[str, object]:
        return workload.status()

    @app.put("/admin/services")
    async def put_service(request: Request) -> Response:
        body = await _parse(request, ServiceBody)
        if isinstance(body, JSONResponse):
            return body
        try:
            source = await _source(body.source)
        except (OSError, ValueError) as exc:
            return _error(422, f"source: cannot use this trace: {exc}")
        spec = ServiceSpec(
            namespace=body.namespace,
            service=body.service,
            source=source,
            capacity_per_replica_rps=body.capacity_per_replica_rps,
            base_latency_ms=body.base_latency_ms,
            latency_sigma=body.latency_sigma,
        )
        workload.add_service(spec)
        return JSONResponse(workload.service_status(spec.namespace, spec.service))

    @app.delete("/admin/services")
    async def delete_service(namespace: str, service: str) -> Response:
        if not workload.remove_service(namespace, service):
            return _error(404, f"the workload does not simulate {namespace}/{service}")
        return JSONResponse({"removed": f"{namespace}/{service}"})

    @app.get("/admin/faults")
    async def get_faults() -> dict[str, object]:
        return {"faults": workload.faults()}

    @app.put("/admin/faults")
    async def put_faults(request: Request) -> Response:
        body = await _parse(request, FaultBody)
        if isinstance(body, JSONResponse):
            return body
        fault = Fault.model_validate(body.model_dump(include=set(Fault.model_fields)))
        try:
            workload.set_fault(body.namespace, body.service, body.version, fault)
        except UnknownService as exc:
            return _error(422, str(exc))
        return JSONResponse({"faults": workload.faults()})

    @app.delete("/admin/faults")
    async def delete_faults(
        namespace: str | None = None, service: str | None = None, version: str | None = None
    ) -> Response:
        try:
            cleared = workload.clear_faults(namespace, service, version)
        except (UnknownService, ValueError) as exc:
            return _error(422, str(exc))
        return JSONResponse({"cleared": cleared, "faults": workload.faults()})

    return app
