"""The side channel that carries reply tokens from the inference activity to the API request that
waits for them, without a history event per token batch. Best effort: the reply recorded by the
workflow is the truth, and the API fills in whatever the channel did not deliver."""

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from settings import Settings

log = logging.getLogger(__name__)

PG_CHANNEL = "lcp_tokens"
PG_PAYLOAD_MAX = 7000  # PostgreSQL refuses NOTIFY payloads of 8000 bytes or more
QUEUE_MAX = 4096
RECONNECT_EVERY_S = 1.0
PUBLISH_CONNECT_TIMEOUT_S = 2.0


@dataclass
class Delta:
    channel: str
    attempt: int
    text: str


class TokenRelay(Protocol):
    batch_s: float  # how long the publisher gathers deltas into one message

    async def publish(self, delta: Delta) -> None: ...

    def subscribe(self, channel: str) -> contextlib.AbstractAsyncContextManager["asyncio.Queue[Delta]"]: ...


class _Subscribers:
    batch_s = 0.0

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue[Delta]] = {}

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator["asyncio.Queue[Delta]"]:
        queue: asyncio.Queue[Delta] = asyncio.Queue(QUEUE_MAX)
        self._queues[channel] = queue
        try:
            yield queue
        finally:
            self._queues.pop(channel, None)

    def deliver(self, delta: Delta) -> None:
        queue = self._queues.get(delta.channel)
        if queue is not None:
            with contextlib.suppress(asyncio.QueueFull):  # a stalled reader loses deltas, not memory
                queue.put_nowait(delta)


class MemoryRelay(_Subscribers):
    """For an API process that runs the conversation worker too (`lcp dev`, `lcp api --worker`)."""

    async def publish(self, delta: Delta) -> None:
        self.deliver(delta)


class PostgresRelay(_Subscribers):
    """LISTEN/NOTIFY on the read model's PostgreSQL: APIs and workers in separate processes or hosts."""

    batch_s = 0.02  # one NOTIFY per 20 ms of tokens, not one per token

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self._dsn = dsn
        self._listener: Any = None  # asyncpg connections (asyncpg ships no type hints)
        self._publisher: Any = None
        self._publish_lock = asyncio.Lock()
        self._closing = False
        self._reconnecting: asyncio.Task[None] | None = None

    async def listen(self) -> None:
        import asyncpg

        connection = await asyncpg.connect(self._dsn)
        await connection.add_listener(PG_CHANNEL, self._on_notify)
        connection.add_termination_listener(self._on_lost)
        self._listener = connection

    def _on_lost(self, _connection: object) -> None:
        if not self._closing:
            log.warning("token relay: lost the LISTEN connection to PostgreSQL; reconnecting")
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        while not self._closing:
            try:
                await self.listen()
                log.warning("token relay: listening again")
                return
            except Exception:  # any failure (server down, auth, DNS): wait and try again
                await asyncio.sleep(RECONNECT_EVERY_S)

    def _on_notify(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            data = json.loads(payload)
            self.deliver(Delta(channel=data["c"], attempt=int(data["a"]), text=data["t"]))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed token notification")

    async def publish(self, delta: Delta) -> None:
        """Best effort: a relay that fails loses tokens on the way (the API sends them from the
        recorded reply at the end), never the inference call."""
        import asyncpg

        async with self._publish_lock:
            try:
                if self._publisher is None or self._publisher.is_closed():
                    self._publisher = await asyncpg.connect(self._dsn, timeout=PUBLISH_CONNECT_TIMEOUT_S)
                text = delta.text
                while text:  # split so that every payload stays under PostgreSQL's limit
                    piece, text = text[: PG_PAYLOAD_MAX // 4], text[PG_PAYLOAD_MAX // 4 :]
                    payload = json.dumps({"c": delta.channel, "a": delta.attempt, "t": piece})
                    await self._publisher.execute("SELECT pg_notify($1, $2)", PG_CHANNEL, payload)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
                log.warning("token relay: could not publish (%s); the reply still arrives whole", err)
                self._publisher = None

    async def close(self) -> None:
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        for connection in (self._listener, self._publisher):
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close()


def asyncpg_dsn(database_url: str) -> str | None:
    """The plain PostgreSQL DSN behind an SQLAlchemy URL, or None when the read model is not PostgreSQL."""
    prefix = "postgresql+asyncpg://"
    return "postgresql://" + database_url.removeprefix(prefix) if database_url.startswith(prefix) else None


def make_relay(settings: Settings) -> MemoryRelay | PostgresRelay:
    """The relay the settings ask for: PostgreSQL's when the read model is there (or it is asked
    for), else memory, which works only when the API runs the worker in its own process."""
    dsn = asyncpg_dsn(settings.resolved_database_url())
    choice = settings.api.token_relay
    if choice == "postgres" or (choice == "auto" and dsn):
        if dsn is None:
            raise ValueError("LCP_API__TOKEN_RELAY=postgres needs DATABASE_URL to point at PostgreSQL")
        return PostgresRelay(dsn)
    return MemoryRelay()
