"""The rate limiter on its own, against a SQLite read model or databases that do not answer: a client
hammering a spent limit does not hammer the database, and a database that refuses connections or never
answers refuses requests with a 503 in bounded time, never admits them."""

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event

from api.errors import ApiError
from api.limits import RateLimiter
from policies.access import Principal
from settings import LimitSettings
from store.migrate import upgrade_database
from tests.http_server import free_port
from tests.postgres import postgres_cluster
from tests.waiting import eventually

CALLER = Principal(subject="key:k1", tenant="acme", key_id="k1", requests_per_minute=5)


@pytest.fixture
async def limiter(tmp_path: Path) -> AsyncIterator[RateLimiter]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'lcp.db'}"
    await upgrade_database(url)
    limiter = RateLimiter(LimitSettings(), url, timeout_s=5.0)
    yield limiter
    await limiter.close()


async def test_refusals_are_remembered_so_a_spent_limit_costs_the_database_little(
    limiter: RateLimiter,
) -> None:
    statements: list[str] = []
    event.listen(
        limiter._engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2])
    )
    for _ in range(5):
        await limiter.admit(CALLER)
    admitting = len(statements)
    refusals = []
    for _ in range(50):
        with pytest.raises(ApiError) as refused:
            await limiter.admit(CALLER)
        refusals.append(refused.value)
    assert {(error.status, error.headers and error.headers["Retry-After"]) for error in refusals} == {
        (429, "12")  # 5 a minute: the next one in 12 s
    }
    assert len(statements) - admitting <= 3  # the first refusal asked the database; the 49 others did not


async def unanswered(url: str) -> float:
    limiter = RateLimiter(LimitSettings(), url, timeout_s=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(ApiError) as refused:
            await limiter.admit(CALLER)
        waited = time.monotonic() - started
    finally:
        await limiter.close()
    assert refused.value.status == 503 and refused.value.type == "DatabaseUnavailable"
    assert refused.value.headers == {"Retry-After": "1"}
    return waited


async def test_a_database_that_refuses_connections_refuses_requests_with_503() -> None:
    assert await unanswered(f"postgresql+asyncpg://lcp@127.0.0.1:{free_port()}/lcp") < 0.5 + 1


async def test_a_database_that_never_answers_refuses_requests_with_503_after_the_deadline() -> None:
    async def accept_and_say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        waited = await unanswered(f"postgresql+asyncpg://lcp@127.0.0.1:{port}/lcp")
    assert 0.5 <= waited < 0.5 + 1


async def test_tokens_used_while_the_database_is_away_are_charged_once_it_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reply that ends during an outage: its tokens are kept and charged when the database is back,
    before anything else is counted on its buckets; what a process still owes when it stops is logged."""
    caller = Principal(subject="key:k2", tenant="acme", key_id="k2", tokens_per_minute=1000)
    with postgres_cluster() as cluster:
        await upgrade_database(cluster.url)
        limiter = RateLimiter(LimitSettings(), cluster.url, timeout_s=1.0)
        try:
            await limiter.admit(caller)  # its buckets exist, a connection is pooled
            cluster.stop()
            limiter.charge_tokens(caller, 900)  # a reply's tokens: 900 of the key's 1000 a minute
            with pytest.raises(ApiError) as refused:
                await limiter.reserve(caller, 500, "a prompt")
            assert refused.value.status == 503
            cluster.start()

            async def reserve() -> ApiError | None:
                try:
                    await limiter.reserve(caller, 500, "a prompt")
                except ApiError as err:
                    return err
                return None

            answer = await eventually(
                reserve,
                until=lambda answer: answer is None or answer.status != 503,
                what="the limiter to count again once the database answers",
                within=30,
                interval=0.2,
            )
            # Before: the 900 tokens were dropped, and 500 more were admitted on a spent minute.
            assert answer is not None and answer.status == 429, answer

            cluster.stop()
            limiter.charge_tokens(caller, 70)  # owed when the process stops, the database still away
            await asyncio.sleep(0.2)  # its charge fails and is kept
        finally:
            with caplog.at_level("ERROR", logger="api.limits"):
                await limiter.close()
    assert "tokens never charged" in caplog.text and "key key:k2: 70" in caplog.text
    assert "tenant acme" not in caplog.text  # the tenant has no token limit: nothing owed there
