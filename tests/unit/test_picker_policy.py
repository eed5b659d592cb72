"""The deployment picker as tables: what the filter lets through, how candidates score, what each
strategy picks, and the prefix index."""

import random

import pytest

from policies.picker import (
    Candidate,
    FlowControl,
    NoDeployment,
    PrefixIndex,
    Request,
    ScoreWeights,
    Strategy,
    Unavailable,
    eligible,
    pick,
    pick_or_hold,
    prompt_blocks,
    scores,
    unsaturated,
)

REQ = Request(prompt_tokens=1000, max_tokens=100)


def ids(result: list[Candidate] | NoDeployment) -> list[str] | NoDeployment:
    return [c.id for c in result] if isinstance(result, list) else result


@pytest.mark.parametrize(
    ("candidates", "request_", "expected"),
    [
        ([Candidate("a"), Candidate("b")], REQ, ["a", "b"]),
        ([Candidate("a", cooling_until=10), Candidate("b")], REQ, ["b"]),
        ([Candidate("a", cooling_until=5)], REQ, ["a"]),  # its cooldown ended at 5; now is 5
        ([Candidate("a", draining=True), Candidate("b")], REQ, ["b"]),
        ([Candidate("a", max_in_flight=2, in_flight=2), Candidate("b")], REQ, ["b"]),
        ([Candidate("a", context_window=1000), Candidate("b", context_window=1100)], REQ, ["b"]),
        (
            [Candidate("a", labels={"region": "eu"}), Candidate("b", labels={"region": "us"})],
            Request(10, labels={"region": "eu"}),
            ["a"],
        ),
        # why nothing can take it, in the order a caller acts on it
        (
            [Candidate("a", context_window=512), Candidate("b", context_window=1024)],
            REQ,
            NoDeployment(Unavailable.CONTEXT_WINDOW, largest_window=1024),
        ),
        (
            [Candidate("a", labels={"region": "us"})],
            Request(10, labels={"region": "eu"}),
            NoDeployment(Unavailable.LABELS),
        ),
        ([Candidate("a", draining=True)], REQ, NoDeployment(Unavailable.DRAINING)),
        (
            [Candidate("a", cooling_until=9), Candidate("b", cooling_until=7)],
            REQ,
            NoDeployment(Unavailable.COOLING_DOWN, retry_at=7),
        ),
        ([Candidate("a", max_in_flight=1, in_flight=1)], REQ, NoDeployment(Unavailable.COOLING_DOWN)),
        # a draining deployment's cooldown is no reason to wait
        (
            [Candidate("a", draining=True, cooling_until=9), Candidate("b", cooling_until=7)],
            REQ,
            NoDeployment(Unavailable.COOLING_DOWN, retry_at=7),
        ),
    ],
)
def test_filter(candidates: list[Candidate], request_: Request, expected: list[str] | NoDeployment) -> None:
    assert ids(eligible(candidates, request_, now=5)) == expected


FLOW = FlowControl(max_pending_prefill_tokens=1000, max_waiting=2)


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [
        ([Candidate("a"), Candidate("b", pending_prefill_tokens=1000)], ["a", "b"]),  # at the limit: room
        ([Candidate("a", pending_prefill_tokens=1001), Candidate("b")], ["b"]),
        ([Candidate("a", waiting=3), Candidate("b", waiting=2)], ["b"]),
        (
            [Candidate("a", pending_prefill_tokens=5000), Candidate("b", waiting=9)],
            NoDeployment(Unavailable.SATURATED),
        ),
    ],
)
def test_flow_control_leaves_out_the_saturated(
    candidates: list[Candidate], expected: list[str] | NoDeployment
) -> None:
    assert ids(unsaturated(candidates, FLOW)) == expected


HELD_PREFIX = Request(15_000, prefix_blocks=10)


@pytest.mark.parametrize(
    ("strategy", "candidates", "request_", "expected"),
    [
        # nothing saturated: the one where the first token comes soonest (the prefix holder here)
        (
            Strategy.CACHE_AWARE,
            [Candidate("a", prefix_blocks_held=10, pending_prefill_tokens=900), Candidate("b")],
            HELD_PREFIX,
            "a",
        ),
        # the prefix holder is saturated, yet still the soonest (5k to prefill before it, against the
        # whole 15k prompt on "b"): held for it, not sent to "b" to prefill the prompt again
        (
            Strategy.CACHE_AWARE,
            [Candidate("a", prefix_blocks_held=10, pending_prefill_tokens=5_000), Candidate("b")],
            HELD_PREFIX,
            NoDeployment(Unavailable.SATURATED),
        ),
        # further behind (20k) than the whole 15k prompt on "b": its first token would come sooner on
        # "b", but "b" would prefill 15k that "a" holds, and the request after it there would wait those
        # 15k too (30k in all): still held for "a"
        (
            Strategy.CACHE_AWARE,
            [Candidate("a", prefix_blocks_held=10, pending_prefill_tokens=20_000), Candidate("b")],
            HELD_PREFIX,
            NoDeployment(Unavailable.SATURATED),
        ),
        # ...but once the holder is further behind than that, the prompt goes elsewhere
        (
            Strategy.CACHE_AWARE,
            [Candidate("a", prefix_blocks_held=10, pending_prefill_tokens=35_000), Candidate("b")],
            HELD_PREFIX,
            "b",
        ),
        # a holder of half the prompt with room beats the saturated holder of all of it (7.5k to prefill,
        # 7.5k redone: 15k against 20k) and the one holding nothing (30k)
        (
            Strategy.CACHE_AWARE,
            [
                Candidate("a", prefix_blocks_held=10, pending_prefill_tokens=20_000),
                Candidate("b"),
                Candidate("c", prefix_blocks_held=5),
            ],
            HELD_PREFIX,
            "c",
        ),
        # a prompt nobody holds goes to the one with the least ahead of it, held while that one is full
        (
            Strategy.CACHE_AWARE,
            [Candidate("a", pending_prefill_tokens=1500), Candidate("b", pending_prefill_tokens=1200)],
            REQ,
            NoDeployment(Unavailable.SATURATED),
        ),
        (
            Strategy.CACHE_AWARE,
            [Candidate("a", pending_prefill_tokens=1500), Candidate("b", pending_prefill_tokens=200)],
            REQ,
            "b",
        ),
        # a deployment whose vLLM queue is long is saturated too
        (Strategy.CACHE_AWARE, [Candidate("a", waiting=3)], REQ, NoDeployment(Unavailable.SATURATED)),
        # the other strategies take the first deployment with room
        (
            Strategy.ROUND_ROBIN,
            [Candidate("a", prefix_blocks_held=10, pending_prefill_tokens=5_000), Candidate("b")],
            HELD_PREFIX,
            "b",
        ),
        (
            Strategy.LEAST_IN_FLIGHT,
            [Candidate("a", pending_prefill_tokens=5_000), Candidate("b", waiting=9)],
            REQ,
            NoDeployment(Unavailable.SATURATED),
        ),
    ],
)
def test_flow_control_holds_or_picks(
    strategy: Strategy, candidates: list[Candidate], request_: Request, expected: str | NoDeployment
) -> None:
    chosen = pick_or_hold(strategy, candidates, request_, random.Random(0), FLOW)
    assert (chosen.id if isinstance(chosen, Candidate) else chosen) == expected


def test_redo_zero_sends_the_request_where_its_first_token_comes_soonest() -> None:
    # the greedy rule: 15k to prefill on "b" against 20k ahead on "a", whatever "b" redoes
    candidates = [Candidate("a", prefix_blocks_held=10, pending_prefill_tokens=20_000), Candidate("b")]
    chosen = pick_or_hold(
        Strategy.CACHE_AWARE, candidates, HELD_PREFIX, random.Random(0), FLOW, weights=ScoreWeights(redo=0)
    )
    assert isinstance(chosen, Candidate) and chosen.id == "b"


def test_least_delay_breaks_ties_on_the_score() -> None:
    # nobody holds the prompt and nothing is pending anywhere: load decides, as in the cache-aware score
    candidates = [Candidate("a", running=5), Candidate("b", running=1), Candidate("c", running=3)]
    for seed in range(10):
        chosen = pick_or_hold(Strategy.CACHE_AWARE, candidates, REQ, random.Random(seed), FLOW)
        assert isinstance(chosen, Candidate) and chosen.id == "b"


def test_load_counts_what_lcp_sent_since_the_last_read() -> None:
    assert Candidate("a", waiting=2, running=3, in_flight=7, in_flight_at_read=4).load == 8
    assert Candidate("a", waiting=2, running=3, in_flight=1, in_flight_at_read=4).load == 5


@pytest.mark.parametrize(
    ("candidates", "request_", "best"),
    [
        # the least loaded wins when nothing else differs
        ([Candidate("a", running=4), Candidate("b", running=1)], REQ, "b"),
        # KV-cache use breaks a tie in load
        ([Candidate("a", kv_cache_usage=0.9), Candidate("b", kv_cache_usage=0.2)], REQ, "b"),
        # prefix affinity outweighs a little more load...
        (
            [Candidate("a", running=2, prefix_blocks_held=10), Candidate("b", running=1)],
            Request(1000, prefix_blocks=10),
            "a",
        ),
        # ...but not a lot more load with a full KV cache
        (
            [Candidate("a", waiting=20, kv_cache_usage=1.0, prefix_blocks_held=3), Candidate("b")],
            Request(1000, prefix_blocks=10),
            "b",
        ),
        # a conversation's previous replica holds its prefix...
        ([Candidate("a", running=2), Candidate("b", running=1)], Request(1000, previous="a"), "a"),
        # ...unless it is overloaded
        ([Candidate("a", waiting=8), Candidate("b", waiting=1)], Request(1000, previous="a"), "b"),
        # the same number of requests, but a long prompt lcp sent to "a" is still being prefilled
        (
            [
                Candidate("a", running=1, pending_prefill_tokens=40_000),
                Candidate("b", running=1, pending_prefill_tokens=1_000),
            ],
            Request(15_000),
            "b",
        ),
        # the prefix's holder is the better bet while it has less to prefill first than the whole prompt...
        (
            [Candidate("a", prefix_blocks_held=10, pending_prefill_tokens=5_000), Candidate("b")],
            Request(15_000, prefix_blocks=10),
            "a",
        ),
        # ...but not once it is a hot spot with far more to prefill than the prompt itself
        (
            [Candidate("a", prefix_blocks_held=10, pending_prefill_tokens=100_000), Candidate("b")],
            Request(15_000, prefix_blocks=10),
            "b",
        ),
    ],
)
def test_scores(candidates: list[Candidate], request_: Request, best: str) -> None:
    by_id = scores(candidates, request_, ScoreWeights())
    assert max(by_id, key=lambda id_: by_id[id_]) == best
    assert pick(Strategy.CACHE_AWARE, candidates, request_, random.Random(0)).id == best


def test_ties_are_broken_at_random() -> None:
    candidates = [Candidate("a"), Candidate("b"), Candidate("c")]
    picked = {pick(Strategy.CACHE_AWARE, candidates, REQ, random.Random(seed)).id for seed in range(30)}
    assert picked == {"a", "b", "c"}


def test_round_robin_takes_turns() -> None:
    candidates = [Candidate("a"), Candidate("b"), Candidate("c")]
    rng = random.Random(0)
    assert [pick(Strategy.ROUND_ROBIN, candidates, REQ, rng, turn=t).id for t in range(5)] == list("abcab")


def test_weighted_random_follows_the_weights() -> None:
    candidates = [Candidate("a", weight=3), Candidate("b", weight=1), Candidate("z", weight=0)]
    rng = random.Random(1)
    counts = {"a": 0, "b": 0, "z": 0}
    for _ in range(4000):
        counts[pick(Strategy.WEIGHTED_RANDOM, candidates, REQ, rng).id] += 1
    assert counts["z"] == 0
    assert 2.5 < counts["a"] / counts["b"] < 3.5


def test_least_in_flight() -> None:
    candidates = [Candidate("a", in_flight=3), Candidate("b", in_flight=1), Candidate("c", in_flight=1)]
    picked = {pick(Strategy.LEAST_IN_FLIGHT, candidates, REQ, random.Random(s)).id for s in range(20)}
    assert picked == {"b", "c"}


def test_pick_needs_a_candidate() -> None:
    with pytest.raises(ValueError):
        pick(Strategy.CACHE_AWARE, [], REQ, random.Random(0))


def test_prefix_blocks_are_chained() -> None:
    first = prompt_blocks("x" * 256 + "y" * 256 + "z" * 100)
    assert len(first) == 2  # only whole blocks
    same_start = prompt_blocks("x" * 256 + "w" * 256)
    assert same_start[0] == first[0] and same_start[1] != first[1]
    # the same block after a different prefix is a different block
    assert prompt_blocks("w" * 256 + "y" * 256)[1] != first[1]


def test_prefix_index_counts_leading_blocks_and_forgets_the_oldest() -> None:
    index = PrefixIndex(capacity=4)
    index.routed("a", [1, 2, 3])
    assert index.held("a", [1, 2, 3, 4]) == 3
    assert index.held("a", [9, 1, 2]) == 0
    assert index.held("b", [1]) == 0
    index.routed("a", [7, 8])  # 5 blocks > capacity 4: block 1, the oldest, goes
    assert index.held("a", [1, 2, 3]) == 0
    index.forget("a")
    assert index.held("a", [7]) == 0
