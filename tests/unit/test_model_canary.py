"""Model canaries: the models policy's `canary:`, the weight in the read model (SQLite and PostgreSQL),
the gateway's split against a real simulator, its metrics, the weights cache, and the activities."""

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.models import ModelActivities, ModelCanaryInput, ModelSplit, ModelWeightInput
from inference.gateway import Gateway, InferenceFailure, ModelWeights, load_routes, make_http_client
from inference.messages import ChatCompletionResult, ChatMessage
from lab.llm_simulator import DEFAULT_PROFILES
from lab.llm_simulator import create_app as create_simulator
from policies.models import DEFAULT_POLICY_FILE, ModelRoute, ModelsPolicyError, parse_routes
from store import crud
from store.db import make_engine, make_sessionmaker
from store.migrate import current_tables
from tests.http_server import serve_in_thread
from tests.waiting import eventually

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
ASK = [ChatMessage("user", "[echo] hi")]


# ---- the models policy ---------------------------------------------------------------------


def test_a_canary_is_the_same_model_at_another_version() -> None:
    routes = parse_routes(
        {
            "models": [
                {
                    "name": "chat",
                    "base_url": "http://old/v1/",
                    "upstream_model": "llama-8b",
                    "api_key": "k1",
                    "timeout_s": 30,
                    "tenants": ["acme"],
                    "owned_by": "us",
                    "version": "v1",
                    "canary": {"version": 2, "base_url": "http://new/v1/", "timeout_s": 90},
                },
                {"name": "plain", "base_url": "http://x/v1"},
            ]
        }
    )
    chat = routes["chat"]
    assert chat.version == "v1" and chat.canary is not None
    canary = chat.canary
    assert canary == ModelRoute(
        name="chat",
        base_url="http://new/v1",
        upstream_model="llama-8b",  # what the canary does not override, it takes from its entry
        api_key="k1",
        timeout_s=90.0,
        tenants=("acme",),
        owned_by="us",
        version="2",  # YAML's `version: 2` is a number: a version name all the same
    )
    assert canary.canary is None and canary.serves("acme") and not canary.serves("other")
    assert routes["plain"].version == "stable" and routes["plain"].canary is None


@pytest.mark.parametrize(
    ("canary", "message"),
    [
        ("v2", "canary must be a mapping"),
        ({}, "canary is missing version"),
        ({"base_url": "http://new/v1"}, "canary is missing version"),
        ({"version": "v1"}, "is the entry's own version"),
        ({"version": "v2", "upstream": "x"}, "unknown keys upstream"),
        ({"version": "v2", "tenants": ["a"]}, "unknown keys tenants"),
        ({"version": True}, "must be a version name"),
        ({"version": "v 2"}, "is not a version name"),
        ({"version": "v2", "timeout_s": "soon"}, "timeout_s must be a number"),
        ({"version": "v2", "timeout_s": 0}, "timeout_s must be a number"),
    ],
)
def test_a_bad_canary_is_a_clear_error(canary: object, message: str) -> None:
    entry = {"name": "chat", "base_url": "http://old/v1", "version": "v1", "canary": canary}
    with pytest.raises(ModelsPolicyError, match=r"models\[0\] \(chat\)") as err:
        parse_routes({"models": [entry]})
    assert message in str(err.value)


def test_a_bad_entry_version_is_a_clear_error() -> None:
    with pytest.raises(ModelsPolicyError, match="version must be a version name"):
        parse_routes({"models": [{"name": "chat", "base_url": "u", "version": ["v1"]}]})
    with pytest.raises(ModelsPolicyError, match="canary.version 'stable' is the entry's own version"):
        parse_routes({"models": [{"name": "chat", "base_url": "u", "canary": {"version": "stable"}}]})


def test_the_default_policy_has_a_simulated_canary() -> None:
    routes = load_routes(DEFAULT_POLICY_FILE, llm_url="http://127.0.0.1:9999/v1")
    stable = routes["sim-llama-8b"]
    assert (stable.version, stable.upstream_model) == ("v1", "sim-llama-8b")
    assert stable.canary is not None
    assert (stable.canary.version, stable.canary.upstream_model) == ("v2", "sim-llama-1b")
    assert stable.canary.base_url == "http://127.0.0.1:9999/v1"


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet() -> Iterator[str]:
    """A simulator of its own (its counters are this module's alone) serving "old" and "new"."""
    zero = DEFAULT_PROFILES["sim-zero"]
    profiles = {name: replace(zero, name=name) for name in ("old", "new", "other")}
    with serve_in_thread(create_simulator(profiles)) as url:
        yield url


@pytest.fixture
async def admin(fleet: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fleet) as client:
        yield client
        await client.delete("/admin/faults")


def _routes(fleet: str, *names: str) -> dict[str, ModelRoute]:
    """Each name served by "old" (v1) with a canary "new" (v2); plus "plain", with no canary."""
    routes = {
        name: ModelRoute(
            name,
            f"{fleet}/v1",
            "old",
            timeout_s=5,
            version="v1",
            canary=ModelRoute(name, f"{fleet}/v1", "new", timeout_s=5, version="v2"),
        )
        for name in names
    }
    return {**routes, "plain": ModelRoute("plain", f"{fleet}/v1", "other", timeout_s=5)}


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _set(
    sessions: async_sessionmaker[AsyncSession],
    model: str,
    weight: int,
    *,
    version: str = "v2",
    promoted: bool = False,
) -> None:
    async with sessions() as session:
        await crud.upsert_model_canary(
            session,
            model=model,
            canary_version=version,
            weight=weight,
            promoted=promoted,
            rollout_id="test",
            at=T0,
        )


async def _served(admin: httpx.AsyncClient) -> dict[str, int]:
    by_model = (await admin.get("/admin/stats")).json()["by_model"]
    return {model: counts["ok"] for model, counts in by_model.items()}


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ---- the read model ------------------------------------------------------------------------


async def test_the_table_holds_one_weight_per_model_within_0_to_100(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    assert "model_canaries" in await current_tables(engine)
    await _set(sessions, "m", 10)
    await _set(sessions, "m", 60, promoted=True)
    await _set(sessions, "n", 0, version="v9")
    async with sessions() as session:
        rows = await crud.list_model_canaries(session)
        assert [(r.model, r.canary_version, r.weight, r.promoted) for r in rows] == [
            ("m", "v2", 60, True),
            ("n", "v9", 0, False),
        ]
        with pytest.raises(IntegrityError):
            await crud.upsert_model_canary(
                session, model="m", canary_version="v2", weight=101, promoted=False, rollout_id="", at=T0
            )


# ---- the gateway's split ---------------------------------------------------------------------


async def test_the_canary_gets_its_weight_of_the_requests(
    fleet: str, admin: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await _set(sessions, "split", 25)
    async with make_http_client() as http:
        gateway = Gateway(http, _routes(fleet, "split"), ModelWeights(sessions), rng=random.Random(7))
        before = await _served(admin)
        results = [await gateway.complete("split", ASK, {}) for _ in range(400)]
        after = await _served(admin)
    versions = [r.version for r in results]
    canary = versions.count("v2")
    assert 70 <= canary <= 130, canary  # 25 % of 400, give or take 3 standard deviations
    assert versions.count("v1") == 400 - canary
    # the simulator saw the same split: "new" served the canary, "old" the stable
    assert after.get("new", 0) - before.get("new", 0) == canary
    assert after.get("old", 0) - before.get("old", 0) == 400 - canary
    assert {r.model for r in results} == {"split"} and {r.content for r in results} == {"hi"}


@pytest.mark.parametrize(
    ("weight", "promoted", "version", "expected"),
    [
        (0, False, "v2", "v1"),  # weight 0: everything stays on the stable
        (100, False, "v2", "v2"),
        (100, True, "v2", "v2"),  # promoted: everything to the canary
        (100, True, "v3", "v1"),  # a weight for a canary the policy does not have counts for nothing
    ],
)
async def test_all_or_nothing(
    fleet: str,
    sessions: async_sessionmaker[AsyncSession],
    weight: int,
    promoted: bool,
    version: str,
    expected: str,
) -> None:
    await _set(sessions, "edge", weight, version=version, promoted=promoted)
    async with make_http_client() as http:
        gateway = Gateway(http, _routes(fleet, "edge"), ModelWeights(sessions), rng=random.Random(1))
        whole = [(await gateway.complete("edge", ASK, {})).version for _ in range(50)]
        streamed = []
        for _ in range(10):
            items = [item async for item in gateway.stream("edge", ASK, {})]
            assert items[0] == "hi" and isinstance(items[-1], ChatCompletionResult)
            streamed.append(items[-1].version)
    assert set(whole) == set(streamed) == {expected}


async def test_without_a_row_or_weights_every_request_goes_to_the_stable(
    fleet: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with make_http_client() as http:
        for weights in (ModelWeights(sessions), None):
            gateway = Gateway(http, _routes(fleet, "norow"), weights)
            assert {(await gateway.complete("norow", ASK, {})).version for _ in range(20)} == {"v1"}
        plain = await Gateway(http, _routes(fleet), ModelWeights(sessions)).complete("plain", ASK, {})
    assert plain.version == "stable"


# ---- metrics -------------------------------------------------------------------------------


async def test_metrics_count_by_model_version_and_outcome(
    fleet: str, admin: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    model = f"metered-{random.randrange(1 << 30)}"  # fresh labels: the registry is process-wide
    requests = "lcp_gateway_requests_total"
    latency = "lcp_gateway_request_duration_seconds_count"
    await _set(sessions, model, 100)
    async with make_http_client() as http:
        gateway = Gateway(http, _routes(fleet, model), ModelWeights(sessions), rng=random.Random(3))
        await gateway.complete(model, ASK, {})
        assert [item async for item in gateway.stream(model, ASK, {})][-1].version == "v2"  # type: ignore[union-attr]
        assert _sample(requests, model=model, version="v2", outcome="ok") == 2
        assert _sample(latency, model=model, version="v2") == 2
        assert _sample(requests, model=model, version="v1", outcome="ok") == 0

        fault = {"model": "new", "fail_next": 1, "fail_next_status": 500}
        assert (await admin.put("/admin/faults", json=fault)).status_code == 200
        with pytest.raises(InferenceFailure):
            await gateway.complete(model, ASK, {})
        fault = {"model": "new", "fail_next": 1, "fail_next_status": 429}
        assert (await admin.put("/admin/faults", json=fault)).status_code == 200
        with pytest.raises(InferenceFailure):
            async for _ in gateway.stream(model, ASK, {}):
                pass
        assert _sample(requests, model=model, version="v2", outcome="EndpointError") == 1
        assert _sample(requests, model=model, version="v2", outcome="EndpointBusy") == 1
        assert _sample(latency, model=model, version="v2") == 2  # the latency is of replies only

        # a consumer that stops reading a stream half way counts as cancelled
        stream = gateway.stream(model, [ChatMessage("user", "[echo] one two three")], {})
        assert await anext(stream) == "one"
        await stream.aclose()
        assert _sample(requests, model=model, version="v2", outcome="cancelled") == 1

        await _set(sessions, model, 0)
        gateway = Gateway(http, _routes(fleet, model), ModelWeights(sessions))
        await gateway.complete(model, ASK, {})
        assert _sample(requests, model=model, version="v1", outcome="ok") == 1
        with pytest.raises(InferenceFailure, match="not in the models policy"):
            await gateway.complete("no-such-model", ASK, {})
    assert (
        REGISTRY.get_sample_value(
            requests, {"model": "no-such-model", "version": "stable", "outcome": "UnknownModel"}
        )
        is None
    )


# ---- the weights cache -----------------------------------------------------------------------


async def test_weights_are_read_again_once_their_ttl_is_over(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = Clock()
    weights = ModelWeights(sessions, ttl_s=1.0, clock=clock)
    assert await weights.get("cached") is None
    await _set(sessions, "cached", 40)
    clock.now += 0.9
    assert await weights.get("cached") is None  # still the weights read a moment ago
    clock.now += 0.1
    split = await weights.get("cached")
    assert split is not None and (split.version, split.weight, split.promoted) == ("v2", 40, False)
    await _set(sessions, "cached", 100, promoted=True)
    assert await weights.get("cached") == split
    clock.now += 1.0
    split = await weights.get("cached")
    assert split is not None and (split.weight, split.promoted) == (100, True)


class FlakySessions:
    """A sessionmaker that fails (broken) or hangs (held) on demand."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.broken = False
        self.held = asyncio.Event()
        self.held.set()
        self.opened = 0

    def __call__(self) -> Any:
        self.opened += 1
        if self.broken:
            raise OSError("connection refused (simulated)")
        return self._session()

    def _session(self) -> Any:
        outer = self

        class _Held:
            async def __aenter__(self) -> AsyncSession:
                await outer.held.wait()
                self.session = outer.sessions()
                return await self.session.__aenter__()

            async def __aexit__(self, *exc: object) -> None:
                await self.session.__aexit__(*exc)

        return _Held()


async def test_a_database_failure_keeps_the_last_known_weights(
    sessions: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    clock, flaky = Clock(), FlakySessions(sessions)
    weights = ModelWeights(flaky, clock=clock)  # type: ignore[arg-type]
    await _set(sessions, "kept", 30)
    assert (await weights.get("kept")) is not None
    flaky.broken = True
    with caplog.at_level(logging.WARNING, logger="inference.gateway"):
        for _ in range(3):
            clock.now += 1.0
            split = await weights.get("kept")
            assert split is not None and split.weight == 30
    assert flaky.opened == 4  # once per TTL, not once per request
    assert len([r for r in caplog.records if "cannot read the model canary weights" in r.message]) == 1
    flaky.broken = False
    await _set(sessions, "kept", 50)
    clock.now += 1.0
    split = await weights.get("kept")
    assert split is not None and split.weight == 50


async def test_a_slow_database_does_not_hold_requests_up(sessions: async_sessionmaker[AsyncSession]) -> None:
    clock, flaky = Clock(), FlakySessions(sessions)
    weights = ModelWeights(flaky, clock=clock, wait_s=0.05)  # type: ignore[arg-type]
    await _set(sessions, "slow", 20)
    assert (await weights.get("slow")) is not None
    await _set(sessions, "slow", 70)
    flaky.held.clear()
    clock.now += 1.0
    reader = asyncio.create_task(weights.get("slow"))  # it starts the read, and waits for it a while
    await asyncio.sleep(0)  # not a wait: one turn of the loop, in which the task starts its read
    split = await weights.get("slow")  # a read is under way: this one goes on with the last known at once
    assert split is not None and split.weight == 20
    split = await reader
    assert split is not None and split.weight == 20  # its wait ran out: the last known too
    flaky.held.set()
    await eventually(  # the read went on, and landed
        lambda: weights.get("slow"),
        until=lambda split: split is not None and split.weight == 70,
        what="the held read to land",
        interval=0.01,
    )


async def test_a_request_cancelled_as_the_weights_read_lands_is_cancelled(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A cancellation (a client gone, a task stopped) that arrives in the loop turn the read finishes must
    not be lost: on Python 3.11 `asyncio.wait_for` returns the result then, and a caller looping over
    requests never stopped (a test's traffic loop ran on for 25 minutes)."""
    for turns in range(8):  # cancel at each loop turn between the read's end and the caller's resumption
        clock, flaky = Clock(), FlakySessions(sessions)
        weights = ModelWeights(flaky, clock=clock)  # type: ignore[arg-type]
        flaky.held.clear()
        caller = asyncio.create_task(weights.get("any"))
        await asyncio.sleep(0)  # not a wait: one loop turn, in which the caller starts the read
        reading = weights._reading
        assert reading is not None
        flaky.held.set()
        await asyncio.wait({reading})
        for _ in range(turns):
            await asyncio.sleep(0)
        if caller.cancel():  # still waiting: the cancellation must reach it
            with contextlib.suppress(asyncio.CancelledError):
                await caller
            assert caller.cancelled(), f"cancelled {turns} turns after the read finished, yet it returned"


# ---- the activities --------------------------------------------------------------------------


@pytest.fixture
def models(fleet: str, sessions: async_sessionmaker[AsyncSession]) -> ModelActivities:
    return ModelActivities(sessions, _routes(fleet, "chat"))


async def _run(fn: Any, request: Any) -> ModelSplit:
    result = await ActivityEnvironment().run(fn, request)
    assert isinstance(result, ModelSplit)
    return result


def _split(percent: int, promoted: bool = False) -> ModelSplit:
    return ModelSplit("chat", "v1", "v2", percent, promoted)


async def test_prepare_refuses_what_the_policy_does_not_have(models: ModelActivities) -> None:
    with pytest.raises(ApplicationError) as err:
        await _run(models.prepare, ModelCanaryInput("gpt-7", "v2"))
    assert err.value.type == "TargetNotFound" and err.value.non_retryable and "chat" in err.value.message
    with pytest.raises(ApplicationError) as err:
        await _run(models.prepare, ModelCanaryInput("chat", "v3"))
    assert err.value.type == "InvalidSpec" and err.value.non_retryable
    assert "canary is version 'v2', not 'v3'" in err.value.message
    with pytest.raises(ApplicationError) as err:
        await _run(models.prepare, ModelCanaryInput("plain", "v2"))
    assert err.value.type == "InvalidSpec" and "has no canary" in err.value.message
    with pytest.raises(ApplicationError) as err:
        await _run(models.promote, ModelCanaryInput("chat", "v3"))
    assert err.value.type == "InvalidSpec"


async def test_weights_round_trip_and_every_step_is_idempotent(
    models: ModelActivities, fleet: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    prepare = ModelCanaryInput("chat", "v2", rollout_id="r1")
    assert await _run(models.prepare, prepare) == _split(0)
    assert await _run(models.prepare, prepare) == _split(0)
    for _ in range(2):
        assert await _run(models.set_weight, ModelWeightInput("chat", "v2", 30, "r1")) == _split(30)
    assert await _run(models.prepare, prepare) == _split(30)  # a retried prepare leaves the weight be
    for percent in (-1, 101):
        with pytest.raises(ApplicationError) as err:
            await _run(models.set_weight, ModelWeightInput("chat", "v2", percent, "r1"))
        assert err.value.type == "InvalidSpec" and err.value.non_retryable
    for _ in range(2):
        assert await _run(models.rollback, prepare) == _split(0)
    for _ in range(2):
        assert await _run(models.promote, prepare) == _split(100, promoted=True)
    async with sessions() as session:
        row = await crud.get_model_canary(session, model="chat")
    assert row is not None and (row.weight, row.promoted, row.rollout_id) == (100, True, "r1")

    # the gateway follows: promoted, every request goes to the canary
    async with make_http_client() as http:
        gateway = Gateway(http, _routes(fleet, "chat"), ModelWeights(sessions))
        assert {(await gateway.complete("chat", ASK, {})).version for _ in range(20)} == {"v2"}

    # a weight set after a promotion takes the promotion back
    assert await _run(models.set_weight, ModelWeightInput("chat", "v2", 10, "r2")) == _split(10)


async def test_prepare_resets_a_row_left_for_another_version(
    models: ModelActivities, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await _set(sessions, "chat", 100, version="v0", promoted=True)
    assert await _run(models.prepare, ModelCanaryInput("chat", "v2", "r3")) == _split(0)
    async with sessions() as session:
        row = await crud.get_model_canary(session, model="chat")
    assert row is not None and (row.canary_version, row.rollout_id) == ("v2", "r3")


async def test_rollback_happens_even_for_a_model_the_policy_lost(models: ModelActivities) -> None:
    split = await _run(models.rollback, ModelCanaryInput("gone", "v2", "r4"))
    assert split == ModelSplit("gone", "stable", "v2", 0, False)


async def test_the_migration_goes_down_and_up_again(engine: AsyncEngine) -> None:
    from alembic import command

    from store.migrate import _config, upgrade

    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: command.downgrade(_config(sync), "0002"))
    assert "model_canaries" not in await current_tables(engine)
    await upgrade(engine)
    assert "model_canaries" in await current_tables(engine)
