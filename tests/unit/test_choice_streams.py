"""The one-shot route's streams of n choices, merged: a client that stops reading stops their reading."""

import asyncio
from collections.abc import AsyncGenerator

from api.routes.chat import Item, _merged


async def test_a_client_that_stops_reading_stops_the_choices_being_read() -> None:
    pulled = [0, 0, 0]

    async def tokens(index: int) -> AsyncGenerator[Item, None]:
        while True:
            pulled[index] += 1
            yield f"token {pulled[index]}"
            await asyncio.sleep(0)  # as a network read lets other tasks run

    streams = [tokens(index) for index in range(3)]
    firsts: list[Item] = [await anext(stream) for stream in streams]
    merged = _merged(firsts, streams)
    assert (await anext(merged))[1] == "token 1"
    for _ in range(100):  # the client reads nothing more; the pumps get every chance to run ahead
        await asyncio.sleep(0)
    assert sum(pulled) <= 3 + 3 + 3, pulled  # the firsts, a queue of 3, one waiting per pump
    await merged.aclose()
