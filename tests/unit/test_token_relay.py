"""The PostgreSQL token relay: deltas cross connections, a dead server never fails the publisher,
and a lost LISTEN connection comes back by itself."""

import asyncio

import asyncpg

from inference.token_relay import Delta, PostgresRelay, asyncpg_dsn
from tests.conftest import fresh_postgres_database
from tests.waiting import eventually


async def _next(queue: "asyncio.Queue[Delta]", wait_s: float = 10) -> Delta:
    return await asyncio.wait_for(queue.get(), wait_s)


async def test_deltas_cross_from_publisher_to_listener(postgres_url: str) -> None:
    dsn = asyncpg_dsn(await fresh_postgres_database(postgres_url))
    assert dsn
    api, worker = PostgresRelay(dsn), PostgresRelay(dsn)
    await api.listen()
    try:
        async with api.subscribe("c1") as queue:
            await worker.publish(Delta("c1", 1, "hello "))
            await worker.publish(Delta("other", 1, "not mine"))
            await worker.publish(Delta("c1", 1, "x" * 10_000))  # over NOTIFY's payload limit: split
            assert (await _next(queue)).text == "hello "
            pieces = [(await _next(queue)).text for _ in range(6)]
            assert "".join(pieces) == "x" * 10_000
            assert queue.empty()

            # the LISTEN connection is killed (failover, restart): the relay listens again
            admin = await asyncpg.connect(dsn)
            await admin.execute("SELECT pg_terminate_backend($1)", api._listener.get_server_pid())
            await admin.close()

            async def relayed() -> str:
                await worker.publish(Delta("c1", 2, "again"))
                return (await _next(queue, wait_s=0.2)).text

            await eventually(
                relayed,
                until=lambda text: text == "again",
                what="the relay to listen again",
                not_yet=(TimeoutError,),
            )
    finally:
        await api.close()
        await worker.close()


async def test_publishing_to_a_dead_server_only_loses_the_tokens() -> None:
    relay = PostgresRelay("postgresql://lcp@127.0.0.1:9/nowhere")
    await relay.publish(Delta("c1", 1, "lost"))  # no exception: the inference call goes on
    await relay.close()
