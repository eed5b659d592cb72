"""`lcp chaos run --watch` as an SRE sees it: the fault's time left, the pods it deleted, the probes as they
run, then the report and an exit code saying whether the hypothesis held."""

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from rich.console import Console

from cli.chaos import watch
from cli.client import ChaosApi

START = datetime(2026, 11, 26, 15, 6, tzinfo=UTC)


def _at(seconds: float) -> str:
    return (START + timedelta(seconds=seconds)).isoformat()


def _view(**changes: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": "chaos/chat-api-pod-delete/r1",
        "experiment": "chat-api-pod-delete",
        "run": "r1",
        "target": "lab/chat-api",
        "fault": "pod-delete",
        "engine": "chat-api-pod-delete-r1",
        "phase": "Injecting",
        "message": "pod-delete on lab/chat-api",
        "started_at": _at(0),
        "requested_by": "sre",
        "fault_duration_s": 30.0,
        "injected": True,
        "journal": [
            {
                "step": "safety",
                "started_at": _at(0),
                "ended_at": _at(1),
                "duration_s": 1.0,
                "status": "succeeded",
            },
            {"step": "inject", "started_at": _at(2)},
        ],
    }
    return view | changes


def _probe(name: str, when: str, at: float, value: float) -> dict[str, Any]:
    return {
        "probe": name,
        "when": when,
        "at": _at(at),
        "passed": True,
        "value": value,
        "detail": f"{name}: ok",
    }


def test_the_watch_shows_time_left_pods_deleted_and_probes_then_the_report() -> None:
    views = [
        _view(probes=[_probe("success-rate", "during", 3, 0.999)], pods_hit=["chat-api-v1-0"]),
        _view(
            probes=[_probe("success-rate", "during", 3, 0.999), _probe("success-rate", "during", 13, 0.998)],
            pods_hit=["chat-api-v1-0", "chat-api-v1-2"],
            pods_ready=3,
            pods_total=4,
        ),
        _view(
            phase="Passed",
            message="the steady state held",
            verdict="Pass",
            probes=[_probe("success-rate", "during", 3, 0.999), _probe("ready-replicas", "after", 40, 4)],
            pods_hit=["chat-api-v1-0", "chat-api-v1-2", "chat-api-v1-5"],
            journal=[
                {
                    "step": "inject",
                    "started_at": _at(2),
                    "ended_at": _at(33),
                    "duration_s": 31.0,
                    "status": "succeeded",
                }
            ],
            probe_success_percentage=100.0,
            resilience_score=100.0,
            time_to_recover_s=4.0,
            cleaned_up=True,
            finished_at=_at(41),
        ),
    ]
    polls: list[float] = []  # one per interval slept
    clock = iter([START + timedelta(seconds=s) for s in (12, 22, 41)])

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=views[len(polls)])

    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=False)
    api = ChaosApi("http://lcp.test", "k", transport=httpx.MockTransport(answer))

    code = watch(api, "chat-api-pod-delete", "r1", console, sleep=polls.append, now=lambda: next(clock))
    text = out.getvalue()
    assert code == 0
    assert "10 s of 30 s, 20 s left" in _live_frames(views[0], START + timedelta(seconds=12))
    assert "3/4 ready (replacements starting); 2 deleted: chat-api-v1-0, chat-api-v1-2" in _live_frames(
        views[1], START
    )
    assert "3 deleted: chat-api-v1-0, chat-api-v1-2, chat-api-v1-5" in text  # the last frame, piped
    assert "over after 31 s (of 30 s)" in text and "steady again after 4 s" in text
    assert "ready-replicas" in text and "Passed" in text and "resilience score 100" in text


def _live_frames(view: dict[str, Any], now: datetime) -> str:
    """What the live view draws for `view` at `now` (a terminal redraws it in place; a pipe gets the last)."""
    from pydantic import TypeAdapter

    from cli.chaos import render_live
    from workflows.chaos import ChaosView

    frame = Console(file=io.StringIO(), width=80, record=True)
    frame.print(render_live(TypeAdapter(ChaosView).validate_python(view), now))
    return " ".join(frame.export_text().split())


def test_a_run_that_failed_exits_1() -> None:
    failed = _view(phase="Failed", message="steady state breached", finished_at=_at(20))
    api = ChaosApi(
        "http://lcp.test", "k", transport=httpx.MockTransport(lambda r: httpx.Response(200, json=failed))
    )
    console = Console(file=io.StringIO(), width=80)
    assert watch(api, "chat-api-pod-delete", "r1", console, sleep=lambda _: None) == 1
