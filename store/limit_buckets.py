"""The limit buckets every API process shares: policies/limits.py's GCRA run in SQL, so that admitting a
request is one statement (one round trip) on PostgreSQL, whose row locks make concurrent processes take
turns, and on SQLite (one process). Time is the database's clock, the same for every process."""

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection

from policies.limits import SLACK_S, WINDOW_S, wait_s

TABLE = "limit_buckets"
# Seconds since the epoch, fixed for the whole statement on both (PostgreSQL's now() is the time its
# transaction started; every statement here is a transaction of its own).
_NOW = {
    "postgresql": "CAST(EXTRACT(EPOCH FROM now()) AS DOUBLE PRECISION)",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}
_GREATEST = {"postgresql": "GREATEST", "sqlite": "MAX"}
_CREATE = text(
    f"INSERT INTO {TABLE} (scope, name, unit, tat) VALUES (:scope, :name, :unit, 0) ON CONFLICT DO NOTHING"
)


@dataclass(frozen=True, order=True)
class Bucket:
    scope: str  # "key" or "tenant"
    name: str  # the key's subject, or the tenant
    unit: str  # "requests" or "tokens"


@dataclass(frozen=True)
class Take:
    """What a request takes from a bucket (`take_s`) and what must be free there to admit it (`need_s`),
    in seconds of the bucket's minute (policies.limits.step_s); a check alone takes nothing."""

    bucket: Bucket
    take_s: float
    need_s: float


async def spend(connection: AsyncConnection, takes: Sequence[Take]) -> dict[Bucket, float]:
    """Take all of `takes`, or none of them: {} when the request is admitted, else, for each bucket that
    refused it, how far its TAT is ahead of now (policies.limits.wait_s says how long that means waiting).

    Admitting is one statement. A refusal costs a few more, rarer still since the API remembers it for
    a while: giving back what the other buckets took, reading the refusing buckets' TATs; a bucket met
    for the first time is created full, and the request tried again."""
    takes = sorted(takes, key=lambda take: take.bucket)  # row locks taken in one order: no deadlock
    refused: dict[Bucket, float] = {}
    for _ in range(3):
        taken = await _take(connection, takes)
        if len(taken) == len(takes):
            return {}
        given_back = [(take.bucket, -take.take_s) for take in takes if take.bucket in taken and take.take_s]
        if given_back:
            await charge(connection, given_back)
        refusing = [take for take in takes if take.bucket not in taken]
        ahead = await _ahead(connection, [take.bucket for take in refusing])
        refused = {take.bucket: ahead.get(take.bucket, 0.0) for take in refusing}
        if missing := [take.bucket for take in refusing if take.bucket not in ahead]:
            await _create(connection, missing)
        elif any(wait_s(refused[take.bucket], 0.0, take.need_s) > 0 for take in refusing):
            break
        # else the buckets were just created, or another process gave back meanwhile: try again
    return refused


async def charge(connection: AsyncConnection, charges: Sequence[tuple[Bucket, float]]) -> None:
    """Take seconds from buckets whether or not they have room (a reply that used more than was left
    leaves its budget in debt), or give them back when negative; a bucket not there yet is created."""
    rows = [
        {"scope": bucket.scope, "name": bucket.name, "unit": bucket.unit, "take_s": take_s}
        for bucket, take_s in sorted(charges)
    ]
    await connection.execute(_charge_statement(connection.dialect.name), rows)


async def _take(connection: AsyncConnection, takes: Sequence[Take]) -> set[Bucket]:
    params: dict[str, Any] = {}
    for i, take in enumerate(takes):
        params |= {f"s{i}": take.bucket.scope, f"n{i}": take.bucket.name, f"u{i}": take.bucket.unit}
        params |= {f"t{i}": take.take_s, f"e{i}": take.need_s}
    rows = await connection.execute(_take_statement(connection.dialect.name, len(takes)), params)
    return {Bucket(*row) for row in rows}


async def _ahead(connection: AsyncConnection, buckets: Sequence[Bucket]) -> dict[Bucket, float]:
    """How far each bucket's TAT is ahead of now (negative: the bucket is full); absent ones are left out."""
    params: dict[str, Any] = {}
    for i, bucket in enumerate(buckets):
        params |= {f"s{i}": bucket.scope, f"n{i}": bucket.name, f"u{i}": bucket.unit}
    rows = await connection.execute(_ahead_statement(connection.dialect.name, len(buckets)), params)
    return {Bucket(scope, name, unit): ahead for scope, name, unit, ahead in rows}


async def _create(connection: AsyncConnection, buckets: Sequence[Bucket]) -> None:
    """Create `buckets` full (a TAT long past), unless another process just did."""
    rows = [{"scope": bucket.scope, "name": bucket.name, "unit": bucket.unit} for bucket in buckets]
    await connection.execute(_CREATE, rows)


@functools.cache
def _take_statement(dialect: str, count: int) -> TextClause:
    """UPDATE ... RETURNING the buckets it took from: a bucket without room for its `need_s` is left as
    it is and not returned. PostgreSQL checks the condition again on the row it locked, so concurrent
    statements never take the same room twice."""
    now, greatest = _NOW[dialect], _GREATEST[dialect]
    wanted = " UNION ALL ".join(
        f"SELECT CAST(:s{i} AS VARCHAR) AS scope, CAST(:n{i} AS TEXT) AS name, "
        f"CAST(:u{i} AS VARCHAR) AS unit, CAST(:t{i} AS DOUBLE PRECISION) AS take_s, "
        f"CAST(:e{i} AS DOUBLE PRECISION) AS need_s"
        for i in range(count)
    )
    return text(
        f"UPDATE {TABLE} SET tat = {greatest}({greatest}({TABLE}.tat, clock.now) + wanted.take_s, clock.now) "
        f"FROM (SELECT {now} AS now) AS clock, ({wanted}) AS wanted "
        f"WHERE {TABLE}.scope = wanted.scope AND {TABLE}.name = wanted.name AND {TABLE}.unit = wanted.unit "
        f"AND {greatest}({TABLE}.tat, clock.now) + wanted.need_s <= clock.now + {WINDOW_S + SLACK_S!r} "
        f"RETURNING {TABLE}.scope, {TABLE}.name, {TABLE}.unit"
    )


@functools.cache
def _ahead_statement(dialect: str, count: int) -> TextClause:
    which = " OR ".join(f"(scope = :s{i} AND name = :n{i} AND unit = :u{i})" for i in range(count))
    return text(f"SELECT scope, name, unit, tat - {_NOW[dialect]} FROM {TABLE} WHERE {which}")


@functools.cache
def _charge_statement(dialect: str) -> TextClause:
    now, greatest, take_s = _NOW[dialect], _GREATEST[dialect], "CAST(:take_s AS DOUBLE PRECISION)"
    return text(
        f"INSERT INTO {TABLE} (scope, name, unit, tat) "
        f"VALUES (:scope, :name, :unit, {now} + {greatest}({take_s}, 0)) "
        f"ON CONFLICT (scope, name, unit) DO UPDATE "
        f"SET tat = {greatest}({greatest}({TABLE}.tat, {now}) + {take_s}, {now})"
    )
