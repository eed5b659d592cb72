"""The API's turn gate (api/turn_gate.py): past its limit, turns wait with the tenants in turn, so one
tenant's burst does not go before another tenant's turn; waiting is bounded in count and time, and a slot
always comes back, whether its turn ended, failed, was cancelled or was never sent."""

import asyncio

import pytest

from api.errors import ApiError
from api.turn_gate import TurnGate, reply_model_seconds
from settings import TurnAdmissionSettings


def _gate(limit: int = 1, **settings: float) -> TurnGate:
    fixed = {"initial_limit": limit, "min_limit": limit, "max_limit": limit}
    return TurnGate(TurnAdmissionSettings(**fixed, **settings))  # type: ignore[arg-type]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_burst_from_one_tenant_does_not_go_before_another_tenants_turn() -> None:
    gate = _gate(limit=1)
    running = await gate.admit("noisy")
    let_in: list[str] = []

    async def turn(tenant: str, name: str) -> None:
        admitted = await gate.admit(tenant)
        let_in.append(name)
        done = asyncio.get_running_loop().create_future()
        admitted.follow(done, lambda result: 0.0)
        done.set_result(None)

    waiting = [asyncio.create_task(turn("noisy", f"noisy-{i}")) for i in range(5)]
    await _settle()
    waiting.append(asyncio.create_task(turn("quiet", "quiet")))
    await _settle()
    assert gate.waiting == 6 and gate.in_flight == 1
    ended = asyncio.get_running_loop().create_future()
    running.follow(ended, lambda result: 0.0)
    ended.set_result(None)
    await asyncio.gather(*waiting)
    assert let_in[:2] == ["noisy-0", "quiet"]  # not behind the other four
    assert gate.in_flight == 0 and gate.waiting == 0


async def test_when_too_many_wait_the_tenant_with_the_most_gives_way() -> None:
    gate = _gate(limit=1, max_waiting=3)
    await gate.admit("noisy")
    first = [asyncio.create_task(gate.admit("noisy")) for _ in range(3)]
    await _settle()
    with pytest.raises(ApiError) as refused:
        await gate.admit("noisy")  # its own tenant holds the most: the newcomer is refused
    assert refused.value.status == 503 and refused.value.type == "ConversationsBusy"
    assert refused.value.headers == {"Retry-After": "2"}
    quiet = asyncio.create_task(gate.admit("quiet"))
    await _settle()
    assert first[2].done() and isinstance(first[2].exception(), ApiError)  # the newest noisy one gave way
    assert not quiet.done() and gate.waiting == 3
    for task in (*first[:2], quiet):
        task.cancel()
    await asyncio.gather(*first, quiet, return_exceptions=True)
    assert gate.waiting == 0


async def test_a_turn_waits_at_most_max_wait_s_and_is_then_refused_unsent() -> None:
    gate = _gate(limit=1, max_wait_s=0.05)
    await gate.admit("a")
    with pytest.raises(ApiError, match=r"waited 0\.05 s for its turn\); retry in 2 s"):
        await gate.admit("b")
    assert gate.waiting == 0 and gate.in_flight == 1


async def test_every_way_a_turn_ends_gives_its_slot_back() -> None:
    gate = _gate(limit=1)
    for outcome in ("result", "exception", "cancelled"):
        admitted = await gate.admit("a")
        turn = asyncio.get_running_loop().create_future()
        admitted.follow(turn, reply_model_seconds)
        assert gate.in_flight == 1
        if outcome == "result":
            turn.set_result(None)
        elif outcome == "exception":
            turn.set_exception(RuntimeError("the update failed"))
        else:
            turn.cancel()
        await _settle()
        assert gate.in_flight == 0, outcome
    admitted = await gate.admit("a")
    admitted.give_back()
    admitted.give_back()  # twice is once
    assert gate.in_flight == 0


async def test_a_request_cancelled_while_it_waits_leaves_no_trace_and_one_let_in_gives_its_slot_on() -> None:
    gate = _gate(limit=1)
    first = await gate.admit("a")
    gone = asyncio.create_task(gate.admit("b"))
    after = asyncio.create_task(gate.admit("c"))
    await _settle()
    gone.cancel()
    await _settle()
    assert gate.waiting == 1
    first.give_back()
    await asyncio.wait_for(after, 1)
    assert gate.in_flight == 1 and gate.waiting == 0


async def test_the_limit_learns_from_lcps_part_of_each_turn_not_the_models() -> None:
    gate = _gate(limit=4)
    seen: list[float] = []
    gate.limit.observe = lambda seconds, *rest: seen.append(seconds)  # type: ignore[method-assign]

    class Reply:
        latency_ms = 5_000.0

    class Result:
        reply = Reply()

    admitted = await gate.admit("a")
    turn = asyncio.get_running_loop().create_future()
    admitted.follow(turn, reply_model_seconds)
    turn.set_result(Result())
    await _settle()
    assert seen == [0.0]  # what lcp took beside the model's 5 s: none here, and never less
    assert reply_model_seconds(object()) == 0.0


async def test_switched_off_it_never_holds_a_turn() -> None:
    gate = TurnGate(TurnAdmissionSettings(enabled=False, initial_limit=1, min_limit=1, max_limit=1))
    for _ in range(5):
        await asyncio.wait_for(gate.admit("a"), 1)
    assert gate.in_flight == 0
