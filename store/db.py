"""The async engines and session factory for SQLite (aiosqlite) or PostgreSQL (asyncpg)."""

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def make_engine(url: str, wait_s: float | None = None) -> AsyncEngine:
    """The read model's engine. `wait_s` (PostgreSQL): how long a connection, a pooled connection and each
    statement may take before TimeoutError, so that a database that stops answering fails what waits on
    it instead of hanging it; None for no bound (migrations, workers' activities with their own timeouts)."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url, 30.0)
    bounded: dict[str, Any] = (
        {"connect_args": {"timeout": wait_s, "command_timeout": wait_s}, "pool_timeout": wait_s}
        if wait_s
        else {}
    )
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True, **bounded)


def make_counter_engine(url: str, wait_s: float) -> AsyncEngine:
    """An engine for counters updated in one statement (the limit buckets): each statement commits on its
    own, and a pooled connection is used without a ping first (that would be a second round trip; a
    connection that died fails one statement and is replaced). SQLite waits at most `wait_s` for
    another writer's lock. Few connections: a statement holds one for well under a millisecond; on SQLite
    one, since it takes one writer at a time (statements queue for it instead of in SQLite's busy-wait
    backoff)."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url, wait_s, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0)
    return create_async_engine(url, pool_size=5, max_overflow=5, isolation_level="AUTOCOMMIT")


def _sqlite_engine(url: str, lock_wait_s: float, **options: Any) -> AsyncEngine:
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": lock_wait_s}, **options)

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(lock_wait_s * 1000)}")
        cursor.close()

    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
