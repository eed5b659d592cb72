"""A/B assignment policy as tables: sticky buckets, realised shares, reshuffling, what moves, bad arms."""

import hashlib
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence

import pytest
from temporalio.converter import DataConverter

from policies.assignment import Arm, InvalidArms, assign, bucket, expected_shares, moves, validate_arms

ASSISTANT, EXPERIMENT = "support-bot", "exp-2026-01"
USERS = [f"user-{i}" for i in range(10_000)]


def arms(*shares: int, names: str = "abcdefgh") -> list[Arm]:
    return [Arm(name, f"v{i + 1}", share) for i, (name, share) in enumerate(zip(names, shares, strict=False))]


def assignments(arm_list: Sequence[Arm], experiment: str = EXPERIMENT) -> dict[str, str]:
    return {user: assign(arm_list, ASSISTANT, experiment, user).name for user in USERS}


def realised(arm_list: Sequence[Arm]) -> dict[str, float]:
    counts = Counter(assignments(arm_list).values())
    return {arm.name: counts[arm.name] / len(USERS) for arm in arm_list}


# ── the bucket ───────────────────────────────────────────────────────────────────────────────────────────


def test_bucket_is_pinned_to_sha256_of_the_canonical_encoding() -> None:
    # Computed once: sha256(b"support-bot\x1fexp-2026-01\x1fuser-42") starts ef380fc871a2b382.
    assert bucket(ASSISTANT, EXPERIMENT, "user-42") == 0.9344491829266512
    digest = hashlib.sha256(b"support-bot\x1fexp-2026-01\x1fuser-42").digest()
    assert bucket(ASSISTANT, EXPERIMENT, "user-42") == (int.from_bytes(digest[:8], "big") >> 11) / 2**53


def test_bucket_is_the_same_in_another_process_with_another_hash_seed() -> None:
    code = (
        "from policies.assignment import bucket; print(repr(bucket('support-bot', 'exp-2026-01', 'user-42')))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == repr(bucket(ASSISTANT, EXPERIMENT, "user-42"))


def test_buckets_lie_in_the_unit_interval_and_spread_evenly() -> None:
    values = [bucket(ASSISTANT, EXPERIMENT, user) for user in USERS]
    assert all(0.0 <= v < 1.0 for v in values)
    deciles = Counter(int(v * 10) for v in values)
    assert all(900 <= deciles[d] <= 1100 for d in range(10)), deciles


@pytest.mark.parametrize(
    ("other", "differs"),
    [
        ((ASSISTANT, EXPERIMENT, "user-43"), "user"),
        ((ASSISTANT, "exp-2026-02", "user-42"), "experiment"),
        (("sales-bot", EXPERIMENT, "user-42"), "assistant"),
        (("support-bo", "texp-2026-01", "user-42"), "where the parts split"),
    ],
)
def test_each_part_of_the_key_changes_the_bucket(other: tuple[str, str, str], differs: str) -> None:
    assert bucket(*other) != bucket(ASSISTANT, EXPERIMENT, "user-42"), differs


@pytest.mark.parametrize("parts", [("a\x1fb", "e", "u"), ("a", "e\x1f", "u"), ("a", "e", "\x1fu")])
def test_a_part_containing_the_separator_is_rejected(parts: tuple[str, str, str]) -> None:
    with pytest.raises(ValueError, match="contains the separator"):
        bucket(*parts)


# ── assignment ───────────────────────────────────────────────────────────────────────────────────────────


def test_assignment_is_sticky() -> None:
    split = arms(50, 50)
    first = assignments(split)
    assert assignments(split) == first
    assert assignments(list(split)) == first  # a fresh but equal list (as decoded from history)


@pytest.mark.parametrize(
    "shares",
    [(50, 50), (90, 10), (33, 33, 34), (70, 20, 10), (5000, 5000), (1, 1, 2), (25, 25, 25, 25)],
)
def test_realised_shares_match_the_configured_shares(shares: tuple[int, ...]) -> None:
    split = arms(*shares)
    expected = expected_shares(split)
    got = realised(split)
    for name in expected:
        assert abs(got[name] - expected[name]) <= 0.02, (name, got, expected)


def test_assign_returns_the_arm_itself_with_its_version() -> None:
    split = [Arm("control", "v3", 50), Arm("treatment", "v4", 50)]
    chosen = {assign(split, ASSISTANT, EXPERIMENT, user) for user in USERS[:200]}
    assert chosen == set(split)


@pytest.mark.parametrize("shares", [(0, 100), (100, 0), (50, 0, 50), (0, 0, 7)])
def test_an_arm_with_zero_share_gets_nobody(shares: tuple[int, ...]) -> None:
    split = arms(*shares)
    counts = Counter(assignments(split).values())
    for arm in split:
        if arm.share == 0:
            assert counts[arm.name] == 0
        else:
            assert counts[arm.name] > 0


def test_a_single_arm_gets_everybody() -> None:
    assert set(assignments(arms(1))) == set(USERS)
    assert set(assignments(arms(1)).values()) == {"a"}


def test_arms_split_the_unit_interval_at_exactly_their_shares() -> None:
    # 1:3 puts the boundary at 0.25: users below it get the first arm, the rest the second.
    split = arms(1, 3)
    for user in USERS[:2000]:
        expected = "a" if bucket(ASSISTANT, EXPERIMENT, user) < 0.25 else "b"
        assert assign(split, ASSISTANT, EXPERIMENT, user).name == expected


def test_another_experiment_reshuffles_users_independently() -> None:
    split = arms(50, 50)
    first, second = assignments(split, "exp-1"), assignments(split, "exp-2")
    assert first != second
    both_b = sum(first[u] == "b" and second[u] == "b" for u in USERS) / len(USERS)
    same = sum(first[u] == second[u] for u in USERS) / len(USERS)
    assert abs(both_b - 0.25) <= 0.02  # independent: 50% × 50%
    assert abs(same - 0.50) <= 0.02


# ── changing shares ──────────────────────────────────────────────────────────────────────────────────────


def test_50_50_to_80_20_moves_only_the_shrinking_arms_users_and_about_30_percent() -> None:
    before = assignments(arms(50, 50))
    after = assignments(arms(80, 20))
    moved = Counter((before[u], after[u]) for u in USERS if before[u] != after[u])
    assert set(moved) == {("b", "a")}  # b shrank, a grew: nobody leaves a
    assert abs(moved[("b", "a")] / len(USERS) - 0.30) <= 0.02
    assert moves(arms(50, 50), arms(80, 20)) == {("b", "a"): pytest.approx(0.30)}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ((50, 50), (50, 50), {}),
        ((50, 50), (5000, 5000), {}),  # the same split in other units: nobody moves
        ((50, 50), (80, 20), {("b", "a"): 0.30}),
        ((90, 10), (50, 50), {("a", "b"): 0.40}),
        ((100, 0), (99, 1), {("a", "b"): 0.01}),
        ((33, 33, 34), (33, 0, 67), {("b", "c"): 0.33}),  # neighbours trade: only b's users move
        ((70, 20, 10), (70, 10, 20), {("b", "c"): 0.10}),
        # a change to an earlier arm shifts later boundaries: c shrank, yet some of c's users join b
        ((34, 33, 33), (50, 25, 25), {("b", "a"): 0.16, ("c", "b"): 0.08}),
    ],
)
def test_moves_predicts_who_changes_arm(
    old: tuple[int, ...], new: tuple[int, ...], expected: dict[tuple[str, str], float]
) -> None:
    predicted = moves(arms(*old), arms(*new))
    assert predicted == pytest.approx(expected)
    before, after = assignments(arms(*old)), assignments(arms(*new))
    seen = Counter((before[u], after[u]) for u in USERS if before[u] != after[u])
    assert set(seen) <= set(expected)
    for pair, fraction in expected.items():
        assert abs(seen[pair] / len(USERS) - fraction) <= 0.02, (pair, seen)


def test_changing_an_arms_version_keeps_its_users() -> None:
    old = [Arm("control", "v1", 50), Arm("treatment", "v2", 50)]
    new = [Arm("control", "v1", 50), Arm("treatment", "v3", 50)]
    assert moves(old, new) == {}
    for user in USERS[:500]:
        before, after = assign(old, ASSISTANT, EXPERIMENT, user), assign(new, ASSISTANT, EXPERIMENT, user)
        assert before.name == after.name
        assert after.version == ("v3" if after.name == "treatment" else "v1")


# ── shares and validation ────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("shares", "expected"),
    [
        ((50, 50), {"a": 0.5, "b": 0.5}),
        ((9000, 1000), {"a": 0.9, "b": 0.1}),  # basis points
        ((1, 1, 2), {"a": 0.25, "b": 0.25, "c": 0.5}),
        ((0, 3), {"a": 0.0, "b": 1.0}),
    ],
)
def test_expected_shares_normalise_by_the_total(shares: tuple[int, ...], expected: dict[str, float]) -> None:
    assert expected_shares(arms(*shares)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([], "an experiment needs at least one arm"),
        (
            [Arm("a", "v1", 50), Arm("a", "v2", 50)],
            "arm name 'a' appears more than once; arm names must be unique",
        ),
        (
            [Arm("a", "v1", 50), Arm("b", "v2", -5)],
            "arm 'b' has a negative share (-5); shares must be 0 or more",
        ),
        (
            [Arm("a", "v1", 0), Arm("b", "v2", 0)],
            "every arm has share 0; at least one arm needs a share above 0",
        ),
        ([Arm("", "v1", 50)], "arm 0 has no name; give every arm a label such as 'control'"),
        ([Arm("a", "", 50)], "arm 'a' has no version; say which assistant version it serves"),
        ([Arm("a", "v1", 0.5)], "arm 'a' has share 0.5; shares must be whole numbers"),  # type: ignore[arg-type]
        ([Arm("a", "v1", True)], "arm 'a' has share True; shares must be whole numbers"),
    ],
)
def test_invalid_arms_are_rejected_with_what_is_wrong(bad: list[Arm], message: str) -> None:
    for call in (
        lambda: validate_arms(bad),
        lambda: assign(bad, ASSISTANT, EXPERIMENT, "user-1"),
        lambda: expected_shares(bad),
        lambda: moves(bad, arms(50, 50)),
        lambda: moves(arms(50, 50), bad),
    ):
        with pytest.raises(InvalidArms) as raised:
            call()
        assert str(raised.value) == message
        assert isinstance(raised.value, ValueError)


def test_valid_arms_pass_validation() -> None:
    validate_arms(arms(50, 50))
    validate_arms(arms(0, 1))
    validate_arms([Arm("control", "v1", 10_000)])


def test_arms_survive_a_temporal_payload_round_trip() -> None:
    converter = DataConverter.default.payload_converter
    split = [Arm("control", "v1", 90), Arm("treatment", "v2", 10)]
    payloads = converter.to_payloads([split])
    (decoded,) = converter.from_payloads(payloads, [list[Arm]])
    assert decoded == split
    assert assign(decoded, ASSISTANT, EXPERIMENT, "user-7") == assign(split, ASSISTANT, EXPERIMENT, "user-7")
