"""Canary rollouts end to end in the lab: real Temporal, the emulated Kubernetes API, real Prometheus."""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from inference.gateway import Gateway, InferenceFailure, ModelWeights, load_routes, make_http_client
from inference.messages import ChatMessage
from lab.llm_simulator import DEFAULT_PROFILES
from lab.llm_simulator import create_app as create_simulator
from lab.workload import Fault
from policies.canary import STANDARD_TEMPLATES, Analyze, Pause, SetWeight, Step
from settings import Settings
from store import crud
from store.db import make_engine, make_sessionmaker
from store.migrate import upgrade_database
from temporal.constants import KIND, PHASE, SERVICE
from tests.http_server import serve_in_thread
from tests.rollout_lab import RolloutLab, fast_plan, rollout_input, rollout_lab, stable_p99_ms
from tests.waiting import eventually
from tests.workflows.saved_histories import save_history
from workers.main import ops_worker
from workflows._records import Actor
from workflows.canary import (
    FROZEN,
    PAUSED,
    ROLLED_BACK,
    SUCCEEDED,
    CanaryRolloutWorkflow,
    PromoteRequest,
    RolloutInput,
    RolloutView,
    workflow_id,
)

pytestmark = pytest.mark.minutes  # started first by `make test` (tests/conftest.py)


@pytest.fixture(scope="module")
async def lab(tmp_path_factory: pytest.TempPathFactory, prometheus_bin: str) -> AsyncIterator[RolloutLab]:
    async with rollout_lab(tmp_path_factory.mktemp("rollout-lab")) as running:
        yield running


@pytest.fixture(scope="module")
def ops_settings(lab: RolloutLab, tmp_path_factory: pytest.TempPathFactory, client: Client) -> Settings:
    base = Settings(home=tmp_path_factory.mktemp("lcp"))
    base = base.model_copy(
        update={"temporal": base.temporal.model_copy(update={"address": _address(client)})}
    )
    return lab.settings(base, f"ops-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
async def worker(client: Client, ops_settings: Settings) -> AsyncIterator[None]:
    async with ops_worker(client, ops_settings) as running, running:
        yield


def _address(client: Client) -> str:
    return client.service_client.config.target_host


async def start(
    client: Client, settings: Settings, request: RolloutInput
) -> WorkflowHandle[CanaryRolloutWorkflow, RolloutView]:
    return await client.start_workflow(
        CanaryRolloutWorkflow.run,
        request,
        id=workflow_id(request.namespace, request.service),
        task_queue=settings.rollout.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        search_attributes=_attributes(request),
    )


def _attributes(request: RolloutInput) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(KIND, "rollout"),
            SearchAttributePair(SERVICE, f"{request.namespace}/{request.service}"),
            SearchAttributePair(PHASE, "Progressing"),
        ]
    )


async def until(
    handle: WorkflowHandle[CanaryRolloutWorkflow, RolloutView],
    check: Callable[[RolloutView], object],
    within: float = 60,
) -> RolloutView:
    """Query the rollout until `check(view)` holds."""
    return await eventually(
        lambda: handle.query(CanaryRolloutWorkflow.state),
        until=check,
        what=f"{handle.id} to get there",
        within=within,
        interval=0.2,
    )


def judged_plan(judge: str, count: int = 2, failures: int = 0, inconclusive: int = 0) -> list[Step]:
    """The fast plan with each judge's standard templates; the statistical judge samples every second,
    so its interval is 6 s (6 samples, over its minimum of 5)."""
    interval_s = 3.0 if judge == "threshold" else 6.0
    return fast_plan(interval_s, count, STANDARD_TEMPLATES[judge], failures, inconclusive)


async def finished(handle: WorkflowHandle[CanaryRolloutWorkflow, RolloutView]) -> RolloutView:
    """The rollout's result; one left waiting (e.g. for a human after an Inconclusive analysis) fails the
    test with what it waits for, instead of hanging it."""
    try:
        return await asyncio.wait_for(asyncio.shield(handle.result()), 120)
    except TimeoutError:
        view = await handle.query(CanaryRolloutWorkflow.state)
        pytest.fail(f"rollout {view.id} did not finish: {view.phase}, {view.message}")


def _version(lab: RolloutLab, name: str) -> str | None:
    found = lab.deployment(name)
    return None if found is None else found["spec"]["template"]["metadata"]["labels"].get("lcp.dev/version")


def _replicas(lab: RolloutLab, name: str) -> int | None:
    found = lab.deployment(name)
    return None if found is None else int(found["spec"].get("replicas", 0))


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("judge", ["threshold", "statistical"])
async def test_a_healthy_release_reaches_100_percent_and_becomes_stable(
    client: Client, ops_settings: Settings, lab: RolloutLab, judge: str
) -> None:
    """Identical behaviour (an A/A release): not aborted, promoted, the stable runs the new version."""
    service = lab.add_service()
    steps = judged_plan(judge, count=3, failures=1, inconclusive=1)
    handle = await start(client, ops_settings, rollout_input(service, steps, judge=judge))
    view = await finished(handle)
    assert view.phase == SUCCEEDED, view.message
    (analysis,) = view.analyses
    assert analysis.phase == "Successful" and analysis.measurements
    if judge == "statistical":
        assert analysis.judgment is not None and analysis.judgment.score == 100.0
    assert [e.kind for e in view.history if e.kind == "weight"] == ["weight"] * 3
    assert _version(lab, service) == "v2" and _replicas(lab, service) == 4
    assert lab.deployment(f"{service}-canary") is None
    assert lab.deployment(service)["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v2")  # type: ignore[index]


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("judge", ["threshold", "statistical"])
async def test_five_points_more_errors_roll_back_within_two_intervals(
    client: Client, ops_settings: Settings, lab: RolloutLab, judge: str
) -> None:
    service = lab.add_service()
    lab.set_fault(service, "v2", Fault(error_share=0.05))
    steps = judged_plan(judge, count=5, inconclusive=2)
    view = await finished(await start(client, ops_settings, rollout_input(service, steps, judge=judge)))
    assert view.phase == ROLLED_BACK, view.message
    (analysis,) = view.analyses
    assert analysis.phase == "Failed" and "success-rate" in analysis.reason
    assert len({m.at for m in analysis.measurements}) <= 2  # measured at most twice: decided by interval 2
    assert _version(lab, service) == "v1" and _replicas(lab, service) == 4
    assert _replicas(lab, f"{service}-canary") == 0
    assert view.weights is not None and view.weights.canary_percent == 0


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("judge", ["threshold", "statistical"])
async def test_a_latency_regression_is_caught(
    client: Client, ops_settings: Settings, lab: RolloutLab, judge: str
) -> None:
    """+50% p99 (half the stable's p99 added to every canary request) is rolled back at the first or
    second reading. The queueing wait under the lab's load makes that p99 about 270 ms: the +65 ms this
    test once added, sized on the idle service's 130 ms, was a +24% regression caught by chance."""
    service = lab.add_service()
    lab.set_fault(service, "v2", Fault(added_latency_ms=stable_p99_ms() / 2))
    steps = judged_plan(judge, count=5, inconclusive=2)
    view = await finished(await start(client, ops_settings, rollout_input(service, steps, judge=judge)))
    assert view.phase == ROLLED_BACK, view.message
    (analysis,) = view.analyses
    assert "latency-slow-share" in analysis.reason
    readings = [m for m in analysis.measurements if "latency-slow-share" in m.template]
    assert 1 <= len(readings) <= 2, [(m.phase, m.value) for m in readings]


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("router", ["istio", "gateway-api"])
async def test_traffic_routers_carry_the_split(
    client: Client, ops_settings: Settings, lab: RolloutLab, router: str
) -> None:
    """Through a VirtualService's or an HTTPRoute's weights (the workload follows them), a faulty
    release is measured and rolled back; the route ends with all traffic on the stable."""
    service = lab.add_service()
    lab.set_fault(service, "v2", Fault(error_share=0.2))
    steps = fast_plan(count=5, templates=("success-rate",))
    view = await finished(await start(client, ops_settings, rollout_input(service, steps, router=router)))
    assert view.phase == ROLLED_BACK, view.message
    assert view.weights is not None and view.weights.router == router and view.weights.canary_percent == 0
    assert _replicas(lab, service) == 4 and _replicas(lab, f"{service}-canary") == 0
    route = lab.lab.kube.api.get_object(
        "virtualservices" if router == "istio" else "httproutes", "lab", service
    )
    assert route is not None and route["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "lcp"


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("exact", [False, True])
async def test_the_history_says_the_weight_the_replicas_give_and_exact_weights_make_it_real(
    client: Client, ops_settings: Settings, lab: RolloutLab, exact: bool
) -> None:
    """4 replicas can't carry 10%: the canary's one pod takes 25%, and the history says so. Asked for exact
    weights, the rollout runs on 10 replicas, of which one is 10%."""
    service = lab.add_service()
    steps: list[Step] = [SetWeight(10), Pause(0.5), SetWeight(100)]
    request = rollout_input(service, steps, exact_weights=exact)
    view = await finished(await start(client, ops_settings, request))

    assert view.phase == SUCCEEDED, view.message
    weights = [event.message for event in view.history if event.kind == "weight"]
    if exact:
        assert weights == ["canary at 10%", "canary at 100%"]
        assert "10 replicas in all split exactly into 10%, 100% (at least 4 asked)" in [
            event.message for event in view.history if event.kind == "prepared"
        ]
        assert _replicas(lab, service) == 10
    else:
        assert weights == [
            "canary at 25% of the traffic, 10% asked: 1 of 4 replicas (a multiple of 10 would make it exact)",
            "canary at 100%",
        ]
        assert _replicas(lab, service) == 4


@pytest.mark.usefixtures("worker")
async def test_abort_mid_flight_rolls_back_and_a_second_start_is_refused(
    client: Client, ops_settings: Settings, lab: RolloutLab
) -> None:
    service = lab.add_service()
    steps: list[Step] = [SetWeight(25), Pause(None), SetWeight(100)]
    request = rollout_input(service, steps)
    handle = await start(client, ops_settings, request)
    view = await until(handle, lambda v: v.awaiting_decision)
    assert view.phase == PAUSED and view.desired_weight == 25 and _replicas(lab, f"{service}-canary") == 1
    with pytest.raises(WorkflowAlreadyStartedError):
        await start(client, ops_settings, request)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(CanaryRolloutWorkflow.resume, Actor("sre@example.com"))
    assert "not paused" in str(refused.value.cause)
    await handle.execute_update(CanaryRolloutWorkflow.abort, Actor("sre@example.com", "bad dashboards"))
    view = await finished(handle)
    assert view.phase == ROLLED_BACK
    assert view.message == "aborted by sre@example.com: bad dashboards"
    assert _replicas(lab, service) == 4 and _replicas(lab, f"{service}-canary") == 0
    with pytest.raises(RPCError, match="already completed"):  # the API says 409 RolloutFinished
        await handle.execute_update(CanaryRolloutWorkflow.promote, PromoteRequest())


@pytest.mark.usefixtures("worker")
async def test_promote_pause_and_resume_mid_flight(
    client: Client, ops_settings: Settings, lab: RolloutLab
) -> None:
    service = lab.add_service()
    analysis = Analyze(("success-rate",), interval_s=2.0, count=2)
    steps: list[Step] = [SetWeight(25), Pause(None), SetWeight(50), analysis, Pause(3600.0), SetWeight(100)]
    handle = await start(client, ops_settings, rollout_input(service, steps))
    await until(handle, lambda v: v.awaiting_decision)
    await handle.execute_update(CanaryRolloutWorkflow.promote, PromoteRequest("sre"))
    await until(handle, lambda v: v.step == 4 and v.desired_weight == 50)
    view = await handle.execute_update(CanaryRolloutWorkflow.pause, Actor("sre", "looking at logs"))
    assert view.phase == PAUSED and view.paused_by == "sre"
    await handle.execute_update(CanaryRolloutWorkflow.resume, Actor("sre"))
    await handle.execute_update(CanaryRolloutWorkflow.promote, PromoteRequest("sre", full=True))
    view = await finished(handle)
    assert view.phase == SUCCEEDED and _version(lab, service) == "v2"
    kinds = [e.kind for e in view.history]
    assert kinds.index("pause") < kinds.index("resume") < len(kinds) - 1
    await save_history(handle, "canary_rollout")


@pytest.mark.usefixtures("worker")
async def test_a_frozen_canary_keeps_its_pods_but_no_traffic(
    client: Client, ops_settings: Settings, lab: RolloutLab
) -> None:
    service = lab.add_service()
    handle = await start(
        client, ops_settings, rollout_input(service, [SetWeight(25), Pause(None)], on_failure="freeze")
    )
    await until(handle, lambda v: v.awaiting_decision)
    await handle.execute_update(CanaryRolloutWorkflow.abort, Actor("sre"))
    view = await finished(handle)
    assert view.phase == FROZEN and _replicas(lab, f"{service}-canary") == 1


@pytest.mark.usefixtures("worker")
async def test_a_missing_deployment_fails_the_start_clearly(
    client: Client, ops_settings: Settings, lab: RolloutLab
) -> None:
    handle = await start(client, ops_settings, rollout_input("no-such-service", [SetWeight(100)]))
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await handle.execute_update(CanaryRolloutWorkflow.accepted)
    assert "lab/no-such-service not found" in str(caught.value.cause)
    view = await finished(handle)
    assert view.phase == "Failed"


async def test_a_worker_killed_mid_rollout_resumes(
    client: Client, ops_settings: Settings, lab: RolloutLab, tmp_path: Path
) -> None:
    """The worker runs as `lcp worker --queue ops`; SIGKILLed during the analysis, a new one finishes."""
    service = lab.add_service()
    queue = f"ops-kill-{uuid.uuid4().hex[:6]}"
    settings = ops_settings.model_copy(
        update={"rollout": ops_settings.rollout.model_copy(update={"task_queue": queue})}
    )
    env = dict(
        os.environ,
        LCP_HOME=str(tmp_path),
        LCP_TEMPORAL__ADDRESS=_address(client),
        LCP_ROLLOUT__KUBECONFIG=str(lab.lab.kubeconfig),
        LCP_ROLLOUT__PROMETHEUS_URL=lab.prometheus_url,
        LCP_ROLLOUT__TASK_QUEUE=queue,
    )

    def spawn() -> subprocess.Popen[bytes]:
        log = open(tmp_path / "worker.log", "ab")  # noqa: SIM115
        return subprocess.Popen(
            [sys.executable, "-m", "cli", "worker", "--queue", "ops"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    first = spawn()
    try:
        steps: list[Step] = [
            SetWeight(20),
            Pause(2.0),
            Analyze(("success-rate",), interval_s=3.0, count=3),
            SetWeight(100),
        ]
        handle = await start(client, settings, rollout_input(service, steps))
        await until(handle, lambda v: bool(v.analyses and v.analyses[0].measurements))
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = spawn()
        try:
            view = await finished(handle)
        finally:
            second.terminate()
            second.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    assert view.phase == SUCCEEDED, view.message
    assert _version(lab, service) == "v2"
    assert len([e for e in view.history if e.kind == "weight"]) == 2
    counted = [m for m in view.analyses[0].measurements if m.phase != "Error"]  # errors don't count (Argo)
    assert view.analyses[0].phase == "Successful" and len(counted) == 3


# ---- model canaries: the gateway's weight, judged on lcp's own metrics ------------------------------------


@pytest.fixture(scope="module")
def model_policy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A simulator serving `m-stable` and `m-canary` (zero latency), and a policy whose model `chat`
    is v1 on m-stable with a canary v2 on m-canary."""
    zero = DEFAULT_PROFILES["sim-zero"]
    profiles = {name: replace(zero, name=name) for name in ("m-stable", "m-canary")}
    with serve_in_thread(create_simulator(profiles)) as root:
        policy = tmp_path_factory.mktemp("models") / "models.yaml"
        policy.write_text(
            "models:\n"
            f"  - {{name: chat, version: v1, base_url: '{root}/v1', upstream_model: m-stable,\n"
            "      canary: {version: v2, upstream_model: m-canary}}\n"
        )
        yield policy, root


@pytest.fixture(scope="module")
async def model_worker(
    client: Client, ops_settings: Settings, model_policy: tuple[Path, str]
) -> AsyncIterator[Settings]:
    settings = ops_settings.model_copy(
        update={
            "models_file": model_policy[0],
            "rollout": ops_settings.rollout.model_copy(
                update={"task_queue": f"ops-models-{uuid.uuid4().hex[:6]}"}
            ),
        }
    )
    await upgrade_database(settings.resolved_database_url())
    async with ops_worker(client, settings) as running, running:
        yield settings


@contextlib.asynccontextmanager
async def chat_traffic(settings: Settings) -> AsyncIterator[None]:
    """Clients asking the gateway for `chat` about 50 times a second, as the API's one-shot path does."""
    engine = make_engine(settings.resolved_database_url())
    weights = ModelWeights(make_sessionmaker(engine), ttl_s=0.2)
    http = make_http_client()
    gateway = Gateway(http, load_routes(settings.models_file), weights)

    async def ask() -> None:
        while True:
            with contextlib.suppress(InferenceFailure):
                await gateway.complete("chat", [ChatMessage("user", "hello")], {})
            await asyncio.sleep(0.02)  # not a wait: it paces the load

    tasks = [asyncio.create_task(ask()) for _ in range(2)]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await http.aclose()
        await engine.dispose()


def _model_steps() -> list[Step]:
    return [
        SetWeight(30),
        Pause(2.0),
        Analyze(("model-success-rate",), interval_s=3.0, count=3),
        SetWeight(100),
    ]


async def _model_rollout(client: Client, settings: Settings) -> RolloutView:
    # 3 s windows: the model's v2 series holds the previous test's failed requests for a window's length.
    request = rollout_input(
        "chat", _model_steps(), version="v2", target="model", namespace="models", image="", min_window_s=3.0
    )
    handle = await start(client, settings, request)
    return await finished(handle)


async def _split(settings: Settings) -> tuple[int, bool]:
    engine = make_engine(settings.resolved_database_url())
    try:
        async with make_sessionmaker(engine)() as session:
            row = await crud.get_model_canary(session, model="chat")
            assert row is not None
            assert row.rollout_id == "rollout/models/chat"  # who set the weight
            return row.weight, row.promoted
    finally:
        await engine.dispose()


async def test_a_failing_model_version_is_rolled_back_on_lcps_own_metrics(
    client: Client, model_worker: Settings, model_policy: tuple[Path, str]
) -> None:
    _, root = model_policy
    async with httpx.AsyncClient() as http:
        fault = {"model": "m-canary", "error_rate_500": 0.2}
        (await http.put(f"{root}/admin/faults", json=fault)).raise_for_status()
    try:
        async with chat_traffic(model_worker):
            view = await _model_rollout(client, model_worker)
    finally:
        async with httpx.AsyncClient() as http:
            await http.delete(f"{root}/admin/faults")
    assert view.phase == ROLLED_BACK, view.message
    assert "model-success-rate" in view.analyses[0].reason
    failed = [m for m in view.analyses[0].measurements if m.phase == "Failed"]
    assert failed and failed[0].value is not None and failed[0].value < 0.95
    assert await _split(model_worker) == (0, False)


async def test_a_healthy_model_version_is_promoted_and_served(client: Client, model_worker: Settings) -> None:
    async with chat_traffic(model_worker):
        view = await _model_rollout(client, model_worker)
    assert view.phase == SUCCEEDED, view.message
    assert view.stable_version == "v1" and view.weights is not None and view.weights.canary_percent == 100
    assert await _split(model_worker) == (100, True)
