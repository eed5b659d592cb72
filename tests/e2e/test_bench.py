"""`lcp bench chat` runs end to end and reports both sides (shape only: no timing assertions)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.test_dev_split import require_split_engines


def test_bench_chat_reports_floor_and_lcp(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "chat", "--turns", "16", "--concurrency", "4", "--warmup", "4"]
    subprocess.run(
        [sys.executable, "-m", "cli", *args, "--json", str(out)], check=True, timeout=300,
        capture_output=True,
    )  # fmt: skip
    result = json.loads(out.read_text())
    for side in ("floor", "lcp"):
        assert result[side]["sequential"]["turns"] == 16
        assert result[side]["concurrent_4"]["turns"] == 16
        assert result[side]["sequential"]["p50_ms"] <= result[side]["sequential"]["p99_ms"]
    lcp_cpu, floor_cpu = (
        result["lcp"]["cpu_ms_per_concurrent_turn"],
        result["floor"]["cpu_ms_per_concurrent_turn"],
    )
    assert set(lcp_cpu) == {"temporal", "worker", "api", "llm", "bench-client"}
    assert set(floor_cpu) == {"temporal", "floor-worker", "bench-client"}
    assert lcp_cpu["worker"] > 0 and floor_cpu["floor-worker"] > 0
    assert set(result["ratios"]) == {
        "sequential_p50", "sequential_p99", "concurrent_4_p99", "concurrent_4_throughput"
    }  # fmt: skip
    assert result["machine"]["temporal_bin"] and result["settings"]["turns_per_conversation"] == 10


def test_bench_chat_split_reports_the_split_shape_beside_the_single_process_one(tmp_path: Path) -> None:
    require_split_engines()
    out = tmp_path / "bench.json"
    # 16 turns: each API process serves enough of them to show CPU time at the clock tick's 10 ms.
    args = ["bench", "chat", "--split", "--turns", "16", "--concurrency", "2", "--warmup", "2"]
    run = subprocess.run(
        [sys.executable, "-m", "cli", *args, "--json", str(out)], timeout=600, capture_output=True, text=True,
        env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "lcp split" in run.stdout and "ratios split/single" in run.stdout
    result = json.loads(out.read_text())
    for side in ("lcp", "lcp_split"):
        assert result[side]["sequential"]["turns"] == 16 and result[side]["concurrent_2"]["turns"] == 16
    assert set(result["lcp"]["cpu_ms_per_concurrent_turn"]) == {
        "temporal",
        "llm",
        "api+worker",
        "bench-client",
    }
    split_cpu = result["lcp_split"]["cpu_ms_per_concurrent_turn"]
    assert {"postgres", "balancer", "worker", "api-0", "api-1"} <= set(split_cpu)
    assert split_cpu["api-0"] > 0 and split_cpu["api-1"] > 0  # the balancer sent turns to both
    assert set(result["split_vs_single"]) == {
        "sequential_p50", "sequential_p99", "concurrent_2_p99", "concurrent_2_throughput"
    }  # fmt: skip
    assert "PostgreSQL" in result["settings"]["lcp_split_layout"]


def test_bench_stream_measures_the_relay_and_the_signal_alternative(tmp_path: Path) -> None:
    out = tmp_path / "stream.json"
    subprocess.run(
        [sys.executable, "-m", "cli", "bench", "stream", "--turns", "2", "--json", str(out)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    result = json.loads(out.read_text())
    relay, signals = result["relay"], result["signals"]
    assert relay["batches_per_turn_p50"] > 1  # tokens arrived in several pieces, not whole at the end
    assert signals["signals_per_turn_p50"] == relay["batches_per_turn_p50"]
    assert signals["history_events_for_the_signals_p50"] > signals["signals_per_turn_p50"]
    assert relay["history_events_per_turn_p50"] > 0
