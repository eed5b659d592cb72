"""The lab as `lcp lab serve` runs it: the demo service becomes ready in the simulated cluster, its
traffic shows in the workload's metrics, and a real Prometheus scraping the lab answers PromQL."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client, config

from activities.prometheus import PromQL, PromQLError
from lab.prometheus import SIMULATED, ScrapeTarget, start_prometheus, stop_prometheus, wait_ready
from lab.server import DEMO_NAMESPACE, DEMO_SERVICE, Lab, LabOptions
from lab.traces import Constant
from lab.workload import ServiceSpec
from tests.http_server import free_port
from tests.waiting import eventually


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    options = LabOptions(
        home=tmp_path, kube_port=free_port(), workload_port=free_port(), pod_startup_delay_s=0.2
    )
    lab = Lab(options)
    await lab.start()
    yield lab
    await lab.stop()


async def test_demo_service_is_ready_and_its_traffic_is_measured(
    lab: Lab, tmp_path: Path, prometheus_bin: str
) -> None:
    assert lab.workload is not None
    lab.workload.add_service(ServiceSpec(DEMO_NAMESPACE, DEMO_SERVICE, Constant(50.0)))  # a steady rate
    api = config.new_client_from_config(config_file=str(lab.kubeconfig))
    apps = client.AppsV1Api(api)

    async def ready() -> int:
        deployment = await asyncio.to_thread(apps.read_namespaced_deployment, DEMO_SERVICE, DEMO_NAMESPACE)
        return (deployment.status.ready_replicas or 0) if deployment.status else 0

    await eventually(
        ready, until=lambda replicas: replicas == 4, what="the demo Deployment's 4 replicas to be ready"
    )
    workload_url = f"http://127.0.0.1:{lab.options.workload_port}"

    async def served() -> bool:
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{workload_url}/metrics")).text
        return any(
            line.startswith("http_requests_total{")
            and 'version="v1"' in line
            and 'code="200"' in line
            and float(line.rsplit(" ", 1)[1]) > 0
            for line in metrics.splitlines()
        )

    await eventually(served, what="the workload to serve requests to v1")

    port = free_port()
    prometheus = start_prometheus(
        [ScrapeTarget("lab-workload", f"127.0.0.1:{lab.options.workload_port}", labels=SIMULATED)],
        tmp_path / "prometheus",
        port=port,
        scrape_interval_s=1,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(wait_ready, url, 30, prometheus)
        promql = PromQL(url)
        query = f'sum(http_requests_total{{service="{DEMO_SERVICE}",code="200",simulated="true"}})'

        await eventually(
            lambda: asyncio.to_thread(promql.value, query),
            until=lambda requests: requests > 0,
            what="Prometheus to have the lab's request counts",
            within=60,
            interval=0.2,
            not_yet=(PromQLError,),
        )
    finally:
        stop_prometheus(prometheus)
