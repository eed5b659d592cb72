"""The API's turn gate (api/turn_gate.py): past its limit, turns wait with the tenants in turn, so one
tenant's burst does not go before another tenant's turn, and a tenant with nothing in flight is let in
at once; waiting is bounded in count and time, and a slot always comes back once, whether its turn
ended, failed, was cancelled or was never sent."""

import asyncio
from typing import Any

import pytest

from api.errors import ApiError
from api.turn_gate import Admitted, TurnGate
from settings import TurnAdmissionSettings


def _gate(limit: int = 1, **settings: float) -> TurnGate:
    fixed = {"initial_limit": limit, "min_limit": limit, "max_limit": limit}
    return TurnGate(TurnAdmissionSettings(**fixed, **settings))  # type: ignore[arg-type]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _end(admitted: Admitted, result: Any = None) -> None:
    turn = asyncio.get_running_loop().create_future()
    admitted.follow(turn)
    turn.set_result(result)


async def test_a_burst_from_one_tenant_does_not_go_before_another_tenants_turns() -> None:
    gate = _gate(limit=1)
    noisy = await gate.admit("noisy")
    let_in: list[str] = []

    async def turn(tenant: str, name: str) -> Admitted:
        admitted = await gate.admit(tenant)
        let_in.append(name)
        return admitted

    burst = [asyncio.create_task(turn("noisy", f"noisy-{i}")) for i in range(5)]
    await _settle()
    quiet = await asyncio.wait_for(turn("quiet", "quiet-1"), 1)  # it holds nothing: in past the limit
    assert gate.in_flight == 2 and gate.waiting == 5
    second = asyncio.create_task(turn("quiet", "quiet-2"))  # it holds one now: it waits its turn
    await _settle()
    assert not second.done()
    _end(noisy)
    _end(quiet)
    await _settle()
    assert let_in[:3] == ["quiet-1", "noisy-0", "quiet-2"]  # not behind the other four
    for admitted in await asyncio.gather(*burst[:1], second):
        _end(admitted)
    for task in burst[1:]:
        _end(await task)
    await _settle()
    assert gate.in_flight == 0 and gate.waiting == 0 and gate.held_by("noisy") == 0


async def test_a_tenant_whose_slow_turns_hold_every_slot_does_not_keep_another_out() -> None:
    gate = _gate(limit=2)
    hogs = [await gate.admit("hog") for _ in range(2)]
    again = asyncio.create_task(gate.admit("hog"))
    await _settle()
    other = await asyncio.wait_for(gate.admit("other"), 1)
    assert gate.in_flight == 3 and not again.done()
    _end(other)
    for admitted in hogs:
        _end(admitted)
    _end(await asyncio.wait_for(again, 1))
    await _settle()
    assert gate.in_flight == 0


async def test_when_too_many_wait_the_tenant_with_the_most_gives_way() -> None:
    gate = _gate(limit=1, max_waiting=3)
    await gate.admit("noisy")
    await gate.admit("quiet")
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
    assert gate.waiting == 0 and gate.in_flight == 2


async def test_a_turn_waits_at_most_max_wait_s_and_is_then_refused_unsent() -> None:
    gate = _gate(limit=1, max_wait_s=0.05)
    await gate.admit("a")
    with pytest.raises(ApiError, match=r"waited 0\.05 s for its turn\); retry in 2 s"):
        await gate.admit("a")
    assert gate.waiting == 0 and gate.in_flight == 1


async def test_every_way_a_turn_ends_gives_its_slot_back_once() -> None:
    gate = _gate(limit=1)
    for outcome in ("result", "exception", "cancelled"):
        admitted = await gate.admit("a")
        turn = asyncio.get_running_loop().create_future()
        admitted.follow(turn)
        admitted.give_back()  # followed: the turn gives it back, not this
        assert gate.in_flight == 1
        if outcome == "result":
            turn.set_result(None)
        elif outcome == "exception":
            turn.set_exception(RuntimeError("the update failed"))
        else:
            turn.cancel()
        await _settle()
        assert gate.in_flight == 0, outcome
    with pytest.raises(RuntimeError):
        async with gate.slot("a"):
            assert gate.in_flight == 1
            raise RuntimeError("the call failed before Temporal took it")
    assert gate.in_flight == 0 and gate.held_by("a") == 0


async def test_a_request_cancelled_while_it_waits_leaves_no_trace_and_one_let_in_gives_its_slot_on() -> None:
    gate = _gate(limit=1)
    first = await gate.admit("a")
    gone = asyncio.create_task(gate.admit("a"))
    after = asyncio.create_task(gate.admit("a"))
    await _settle()
    gone.cancel()
    await _settle()
    assert gate.waiting == 1
    first.give_back()
    await asyncio.wait_for(after, 1)
    assert gate.in_flight == 1 and gate.waiting == 0


async def test_the_limit_learns_lcps_part_of_a_turn_only() -> None:
    gate = _gate(limit=4)
    seen: list[float] = []
    gate.limit.observe = lambda seconds, *rest: seen.append(seconds)  # type: ignore[method-assign]
    clock = iter([10.0, 17.0, 17.0, 20.0, 21.0, 30.0])
    gate.clock = lambda: next(clock)

    class Result:
        waited_ms = 5_000.0  # the conversation's turn before it, and the model

    _end(await gate.admit("a"), Result())  # let in at 10, ended at 17: 2 s were lcp's
    await _settle()
    _end(await gate.admit("a"), Result())  # 1 s in all, 5 s waited: a repeat's old answer, no sample
    await _settle()
    _end(await gate.admit("a"), object())  # archive, switch assistant...: not a turn, not counted
    await _settle()
    assert seen == [2.0] and gate.in_flight == 0


async def test_a_freed_slot_goes_to_the_waiting_tenant_holding_the_fewest() -> None:
    gate = _gate(limit=4)
    hog = [await gate.admit("hog") for _ in range(3)]
    await gate.admit("other")
    hog_waiting = [asyncio.create_task(gate.admit("hog")) for _ in range(2)]
    await _settle()
    other_waiting = asyncio.create_task(gate.admit("other"))  # last in line, but it holds one to hog's three
    await _settle()
    hog[0].give_back()
    await _settle()
    assert other_waiting.done() and not any(task.done() for task in hog_waiting)
    for task in hog_waiting:
        task.cancel()
    await asyncio.gather(*hog_waiting, return_exceptions=True)


async def test_a_turn_let_in_as_its_request_is_cancelled_gives_the_slot_on() -> None:
    gate = _gate(limit=1)
    first = await gate.admit("a")
    gone = asyncio.create_task(gate.admit("a"))
    await _settle()
    first.give_back()  # lets `gone` in...
    gone.cancel()  # ...whose request is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert gate.in_flight == 0 and gate.held_by("a") == 0 and gate.waiting == 0


async def test_switched_off_it_never_holds_a_turn() -> None:
    gate = TurnGate(TurnAdmissionSettings(enabled=False, initial_limit=1, min_limit=1, max_limit=1))
    for _ in range(5):
        await asyncio.wait_for(gate.admit("a"), 1)
    assert gate.in_flight == 0
