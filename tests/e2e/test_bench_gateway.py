"""`lcp bench gateway` runs end to end and reports the direct and lcp sides (shape and plausibility
only: no timing assertions; LiteLLM is left out, so nothing is installed)."""

import json
import subprocess
import sys
from pathlib import Path


def test_bench_gateway_reports_direct_and_lcp(tmp_path: Path) -> None:
    out = tmp_path / "bench-gateway.json"
    args = ["bench", "gateway", "--requests", "20", "--throughput-requests", "100", "--warmup", "5"]
    subprocess.run(
        [sys.executable, "-m", "cli", *args, "--no-litellm", "--json", str(out)], check=True,
        timeout=300, capture_output=True,
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert "litellm" not in result and result["litellm_setup"] is None
    assert result["settings"]["requests"] == 20 and result["settings"]["concurrency"] == 32
    for side in ("direct", "lcp"):
        whole, stream = result[side]["non_stream"], result[side]["stream"]
        assert whole["count"] == 20
        assert 0 < whole["min_ms"] <= whole["p50_ms"] <= whole["p99_ms"]
        for phase in (stream["first_content_chunk"], stream["total"]):
            assert phase["count"] == 20 and 0 < phase["p50_ms"] <= phase["p99_ms"]
        assert stream["first_content_chunk"]["min_ms"] <= stream["total"]["p50_ms"]
        throughput = result[side]["throughput"]
        assert throughput["requests"] == 100 and throughput["requests_per_s"] > 0
        assert throughput["latency"]["count"] == 100
        assert result[side]["cpu_ms_per_request"]["llm"] > 0
    assert result["lcp"]["cpu_ms_per_request"]["lcp"] > 0
    assert set(result["added"]) == {"lcp"}
    assert set(result["added"]["lcp"]) == {
        "non_stream_p50_ms", "non_stream_p99_ms", "first_chunk_p50_ms", "first_chunk_p99_ms",
        "stream_total_p50_ms",
    }  # fmt: skip
    assert result["ratios"]["throughput_lcp_over_direct"] > 0
    assert result["goals"] == {}  # the goals compare with LiteLLM
    assert result["machine"]["cpus"] and result["machine"]["temporal_bin"]
