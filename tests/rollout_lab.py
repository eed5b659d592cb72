"""A lab for rollout tests: the emulated Kubernetes API with its controllers, the workload simulator and
a real Prometheus scraping it every second (stopped and restarted at will) — and this process's own
metrics (lcp's gateway metrics, for model canaries); each test adds a service of its own."""

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from prometheus_client import start_http_server

from activities.prometheus import PromQL, PromQLError
from lab.prometheus import SIMULATED, ScrapeTarget, start_prometheus, stop_prometheus, wait_ready
from lab.server import Lab, LabOptions, demo_objects
from lab.traces import Constant, TrafficSource
from lab.workload import Fault, ServiceSpec, latency_quantile_s
from policies.canary import STANDARD_TEMPLATES, Analyze, Pause, SetWeight, Step
from settings import Settings
from tests.http_server import free_port
from tests.waiting import eventually
from workflows.canary import JudgeSettings, RolloutInput

NAMESPACE = "lab"
VERSION_LABEL = "lcp.dev/version"
REQUESTS_PER_S = 400.0  # 100/s reach the canary's 1 of 4 replicas: a 3 s window holds ~300 requests
CAPACITY_PER_REPLICA_RPS = 400.0
_names = itertools.count(1)


def stable_p99_ms(replicas: int = 4) -> float:
    """The p99 of a service `add_service` made, by the lab's latency model: its replicas share
    REQUESTS_PER_S (a canary replaces some, so the load per replica stays the same), and at that load the
    queueing wait roughly doubles the service time's p99 (about 270 ms at 25%, against 126 ms idle)."""
    utilization = REQUESTS_PER_S / (replicas * CAPACITY_PER_REPLICA_RPS)
    median_s = ServiceSpec.base_latency_ms / 1000
    return 1000 * latency_quantile_s(
        0.99, median_s=median_s, sigma=ServiceSpec.latency_sigma, utilization=utilization
    )


def fast_plan(
    interval_s: float = 3.0,
    count: int = 2,
    templates: tuple[str, ...] | None = None,
    failure_limit: int = 0,
    inconclusive_limit: int = 0,
) -> list[Step]:
    """The standard plan's shape in seconds: 20% → analysis → 50% → 100%, with the threshold judge's
    standard templates unless told otherwise."""
    analysis = Analyze(
        templates or STANDARD_TEMPLATES["threshold"],
        interval_s=interval_s,
        count=count,
        failure_limit=failure_limit,
        inconclusive_limit=inconclusive_limit,
    )
    return [SetWeight(20), Pause(1.0), analysis, SetWeight(50), Pause(1.0), SetWeight(100)]


class RolloutLab:
    def __init__(self, home: Path, pod_startup_delay_s: float = 0.3) -> None:
        self.home = home
        self.lab = Lab(
            LabOptions(
                home=home,
                kube_port=free_port(),
                workload_port=free_port(),
                pod_startup_delay_s=pod_startup_delay_s,
                demo=False,
            )
        )
        self.prometheus_port = free_port()
        self.prometheus_url = f"http://127.0.0.1:{self.prometheus_port}"
        self._prometheus: Any = None
        self._metrics: Any = None
        self._metrics_port = free_port()

    async def start(self) -> None:
        await self.lab.start()
        self._metrics, _ = start_http_server(self._metrics_port, addr="127.0.0.1")  # this process: lcp's
        await self.start_prometheus()

    async def start_prometheus(self) -> None:
        """Start Prometheus (again, on the same port and data: a restart keeps the history)."""
        target = f"127.0.0.1:{self.lab.options.workload_port}"
        self._prometheus = await asyncio.to_thread(
            start_prometheus,
            [
                ScrapeTarget("lab-workload", target, labels=SIMULATED),
                ScrapeTarget("lcp", f"127.0.0.1:{self._metrics_port}"),
            ],
            self.home / "prometheus",
            port=self.prometheus_port,
            scrape_interval_s=1,
        )
        await asyncio.to_thread(wait_ready, self.prometheus_url, 30, self._prometheus)

    async def stop_prometheus(self) -> None:
        if self._prometheus is not None:
            await asyncio.to_thread(stop_prometheus, self._prometheus)
            self._prometheus = None

    async def stop(self) -> None:
        self._metrics.shutdown()
        await self.stop_prometheus()
        await self.lab.stop()

    def settings(self, base: Settings, task_queue: str) -> Settings:
        rollout = base.rollout.model_copy(
            update={
                "kubeconfig": self.lab.kubeconfig,
                "prometheus_url": self.prometheus_url,
                "task_queue": task_queue,
                "min_window_s": 3.0,
            }
        )
        return base.model_copy(update={"rollout": rollout})

    def add_service(
        self,
        replicas: int = 4,
        version: str = "v1",
        source: TrafficSource | None = None,
        capacity_per_replica_rps: float = CAPACITY_PER_REPLICA_RPS,
    ) -> str:
        """A new service with its stable Deployment at `version`, under `source`'s traffic."""
        name = f"shop-{next(_names)}"
        namespace, service, deployment = demo_objects(version, replicas, name, NAMESPACE)
        api = self.lab.kube.api
        if api.get_object("v1/namespaces", None, NAMESPACE) is None:
            api.create_object("v1/namespaces", namespace, None)
        api.create_object("v1/services", service, NAMESPACE)
        api.create_object("apps/v1/deployments", deployment, NAMESPACE)
        assert self.lab.workload is not None
        self.lab.workload.add_service(
            ServiceSpec(
                NAMESPACE,
                name,
                source or Constant(REQUESTS_PER_S),
                capacity_per_replica_rps=capacity_per_replica_rps,
            )
        )
        return name

    async def measured(self, query: str) -> float:
        """`query`'s value once Prometheus can answer it: e.g. a rate over a new service's traffic, once
        two scrapes of it fall in the window."""
        promql = PromQL(self.prometheus_url)
        try:
            return await eventually(
                lambda: asyncio.to_thread(promql.value, query),
                until=lambda _: True,
                what=f"Prometheus to answer {query}",
                within=60,
                interval=0.25,
                not_yet=(PromQLError,),
            )
        finally:
            promql.close()

    def set_fault(self, service: str, version: str, fault: Fault) -> None:
        assert self.lab.workload is not None
        self.lab.workload.set_fault(NAMESPACE, service, version, fault)

    def deployment(self, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.lab.kube.api.get_object("apps/v1/deployments", NAMESPACE, name)
        return found


def rollout_input(service: str, steps: list[Step], version: str = "v2", **options: Any) -> RolloutInput:
    """A rollout of `service` to `version` with the default templates."""
    from activities.contracts.prometheus import load_templates

    templates = load_templates()
    named = {name for step in steps if isinstance(step, Analyze) for name in step.templates}
    # A p99 over a few seconds of a 20% canary is noisy: the threshold judge reads 8 s windows (an A/A
    # release once failed a 3 s one on CI). The statistical judge keeps 3 s ones: its samples, one a
    # second, would otherwise overlap and look more certain than they are.
    options.setdefault("min_window_s", 8.0 if options.get("judge", "threshold") == "threshold" else 3.0)
    options.setdefault("namespace", NAMESPACE)
    options.setdefault("image", f"lab.local/{service}:{version}")
    return RolloutInput(
        service=service,
        version=version,
        steps=steps,
        templates={name: templates[name] for name in named},
        judge_settings=options.pop("judge_settings", JudgeSettings(samples_per_interval=6)),
        requested_by="test",
        **options,
    )


@asynccontextmanager
async def rollout_lab(home: Path, pod_startup_delay_s: float = 0.3) -> AsyncIterator[RolloutLab]:
    lab = RolloutLab(home, pod_startup_delay_s)
    await lab.start()
    try:
        yield lab
    finally:
        await lab.stop()
