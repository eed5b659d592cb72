"""`lcp scaling`'s screens, rendered from a ScalingView as the API answers it (no network)."""

import io
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter
from rich.console import Console

from api.scaling_schemas import ScalingSummary
from cli.scaling import render_list, render_scaling, replicas_change, sparkline
from workflows.scaling import DecisionView, ScalingView

VIEW: dict[str, Any] = {
    "id": "scaling/lab/web",
    "namespace": "lab",
    "deployment": "web",
    "mode": "active",
    "phase": "Active",
    "health": "ok",
    "message": "forecast peak 410.0 rps over the lead time needs 6 > reactive 4; 4 → 6",
    "settings": {
        "namespace": "lab",
        "deployment": "web",
        "bounds": {"min_replicas": 2, "max_replicas": 20, "capacity_rps": 80.0, "target_utilization": 0.8},
        "interval_s": 60.0,
        "startup_s": 120.0,
    },
    "started_at": "2026-11-26T11:59:00Z",
    "decisions": 2,
    "forecast": {"start": 0.0, "step_s": 60.0, "mean": [300.0, 350.0, 410.0], "low": [], "high": []},
    "model": {"model": "2 x ExtraTreesRegressor", "samples": 1200, "trained_at": 0.0, "holdout_error": 0.04},
    "last": {
        "seq": 2,
        "at": "2026-11-26T12:01:00Z",
        "mode": "active",
        "status": "scaled",
        "data_status": "ok",
        "forecast_status": "ok",
    },
    "recent": [
        {
            "seq": 1,
            "at": "2026-11-26T12:00:00Z",
            "mode": "active",
            "status": "no-data",
            "data_status": "prometheus-down",
        },
        {
            "seq": 2,
            "at": "2026-11-26T12:01:00Z",
            "mode": "active",
            "status": "scaled",
            "data_status": "ok",
            "observed_rps": 300.0,
            "forecast_peak_rps": 410.0,
            "confidence": 0.96,
            "current_replicas": 4,
            "target": 6,
            "ready_replicas": 4,
            "basis": "forecast",
            "limited_by": None,
        },
    ],
}


def view(data: dict[str, Any]) -> ScalingView:
    """The view as the client reads the API's answer."""
    return TypeAdapter(ScalingView).validate_python(data)


def decision(**fields: Any) -> DecisionView:
    return DecisionView(
        seq=1,
        at=datetime(2026, 11, 26, tzinfo=UTC),
        mode="active",
        status="scaled",
        data_status="ok",
        **fields,
    )


def text(renderable: object) -> str:
    out = io.StringIO()
    Console(file=out, width=140, color_system=None).print(renderable)
    return out.getvalue()


def test_the_status_screen_shows_mode_forecast_model_and_newest_decisions_first() -> None:
    screen = text(render_scaling(view(VIEW)))
    assert "lab/web" in screen and "Active" in screen and "4 → 6" in screen
    assert "2–20 replicas, 80 rps each" in screen and "peak 410 rps" in screen
    assert "1200 samples" in screen and "holdout_error 0.04" in screen
    assert screen.index("scaled") < screen.index("no-data")  # newest first
    assert "prometheus-down" in screen  # a decision without a basis shows why


def test_a_forecaster_problem_is_shown() -> None:
    last = {**VIEW["last"], "forecast_status": "short-history", "detail": "needs 240 points, got 12"}
    assert "short-history: needs 240 points, got 12" in text(render_scaling(view({**VIEW, "last": last})))


def test_small_pieces() -> None:
    assert sparkline([1.0, 2.0, 3.0]) == "▁▅█" and sparkline([5.0, 5.0]) == "▁▁" and sparkline([]) == ""
    assert replicas_change(decision(current_replicas=3, target=3)) == "3"
    assert replicas_change(decision(current_replicas=None)) == "-"
    target = {"id": "scaling/lab/web", "namespace": "lab", "deployment": "web", "phase": "Active"}
    listed = text(render_list([ScalingSummary(**target, status="RUNNING", started_at=None, closed_at=None)]))
    assert "lab/web" in listed and "Active" in listed
    assert "(none)" in text(render_list([]))
