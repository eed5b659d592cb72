"""Predictive scaling end to end in the lab: real Temporal, the emulated Kubernetes API (pods ready 3 s
after they are made), real Prometheus, the forecaster on its own task queue.

Time is compressed: a replayed trace plays one trace minute per second and repeats a 16-minute "day" (a
quiet stretch, then a ramp to six times the load), so the scaling workflow runs with a 16 s season, 1 s
history steps and a decision every second; the forecaster starts after six seasons of history."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from lab.traces import Replay
from policies.scaling import ScalingBounds
from settings import Settings
from store import crud
from store.db import make_engine, make_sessionmaker
from store.migrate import upgrade_database
from temporal.constants import KIND, PHASE, SERVICE
from tests.rollout_lab import NAMESPACE, RolloutLab, rollout_lab
from tests.waiting import eventually
from workers.main import forecasting_worker, ops_worker
from workflows._records import Actor
from workflows.scaling import MODE_PHASE, PredictiveScalingWorkflow, ScalingInput, ScalingView, workflow_id

pytestmark = pytest.mark.minutes  # started first by `make test` (tests/conftest.py)

POD_STARTUP_S = 3.0
CAPACITY_RPS = 50.0  # one replica's capacity in the lab workload, and the policy's
LOW_RPS, MID_RPS, HIGH_RPS = 60.0, 180.0, 360.0  # need 2, 4 and 8 replicas
# One "day" of 20 trace minutes (requests per minute, replayed at one minute per second).
DAY = [LOW_RPS] * 10 + [MID_RPS] + [HIGH_RPS] * 3 + [MID_RPS] + [LOW_RPS]
SEASON_S = float(len(DAY))
QUERY = 'sum(lab_workload_offered_rps{namespace="{{namespace}}",service="{{deployment}}"})'

Handle = WorkflowHandle[PredictiveScalingWorkflow, ScalingView]


@pytest.fixture(scope="module")
async def lab(tmp_path_factory: pytest.TempPathFactory, prometheus_bin: str) -> AsyncIterator[RolloutLab]:
    async with rollout_lab(
        tmp_path_factory.mktemp("scaling-lab"), pod_startup_delay_s=POD_STARTUP_S
    ) as running:
        yield running


@pytest.fixture(scope="module")
async def settings(lab: RolloutLab, tmp_path_factory: pytest.TempPathFactory, client: Client) -> Settings:
    base = Settings(home=tmp_path_factory.mktemp("lcp"))
    base = base.model_copy(
        update={
            "temporal": base.temporal.model_copy(
                update={"address": client.service_client.config.target_host}
            ),
            "scaling": base.scaling.model_copy(
                update={"forecast_task_queue": f"forecast-{uuid.uuid4().hex[:8]}"}
            ),
        }
    )
    await upgrade_database(base.resolved_database_url())
    return lab.settings(base, f"ops-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
async def workers(client: Client, settings: Settings) -> AsyncIterator[None]:
    async with (
        ops_worker(client, settings) as ops,
        forecasting_worker(client, settings) as forecasting,
        ops,
        forecasting,
    ):
        yield


def daily_trace(tmp_path: Path) -> Replay:
    """The compressed day as a `minute,requests` trace file, replayed in a loop at a minute per second."""
    path = tmp_path / "day.csv"
    path.write_text("minute,requests\n" + "".join(f"{m},{rps * 60}\n" for m, rps in enumerate(DAY)))
    return Replay.from_file(path, speedup=60.0, at_end="loop")


def scaling_input(deployment: str, mode: str) -> ScalingInput:
    return ScalingInput(
        namespace=NAMESPACE,
        deployment=deployment,
        bounds=ScalingBounds(
            min_replicas=2,
            max_replicas=12,
            capacity_rps=CAPACITY_RPS,
            target_utilization=1.0,
            scale_down_stabilization_s=2.0,
        ),
        mode=mode,  # type: ignore[arg-type]
        query=QUERY,
        interval_s=1.0,
        # Twice the lab's start-up time, as an SRE sets it with margin (a loaded CI machine decides late).
        startup_s=2 * POD_STARTUP_S,
        horizon_s=10.0,
        step_s=1.0,
        lookback_s=10 * SEASON_S,
        season_s=[SEASON_S],
        refresh_s=2 * SEASON_S,
        max_age_s=10.0,
        requested_by="test",
    )


async def start(client: Client, settings: Settings, request: ScalingInput) -> Handle:
    request.forecast_queue = settings.scaling.forecast_task_queue
    return await client.start_workflow(
        PredictiveScalingWorkflow.run,
        request,
        id=workflow_id(request.namespace, request.deployment),
        task_queue=settings.rollout.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(KIND, "scaling"),
                SearchAttributePair(SERVICE, f"{request.namespace}/{request.deployment}"),
                SearchAttributePair(PHASE, MODE_PHASE[request.mode]),
            ]
        ),
    )


async def until(handle: Handle, check, within: float, what: str) -> ScalingView:  # type: ignore[no-untyped-def]
    return await eventually(
        lambda: handle.query(PredictiveScalingWorkflow.state),
        until=check,
        what=what,
        within=within,
        interval=0.25,
    )


@dataclass
class Sample:
    at: float
    offered_rps: float
    ready: int
    desired: int


async def watch(lab: RolloutLab, service: str, seconds: float) -> list[Sample]:
    """What the workload offered and how many replicas were ready (and desired), ten times a second."""
    assert lab.lab.workload is not None
    samples: list[Sample] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = lab.lab.workload.service_status(NAMESPACE, service)
        deployment = lab.deployment(service) or {}
        samples.append(
            Sample(
                time.monotonic(),
                float(status["offered_rps"]),  # type: ignore[arg-type]
                sum(v["ready_replicas"] for v in status["versions"]),  # type: ignore[attr-defined]
                int(deployment.get("spec", {}).get("replicas", 0)),
            )
        )
        await asyncio.sleep(0.1)  # not a wait: it sets the sampling rate
    return samples


def ramps(samples: list[Sample]) -> list[int]:
    """Indexes of the samples where the load first reaches the day's high, once per day."""
    found = []
    for i in range(1, len(samples)):
        if samples[i].offered_rps >= HIGH_RPS - 1 and samples[i - 1].offered_rps < HIGH_RPS - 1:
            found.append(i)
    return found


def covered_ahead(samples: list[Sample], ramp: int) -> bool:
    """Whether, when the load reached the high, enough replicas were ready for it — having been scaled
    in during the quiet stretch before (so they were added ahead of this ramp, not left over)."""
    quiet = [s for s in samples[:ramp] if samples[ramp].at - 7 <= s.at <= samples[ramp].at - 5]
    scaled_in = bool(quiet) and min(s.ready for s in quiet) <= 4
    return scaled_in and samples[ramp].ready * CAPACITY_RPS >= HIGH_RPS


async def test_scales_ahead_of_the_daily_ramp_records_decisions_and_waits_out_prometheus(
    lab: RolloutLab, client: Client, settings: Settings, workers: None, tmp_path: Path
) -> None:
    active_service = lab.add_service(
        replicas=2, source=daily_trace(tmp_path), capacity_per_replica_rps=CAPACITY_RPS
    )
    watched_service = lab.add_service(
        replicas=2, source=daily_trace(tmp_path), capacity_per_replica_rps=CAPACITY_RPS
    )
    active = await start(client, settings, scaling_input(active_service, "active"))
    watched = await start(client, settings, scaling_input(watched_service, "forecast-only"))

    # Until the forecaster has history to learn from, decisions are reactive (and say so). The very
    # first range query may find no series yet ("no-data"), as the newest point can be younger than a step.
    view = await until(
        active,
        lambda v: v.last is not None and v.last.data_status == "ok" and v.last.forecast_status != "no-data",
        30,
        "a reading",
    )
    assert view.last is not None and view.last.forecast_status == "short-history"
    assert view.last.basis == "no-forecast" and "reactive need only" in view.last.detail
    await until(
        active,
        lambda v: v.last is not None and v.last.forecast_status == "ok",
        8 * SEASON_S,
        "a forecast from a trained model",
    )

    # Two more days, watched: the load reaches its high with the replicas for it already ready.
    samples = await watch(lab, active_service, 2 * SEASON_S + 2)
    found = ramps(samples)
    assert found, "the replayed day never reached its high while watched"
    assert any(covered_ahead(samples, ramp) for ramp in found), [
        (s.at - samples[0].at, s.offered_rps, s.ready, s.desired) for s in samples[::5]
    ]
    view = await active.query(PredictiveScalingWorkflow.state)
    assert view.model is not None and view.model.get("samples")
    assert any(d.basis == "forecast" and d.status == "scaled" for d in view.recent) or any(
        d.basis == "forecast" for d in view.recent
    ), [(d.seq, d.basis, d.status, d.target) for d in view.recent]

    # Forecast-only: the same decisions are made and recorded, and nothing is scaled.
    watched_view = await watched.query(PredictiveScalingWorkflow.state)
    assert {d.status for d in watched_view.recent} == {"recorded"}
    assert max(max(d.reactive_need or 0, d.forecast_need or 0) for d in watched_view.recent) >= 7
    assert max(d.target or 0 for d in watched_view.recent) == 4  # ×2 at most from the 2 it still has
    assert (lab.deployment(watched_service) or {})["spec"]["replicas"] == 2

    # Prometheus goes away: no action, a clear status and a metric; back again, decisions resume.
    await lab.stop_prometheus()
    try:
        down = await until(
            active,
            lambda v: v.last is not None and v.last.data_status == "prometheus-down",
            60,
            "a decision that saw Prometheus down",
        )
        assert down.health == "prometheus-down" and down.last is not None
        assert down.last.status == "no-data" and down.last.target is None
        assert "Prometheus" in down.message
        # A decision that read Prometheus just before it stopped may have scaled until now; none since.
        replicas = (lab.deployment(active_service) or {})["spec"]["replicas"]
        first_down = down.last.seq
        await until(
            active,
            lambda v: (
                v.last is not None
                and v.last.data_status == "prometheus-down"
                and v.last.seq >= first_down + 2
            ),
            60,
            "more decisions while Prometheus is down",
        )
        assert (lab.deployment(active_service) or {})["spec"]["replicas"] == replicas
        labels = {"namespace": NAMESPACE, "deployment": active_service}
        assert REGISTRY.get_sample_value("lcp_scaling_data_ok", labels) == 0
    finally:
        await lab.stop_prometheus()
        await lab.start_prometheus()
    await until(
        active,
        lambda v: v.last is not None and v.last.data_status == "ok" and v.last.seq > down.last.seq,
        60,
        "decisions with data again",
    )

    # Stopping leaves the Deployment as it is; every decision is in the read model, once.
    replicas = (lab.deployment(active_service) or {})["spec"]["replicas"]
    await active.execute_update(PredictiveScalingWorkflow.stop, Actor(by="test", reason="done"))
    result = await active.result()
    assert result.phase == "Stopped"
    assert (lab.deployment(active_service) or {})["spec"]["replicas"] == replicas
    engine = make_engine(settings.resolved_database_url())
    try:
        async with make_sessionmaker(engine)() as session:
            stored = await crud.list_scaling_decisions(
                session, namespace=NAMESPACE, deployment=active_service, limit=10_000
            )
    finally:
        await engine.dispose()
    assert sorted(d.seq for d in stored) == list(range(1, result.decisions + 1))
    assert {"scaled", "no-data"} <= {d.status for d in stored}
    await watched.execute_update(PredictiveScalingWorkflow.stop, Actor(by="test"))
    await watched.result()
