"""Per-key and per-tenant request and token limits, counted in buckets every API process shares."""

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from api.db_deadline import DatabaseDeadline
from api.errors import ApiError
from policies.access import Principal
from policies.limits import retry_after_s, step_s, wait_s
from settings import LimitSettings, RateLimit
from store import limit_buckets
from store.db import make_counter_engine
from store.limit_buckets import Bucket, Take

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long a process remembers a bucket that refused a request: a client hammering a spent limit costs
# the database a statement a second, not one a request. Only refusals are remembered (every admission
# is counted in the database), so no process ever admits more than the shared bucket allows; what
# another process gives back meanwhile (a token reservation's unused part) is seen once this expires.
REFUSAL_MEMORY_S = 1.0
REFUSALS_KEPT = 10_000
# Tokens replies used while the database was away: kept per limit (so memory grows with the callers, not
# the replies), and charged once it answers, tried again this often; past OWED_KEPT limits, logged as lost.
OWED_RETRY_S = 1.0
OWED_KEPT = 100_000


@dataclass(frozen=True)
class _Limit:
    scope: str  # "key" or "tenant"
    name: str  # the key id / subject, or the tenant
    unit: str  # "requests" or "tokens"
    per_minute: int

    @property
    def bucket(self) -> Bucket:
        return Bucket(self.scope, self.name, self.unit)


@dataclass
class _Reservation:
    """Tokens a request took from its token limits up front, still to be set against what its replies use."""

    left: int


# The current request's reservation: its replies' charges (also in done-callbacks and stream generators,
# which run in a copy of the request's context) spend it before taking more from the buckets.
_RESERVED: ContextVar[_Reservation | None] = ContextVar("lcp_reserved_tokens", default=None)


class RateLimiter:
    """Buckets per (scope, name, unit) in the read model (store/limit_buckets.py), shared by every API
    process, so that N replicas allow a limit once, not N times. Admitting a request is one statement
    on the database at `database_url`; one that does not answer within `timeout_s` refuses it with a 503."""

    def __init__(self, settings: LimitSettings, database_url: str, timeout_s: float) -> None:
        self._settings = settings
        self._engine = make_counter_engine(database_url, timeout_s)
        self._deadline = DatabaseDeadline("the request and token limits", timeout_s)
        # Buckets that refused a request: their TAT on this process's monotonic clock, and until when
        # the refusal is remembered.
        self._refused: dict[Bucket, tuple[float, float]] = {}
        # Charges on their way to the database, and the buckets each changes.
        self._charging: dict[asyncio.Task[None], frozenset[Bucket]] = {}
        # Tokens charged while the database was away, per limit, and the task that charges them when back.
        self._owed: dict[_Limit, int] = {}
        self._settling: asyncio.Task[None] | None = None
        # A lock per caller with a request counting now (kept while someone holds or awaits it).
        self._turns: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _limits(self, principal: Principal, unit: str) -> list[_Limit]:
        tenant = self._settings.tenants.get(principal.tenant, self._settings.per_tenant)
        key = RateLimit(
            requests_per_minute=principal.requests_per_minute or self._settings.per_key.requests_per_minute,
            tokens_per_minute=principal.tokens_per_minute or self._settings.per_key.tokens_per_minute,
        )
        limits = []
        for scope, name, config in (("key", principal.subject, key), ("tenant", principal.tenant, tenant)):
            per_minute = config.requests_per_minute if unit == "requests" else config.tokens_per_minute
            if per_minute:
                limits.append(_Limit(scope, name, unit, per_minute))
        return limits

    async def admit(self, principal: Principal) -> None:
        """Count one request, or refuse it with 429 and Retry-After when a limit is spent
        (a token budget in debt from earlier replies refuses new requests until it refills)."""
        takes = []
        for limit in self._limits(principal, "requests") + self._limits(principal, "tokens"):
            one = step_s(1, limit.per_minute)
            takes.append((limit, Take(limit.bucket, one if limit.unit == "requests" else 0.0, need_s=one)))
        await self._spend(
            principal,
            takes,
            lambda limit: f"{limit.scope} limit of {limit.per_minute} {limit.unit}/minute reached",
        )

    def refuse_oversized(self, principal: Principal, tokens: int, what: str) -> None:
        """Refuse up front (413, not a Retry-After) a request whose estimated tokens exceed a whole
        minute of a token limit: no wait would ever make room for it, and admitting it would leave the
        budget in debt for as long as it takes to repay. `what` says how the estimate was made."""
        for limit in self._limits(principal, "tokens"):
            if tokens > limit.per_minute:
                raise ApiError(
                    413,
                    "RequestTooLarge",
                    f"this request needs about {tokens} tokens ({what}), more than the {limit.scope} "
                    f"limit of {limit.per_minute} tokens/minute allows for one request: send a shorter "
                    "prompt or a lower max_tokens, or ask for a higher limit",
                    limit=limit.per_minute,
                    requested=tokens,
                )

    async def reserve(self, principal: Principal, tokens: int, what: str) -> None:
        """Admit a request that will make a model work, taking its estimated `tokens` from its token
        limits now: a 413 when a whole minute cannot cover them (refuse_oversized), a 429 when what is
        left cannot. Charging only once replies came left every concurrent request admitted against the
        same unspent budget (30 at once spent 8 times a key's minute). The replies' tokens are set against
        the reservation first (charge_tokens); a request refused after it keeps its estimate spent."""
        self.refuse_oversized(principal, tokens, what)
        if tokens <= 0:
            return
        limits = self._limits(principal, "tokens")
        takes = []
        for limit in limits:
            estimate = step_s(tokens, limit.per_minute)
            takes.append((limit, Take(limit.bucket, estimate, need_s=estimate)))
        await self._spend(
            principal,
            takes,
            lambda limit: (
                f"{limit.scope} limit of {limit.per_minute} tokens/minute cannot cover this "
                f"request now ({what}, with requests still running counted)"
            ),
        )
        _RESERVED.set(_Reservation(tokens) if limits else None)

    def charge_tokens(self, principal: Principal, tokens: int) -> None:
        """Charge tokens a reply used (prompt and completion) to every token limit of the caller: the
        request's first charge settles its reservation (what was reserved and not used is given back);
        it never raises and never waits, so it is safe in `finally` blocks and done-callbacks. The
        charge reaches the database in a task of its own; this process's next admission on the same
        buckets waits for it."""
        reservation = _RESERVED.get()
        if reservation is not None and reservation.left > 0:
            # The reply is known now: what it used comes out of the reservation, and the rest (max_tokens
            # the model did not write) goes back, or every request would pay for its whole max_tokens.
            covered = min(reservation.left, max(tokens, 0))
            tokens -= covered
            tokens -= reservation.left - covered  # negative: given back
            reservation.left = 0
        if tokens == 0:
            return
        charges = [(limit, tokens) for limit in self._limits(principal, "tokens")]
        if not charges:
            return
        buckets = frozenset(limit.bucket for limit, _ in charges)
        for bucket in buckets:
            self._refused.pop(bucket, None)  # what it gives back may make room
        task = asyncio.get_running_loop().create_task(self._charge(charges))
        self._charging[task] = buckets
        task.add_done_callback(self._charging.pop)

    async def close(self) -> None:
        """Let the charges still on their way reach the database, then close the connections. Tokens
        still owed (the database away until now) get one last try, and are logged as lost if it fails."""
        if self._charging:
            await asyncio.wait(list(self._charging), timeout=self._deadline.timeout_s)
        if self._settling is not None:
            self._settling.cancel()
            await asyncio.gather(self._settling, return_exceptions=True)
        if owed := self._owed:
            self._owed = {}
            try:
                await self._deadline.run(lambda: self._send(owed))
            except ApiError:
                lost = "; ".join(f"{limit.scope} {limit.name}: {tokens}" for limit, tokens in owed.items())
                log.error("tokens never charged, the database away until this process stopped: %s", lost)
        await self._engine.dispose()

    async def _spend(
        self, principal: Principal, takes: list[tuple[_Limit, Take]], reason: Callable[[_Limit], str]
    ) -> None:
        """Take all of `takes` from their buckets, or refuse the request with a 429 naming the limit that
        makes it wait longest (`reason` says how)."""
        if not takes:
            return
        if remembered := self._remembered_waits(takes):
            raise _refusal(remembered, reason)
        await self._deadline.run(lambda: self._spend_in_turn(principal.subject, takes, reason))

    async def _spend_in_turn(
        self, turn: str, takes: list[tuple[_Limit, Take]], reason: Callable[[_Limit], str]
    ) -> None:
        """One statement at a time per caller in this process: a burst waits here rather than on the
        bucket's row lock, and once one of its requests is refused the others are refused without
        asking the database."""
        lock = self._turns.get(turn)
        if lock is None:
            lock = self._turns[turn] = asyncio.Lock()
        async with lock:
            if remembered := self._remembered_waits(takes):
                raise _refusal(remembered, reason)
            buckets = {take.bucket for _, take in takes}
            if charging := [task for task, changes in self._charging.items() if changes & buckets]:
                await asyncio.wait(charging)
            await self._settle_owed(buckets)
            ahead = await self._on_connection(limit_buckets.spend, [take for _, take in takes])
        if not ahead:
            return
        now = time.monotonic()
        if len(self._refused) >= REFUSALS_KEPT:
            self._refused = {bucket: kept for bucket, kept in self._refused.items() if kept[1] > now}
        for bucket, seconds in ahead.items():
            self._refused[bucket] = (now + seconds, now + REFUSAL_MEMORY_S)
        waits = {
            limit: wait_s(ahead[take.bucket], 0.0, take.need_s)
            for limit, take in takes
            if take.bucket in ahead
        }
        raise _refusal(waits, reason)

    def _remembered_waits(self, takes: list[tuple[_Limit, Take]]) -> dict[_Limit, float]:
        """The waits this process already knows of, without asking the database."""
        now = time.monotonic()
        waits = {}
        for limit, take in takes:
            known = self._refused.get(take.bucket)
            if known is not None and known[1] > now and (wait := wait_s(known[0], now, take.need_s)) > 0:
                waits[limit] = wait
        return waits

    async def _charge(self, charges: list[tuple[_Limit, int]]) -> None:
        try:
            await self._deadline.run(lambda: self._send(dict(charges)))
        except ApiError:
            self._owe(dict(charges))
            if self._settling is None or self._settling.done():
                log.warning("tokens are charged once the database answers again (kept until then)")
                self._settling = asyncio.get_running_loop().create_task(self._settle())

    async def _send(self, charges: dict[_Limit, int]) -> None:
        rows = [(limit.bucket, step_s(tokens, limit.per_minute)) for limit, tokens in charges.items()]
        await self._on_connection(limit_buckets.charge, rows)

    def _owe(self, charges: dict[_Limit, int]) -> None:
        for limit, tokens in charges.items():
            if limit in self._owed or len(self._owed) < OWED_KEPT:
                self._owed[limit] = self._owed.get(limit, 0) + tokens
            else:
                log.error(
                    "tokens never charged (too many callers owe while the database is away): %s %s: %d",
                    limit.scope,
                    limit.name,
                    tokens,
                )

    async def _settle(self) -> None:
        """Charge what is owed once the database answers, trying again every OWED_RETRY_S."""
        while self._owed:
            await asyncio.sleep(OWED_RETRY_S)
            owed, self._owed = self._owed, {}
            try:
                await self._deadline.run(lambda: self._send(owed))  # noqa: B023 - awaited in this pass
            except BaseException as err:  # cancelled by close() too: owed still, for its last try
                self._owe(owed)
                if not isinstance(err, ApiError):
                    raise
                continue
            log.warning("tokens used while the database was away are charged now: %d", sum(owed.values()))

    async def _settle_owed(self, buckets: set[Bucket]) -> None:
        """Before counting a request, charge what its buckets owe from an outage (the database answers
        again, or this fails as the request's statement would): it is not admitted on budget already used."""
        owed = {limit: tokens for limit, tokens in self._owed.items() if limit.bucket in buckets}
        if not owed:
            return
        for limit in owed:
            del self._owed[limit]
        try:
            await self._send(owed)
        except BaseException:
            self._owe(owed)
            raise

    async def _on_connection(self, work: Callable[[AsyncConnection, Any], Awaitable[T]], arg: Any) -> T:
        """`work(connection, arg)` on a pooled connection, and once more on a new one when the pooled one
        turns out dead (the database restarted: this engine does not ping a connection before each use)."""
        try:
            async with self._engine.connect() as connection:
                return await work(connection, arg)
        except DBAPIError as err:
            if not err.connection_invalidated:
                raise
        async with self._engine.connect() as connection:
            return await work(connection, arg)


def _refusal(waits: dict[_Limit, float], reason: Callable[[_Limit], str]) -> ApiError:
    """The 429 for the limit that makes the request wait longest."""
    limit = max(waits, key=lambda limit: waits[limit])
    seconds = retry_after_s(waits[limit])
    return ApiError(
        429, "RateLimited", f"{reason(limit)}; retry in {seconds} s", headers={"Retry-After": str(seconds)}
    )
