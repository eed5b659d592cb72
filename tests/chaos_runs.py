"""What the end-to-end tests of chaos experiments and chaos scenarios share: the lab and its ops worker
(fixtures), the probes' steady state, starting a run and waiting for its report, and `lcp worker` processes
to SIGKILL mid-run."""

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from chaos.experiments import PromProbe, Target
from lab.litmus import ENGINES
from settings import Settings
from temporal.constants import KIND, PHASE, SERVICE
from tests.rollout_lab import NAMESPACE, RolloutLab, rollout_lab
from workers.main import ops_worker

View = TypeVar("View")
# The journal of a run that went through every step.
ALL_STEPS = ["safety", "steady-state-before", "inject", "cleanup", "steady-state-after", "report"]


@pytest.fixture(scope="module")
async def lab(tmp_path_factory: pytest.TempPathFactory, prometheus_bin: str) -> AsyncIterator[RolloutLab]:
    async with rollout_lab(tmp_path_factory.mktemp("chaos-lab")) as running:
        yield running


@pytest.fixture(scope="module")
def settings(lab: RolloutLab, tmp_path_factory: pytest.TempPathFactory, client: Client) -> Settings:
    base = Settings(home=tmp_path_factory.mktemp("lcp"))
    base = base.model_copy(
        update={"temporal": base.temporal.model_copy(update={"address": _address(client)})}
    )
    return lab.settings(base, f"ops-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
async def worker(client: Client, settings: Settings) -> AsyncIterator[None]:
    async with ops_worker(client, settings) as running, running:
        yield


def _address(client: Client) -> str:
    return client.service_client.config.target_host


def success_rate_query(service: str) -> str:
    """PromQL: the share of the lab service's requests that did not fail (5xx)."""
    selector = f'namespace="{NAMESPACE}",service="{service}"'
    return (
        f'sum(rate(http_requests_total{{{selector},code!~"5.."}}[5s])) '
        f"/ sum(rate(http_requests_total{{{selector}}}[5s]))"
    )


def success_rate(service: str) -> PromProbe:
    return PromProbe(name="success-rate", query=success_rate_query(service), comparator=">=", value=0.95)


async def steady(lab: RolloutLab, service: str) -> None:
    """Wait until the probes can read a new service's traffic: Prometheus has it in the probes' window."""
    await lab.measured(success_rate(service).query)


def engines(lab: RolloutLab) -> list[dict]:  # type: ignore[type-arg]
    found: list[dict] = lab.lab.kube.api.list_objects(ENGINES, NAMESPACE)  # type: ignore[type-arg]
    return found


async def start(
    client: Client,
    settings: Settings,
    run: Callable[[Any, Any], Any],
    request: Any,
    *,
    workflow_id: str,
    kind: str,
    target: Target,
) -> WorkflowHandle[Any, Any]:
    """Start a chaos run's workflow (`run`) as the API does, with the search attributes it sets."""
    return await client.start_workflow(
        run,
        request,
        id=workflow_id,
        task_queue=settings.rollout.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(KIND, kind),
                SearchAttributePair(SERVICE, f"{target.namespace}/{target.service}"),
                SearchAttributePair(PHASE, "Checking"),
            ]
        ),
    )


async def finished(
    handle: WorkflowHandle[Any, View], state: Callable[[Any], View], what: str, within: float
) -> View:
    """The run's report; the test fails, with the run's phase and message, when it is not written in time."""
    try:
        return await asyncio.wait_for(asyncio.shield(handle.result()), within)
    except TimeoutError:
        view: Any = await handle.query(state)
        pytest.fail(f"{what} {view.id} did not finish: {view.phase}, {view.message}")


@dataclass
class WorkerProcesses:
    """`lcp worker --queue ops` processes on a task queue of their own, to SIGKILL in the middle of a run."""

    queue: str
    env: dict[str, str]
    log: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(self) -> None:
        log = open(self.log, "ab")  # noqa: SIM115
        command = [sys.executable, "-m", "cli", "worker", "--queue", "ops"]
        self.started.append(subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def kill_and_replace(self) -> None:
        """SIGKILL the last worker started (no chance to finish anything) and start a new one."""
        last = self.started[-1]
        last.send_signal(signal.SIGKILL)
        last.wait()
        self.spawn()

    def settings(self, settings: Settings) -> Settings:
        """`settings` with runs started on these workers' queue."""
        return settings.model_copy(
            update={"rollout": settings.rollout.model_copy(update={"task_queue": self.queue})}
        )


@contextmanager
def worker_processes(client: Client, lab: RolloutLab, home: Path) -> Iterator[WorkerProcesses]:
    """Worker processes on the lab and a queue of their own (none started yet); all stopped at the end."""
    queue = f"ops-kill-{uuid.uuid4().hex[:6]}"
    env = dict(
        os.environ,
        LCP_HOME=str(home),
        LCP_TEMPORAL__ADDRESS=_address(client),
        LCP_ROLLOUT__KUBECONFIG=str(lab.lab.kubeconfig),
        LCP_ROLLOUT__PROMETHEUS_URL=lab.prometheus_url,
        LCP_ROLLOUT__TASK_QUEUE=queue,
    )
    workers = WorkerProcesses(queue, env, home / "worker.log")
    try:
        yield workers
    finally:
        for process in workers.started:
            if process.poll() is None:
                process.terminate()
                process.wait(30)
