"""The limit buckets every API process shares, on SQLite and PostgreSQL: a minute's worth admitted and no
more, all of a request's buckets or none, debts and give-backs, and two engines (two processes, as far
as the database knows) racing for one bucket without taking the same room twice."""

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from policies.limits import step_s, wait_s
from store import limit_buckets
from store.db import make_counter_engine
from store.limit_buckets import Bucket, Take

KEY = Bucket("key", "key:k1", "requests")
TENANT = Bucket("tenant", "acme", "requests")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_counter_engine(database_url, wait_s=5.0)
    yield engine
    await engine.dispose()


def request(bucket: Bucket, per_minute: int) -> Take:
    one = step_s(1, per_minute)
    return Take(bucket, one, need_s=one)


async def spend(engine: AsyncEngine, *takes: Take) -> dict[Bucket, float]:
    async with engine.connect() as connection:
        return await limit_buckets.spend(connection, takes)


async def test_a_minute_of_requests_is_admitted_then_the_next_waits_for_its_step(engine: AsyncEngine) -> None:
    admitted = [await spend(engine, request(KEY, 60)) for _ in range(60)]
    assert admitted == [{}] * 60
    refused = await spend(engine, request(KEY, 60))
    assert list(refused) == [KEY]
    assert 0 < wait_s(refused[KEY], 0.0, step_s(1, 60)) <= 1.0  # one request a second from now on


async def test_a_request_takes_from_all_its_buckets_or_from_none(engine: AsyncEngine) -> None:
    assert await spend(engine, request(KEY, 60), request(TENANT, 1)) == {}
    refused = await spend(engine, request(KEY, 60), request(TENANT, 1))
    assert list(refused) == [TENANT]
    assert 58 < wait_s(refused[TENANT], 0.0, step_s(1, 1)) <= 60
    # The refused request took nothing from the key: 59 of its 60 are left.
    other_tenant = Bucket("tenant", "other", "requests")
    assert [await spend(engine, request(KEY, 60), request(other_tenant, 1000)) for _ in range(59)] == [
        {}
    ] * 59
    assert list(await spend(engine, request(KEY, 60))) == [KEY]


async def test_a_check_takes_nothing_and_a_debt_refuses_until_it_is_repaid(engine: AsyncEngine) -> None:
    tokens = Bucket("key", "key:k1", "tokens")
    check = Take(tokens, 0.0, need_s=step_s(1, 100))
    assert [await spend(engine, check) for _ in range(5)] == [{}] * 5
    async with engine.connect() as connection:
        await limit_buckets.charge(connection, [(tokens, step_s(150, 100))])  # a reply used 150 of 100
    refused = await spend(engine, check)
    assert 29 < wait_s(refused[tokens], 0.0, step_s(1, 100)) <= 30.6  # 50 tokens of debt, then one
    async with engine.connect() as connection:
        await limit_buckets.charge(connection, [(tokens, step_s(-1000, 100))])  # given back: full, no more
    assert await spend(engine, Take(tokens, step_s(100, 100), need_s=step_s(100, 100))) == {}
    assert list(await spend(engine, check)) == [tokens]


async def test_two_processes_racing_for_one_bucket_admit_a_minute_between_them(database_url: str) -> None:
    engines = [make_counter_engine(database_url, wait_s=10.0) for _ in range(2)]
    try:
        await spend(engines[0], request(KEY, 60))  # the bucket exists, with 59 left
        started = time.monotonic()
        answers = await asyncio.gather(*(spend(engines[i % 2], request(KEY, 60)) for i in range(120)))
        elapsed = time.monotonic() - started
    finally:
        for engine in engines:
            await engine.dispose()
    admitted = sum(1 for answer in answers if not answer)
    # 59 left, and one more for each second the race took (a limit of 60 a minute refills one a second)
    assert 59 <= admitted <= 59 + int(elapsed) + 1, (admitted, elapsed)
