"""Builds and runs lcp's Temporal workers, one per task queue, with graceful shutdown."""

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta

from kubernetes import config
from prometheus_client import start_http_server
from temporalio.client import Client
from temporalio.worker import Worker

from activities.argo import ArgoActivities
from activities.egress import EgressRules, fenced_client
from activities.forecasting import CONCURRENT_FORECASTS, ForecastingActivities
from activities.kubernetes import KubernetesActivities
from activities.litmus import LitmusActivities
from activities.models import ModelActivities
from activities.probes import ProbeActivities
from activities.prometheus import PrometheusActivities, PromQL
from activities.store import StoreActivities
from activities.visibility import VisibilityActivities
from inference.gateway import load_routes
from inference.token_relay import PostgresRelay, TokenRelay, make_relay
from settings import Settings
from store.db import make_engine, make_sessionmaker
from temporal.client import connect
from temporal.constants import CONVERSATIONS_QUEUE, FORECASTING_QUEUE, TASK_QUEUES
from workers.conversations import conversation_worker
from workflows.canary import CanaryRolloutWorkflow
from workflows.chaos import ChaosExperimentWorkflow
from workflows.chaos_scenario import ChaosScenarioWorkflow
from workflows.scaling import PredictiveScalingWorkflow

log = logging.getLogger(__name__)


def probe_egress_rules(settings: Settings) -> EgressRules:
    """Where chaos HTTP probes (GET or HEAD, a platform operator's) may connect: LCP_EGRESS__ALLOW and
    what LCP_EGRESS__PROBE_ALLOW opens for probes only."""
    return EgressRules([*settings.egress.allow, *settings.egress.probe_allow])


@asynccontextmanager
async def ops_worker(client: Client, settings: Settings) -> AsyncIterator[Worker]:
    """A worker for canary rollouts, predictive scaling and chaos experiments and scenarios: Kubernetes
    (Litmus' and Argo Workflows' CRDs too) through the kubeconfig, PromQL against Prometheus and HTTP
    probes (their clients block, so those activities are plain functions on a thread pool), the model
    canaries' weights and the scaling decisions in the read model, and Temporal's visibility (async
    activities)."""
    kubeconfig = settings.resolved_kubeconfig()
    if not kubeconfig.exists():
        raise FileNotFoundError(
            f"no kubeconfig at {kubeconfig}: start the lab (`lcp dev` or `lcp lab serve`) or set "
            "LCP_ROLLOUT__KUBECONFIG"
        )
    routes = load_routes(settings.models_file, llm_url=settings.llm_url)  # a bad policy fails here, first
    api_client = config.new_client_from_config(
        config_file=str(kubeconfig), context=settings.rollout.kube_context
    )
    promql = PromQL(settings.rollout.prometheus_url)
    kube = KubernetesActivities(api_client)
    prometheus = PrometheusActivities(promql)
    engine = make_engine(settings.resolved_database_url())
    sessions = make_sessionmaker(engine)
    models = ModelActivities(sessions, routes)
    store = StoreActivities(sessions, single_writer=engine.dialect.name == "sqlite")
    litmus = LitmusActivities(api_client)
    argo = ArgoActivities(api_client)
    probe_http = fenced_client(probe_egress_rules(settings))  # probe URLs come with a request, too
    probes = ProbeActivities(probe_http)
    visibility = VisibilityActivities(client)
    executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="ops-activity")
    worker = Worker(
        client,
        task_queue=settings.rollout.task_queue,
        workflows=[
            CanaryRolloutWorkflow,
            PredictiveScalingWorkflow,
            ChaosExperimentWorkflow,
            ChaosScenarioWorkflow,
        ],
        activities=[
            kube.read_deployment,
            kube.scale_deployment,
            kube.ensure_canary,
            kube.set_weight,
            kube.rollback,
            kube.promote,
            prometheus.measure,
            prometheus.samples,
            models.prepare,
            models.set_weight,
            models.rollback,
            models.promote,
            store.record_scaling_decision,
            litmus.create_engine,
            litmus.read_result,
            litmus.stop_engine,
            litmus.delete_engine,
            litmus.target_state,
            argo.submit_scenario,
            argo.read_workflow,
            argo.stop_workflow,
            argo.delete_workflow,
            probes.http,
            visibility.running,
        ],
        activity_executor=executor,
        max_concurrent_activities=32,
        graceful_shutdown_timeout=timedelta(seconds=10),
    )
    try:
        yield worker
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        await probe_http.aclose()
        promql.close()
        api_client.close()
        await engine.dispose()


@asynccontextmanager
async def forecasting_worker(client: Client, settings: Settings) -> AsyncIterator[Worker]:
    """A worker for the forecaster alone: training is CPU-heavy, so it runs apart from chat turns and
    ops work, CONCURRENT_FORECASTS at a time (the worker's memory ceiling counts on it)."""
    promql = PromQL(settings.rollout.prometheus_url)
    forecasting = ForecastingActivities(promql)
    executor = ThreadPoolExecutor(max_workers=CONCURRENT_FORECASTS, thread_name_prefix="forecast")
    worker = Worker(
        client,
        task_queue=settings.scaling.forecast_task_queue,
        activities=[forecasting.forecast],
        activity_executor=executor,
        max_concurrent_activities=CONCURRENT_FORECASTS,
        graceful_shutdown_timeout=timedelta(seconds=10),
    )
    try:
        yield worker
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        promql.close()


async def run_worker(settings: Settings, task_queue: str, metrics_port: int | None = None) -> None:
    """Run the worker for `task_queue` until SIGINT/SIGTERM, then finish in-flight tasks; with
    `metrics_port`, serve its Prometheus metrics (e.g. the scaling decisions it stores) there."""
    if task_queue not in TASK_QUEUES:
        raise ValueError(f"unknown task queue {task_queue!r}; known: {', '.join(TASK_QUEUES)}")
    if metrics_port is not None:
        start_http_server(metrics_port, addr=settings.api.host)
    client = await connect(settings.temporal)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    relay: TokenRelay | None = None
    building: AbstractAsyncContextManager[Worker]
    if task_queue == CONVERSATIONS_QUEUE:
        # A worker of its own publishes streamed tokens only through PostgreSQL (the API listens there).
        relay = make_relay(settings)
        building = conversation_worker(client, settings, relay if isinstance(relay, PostgresRelay) else None)
    elif task_queue == FORECASTING_QUEUE:
        building = forecasting_worker(client, settings)
    else:
        building = ops_worker(client, settings)
    async with building as worker:
        log.info("worker polling task queue %s at %s", worker.task_queue, settings.temporal.address)
        async with worker:
            await stop.wait()
            log.info("worker shutting down: finishing in-flight tasks")
    if isinstance(relay, PostgresRelay):
        await relay.close()
