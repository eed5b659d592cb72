"""`lcp bench fleet` runs end to end on a small trace in Mooncake's format and reports every lcp strategy,
with and without a replica killed (shape and plausibility only: no timing assertions; LiteLLM is left out,
so nothing is installed)."""

import json
import subprocess
import sys
from pathlib import Path


def conversations_trace(path: Path) -> Path:
    """Eight conversations of three turns, interleaved: each turn's prompt is the previous one's and more
    (Mooncake's hash ids: a block id is the same wherever the same prefix is)."""
    lines, next_id = [], 0
    blocks: dict[int, list[int]] = {}
    for turn in range(3):
        for conversation in range(8):
            blocks[conversation] = blocks.get(conversation, []) + [next_id, next_id + 1]
            next_id += 2
            at_ms = (turn * 8 + conversation) * 400
            record = {
                "timestamp": at_ms,
                "input_length": 512 * len(blocks[conversation]) - 100,
                "output_length": 20,
            }
            lines.append(json.dumps({**record, "hash_ids": blocks[conversation]}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bench_fleet_reports_each_strategy(tmp_path: Path) -> None:
    out, plot = tmp_path / "fleet.json", tmp_path / "fleet.png"
    trace = conversations_trace(tmp_path / "trace.jsonl")
    args = ["bench", "fleet", "--trace", str(trace), "--replicas", "2", "--skip", "2", "--limit", "22"]
    args += ["--speed", "4", "--no-litellm", "--json", str(out), "--plot", str(plot)]
    done = subprocess.run([sys.executable, "-m", "cli", *args], timeout=600, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert plot.stat().st_size > 10_000  # a PNG with the curves
    assert result["settings"]["records"] == 22 and result["settings"]["skipped"] == 2
    assert 0.4 < result["infinite_cache_hit_rate"] < 1  # later turns share their conversation's prefix
    assert set(result["runs"]) == {
        f"lcp {s}{k}"
        for s in ("cache_aware", "cache_aware, flow control", "round_robin", "least_in_flight")
        for k in ("", " (a replica killed)")
    }
    for name, run in result["runs"].items():
        assert run["requests"] == 22
        assert run["completed"] + run["failed_before_first_token"] + run["broken_mid_stream"] == 22, name
        assert 0 < run["ttft_ms"]["p50"] <= run["ttft_ms"]["p99"] <= run["e2e_ms"]["p99"]
        assert 0 <= run["prefix_cache_hit_rate"] <= 1
    assert result["runs"]["lcp cache_aware"]["failed_before_first_token"] == 0
    assert result["runs"]["lcp cache_aware"]["prefix_cache_hit_rate"] > 0  # a turn found its prefix cached
    assert "lcp cache_aware" in done.stdout  # the table
    assert set(result["goals"]) >= {"hit_rate_over_bound", "failed_with_a_replica_killed"}
