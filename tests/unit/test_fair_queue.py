"""The order in which the gateway sends the requests it holds, as tables: first come first served
within a tenant, the tenants in turn, and who gives way when the queue is full."""

import pytest

from policies.fair_queue import FairQueue


def drain(queue: FairQueue[str]) -> list[str]:
    return [queue.pop() for _ in range(len(queue))]


@pytest.mark.parametrize(
    ("arrivals", "sent"),
    [
        ([("a", "a1"), ("a", "a2"), ("a", "a3")], ["a1", "a2", "a3"]),
        # a tenant that floods first does not make another's request wait behind all of it
        (
            [("a", "a1"), ("a", "a2"), ("a", "a3"), ("a", "a4"), ("b", "b1"), ("c", "c1"), ("b", "b2")],
            ["a1", "b1", "c1", "a2", "b2", "a3", "a4"],
        ),
        ([("b", "b1"), ("a", "a1"), ("a", "a2")], ["b1", "a1", "a2"]),
    ],
)
def test_tenants_take_turns_and_each_tenant_s_requests_keep_their_order(
    arrivals: list[tuple[str, str]], sent: list[str]
) -> None:
    queue: FairQueue[str] = FairQueue(capacity=100)
    for tenant, item in arrivals:
        assert queue.add(tenant, item) is None
    assert queue.peek() == sent[0]
    assert [item for _, item in queue.in_turn()] == sent
    assert drain(queue) == sent
    assert queue.peek() is None and len(queue) == 0


def test_when_full_the_tenant_holding_the_most_gives_way() -> None:
    queue: FairQueue[str] = FairQueue(capacity=4)
    for i in range(4):
        assert queue.add("flood", f"f{i}") is None
    assert queue.add("flood", "f4") == "f4"  # the flooding tenant's newcomer is refused
    assert queue.add("quiet", "q0") == "f3"  # another tenant's takes the flooder's newest place
    assert queue.add("quiet", "q1") == "f2"
    assert queue.add("quiet", "q2") == "q2"  # now each holds two: the newcomer is refused
    assert queue.held_by("flood") == 2 and queue.held_by("quiet") == 2
    assert drain(queue) == ["f0", "q0", "f1", "q1"]


def test_a_request_that_gives_up_leaves_its_place() -> None:
    queue: FairQueue[str] = FairQueue(capacity=10)
    for tenant, item in [("a", "a1"), ("b", "b1"), ("a", "a2")]:
        queue.add(tenant, item)
    assert queue.remove("b", "b1") is True
    assert queue.remove("b", "b1") is False
    assert queue.remove("a", "zz") is False
    assert drain(queue) == ["a1", "a2"]


def test_an_item_taken_before_its_turn_sends_its_tenant_to_the_back() -> None:
    queue: FairQueue[str] = FairQueue(capacity=10)
    for tenant, item in [("a", "a1"), ("b", "b1"), ("a", "a2"), ("c", "c1"), ("b", "b2")]:
        queue.add(tenant, item)
    assert queue.in_turn() == [("a", "a1"), ("b", "b1"), ("c", "c1"), ("a", "a2"), ("b", "b2")]
    queue.take("b", "b2")  # a1 and b1 could not go yet; b's next turn comes after c's and a's
    assert [item for _, item in queue.in_turn()] == ["a1", "c1", "b1", "a2"]
    queue.take("c", "c1")  # c's last: c leaves the turn
    assert drain(queue) == ["a1", "b1", "a2"]
    with pytest.raises(ValueError):
        queue.take("c", "c1")


def test_a_queue_holds_at_least_one() -> None:
    with pytest.raises(ValueError):
        FairQueue(capacity=0)
