"""The gateway's flow control over a fleet's state (no HTTP): a request is held while every deployment
is saturated (with cache_aware: while the one that holds its prefix is) and sent when one frees up, the
tenants in turn; bounded in depth (503) and in wait (sent
anyway); a request that goes away leaves nothing behind."""

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

from inference.fleet import Fleet, Replica
from inference.flow import MAX_TRIED, FlowGate, Saturated
from policies.cooldown import Failure
from policies.models import ModelRoute, parse_routes
from policies.picker import NoDeployment, Request, Unavailable

LONG = Request(prompt_tokens=5000)  # above the limit below: one of these saturates a replica


def route(replicas: int = 1, strategy: str = "cache_aware", **flow: Any) -> ModelRoute:
    deployments = [{"name": f"r{i}", "base_url": f"http://r{i}:8000/v1"} for i in range(replicas)]
    routing: dict[str, Any] = {
        "strategy": strategy,
        "flow_control": {"max_pending_prefill_tokens": 1000, **flow},
    }
    return parse_routes({"models": [{"name": "m", "deployments": deployments, "routing": routing}]})["m"]


async def place(
    gate: FlowGate, r: ModelRoute, tenant: str = "t", request: Request = LONG, blocks: list[int] | None = None
) -> Any:
    deadline = asyncio.get_running_loop().time() + 60
    return await gate.place(r, request, blocks or [], set(), tenant, deadline)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": "m", "version": "stable", **labels}) or 0.0


async def test_held_while_every_deployment_is_saturated_then_sent_to_the_first_that_frees_up() -> None:
    r = route(replicas=2)
    fleet = Fleet()
    gate = FlowGate(fleet)
    first, second = await place(gate, r), await place(gate, r)
    assert {first[0].deployment.id, second[0].deployment.id} == {"r0", "r1"}  # one long prompt each
    sent_before = sample("lcp_gateway_held_total", outcome="sent")
    third = asyncio.create_task(place(gate, r))
    await settle()
    assert not third.done() and gate.held(r) == 1
    assert sample("lcp_gateway_held_requests") == 1
    fleet.answering(second[0], second[1])  # r's first token came: its prefill is done
    replica, prefill = await third
    assert replica is second[0] and prefill == LONG.prompt_tokens
    assert gate.held(r) == 0 and sample("lcp_gateway_held_requests") == 0
    assert sample("lcp_gateway_held_total", outcome="sent") == sent_before + 1


@pytest.mark.parametrize(
    ("strategy", "waits_for_the_holder"), [("cache_aware", True), ("round_robin", False)]
)
async def test_cache_aware_holds_a_request_for_the_replica_that_holds_its_prefix(
    strategy: str, waits_for_the_holder: bool
) -> None:
    r = route(replicas=2, strategy=strategy)
    fleet = Fleet()
    gate = FlowGate(fleet)
    conversation = list(range(16))
    holder, prefill = await place(gate, r, request=Request(5000, prefix_blocks=10), blocks=conversation[:10])
    # its next turn: 4,500 tokens to prefill on the holder after its 5,000 pending, the whole 12,000
    # on the idle replica
    turn = asyncio.create_task(place(gate, r, request=Request(12_000, prefix_blocks=16), blocks=conversation))
    await settle()
    if waits_for_the_holder:
        assert not turn.done() and gate.held(r) == 1
        fleet.answering(holder, prefill)
        replica, turn_prefill = await turn
        assert replica is holder and turn_prefill == 12_000 * 6 / 16
    else:
        replica, turn_prefill = await turn
        assert replica is not holder and turn_prefill == 12_000


async def test_a_request_held_for_its_prefix_holder_does_not_hold_up_the_others() -> None:
    r = route(replicas=2)
    fleet = Fleet()
    gate = FlowGate(fleet)
    conversation = list(range(16))
    holder, prefill = await place(gate, r, request=Request(5000, prefix_blocks=10), blocks=conversation[:10])
    turn = asyncio.create_task(place(gate, r, request=Request(12_000, prefix_blocks=16), blocks=conversation))
    await settle()
    assert gate.held(r) == 1
    other, _ = await place(gate, r)  # a prompt nobody holds: to the idle replica, past the held turn
    assert other is not holder and gate.held(r) == 1 and not turn.done()
    fleet.answering(holder, prefill)
    assert (await turn)[0] is holder


async def test_more_held_requests_than_a_release_tries_do_not_hide_one_that_can_go() -> None:
    """A release tries MAX_TRIED held requests (each a pick over the deployments); the next starts after
    those still waiting, so one further back that another replica could take is not left behind."""
    r = route(replicas=2)
    fleet = Fleet()
    gate = FlowGate(fleet)
    conversation = list(range(16))
    holder, _ = await place(gate, r, request=Request(5000, prefix_blocks=10), blocks=conversation[:10])
    turns = [  # each waits for the replica holding its prefix (see the test above)
        asyncio.create_task(place(gate, r, f"t{i}", Request(12_000, prefix_blocks=16), conversation))
        for i in range(MAX_TRIED)
    ]
    await settle()
    assert gate.held(r) == MAX_TRIED
    newcomer = asyncio.create_task(place(gate, r, "new"))  # nobody holds its prompt: behind them all
    await settle()
    gate.release()  # e.g. the next /metrics reading
    replica, _ = await asyncio.wait_for(newcomer, 2)  # not after max_wait_s (30 s)
    assert replica is not holder and gate.held(r) == MAX_TRIED
    for turn in turns:
        turn.cancel()
    await settle()


async def test_held_requests_are_answered_at_once_when_every_deployment_cools_down() -> None:
    """Held, as never held: with no deployment ready the gateway waits for the first back or refuses."""
    r = route(replicas=2)
    fleet = Fleet()
    gate = FlowGate(fleet)
    first, second = await place(gate, r), await place(gate, r)
    before = sample("lcp_gateway_held_total", outcome="unavailable")
    held = asyncio.create_task(place(gate, r))
    await settle()
    fleet.finished(r, first[0], Failure.UNREACHABLE, 0.1)
    await settle()
    assert not held.done()  # the other is saturated, not gone: still worth waiting for
    fleet.finished(r, second[0], Failure.UNREACHABLE, 0.1)
    answer = await held
    assert isinstance(answer, NoDeployment) and answer.reason is Unavailable.COOLING_DOWN
    assert answer.retry_at is not None and gate.held(r) == 0
    assert sample("lcp_gateway_held_total", outcome="unavailable") == before + 1


async def test_held_requests_are_sent_tenant_by_tenant() -> None:
    r = route()
    fleet = Fleet()
    gate = FlowGate(fleet)
    placed: dict[str, tuple[Replica, float]] = {"first": await place(gate, r)}
    order = ["first"]

    async def held(tenant: str, name: str) -> None:
        placed[name] = await place(gate, r, tenant)
        order.append(name)

    tasks = [asyncio.create_task(held("flood", f"f{i}")) for i in range(3)]
    await settle()
    tasks.append(asyncio.create_task(held("quiet", "q0")))
    await settle()
    assert gate.held(r) == 4
    for _ in range(4):
        fleet.answering(*placed[order[-1]])  # the last one sent starts answering: the next held goes
        await settle()
    assert order == ["first", "f0", "q0", "f1", "f2"]
    await asyncio.gather(*tasks)


async def test_a_request_held_max_wait_s_is_sent_anyway() -> None:
    r = route(max_wait_s=0.05)
    fleet = Fleet()
    gate = FlowGate(fleet)
    first = await place(gate, r)
    before = sample("lcp_gateway_held_total", outcome="max_wait")
    replica, _ = await place(gate, r)
    assert replica is first[0]  # to the saturated replica: there is no other
    assert gate.held(r) == 0
    assert sample("lcp_gateway_held_total", outcome="max_wait") == before + 1


async def test_a_full_hold_queue_refuses_and_a_flooding_tenant_gives_way() -> None:
    r = route(max_held=2)
    gate = FlowGate(Fleet())
    await place(gate, r)
    flooding = [asyncio.create_task(place(gate, r, "flood")) for _ in range(2)]
    await settle()
    with pytest.raises(Saturated, match="2 requests are held"):
        await place(gate, r, "flood")
    quiet = asyncio.create_task(place(gate, r, "quiet"))
    await settle()
    with pytest.raises(Saturated, match="other tenants' requests are held"):
        await flooding[1]  # the flooder's newest gave its place to the other tenant's
    assert gate.held(r) == 2 and not flooding[0].done() and not quiet.done()
    for task in (flooding[0], quiet):
        task.cancel()


async def test_a_request_that_goes_away_leaves_nothing_behind() -> None:
    r = route()
    fleet = Fleet()
    gate = FlowGate(fleet)
    first = await place(gate, r)
    waiting = asyncio.create_task(place(gate, r))
    await settle()
    waiting.cancel()
    await settle()
    assert gate.held(r) == 0
    # placed on a replica, but cancelled before it could send: the call placed for it is taken back
    placed = asyncio.create_task(place(gate, r))
    await settle()
    fleet.answering(*first)
    assert first[0].in_flight == 2  # the first and the one just placed
    placed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await placed
    assert first[0].in_flight == 1 and first[0].pending_prefill == 0


async def test_without_flow_control_nothing_is_held() -> None:
    plain = parse_routes(
        {"models": [{"name": "m", "base_url": "http://r0:8000/v1", "routing": {"strategy": "round_robin"}}]}
    )["m"]
    gate = FlowGate(Fleet())
    replicas = {(await place(gate, plain))[0].deployment.id for _ in range(3)}
    assert replicas == {"r0:8000"} and gate.held(plain) == 0
