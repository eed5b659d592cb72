"""`lcp bench chat` runs end to end and reports both sides (shape only: no timing assertions)."""

import json
import subprocess
import sys
from pathlib import Path


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
