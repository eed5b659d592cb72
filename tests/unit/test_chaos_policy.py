"""Chaos policy as tables: the safety rules, probe comparators, and ChaosCenter's resilience score."""

import math

import pytest

from policies.chaos import (
    FROM_FAULT_END,
    FROM_LAST_REPLACED_POD,
    FreezeWindow,
    Recovery,
    SafetyInput,
    SafetyPolicy,
    pods_affected,
    probe_passes,
    probe_success_percentage,
    resilience_score,
    safety_problem,
    time_to_recover,
)

NOW = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
POLICY = SafetyPolicy()  # namespace lab, at most 50% of the pods


def inp(
    namespace: str = "lab",
    perc: float = 0.0,
    replicas: int = 4,
    rollouts: tuple[str, ...] = (),
    now: float = NOW,
) -> SafetyInput:
    return SafetyInput(namespace, "chat-api", perc, replicas, now, rollouts)


# ── safety ───────────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("perc", "replicas", "expected"),
    [
        (0.0, 4, 1),  # unset: one pod
        (0.0, 1, 1),
        (25.0, 4, 1),
        (50.0, 4, 2),
        (49.0, 4, 1),  # Litmus rounds down ...
        (10.0, 4, 1),  # ... but never below one pod
        (100.0, 4, 4),
        (150.0, 4, 4),  # capped at 100%
        (30.0, 10, 3),
    ],
)
def test_pods_affected_follows_litmus(perc: float, replicas: int, expected: int) -> None:
    assert pods_affected(perc, replicas) == expected


@pytest.mark.parametrize(
    ("safety", "policy", "expected"),
    [
        (inp(), POLICY, None),
        (inp(perc=50.0), POLICY, None),  # 2 of 4 is exactly the limit
        (inp(replicas=2), POLICY, None),  # one pod of 2: 50%
        (
            inp(namespace="prod"),
            POLICY,
            "namespace 'prod' is not allowed for chaos (allowed: lab)",
        ),
        (
            inp(namespace="prod"),
            SafetyPolicy(allowed_namespaces=("lab", "staging")),
            "namespace 'prod' is not allowed for chaos (allowed: lab, staging)",
        ),
        (
            inp(namespace="lab"),
            SafetyPolicy(allowed_namespaces=()),
            "namespace 'lab' is not allowed for chaos (allowed: none)",
        ),
        (
            inp(replicas=0),
            POLICY,
            "lab/chat-api has no replicas running: there is nothing to inject a fault into",
        ),
        (
            inp(replicas=1),
            POLICY,
            "the experiment would affect 1 of lab/chat-api's 1 pods (100%), "
            "more than the blast-radius limit of 50%",
        ),
        (
            inp(perc=75.0),
            POLICY,
            "the experiment would affect 3 of lab/chat-api's 4 pods (75%), "
            "more than the blast-radius limit of 50%",
        ),
        (inp(perc=75.0), SafetyPolicy(max_pods_affected_perc=75.0), None),
        (inp(replicas=1), SafetyPolicy(max_pods_affected_perc=100.0), None),
        (
            inp(rollouts=("rollout/lab/chat-api",)),
            POLICY,
            "rollout/lab/chat-api is running: chaos waits until it finishes",
        ),
        (
            inp(rollouts=("rollout/lab/chat-api", "rollout/lab/chat-api-2")),
            POLICY,
            "rollout/lab/chat-api and rollout/lab/chat-api-2 are running: chaos waits until they finish",
        ),
        (
            inp(),
            SafetyPolicy(freezes=(FreezeWindow(NOW - 60, NOW + 3600, "year-end"),)),
            "chaos is not allowed during the freeze 'year-end', which ends at 2026-01-01 01:00:00 UTC",
        ),
        (
            inp(),
            SafetyPolicy(freezes=(FreezeWindow(NOW, NOW + 60),)),  # the start is inside
            "chaos is not allowed during a declared freeze, which ends at 2026-01-01 00:01:00 UTC",
        ),
        (
            inp(),
            SafetyPolicy(freezes=(FreezeWindow(NOW - 3600, NOW, "over"),)),  # the end is outside
            None,
        ),
        (
            inp(),
            SafetyPolicy(freezes=(FreezeWindow(NOW + 60, NOW + 120, "later"),)),
            None,
        ),
        (
            inp(),
            SafetyPolicy(
                freezes=(
                    FreezeWindow(NOW - 60, NOW + 60, "short"),
                    FreezeWindow(NOW - 60, NOW + 7200, "long"),
                )
            ),
            "chaos is not allowed during the freeze 'long', which ends at 2026-01-01 02:00:00 UTC",
        ),
        # The first problem wins: the namespace, then the blast radius, then rollouts, then freezes.
        (
            inp(namespace="prod", replicas=1, rollouts=("rollout/prod/chat-api",)),
            POLICY,
            "namespace 'prod' is not allowed for chaos (allowed: lab)",
        ),
        (
            inp(replicas=1, rollouts=("rollout/lab/chat-api",)),
            POLICY,
            "the experiment would affect 1 of lab/chat-api's 1 pods (100%), "
            "more than the blast-radius limit of 50%",
        ),
        (
            inp(rollouts=("rollout/lab/chat-api",)),
            SafetyPolicy(freezes=(FreezeWindow(NOW - 60, NOW + 60, "x"),)),
            "rollout/lab/chat-api is running: chaos waits until it finishes",
        ),
    ],
)
def test_safety_problem(safety: SafetyInput, policy: SafetyPolicy, expected: str | None) -> None:
    assert safety_problem(safety, policy) == expected


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (SafetyPolicy(), None),
        (
            SafetyPolicy(max_pods_affected_perc=0.0),
            "max_pods_affected_perc must be a share of pods in (0, 100], got 0.0",
        ),
        (
            SafetyPolicy(max_pods_affected_perc=120.0),
            "max_pods_affected_perc must be a share of pods in (0, 100], got 120.0",
        ),
        (
            SafetyPolicy(allowed_namespaces="lab"),  # type: ignore[arg-type]
            "allowed_namespaces must be a tuple of namespace names, got 'lab'",
        ),
        (
            SafetyPolicy(freezes=(FreezeWindow(10.0, 5.0),)),
            "freezes[0] must end after it starts, got 10.0 to 5.0",
        ),
    ],
)
def test_safety_policy_problem(policy: SafetyPolicy, expected: str | None) -> None:
    assert policy.problem() == expected


# ── probes ───────────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("comparator", "measured", "expected", "tolerance", "passes"),
    [
        (">=", 0.99, 0.99, 0.0, True),
        (">=", 0.989, 0.99, 0.0, False),
        (">=", 0.986, 0.99, 0.005, True),
        (">=", 0.985, 0.99, 0.005, True),  # on the bound, despite float noise
        (">=", 0.984, 0.99, 0.005, False),
        (">", 0.99, 0.99, 0.0, False),
        (">", 0.99, 0.99, 0.001, True),
        ("<=", 0.5, 0.5, 0.0, True),
        ("<=", 0.6, 0.5, 0.0, False),
        ("<=", 0.6, 0.5, 0.1, True),
        ("<", 0.5, 0.5, 0.0, False),
        ("<", 0.49, 0.5, 0.0, True),
        ("<", 0.55, 0.5, 0.1, True),
        ("==", 200.0, 200.0, 0.0, True),
        ("==", 201.0, 200.0, 0.0, False),
        ("==", 201.0, 200.0, 1.0, True),
        ("!=", 0.0, 1.0, 0.0, True),
        ("!=", 1.0, 1.0, 0.0, False),
        ("!=", 1.5, 1.0, 0.5, False),  # within tolerance counts as equal
        ("!=", 1.6, 1.0, 0.5, True),
        (">=", math.inf, 0.99, 0.0, True),
        (">=", math.nan, 0.99, 0.0, False),
        ("<=", math.nan, 0.99, 1.0, False),
        ("!=", math.nan, 0.99, 0.0, False),  # NaN never passes, even where it "differs"
        ("==", 1.0, math.nan, 0.0, False),
    ],
)
def test_probe_passes(
    comparator: str, measured: float, expected: float, tolerance: float, passes: bool
) -> None:
    assert probe_passes(comparator, measured, expected, tolerance) is passes


@pytest.mark.parametrize(
    ("comparator", "tolerance", "message"),
    [
        ("=>", 0.0, "comparator must be one of >=, <=, >, <, ==, !=, got '=>'"),
        (">=", -0.1, "tolerance must be a finite number ≥ 0, got -0.1"),
        (">=", math.nan, "tolerance must be a finite number ≥ 0, got nan"),
    ],
)
def test_probe_passes_rejects_bad_arguments(comparator: str, tolerance: float, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        probe_passes(comparator, 1.0, 1.0, tolerance)
    assert str(caught.value) == message


# ── the score ────────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("passed", "total", "expected"),
    [(0, 0, 100.0), (3, 3, 100.0), (1, 2, 50.0), (0, 4, 0.0), (2, 3, 200 / 3)],
)
def test_probe_success_percentage(passed: int, total: int, expected: float) -> None:
    assert probe_success_percentage(passed, total) == pytest.approx(expected)


@pytest.mark.parametrize(("passed", "total"), [(3, 2), (-1, 2), (0, -1)])
def test_probe_success_percentage_rejects_impossible_counts(passed: int, total: int) -> None:
    with pytest.raises(ValueError, match="passed must be between 0 and total"):
        probe_success_percentage(passed, total)


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ([], 0.0),
        ([(10, 100.0)], 100.0),
        ([(10, 100.0), (10, 0.0)], 50.0),
        ([(10, 100.0), (5, 40.0)], (10 * 100 + 5 * 40) / 15),  # 80
        ([(8, 50.0), (2, 100.0)], 60.0),  # weights, not counts, decide
        ([(0, 0.0), (10, 90.0)], 90.0),  # a weight-0 fault does not count
        ([(0, 100.0)], 0.0),  # no weight at all
    ],
)
def test_resilience_score(results: list[tuple[int, float]], expected: float) -> None:
    assert resilience_score(results) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ([(-1, 50.0)], "a fault weight must be ≥ 0, got -1"),
        ([(10, 101.0)], r"a probe success percentage must be in \[0, 100\], got 101.0"),
        ([(10, math.nan)], r"a probe success percentage must be in \[0, 100\], got nan"),
    ],
)
def test_resilience_score_rejects_bad_results(results: list[tuple[int, float]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resilience_score(results)


# A fault injected at NOW + 0.4 s, ended (cleanup done) at NOW + 30, the target steady again at NOW + 30.1.
INJECTED, ENDED, STEADY = NOW + 0.4, NOW + 30.0, NOW + 30.1


@pytest.mark.parametrize(
    ("newest_created", "last_ready", "expected"),
    [
        # pod-delete: the last deleted pod's replacement was created at +20 and ready at +23 — long before
        # the fault ended, which is what a measure from the fault's end (0.1 s) missed.
        (NOW + 20, NOW + 23, Recovery(3.0, FROM_LAST_REPLACED_POD)),
        # a replacement created in the injection's second counts (Kubernetes' timestamps are whole seconds)
        (NOW, NOW + 2, Recovery(2.0, FROM_LAST_REPLACED_POD)),
        # no pod replaced (a network loss, a CPU hog): from the fault's end to the steady state
        (NOW - 3600, NOW - 3590, Recovery(0.1, FROM_FAULT_END)),
        (None, None, Recovery(0.1, FROM_FAULT_END)),
    ],
)
def test_time_to_recover_runs_from_the_last_disruption_to_full_readiness(
    newest_created: float | None, last_ready: float | None, expected: Recovery
) -> None:
    got = time_to_recover(INJECTED, ENDED, STEADY, newest_created, last_ready)
    assert got.measured_from == expected.measured_from
    assert got.seconds == pytest.approx(expected.seconds)


def test_a_recovery_says_what_it_was_measured_from() -> None:
    described = Recovery(3.0, FROM_LAST_REPLACED_POD).describe()
    assert described.startswith("recovered 3 s after the last disruption (from the newest pod replacing")
    assert Recovery(0.1, FROM_FAULT_END).describe() == "back to steady state 0.1 s after the fault ended"
