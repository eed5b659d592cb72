"""The prefix-trace replayer: prompts reproduce the trace's block sharing, the bound is the share of
blocks seen before, and a bad record is refused naming its line."""

import json
from pathlib import Path

import pytest

from bench.replay import TraceError, TraceRequest, prompt, read_prefix_trace, schedule, shared_prefix_bound


def record(hash_ids: list[int], tokens: int | None = None, at_s: float = 0.0) -> TraceRequest:
    return TraceRequest(at_s, tokens or 512 * len(hash_ids), 10, tuple(hash_ids))


def test_prompts_share_exactly_the_blocks_their_records_share() -> None:
    first = prompt(record([1, 2, 3])).split()
    second = prompt(record([1, 2, 9])).split()
    assert len(first) == len(second) == 3 * 512
    assert first[: 2 * 512] == second[: 2 * 512]
    assert first[2 * 512 :] != second[2 * 512 :]
    assert len(prompt(record([1, 2, 3], tokens=1000)).split()) == 1000  # cut to input_length
    assert len(prompt(record([1], tokens=2000)).split()) == 2000  # filler past the hash ids


def test_the_bound_counts_blocks_whose_whole_prefix_was_seen() -> None:
    records = [record([1, 2]), record([1, 2, 3]), record([4, 2]), record([1, 2, 3, 5])]
    # seen before: [1,2]'s 2 of record 2; none of [4,2] (its 2 follows 4); 3 of record 4
    assert shared_prefix_bound(records) == pytest.approx(5 / 11)
    assert shared_prefix_bound([]) == 0


def test_read_sorts_limits_and_refuses_bad_records(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    rows = [
        {"timestamp": t, "input_length": 10, "output_length": 5, "hash_ids": [t]} for t in (2000, 1000, 3000)
    ]
    trace.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    records = read_prefix_trace(trace)
    assert [r.at_s for r in records] == [1.0, 2.0, 3.0]
    assert len(read_prefix_trace(trace, limit=2)) == 2
    assert [at for at, _ in schedule(records, speed=2)] == [0.0, 0.5, 1.0]
    trace.write_text(json.dumps(rows[0]) + "\n" + '{"timestamp": 1}\n')
    with pytest.raises(TraceError, match=r"trace.jsonl:2: not a trace record"):
        read_prefix_trace(trace)
    trace.write_text(json.dumps({**rows[0], "input_length": 10**9}) + "\n")
    with pytest.raises(TraceError, match=r"trace.jsonl:1: input_length and output_length must be"):
        read_prefix_trace(trace)


def test_a_fleet_bench_refuses_an_unknown_strategy_and_a_replay_too_big_to_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import fleet
    from bench.gateway import BenchError

    trace = tmp_path / "trace.jsonl"
    lines = [
        {"timestamp": i, "input_length": 600, "output_length": 5, "hash_ids": [i, i + 1]} for i in range(3)
    ]
    trace.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(BenchError, match="no strategy 'fastest': the strategies are 'cache_aware'; "):
        fleet.run_fleet_bench(fleet.FleetPlan(trace, only=("least-busy", "fastest"), litellm=False))
    with pytest.raises(BenchError, match="only LiteLLM's strategies, and LiteLLM is left out"):
        fleet.run_fleet_bench(fleet.FleetPlan(trace, only=("least-busy",), litellm=False))
    monkeypatch.setattr(fleet, "MAX_REPLAY_TOKENS", 1000)
    with pytest.raises(BenchError, match="3 records ask for 1,800 prompt tokens, more than the 1,000"):
        fleet.run_fleet_bench(fleet.FleetPlan(trace, litellm=False))
    # the requests as sent: the record's prompt, streamed
    body = json.loads(fleet.request_body(record([1, 2], tokens=700)))
    assert body["stream"] is True and body["max_tokens"] == 10
    assert body["messages"][0]["content"] == prompt(record([1, 2], tokens=700))
