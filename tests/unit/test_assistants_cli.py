"""`lcp assistants`' pure parts: the stats table, arms and params from the command line."""

from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from api.assistant_schemas import AssistantStats
from cli.assistants import parse_arms, parse_params, render_stats, spec_body
from cli.connection import CliError


def _usage(**extra: Any) -> dict[str, Any]:
    return {
        "conversations": 1,
        "turns": 1,
        "errors": 0,
        "error_rate": 0.0,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "latency_p50_ms": 40.0,
        "latency_p95_ms": 40.0,
        "thumbs_up": 1,
        "thumbs_down": 0,
        "satisfaction": 1.0,
        **extra,
    }


def _text(renderable: Any) -> str:
    console = Console(width=160, record=True)
    console.print(renderable)
    return console.export_text()


def test_stats_show_intervals_and_say_when_there_are_too_few_samples() -> None:
    diffs = [
        {
            "metric": "satisfaction",
            "arm": "b",
            "value": -0.067,
            "low": -0.374,
            "high": 0.26,
            "confidence": 0.95,
        },
        {
            "metric": "latency_mean_ms",
            "arm": "b",
            "value": 44.0,
            "low": None,
            "high": None,
            "confidence": 0.95,
        },
        {"metric": "error_rate", "arm": "b", "value": None, "low": None, "high": None, "confidence": 0.95},
    ]
    stats = {
        "assistant_id": "support",
        "versions": [_usage(version="v1"), _usage(version="v2")],
        "experiments": [
            {
                "id": "tone",
                "state": "running",
                "control": "a",
                "arms": [_usage(arm="a", version="v1"), _usage(arm="b", version="v2")],
                "differences": diffs,
            }
        ],
    }
    text = _text(render_stats(AssistantStats.model_validate(stats)))
    assert "-6.7 pts [-37.4, +26.0] 95% CI" in text
    assert "+44.0 ms (too few samples for an interval)" in text
    assert "not enough data" in text and "control arm a" in text
    nothing = AssistantStats(assistant_id="x", versions=[], experiments=[])
    assert "(no turns yet)" in _text(render_stats(nothing))


def test_arms_params_and_spec_files_from_the_command_line(tmp_path: Path) -> None:
    assert parse_arms(["control=v1:90", "b=v2:10"]) == [
        {"name": "control", "version": "v1", "share": 90},
        {"name": "b", "version": "v2", "share": 10},
    ]
    for bad in (["control=v1", "b=v2:10"], ["control=v1:50"]):
        with pytest.raises(CliError):
            parse_arms(bad)
    assert parse_params(["temperature=0.2", "max_tokens=300", "stop=END"]) == {
        "temperature": 0.2,
        "max_tokens": 300,
        "stop": "END",
    }
    with pytest.raises(CliError, match="NAME=VALUE"):
        parse_params(["temperature"])
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: Support\nmodel: sim-zero\ninstructions: from the file\n")
    assert spec_body(spec, instructions="from the flag") == {
        "name": "Support",
        "model": "sim-zero",
        "instructions": "from the flag",
    }
    with pytest.raises(CliError, match="neither YAML nor JSON"):
        spec.write_text("name: [unclosed")
        spec_body(spec)
