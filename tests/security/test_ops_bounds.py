"""A platform operator's numbers are bounded: every numeric setting of scaling, rollouts and chaos has a
range, and a value outside it (too small, huge, NaN/inf, a bool, a string) is a 422 naming the field and
the range, through the API and in the policies' own checks that the workflows run. Found by the
adversarial pass: `interval_s: 1e-9` ran a decision loop flat out, replicas of 1e12 and factors of 1e300
were accepted."""

import asyncio
import json
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from chaos.experiments import (
    DEFAULT_CATALOGUE,
    Experiment,
    ExperimentError,
    Fault,
    Hypothesis,
    PromProbe,
    Target,
    load_experiments,
    parse_experiments,
)
from policies.canary import Analyze, Pause, SetWeight, plan_problem
from policies.chaos import SafetyPolicy
from policies.ranges import Range
from policies.scaling import ScalingBounds
from settings import Settings
from tests.api.conftest import MintKey
from workflows.canary import CanaryRolloutWorkflow, RolloutInput
from workflows.chaos import ChaosExperimentWorkflow, ChaosInput
from workflows.scaling import PredictiveScalingWorkflow, ScalingInput, input_problem

NAN, INF = math.nan, math.inf
RUNNING = WorkflowExecutionStatus.RUNNING
on_sqlite = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)


@pytest.fixture
async def sre(api_url: str, mint_key: MintKey) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {await mint_key(roles=('sre',))}"}
    async with httpx.AsyncClient(base_url=api_url, timeout=60, headers=headers) as http:
        yield http


async def _expect_refused(
    http: httpx.AsyncClient, path: str, body: dict[str, Any], field: str, allowed: str
) -> None:
    """POST `body` (NaN and Infinity written as Python's json writes them, as a hostile client may) and
    expect a 422 whose message names the field and the allowed range."""
    content = json.dumps(body, allow_nan=True)
    response = await http.post(path, content=content, headers={"Content-Type": "application/json"})
    case = f"{path} {content[:300]}"
    assert response.status_code == 422, f"{case}: {response.status_code} {response.text}"
    message = response.json()["error"]["message"]
    assert field in message and allowed in message, f"{case}: {message}"
    assert len(response.content) < 4000, case  # the value is quoted, not echoed whole


# ── scaling ──────────────────────────────────────────────────────────────────────────────────────────────

SCALING = {"namespace": "lab", "deployment": "shop", "capacity_rps": 10.0}
SECONDS_DAY = "a number of seconds from 1 to 86400"


SCALING_CASES: list[tuple[str, object, str]] = [
    ("interval_s", 1e-9, SECONDS_DAY),
    ("interval_s", 0.5, SECONDS_DAY),
    ("interval_s", 1e12, SECONDS_DAY),
    ("interval_s", NAN, SECONDS_DAY),
    ("interval_s", INF, SECONDS_DAY),
    ("interval_s", True, SECONDS_DAY),
    ("interval_s", "60", SECONDS_DAY),
    ("min_replicas", 10**9, "a whole number of replicas from 1 to 10000"),
    ("max_replicas", 10**12, "a whole number of replicas from 1 to 10000"),
    ("max_replicas", True, "a whole number of replicas from 1 to 10000"),
    ("max_replicas", 5.0, "a whole number of replicas from 1 to 10000"),
    ("max_replicas", 10**40, "a whole number of replicas from 1 to 10000"),
    ("capacity_rps", 1e300, "a number of requests/s > 0 and ≤ 1000000"),
    ("capacity_rps", 0, "a number of requests/s > 0 and ≤ 1000000"),
    ("max_up_factor", 1e300, "a number from 1 to 100"),
    ("max_down_factor", INF, "a number from 1 to 100"),
    ("target_utilization", NAN, "a number > 0 and ≤ 1"),
    ("tolerance", 1.0, "a number ≥ 0 and < 1"),
    ("min_confidence", False, "a number from 0 to 1"),
    ("scale_down_stabilization_s", 1e9, "a number of seconds from 0 to 86400"),
    ("startup_s", -1, "a number of seconds from 0 to 3600"),
    ("horizon_s", 1e18, "a number of seconds from 1 to 604800"),
    ("step_s", 0.001, "a number of seconds from 1 to 3600"),
    ("lookback_s", 1e15, "a number of seconds from 60 to 7776000"),
    ("refresh_s", 1e-3, "a number of seconds from 10 to 604800"),
    ("max_age_s", NAN, "a number of seconds from 1 to 86400"),
    ("planning_quantile", 1.0, "a number > 0 and < 1"),
    ("season_s", [86400.0, 0.0], "a number of seconds from 1 to 31622400"),
]
# Settings each in range that multiply into too much work for one forecast.
SCALING_PAIRS: list[tuple[dict[str, object], str, str]] = [
    ({"step_s": 1.0, "lookback_s": 90 * 86400.0}, "lookback_s / step_s", "at most 100000 points"),
    ({"step_s": 1.0, "lookback_s": 86400.0, "horizon_s": 7200.0}, "horizon_s / step_s", "at most 72"),
    ({"season_s": [3600.0] * 5}, "season_s", "at most 4"),
]


@on_sqlite
async def test_scaling_settings_out_of_range_are_422_naming_the_field(sre: httpx.AsyncClient) -> None:
    for field, value, allowed in SCALING_CASES:
        await _expect_refused(sre, "/v1/scaling", {**SCALING, field: value}, field, allowed)
    for change, field, allowed in SCALING_PAIRS:
        await _expect_refused(sre, "/v1/scaling", {**SCALING, **change}, field, allowed)
    # The update paths carry no numbers: a mode is one of two words, a promote's `full` a real boolean.
    await _expect_refused(sre, "/v1/scaling/lab/shop/mode", {"mode": 1}, "mode", "forecast-only")
    await _expect_refused(sre, "/v1/rollouts/lab/shop/promote", {"full": 1}, "full", "boolean")


# ── rollouts ─────────────────────────────────────────────────────────────────────────────────────────────

ROLLOUT = {"namespace": "lab", "service": "shop", "image": "lab.local/shop:v2", "version": "v2"}
ANALYZE = {"kind": "analyze", "templates": ["success-rate"], "interval_s": 10, "count": 3}


ROLLOUT_CASES: list[tuple[dict[str, object], str, str]] = [
    ({"time_scale": 1e-9}, "time_scale", "a number from 0.05 to 100"),
    ({"time_scale": NAN}, "time_scale", "a number from 0.05 to 100"),
    ({"time_scale": True}, "time_scale", "a number from 0.05 to 100"),
    ({"total_replicas": 10**12}, "total_replicas", "a whole number of replicas from 1 to 10000"),
    ({"total_replicas": True}, "total_replicas", "a whole number of replicas from 1 to 10000"),
    (
        {"steps": [{"kind": "set_weight", "percent": 1e300}]},
        "percent",
        "a whole percentage from 0 to 100",
    ),
    ({"steps": [{"kind": "set_weight", "percent": True}]}, "percent", "a whole percentage from 0 to 100"),
    (
        {"steps": [{"kind": "pause", "duration_s": 1e12}]},
        "duration_s",
        "a number of seconds from 0 to 604800",
    ),
    (
        {"steps": [{"kind": "pause", "duration_s": INF}]},
        "duration_s",
        "a number of seconds from 0 to 604800",
    ),
    ({"steps": [{**ANALYZE, "interval_s": 1e-9}]}, "interval_s", SECONDS_DAY),
    ({"steps": [{**ANALYZE, "interval_s": NAN}]}, "interval_s", SECONDS_DAY),
    ({"steps": [{**ANALYZE, "count": 10**9}]}, "count", "a whole number from 1 to 500"),
    ({"steps": [{**ANALYZE, "count": True}]}, "count", "a whole number from 1 to 500"),
    ({"steps": [{**ANALYZE, "failure_limit": 10**9}]}, "failure_limit", "a whole number from 0 to 500"),
    ({"judge_settings": {"confidence": 1.0}}, "confidence", "a number > 0 and < 1"),
    ({"judge_settings": {"min_samples": 10**9}}, "min_samples", "a whole number from 3 to 1000"),
    ({"judge_settings": {"samples_per_interval": True}}, "samples_per_interval", "from 3 to 60"),
    ({"judge_settings": {"pass_threshold": 1e300}}, "pass_threshold", "a percentage from 0 to 100"),
    (
        {
            "steps": [{**ANALYZE, "templates": ["heavy"]}],
            "templates": {"heavy": {"query": "vector(1)", "success": ">= 0.9", "weight": 1e300}},
        },
        "weight",
        "a number > 0 and ≤ 100",
    ),
]


@on_sqlite
async def test_rollout_numbers_out_of_range_are_422_naming_the_field(sre: httpx.AsyncClient) -> None:
    for change, field, allowed in ROLLOUT_CASES:
        await _expect_refused(sre, "/v1/rollouts", {**ROLLOUT, **change}, field, allowed)


# ── chaos ────────────────────────────────────────────────────────────────────────────────────────────────


def _definition(**change: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "name": "shop-pod-delete",
        "target": {"namespace": "lab", "app_label": "app=shop"},
        "fault": {"kind": "pod-delete", "env": {}},
        "hypothesis": {"interval_s": 5, "probes": []},
    }
    for key, value in change.items():
        if key in ("interval_s", "probes"):
            definition["hypothesis"][key] = value
        elif key == "env":
            definition["fault"]["env"] = value
        else:
            definition[key] = value
    return definition


PROM = {"name": "ok", "type": "prometheus", "query": "vector(1)", "comparator": ">=", "value": 1}


CHAOS_CASES: list[tuple[dict[str, Any], str, str]] = [
    ({"interval_s": 1e-9}, "hypothesis.interval_s", "a number of seconds from 1 to 3600"),
    ({"interval_s": 1e12}, "hypothesis.interval_s", "a number of seconds from 1 to 3600"),
    ({"interval_s": True}, "hypothesis.interval_s", "must be a number"),
    ({"recover_within_s": 1e300}, "recover_within_s", "a number of seconds from 0 to 3600"),
    ({"weight": True}, "weight", "must be a whole number"),
    ({"weight": 10**12}, "weight", "a whole number from 0 to 10"),
    ({"env": {"TOTAL_CHAOS_DURATION": 10**12}}, "TOTAL_CHAOS_DURATION", "a whole number from 1 to 86400"),
    ({"env": {"TOTAL_CHAOS_DURATION": "9" * 5000}}, "TOTAL_CHAOS_DURATION", "from 1 to 86400"),
    ({"env": {"CHAOS_INTERVAL": "0"}}, "CHAOS_INTERVAL", "a whole number from 1 to 3600"),
    ({"env": {"RAMP_TIME": 1e300}}, "RAMP_TIME", "a whole number from 0 to 3600"),
    ({"env": {"PODS_AFFECTED_PERC": 101}}, "PODS_AFFECTED_PERC", "a whole number from 0 to 100"),
    ({"probes": [{**PROM, "value": NAN}]}, "probes[0].value", "must be a number"),
    ({"probes": [{**PROM, "tolerance": INF}]}, "probes[0].tolerance", "must be a number"),
    ({"probes": [{**PROM, "name": f"p{i}"} for i in range(21)]}, "probes", "at most 20 probes"),
    (
        {"probes": [{"name": "h", "type": "http", "url": "http://shop/", "timeout_s": 1e9}]},
        "probes[0].timeout_s",
        "a number of seconds > 0 and ≤ 60",
    ),
]
EVERY = "a number of seconds from 60 to 31622400"
SCHEDULE_CASES: list[tuple[dict[str, object], str, str]] = [
    ({"every_s": 1e-9}, "every_s", EVERY),
    ({"every_s": 1e300}, "every_s", EVERY),
    ({"every_s": NAN}, "every_s", EVERY),
    ({"every_s": True}, "every_s", EVERY),
    ({"cron": "@every 1s"}, "cron", "five fields"),
    ({"cron": "* * * * * *"}, "cron", "five fields"),  # a seconds field: every second
    ({"cron": "0 14 * * WED", "paused": 1}, "paused", "boolean"),
]


@on_sqlite
async def test_chaos_numbers_out_of_range_are_422_naming_the_field(sre: httpx.AsyncClient) -> None:
    for change, field, allowed in CHAOS_CASES:
        await _expect_refused(sre, "/v1/chaos", {"definition": _definition(**change)}, field, allowed)
        # a game day of the same experiment is refused the same way
        schedule = {"definition": _definition(**change), "every_s": 3600}
        await _expect_refused(sre, "/v1/chaos/schedules", schedule, field, allowed)
    for schedule_change, field, allowed in SCHEDULE_CASES:
        body = {"experiment": "chat-api-pod-delete", **schedule_change}
        await _expect_refused(sre, "/v1/chaos/schedules", body, field, allowed)


# ── the catalogue and the workload address ───────────────────────────────────────────────────────────────


@on_sqlite
async def test_the_served_catalogue_uses_the_configured_workload_address(
    settings: Settings, api_url: str, sre: httpx.AsyncClient
) -> None:
    """`lcp dev --workload-port 23456` tells the API LCP_CHAOS__WORKLOAD_URL; its catalogue's probes must
    check the workload there, not at the default 8601."""
    settings.chaos.workload_url = "http://127.0.0.1:23456/"
    response = await sre.get("/v1/chaos/catalogue")
    assert response.status_code == 200, response.text
    urls = [
        probe["url"]
        for experiment in response.json()["data"]
        for probe in experiment["hypothesis"]["probes"]
        if probe["type"] == "http"
    ]
    assert urls and all(url == "http://127.0.0.1:23456/healthz" for url in urls), urls


def test_the_catalogue_fills_in_the_workload_and_defaults_to_the_lab_port() -> None:
    def urls(experiments: list[Experiment]) -> set[str]:
        return {p.url for e in experiments for p in e.hypothesis.probes if p.type == "http"}

    assert urls(load_experiments(DEFAULT_CATALOGUE)) == {"http://127.0.0.1:8601/healthz"}
    moved = load_experiments(DEFAULT_CATALOGUE, {"workload": "http://10.1.2.3:9000"})
    assert urls(moved) == {"http://10.1.2.3:9000/healthz"}


def test_lcp_dev_tells_its_children_where_the_workload_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cli.dev as dev

    started: dict[str, dict[str, str]] = {}

    def fake_spawn(args: list[str], env: dict[str, str], log_file: Path) -> object:
        started[log_file.stem] = env
        return object()

    monkeypatch.setattr(dev, "spawn_lcp", fake_spawn)
    stack = dev.Stack(tmp_path, dev.Ports("127.0.0.1", 1, 2, 3, 4, 5, 23456, 7))
    stack._spawn("api", "api")
    assert started["api"]["LCP_CHAOS__WORKLOAD_URL"] == "http://127.0.0.1:23456"


# ── workflows started without the API refuse the same ───────────────────────────────────────────────────


async def test_ops_workflows_started_directly_refuse_out_of_range_numbers(client: Client) -> None:
    """A client that starts the workflows itself (not through the API) meets the same ranges: each refuses
    in its `accepted` update, as InvalidSpec naming the field, before touching the cluster (this worker
    has no activities at all)."""
    queue = f"ops-bounds-{uuid.uuid4().hex[:8]}"
    bad_chaos = replace(EXPERIMENT, hypothesis=Hypothesis(interval_s=1e-9))
    bad_rollout = RolloutInput("lab", "shop", "lab.local/shop:v2", "v2", [SetWeight(10), Pause(1e12)], {})
    starts: list[tuple[Any, Any, Any, str]] = [
        (
            PredictiveScalingWorkflow.run,
            _scaling(interval_s=1e-9),
            PredictiveScalingWorkflow.accepted,
            "interval_s",
        ),
        (CanaryRolloutWorkflow.run, bad_rollout, CanaryRolloutWorkflow.accepted, "pause duration_s"),
        (
            ChaosExperimentWorkflow.run,
            ChaosInput(bad_chaos, "r1", SafetyPolicy()),
            ChaosExperimentWorkflow.accepted,
            "hypothesis.interval_s",
        ),
    ]
    async with Worker(
        client,
        task_queue=queue,
        workflows=[PredictiveScalingWorkflow, CanaryRolloutWorkflow, ChaosExperimentWorkflow],
    ):
        for run, request, accepted, field in starts:
            start = WithStartWorkflowOperation(
                run,
                request,
                id=f"{queue}/{field}",
                task_queue=queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            )
            with pytest.raises(WorkflowUpdateFailedError) as refused:  # as the API starts them
                # Accepting the input would call an activity this worker lacks: a hang, cut at 30 s.
                update = client.execute_update_with_start_workflow(accepted, start_workflow_operation=start)
                await asyncio.wait_for(update, 30)
            cause = refused.value.cause
            assert isinstance(cause, ApplicationError) and cause.type == "InvalidSpec", cause
            assert field in cause.message and "must be a number of seconds from" in cause.message, (
                cause.message
            )
            if (await (handle := await start.workflow_handle()).describe()).status == RUNNING:
                await handle.terminate("test over")


# ── the policies' own checks (what the workflows and the CLI refuse) ─────────────────────────────────────


@pytest.mark.parametrize(
    ("change", "starts"),
    [
        ({"max_replicas": 10**12}, "max_replicas must be a whole number of replicas from 1 to 10000"),
        ({"min_replicas": True}, "min_replicas must be a whole number of replicas from 1 to 10000, got True"),
        ({"max_up_factor": 1e300}, "max_up_factor must be a number from 1 to 100"),
        ({"max_down_factor": NAN}, "max_down_factor must be a number from 1 to 100"),
        ({"capacity_rps": INF}, "capacity_rps must be a number of requests/s > 0"),
        ({"scale_down_stabilization_s": 1e9}, "scale_down_stabilization_s must be a number of seconds"),
        ({"min_confidence": True}, "min_confidence must be a number from 0 to 1"),
        ({"max_replicas": 10_000}, None),
        ({"max_up_factor": 100.0, "max_down_factor": 1}, None),
    ],
)
def test_scaling_bounds_problem(change: dict[str, Any], starts: str | None) -> None:
    problem = replace(ScalingBounds(), **change).problem()
    assert problem == starts if starts is None else (problem or "").startswith(starts), problem


def _scaling(**change: object) -> ScalingInput:
    # The lab tests' smallest legitimate settings (tests/api/test_scaling_api.py, tests/e2e): they must pass.
    base = ScalingInput(
        namespace="lab",
        deployment="shop",
        interval_s=1.0,
        startup_s=1.0,
        horizon_s=10.0,
        step_s=1.0,
        lookback_s=120.0,
        season_s=[20.0],
        refresh_s=40.0,
        max_age_s=10.0,
    )
    return replace(base, **change)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "starts"),
    [
        ({}, None),
        ({"interval_s": 1e-9}, "interval_s must be a number of seconds from 1 to 86400, got 1e-09"),
        ({"interval_s": True}, "interval_s must be a number of seconds from 1 to 86400, got True"),
        ({"step_s": NAN}, "step_s must be a number of seconds from 1 to 3600, got nan"),
        ({"refresh_s": 0.5}, "refresh_s must be a number of seconds from 10 to 604800"),
        ({"lookback_s": INF}, "lookback_s must be a number of seconds from 60 to 7776000"),
        ({"season_s": [1e300]}, "season_s[0] must be a number of seconds from 1 to 31622400"),
        ({"season_s": [60.0] * 5}, "season_s must be a list of at most 4 seasons"),
        ({"lookback_s": 3e6, "horizon_s": 10.0}, "lookback_s / step_s must be at most 100000 points"),
        ({"planning_quantile": 0.0}, "planning_quantile must be a number > 0 and < 1"),
    ],
)
def test_scaling_input_problem(change: dict[str, object], starts: str | None) -> None:
    problem = input_problem(_scaling(**change))
    assert problem is None if starts is None else (problem or "").startswith(starts), problem


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        # the lab tests' plans (tests/rollout_lab.py, tests/e2e) stay valid
        (
            [
                SetWeight(20),
                Pause(1.0),
                Analyze(("x",), 2.0, 2),
                SetWeight(50),
                Pause(3600.0),
                SetWeight(100),
            ],
            None,
        ),
        ([SetWeight(25), Pause(None), SetWeight(100)], None),
        (
            [Pause(1e12)],
            "step 0: pause duration_s must be a number of seconds from 0 to 604800, got 1000000000000.0",
        ),
        (
            [Analyze(("x",), 1e-9, 3)],
            "step 0: analysis interval_s must be a number of seconds from 1 to 86400",
        ),
        (
            [Analyze(("x",), True, 3)],
            "step 0: analysis interval_s must be a number of seconds from 1 to 86400",
        ),
        ([Analyze(("x",), 10, 10**9)], "step 0: analysis count must be a whole number from 1 to 500"),
        (
            [Analyze(("x",), 10, True)],
            "step 0: analysis count must be a whole number from 1 to 500, got True",
        ),
        ([Analyze(("x",), 10, 3, consecutive_error_limit=10**9)], "step 0: consecutive_error_limit must be"),
        ([SetWeight(True)], "step 0: weight True is not a whole percentage"),
    ],
)
def test_plan_problem_bounds(steps: list[object], expected: str | None) -> None:
    problem = plan_problem(steps)
    assert problem is None if expected is None else (problem or "").startswith(expected), problem


EXPERIMENT = Experiment(
    name="shop-pod-delete",
    target=Target("lab", "app=shop"),
    fault=Fault("pod-delete"),
    hypothesis=Hypothesis((PromProbe("ok", "vector(1)", ">=", 1.0),), interval_s=2.0),
)


@pytest.mark.parametrize(
    ("experiment", "expected"),
    [
        (EXPERIMENT, None),
        (
            replace(EXPERIMENT, hypothesis=Hypothesis(interval_s=1e-9)),
            "hypothesis.interval_s: must be a number",
        ),
        (
            replace(EXPERIMENT, hypothesis=Hypothesis(interval_s=True)),
            "hypothesis.interval_s: must be a number",
        ),
        (replace(EXPERIMENT, recover_within_s=INF), "recover_within_s: must be a number of seconds from 0"),
        (
            replace(EXPERIMENT, fault=Fault("pod-delete", (("TOTAL_CHAOS_DURATION", "9" * 5000),))),
            "fault.env",
        ),
        (replace(EXPERIMENT, fault=Fault("pod-cpu-hog", (("CPU_CORES", "100000"),))), "fault.env.CPU_CORES"),
    ],
)
def test_experiment_problem_bounds(experiment: Experiment, expected: str | None) -> None:
    problem = experiment.problem()
    assert problem is None if expected is None else (problem or "").startswith(expected), problem


def test_parsing_refuses_booleans_as_numbers() -> None:
    definition = {
        "name": "x",
        "target": {"namespace": "lab", "app_label": "app=x"},
        "fault": {"kind": "pod-delete"},
        "recover_within_s": True,
    }
    with pytest.raises(ExperimentError, match="recover_within_s: must be a number, got True"):
        parse_experiments({"experiments": [definition]})


@pytest.mark.parametrize(
    ("allowed", "good", "bad"),
    [
        (Range(1, 10), [1, 10, 5.5], [0, 10.01, NAN, INF, -INF, True, "5", None, 10**400]),
        (Range(0, 1, low_open=True, high_open=True), [0.5, 1e-9], [0, 1, NAN]),
        (Range(1, 100, whole=True), [1, 100], [1.0, True, 0, 101, 10**30]),
    ],
)
def test_range_holds_only_finite_numbers_inside_it(
    allowed: Range, good: list[object], bad: list[object]
) -> None:
    assert all(allowed.holds(value) for value in good)
    assert not any(allowed.holds(value) for value in bad)
    assert allowed.problem("x", bad[0]) is not None and allowed.problem("x", good[0]) is None
