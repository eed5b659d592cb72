"""The drills' checks: what they count, and that a report passes only when every check held."""

import pytest

from chaos.drills import DRILLS, DrillReport, UnknownDrill, exactly, find_drill, stored_once

FIRST_TURN = [("user", "[echo] before"), ("assistant", "before")]


@pytest.mark.parametrize(
    ("stored", "failing"),
    [
        (FIRST_TURN + [("user", "[echo] x"), ("assistant", "x")], []),
        (
            FIRST_TURN + [("user", "[echo] x"), ("user", "[echo] x"), ("assistant", "x")],
            ["the user message is stored once", "the conversation holds nothing else"],
        ),
        (
            FIRST_TURN + [("user", "[echo] x"), ("assistant", "x"), ("assistant", "x")],
            ["the reply is stored once", "the conversation holds nothing else"],
        ),
        (
            FIRST_TURN + [("user", "[echo] x")],
            ["the reply is stored once", "the conversation holds nothing else"],
        ),
    ],
)
def test_stored_once_finds_lost_and_duplicated_messages(
    stored: list[tuple[str, str]], failing: list[str]
) -> None:
    checks = stored_once(stored, "[echo] x", "x", total=4)
    assert [check.invariant for check in checks if not check.ok] == failing


def test_a_failed_check_says_what_was_found_and_what_was_expected() -> None:
    check = exactly("the reply is stored once", 2, 1)
    assert not check.ok and check.found == "2, expected 1"
    assert exactly("the reply is stored once", 1, 1).found == "1"


def test_a_report_passes_only_with_checks_all_held_and_no_error() -> None:
    report = DrillReport("worker-kill-mid-turn", "2026-11-26T00:00:00+00:00")
    assert not report.passed  # nothing checked is not a pass
    report.checks.append(exactly("the reply is stored once", 1, 1))
    assert report.passed
    report.error = "the inference request never reached the model"
    assert not report.passed
    report.error = ""
    report.checks.append(exactly("the user message is stored once", 0, 1))
    assert not report.passed and report.to_dict()["passed"] is False


def test_drills_are_found_by_name_and_an_unknown_name_lists_them() -> None:
    assert find_drill("worker-kill-mid-rollout").victim == "ops-worker"
    with pytest.raises(UnknownDrill, match="no drill named 'nope'; drills: worker-kill-mid-turn, "):
        find_drill("nope")
    assert len({drill.name for drill in DRILLS}) == len(DRILLS)
