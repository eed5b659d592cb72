"""What fleet-wide limits cost a request: the time to admit one, counted in the shared buckets on
PostgreSQL and on SQLite, beside the per-process buckets lcp had before (the same GCRA in a dict), in
one run. `python -m bench.limits --postgres postgresql://...` prints it; `run_limits_bench` returns it."""

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from api.limits import RateLimiter
from policies.access import Principal
from policies.limits import after_taking, step_s, wait_s
from settings import LimitSettings
from store.migrate import upgrade_database

WARMUP = 200
IN_FLIGHT = 32


class InProcessLimiter:
    """The limiter as each API process ran it before: its own buckets in memory, so N processes allowed
    N times the limit. The same GCRA, the same buckets per admission (a request bucket to take from, a
    token bucket to check)."""

    def __init__(self) -> None:
        self._tats: dict[tuple[str, str], float] = {}

    async def admit(self, principal: Principal) -> None:
        now = time.monotonic()
        checks = [
            ((principal.subject, "requests"), step_s(1, principal.requests_per_minute or 1), True),
            ((principal.subject, "tokens"), step_s(1, principal.tokens_per_minute or 1), False),
        ]
        for bucket, need_s, _ in checks:
            if wait_s(self._tats.get(bucket, now), now, need_s) > 0:
                raise RuntimeError("refused: the bench's limits are meant never to refuse")
        for bucket, need_s, takes in checks:
            if takes:
                self._tats[bucket] = after_taking(self._tats.get(bucket, now), now, need_s)


def _principal() -> Principal:
    key = uuid.uuid4().hex[:12]
    return Principal(
        subject=f"key:{key}",
        tenant="bench",
        roles=frozenset({"client"}),
        key_id=key,
        requests_per_minute=10**9,  # never refused: what is measured is the counting
        tokens_per_minute=10**9,
    )


def _summary(seconds: list[float], wall_s: float) -> dict[str, float]:
    ms = sorted(value * 1000 for value in seconds)
    return {
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))], 3),
        "admissions_per_s": round(len(ms) / wall_s),
    }


async def _measure(admit: Callable[[Principal], Awaitable[None]], requests: int) -> dict[str, Any]:
    """Admissions one after another (latency), then `IN_FLIGHT` at once on one key (row locks: they
    take turns on its bucket)."""
    principal = _principal()
    for _ in range(WARMUP):
        await admit(principal)

    async def timed() -> float:
        started = time.perf_counter()
        await admit(principal)
        return time.perf_counter() - started

    started = time.perf_counter()
    sequential = [await timed() for _ in range(requests)]
    result = {"sequential": _summary(sequential, time.perf_counter() - started)}

    gate = asyncio.Semaphore(IN_FLIGHT)

    async def lane() -> float:
        async with gate:
            return await timed()

    started = time.perf_counter()
    concurrent = await asyncio.gather(*(lane() for _ in range(requests)))
    result[f"{IN_FLIGHT}_in_flight"] = _summary(list(concurrent), time.perf_counter() - started)
    return result


async def _shared(database_url: str, requests: int) -> dict[str, Any]:
    await upgrade_database(database_url)
    limiter = RateLimiter(LimitSettings(), database_url, timeout_s=5.0)
    try:
        return await _measure(limiter.admit, requests)
    finally:
        await limiter.close()


async def run_limits_bench(postgres_url: str | None, requests: int = 2000) -> dict[str, Any]:
    """Admission latency per store, and what the shared buckets add to the per-process ones (p50, p99).
    Without `postgres_url` only SQLite is measured beside them."""
    results = {"in-process (before)": await _measure(InProcessLimiter().admit, requests)}
    with tempfile.TemporaryDirectory(prefix="lcp-bench-limits-") as folder:
        results["sqlite"] = await _shared(f"sqlite+aiosqlite:///{Path(folder) / 'lcp.db'}", requests)
    if postgres_url:
        results["postgresql"] = await _shared(postgres_url, requests)
    before = results["in-process (before)"]["sequential"]
    for result in results.values():
        result["added_p50_ms"] = round(result["sequential"]["p50_ms"] - before["p50_ms"], 3)
        result["added_p99_ms"] = round(result["sequential"]["p99_ms"] - before["p99_ms"], 3)
    return {"requests": requests, "in_flight": IN_FLIGHT, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", help="postgresql+asyncpg://... of an empty database to measure on")
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run_limits_bench(args.postgres, args.requests)), indent=2))


if __name__ == "__main__":
    main()
