"""`lcp rollout`'s rendering (pure: a RolloutView as the API answers it → rich renderables, read back from a
recorded console) and its client's error paths, against httpx.MockTransport: no network."""

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter
from rich.console import Console, RenderableType
from typer.testing import CliRunner

from api.rollout_schemas import RolloutSummary
from cli import app
from cli.client import RolloutApi
from cli.connection import CliError, guarded
from cli.rollout import (
    load_steps,
    load_templates,
    outcome_line,
    render_list,
    render_rollout,
    run_action,
    run_status,
    start_body,
    watch,
)
from workflows.canary import RolloutView

T0 = "2026-01-01T12:00:00Z"
NOW = datetime(2026, 1, 1, 12, 1, 40, tzinfo=UTC)
STEPS = [
    {"kind": "set_weight", "percent": 20},
    {"kind": "pause", "duration_s": 60.0},
    {
        "kind": "analyze",
        "templates": ["success-rate", "latency-p99-ratio"],
        "interval_s": 30.0,
        "count": 5,
        "failure_limit": 0,
        "inconclusive_limit": 0,
        "consecutive_error_limit": 4,
    },
    {"kind": "set_weight", "percent": 50},
    {"kind": "pause", "duration_s": None},
    {"kind": "set_weight", "percent": 100},
]


def _at(second: int) -> str:
    return f"2026-01-01T12:{second // 60:02d}:{second % 60:02d}Z"


def _event(second: int, kind: str, message: str, by: str = "") -> dict[str, Any]:
    return {"at": _at(second), "kind": kind, "message": message, "by": by}


def _measurement(second: int, template: str, phase: str, value: float | None, message: str) -> dict[str, Any]:
    return {"template": template, "phase": phase, "value": value, "message": message, "at": _at(second)}


def running_threshold() -> dict[str, Any]:
    """A threshold rollout in its analysis at 20%, with a long history."""
    history = [
        _event(0, "started", "rollout of lab.local/chat-api:v2 as v2", "key:sre1"),
        _event(1, "prepared", "canary chat-api-canary made from chat-api"),
        _event(2, "weight", "20% to the canary"),
        _event(3, "step", "step 0 done: canary at 20%"),
    ]
    history += [_event(4 + i, "note", f"filler {i}") for i in range(5)]
    history += [
        _event(63, "step", "step 1 done: paused 60 s"),
        _event(64, "analysis", "analysing every 30 s"),
    ]
    return {
        "id": "rollout/lab/chat-api",
        "namespace": "lab",
        "service": "chat-api",
        "stable_deployment": "chat-api",
        "canary_deployment": "chat-api-canary",
        "image": "lab.local/chat-api:v2",
        "version": "v2",
        "target": "deployment",
        "router": "replicas",
        "judge": "threshold",
        "steps": STEPS,
        "started_at": T0,
        "phase": "Progressing",
        "message": "analysing success-rate, latency-p99-ratio",
        "step": 2,
        "desired_weight": 20,
        "weights": {
            "router": "replicas",
            "stable_percent": 80.0,
            "canary_percent": 20.0,
            "total_replicas": 5,
            "stable_replicas": 4,
            "canary_replicas": 1,
            "stable_ready": 4,
            "canary_ready": 1,
        },
        "stable_version": "v1",
        "stable_image": "lab.local/chat-api:v1",
        "paused_by": None,
        "awaiting_decision": False,
        "analyses": [
            {
                "step": 2,
                "templates": ["success-rate", "latency-p99-ratio"],
                "judge": "threshold",
                "started_at": _at(64),
                "phase": "Running",
                "reason": "",
                "finished_at": None,
                "measurements": [
                    _measurement(94, "success-rate", "Successful", 0.99912, "0.99912 meets value >= 0.99"),
                    _measurement(
                        94, "latency-p99-ratio", "Inconclusive", 1.25, "1.25: neither condition holds"
                    ),
                ],
                "judgment": None,
            }
        ],
        "history": history,
        "finished_at": None,
        "requested_by": "key:sre1",
    }


def statistical_with_judgment() -> dict[str, Any]:
    view = running_threshold()
    view["judge"] = "statistical"
    analysis = view["analyses"][0]
    analysis.update(
        judge="statistical",
        templates=["success-rate", "latency-p99"],
        phase="Failed",
        reason="success-rate failed (critical)",
        measurements=[_measurement(94, "success-rate, latency-p99", "Failed", 0.0, "score 0: critical")],
        judgment={
            "phase": "Failed",
            "score": 0.0,
            "reason": "critical metric success-rate failed",
            "metrics": [
                {
                    "name": "success-rate",
                    "verdict": "low",
                    "reason": "lower by 0.05 (p=0.0021)",
                    "weight": 2.0,
                    "critical": True,
                    "n_canary": 6,
                    "n_baseline": 6,
                    "canary_median": 0.95,
                    "baseline_median": 0.9991,
                    "u": 0.0,
                    "p_value": 0.0021,
                    "absolute_change": -0.0491,
                    "relative_change": -0.0491,
                },
                {
                    "name": "latency-p99",
                    "verdict": "pass",
                    "reason": "no significant change",
                    "weight": 1.0,
                    "critical": False,
                    "n_canary": 6,
                    "n_baseline": 6,
                    "canary_median": 0.131,
                    "baseline_median": 0.129,
                    "u": 20.0,
                    "p_value": 0.69,
                    "absolute_change": 0.002,
                    "relative_change": 0.0155,
                },
            ],
        },
    )
    return view


def rolled_back() -> dict[str, Any]:
    view = running_threshold()
    view.update(
        phase="RolledBack",
        message="analysis of success-rate, latency-p99-ratio ended Failed",
        finished_at=_at(65 + 60),
        weights={**view["weights"], "stable_percent": 100.0, "canary_percent": 0.0},
    )
    view["weights"].update(stable_replicas=5, canary_replicas=0, stable_ready=5, canary_ready=0)
    view["analyses"][0].update(phase="Failed", reason="success-rate: 2 failed", finished_at=_at(124))
    view["history"].append(_event(125, "rolledback", view["message"]))
    return view


def _view(data: dict[str, Any]) -> RolloutView:
    """The view as the client reads the API's answer."""
    return TypeAdapter(RolloutView).validate_python(data)


def _text(renderable: RenderableType, width: int = 120, styles: bool = False) -> str:
    console = Console(
        record=True, width=width, file=io.StringIO(), force_terminal=styles, color_system="standard"
    )
    console.print(renderable)
    return console.export_text(styles=styles)


def _line(text: str, starting: str) -> str:
    """The line whose text (left-stripped) starts with `starting`."""
    found = [line.strip() for line in text.splitlines() if line.strip().startswith(starting)]
    assert found, f"no line starting {starting!r} in:\n{text}"
    return found[0]


# ---- rendering ---------------------------------------------------------------------------------------------


def test_a_running_threshold_rollout() -> None:
    text = _text(render_rollout(_view(running_threshold()), now=NOW))
    assert "rollout/lab/chat-api" in text and "lab/chat-api  Progressing" in text
    assert "lab.local/chat-api:v2 as v2" in text and "v1 (lab.local/chat-api:v1)" in text
    assert "by key:sre1, running 1m40s" in text
    assert "(simulated)" not in text
    # steps: the done ones ticked, the current one marked, the rest pending
    assert _line(text, "✓ 0").endswith("set canary weight 20%")
    assert _line(text, "✓ 1").endswith("pause 1m")
    assert "analyze success-rate, latency-p99-ratio: 5 × every 30s" in _line(text, "▶ 2")
    assert _line(text, "· 4").endswith("pause until promoted")
    # the weight bar: stable vs canary, on one line of an 80-column terminal; desired and actual replicas
    narrow = _text(render_rollout(_view(running_threshold()), now=NOW), width=80)
    bar = _line(narrow, "stable  80.0%")
    assert "█" in bar and bar.endswith("20.0% canary")
    assert "desired canary weight 20%" in text
    assert "stable 4/4 ready · canary 1/1 ready (of 5)" in text
    # the analysis, a measurement per row
    assert "threshold judge" in _line(text, "analysis") and "Running" in _line(text, "analysis")
    row = _line(text, _clock(94))
    assert row.split()[1:4] == ["success-rate", "Successful", "0.9991"] and row.endswith(">= 0.99")
    row = [line for line in text.splitlines() if "latency-p99-ratio   Inconclusive" in line][0]
    assert row.split()[0] == _clock(94) and "1.25   1.25: neither condition holds" in row
    # the history: the last 8 of 11
    assert "(last 8 of 11)" in text
    assert "rollout of lab.local" not in text and "20% to the canary" not in text
    assert "step 0 done: canary at 20%" in text and "filler 4" in text
    assert "analysing every 30 s" in text


def _clock(second: int) -> str:
    return datetime.fromisoformat(_at(second)).astimezone().strftime("%H:%M:%S")


def test_a_statistical_rollout_shows_each_metrics_numbers_and_the_score() -> None:
    text = _text(render_rollout(_view(statistical_with_judgment()), now=NOW))
    assert "statistical judge" in _line(text, "analysis") and "Failed" in _line(text, "analysis")
    assert "success-rate failed (critical)" in text
    header = _line(text, "metric")
    for column in ("canary median", "stable median", "change", "p-value", "verdict"):
        assert column in header
    row = _line(text, "success-rate (critical)")
    for cell in ("0.95", "0.9991", "-4.9%", "0.0021", "6/6", "low", "lower by 0.05"):
        assert cell in row, (cell, row)
    row = _line(text, "latency-p99 ")
    for cell in ("0.131", "0.129", "+1.6%", "0.69", "pass"):
        assert cell in row, (cell, row)
    assert "score 0 → Failed: critical metric success-rate failed" in text


def test_a_finished_rolled_back_rollout() -> None:
    view = rolled_back()
    text = _text(render_rollout(_view(view), now=NOW))
    assert "lab/chat-api  RolledBack" in text
    assert "finished" in text and "after 2m05s" in text and "running" not in text
    assert "✗ 2" in text and "▶" not in text
    assert _line(text, "· 3").endswith("set canary weight 50%")
    assert _line(text, "stable 100.0%").endswith("0.0% canary")
    assert "stable 5/5 ready · canary 0/0 ready" in text
    assert "rolledback" in text
    styled = _text(render_rollout(_view(view), now=NOW), styles=True)
    assert "\x1b[1;31mRolledBack" in styled  # in red
    assert str(outcome_line(_view(view))) == (
        "lab/chat-api: RolledBack, step 2/6 (analyze success-rate, latency-p99-ratio: 5 × every 30s): "
        "analysis of success-rate, latency-p99-ratio ended Failed"
    )


def test_a_rollout_waiting_for_a_human_and_one_not_split_yet() -> None:
    view = running_threshold()
    view.update(phase="Paused", step=4, awaiting_decision=True, analyses=[], paused_by=None)
    text = _text(render_rollout(_view(view), now=NOW))
    assert "waiting for a human: promote or abort" in text and "⏸ 4" in text
    assert "analysis" not in text.split("traffic")[1].split("history")[0]
    view.update(phase="Progressing", step=0, weights=None, awaiting_decision=False, paused_by="key:ops")
    text = _text(render_rollout(_view(view), now=NOW))
    assert "not split yet" in text and "paused by key:ops" in text
    assert str(outcome_line(_view(view))).endswith("(paused by key:ops)")


def test_a_model_rollout_has_no_image_deployments_or_replicas() -> None:
    view = running_threshold()
    view.update(
        namespace="models", service="sim-llama-8b", image="", stable_deployment="", canary_deployment=""
    )
    view["weights"] = {**view["weights"], "router": "gateway", "total_replicas": 0}
    text = _text(render_rollout(_view(view), now=NOW))
    assert "model sim-llama-8b as v2" in text and "deployments" not in text
    assert "ready" not in text and _line(text, "stable  80.0%").endswith("20.0% canary")


def test_the_list_is_a_table() -> None:
    rows: list[dict[str, Any]] = [
        {
            "id": "rollout/lab/a",
            "namespace": "lab",
            "service": "a",
            "phase": "Succeeded",
            "status": "COMPLETED",
            "started_at": "2026-01-01T12:00:00+00:00",
            "closed_at": "2026-01-01T12:05:00+00:00",
        },
        {
            "id": "rollout/lab/b",
            "namespace": "lab",
            "service": "b",
            "phase": "Paused",
            "status": "RUNNING",
            "started_at": "2026-01-01T12:10:00+00:00",
            "closed_at": None,
        },
    ]
    text = _text(render_list([RolloutSummary(**row) for row in rows]))
    assert "rollout" in _line(text, "rollout") and "phase" in _line(text, "rollout")
    assert "Succeeded" in _line(text, "lab/a") and "COMPLETED" in _line(text, "lab/a")
    assert "RUNNING" in _line(text, "lab/b")
    assert _text(render_list([])).strip() == "no rollouts"


# ---- the client, its errors and the live view ----------------------------------------------------------


def _api(handler: Callable[[httpx.Request], httpx.Response]) -> RolloutApi:
    return RolloutApi("http://lcp.test", "the-key", transport=httpx.MockTransport(handler))


def _consoles() -> tuple[Console, Console]:
    return (
        Console(record=True, width=200, file=io.StringIO()),
        Console(record=True, width=200, file=io.StringIO(), stderr=True),
    )


def test_an_api_error_is_one_red_line_and_exit_1() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        message = "rollout/lab/chat-api has finished: start a new rollout"
        return httpx.Response(409, json={"error": {"type": "RolloutFinished", "message": message}})

    out, err = _consoles()
    with _api(handler) as api:
        code = guarded(
            "rollout",
            "promote",
            err,
            lambda: run_action(api, "promote", "lab", "chat-api", out, reason="go", full=True),
        )
    assert code == 1
    assert (
        err.export_text() == "lcp rollout promote: rollout/lab/chat-api has finished: start a new rollout\n"
    )
    assert out.export_text() == ""
    (request,) = seen
    assert request.url.path == "/v1/rollouts/lab/chat-api/promote"
    assert request.headers["authorization"] == "Bearer the-key"
    assert json.loads(request.content) == {"reason": "go", "full": True}


def test_a_non_json_error_and_an_unreachable_api_are_said_plainly() -> None:
    out, err = _consoles()
    with _api(lambda request: httpx.Response(502, text="<html>bad gateway</html>")) as api:
        assert guarded("rollout", "status", err, lambda: run_status(api, "lab", "x", out)) == 1
    assert "lcp rollout status: HTTP 502: <html>bad gateway</html>" in err.export_text()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with _api(refuse) as api, pytest.raises(CliError) as caught:
        api.get("lab", "x")
    assert "cannot reach the API at http://lcp.test" in caught.value.message


def test_the_live_view_follows_the_rollout_to_its_end_through_a_blip() -> None:
    running = running_threshold()
    done = {**rolled_back(), "phase": "Succeeded", "step": 6, "message": "v2 is the stable version"}
    answers = [
        httpx.Response(200, json=running),
        httpx.Response(503, json={"error": {"type": "TemporalUnavailable", "message": "temporal is down"}}),
        httpx.Response(429, json={"error": {"type": "RateLimited", "message": "key limit reached"}}),
        httpx.Response(200, json=done),
    ]
    sleeps: list[float] = []
    out, _ = _consoles()
    with _api(lambda request: answers.pop(0)) as api:
        final = watch(api, "lab", "chat-api", out, sleep=sleeps.append)
    assert final.phase == "Succeeded" and answers == [] and sleeps == [1.0, 1.0, 1.0]
    text = out.export_text()
    assert "lab/chat-api  Succeeded" in text and "✓ 5" in text  # a non-terminal gets the last frame

    out, err = _consoles()
    answers = [httpx.Response(404, json={"error": {"type": "RolloutNotFound", "message": "no rollout x"}})]
    with _api(lambda request: answers.pop(0)) as api:
        assert guarded("rollout", "status", err, lambda: run_status(api, "lab", "x", out, watch_it=True)) == 1
    assert "lcp rollout status: no rollout x" in err.export_text()


def test_the_command_line_says_an_unreachable_api_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "rollout",
            "abort",
            "chat-api",
            "--api",
            "http://127.0.0.1:1",
            "--api-key",
            "k",
            "--home",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 1
    assert "lcp rollout abort: cannot reach the API at http://127.0.0.1:1" in result.output
    assert "Traceback" not in result.output


# ---- request bodies -------------------------------------------------------------------------------------


def test_steps_and_templates_files_become_the_body(tmp_path: Path) -> None:
    steps = tmp_path / "steps.yaml"
    steps.write_text(
        "- {kind: set_weight, percent: 20}\n"
        "- {kind: pause, duration_s: 30}\n"
        "- {kind: analyze, templates: [success-rate], interval_s: 10, count: 3}\n"
    )
    templates = tmp_path / "analysis.yaml"
    templates.write_text('templates:\n  mine:\n    query: up\n    success: ">= 1"\n')
    body = start_body(
        "chat-api",
        image="img:v2",
        version="v2",
        namespace="lab",
        judge="statistical",
        steps_file=steps,
        templates_file=templates,
        freeze_on_failure=True,
    )
    assert body == {
        "service": "chat-api",
        "namespace": "lab",
        "image": "img:v2",
        "version": "v2",
        "judge": "statistical",
        "steps": [
            {"kind": "set_weight", "percent": 20},
            {"kind": "pause", "duration_s": 30},
            {"kind": "analyze", "templates": ["success-rate"], "interval_s": 10, "count": 3},
        ],
        "templates": {"mine": {"query": "up", "success": ">= 1"}},
        "on_failure": "freeze",
    }
    model = start_body("sim-llama-8b", image=None, version="v2", model=True)
    assert model == {"service": "sim-llama-8b", "namespace": "models", "version": "v2", "target": "model"}
    as_json = tmp_path / "steps.json"
    as_json.write_text(json.dumps({"steps": [{"kind": "set_weight", "percent": 100}]}))
    assert load_steps(as_json) == [{"kind": "set_weight", "percent": 100}]


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("kind: set_weight\n", "expected a non-empty list of steps"),
        ("- {percent: 20}\n", "step 0 is not a mapping with a `kind`"),
        ("- [unclosed\n", "is neither YAML nor JSON"),
    ],
)
def test_a_bad_steps_file_is_refused_before_any_call(tmp_path: Path, content: str, said: str) -> None:
    steps = tmp_path / "steps.yaml"
    steps.write_text(content)
    with pytest.raises(CliError) as caught:
        load_steps(steps)
    assert said in caught.value.message
    with pytest.raises(CliError) as caught:
        load_steps(tmp_path / "missing.yaml")
    assert "No such file" in caught.value.message
    with pytest.raises(CliError) as caught:
        load_templates(steps)
    assert "expected a mapping `templates:`" in caught.value.message or "neither YAML" in caught.value.message
