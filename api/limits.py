"""Per-key and per-tenant request and token limits, kept in this API process's memory."""

import time
from contextvars import ContextVar
from dataclasses import dataclass

from api.errors import ApiError
from policies.access import Principal
from policies.limits import Bucket, retry_after_s
from settings import LimitSettings, RateLimit


@dataclass(frozen=True)
class _Limit:
    scope: str  # "key" or "tenant"
    name: str  # the key id / subject, or the tenant
    unit: str  # "requests" or "tokens"
    per_minute: int


@dataclass
class _Reservation:
    """Tokens a request took from its token limits up front, still to be set against what its replies use."""

    left: int


# The current request's reservation: its replies' charges (also in done-callbacks and stream generators,
# which run in a copy of the request's context) spend it before taking more from the buckets.
_RESERVED: ContextVar[_Reservation | None] = ContextVar("lcp_reserved_tokens", default=None)


class RateLimiter:
    """Token buckets per (scope, name, unit). Each API process counts on its own, so N replicas
    allow up to N times the limit; limits are meant as guard rails, not billing."""

    def __init__(self, settings: LimitSettings) -> None:
        self._settings = settings
        self._buckets: dict[tuple[str, str, str], Bucket] = {}

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

    def _bucket(self, limit: _Limit, now: float) -> Bucket:
        bucket = self._buckets.get((limit.scope, limit.name, limit.unit))
        if bucket is None or bucket.capacity != limit.per_minute:
            bucket = self._buckets[(limit.scope, limit.name, limit.unit)] = Bucket.full(limit.per_minute, now)
        return bucket

    def admit(self, principal: Principal) -> None:
        """Count one request, or refuse it with 429 and Retry-After when a limit is spent
        (a token budget in debt from earlier replies refuses new requests until it refills)."""
        now = time.monotonic()
        checks = [(limit, 1.0) for limit in self._limits(principal, "requests")]
        checks += [(limit, 1.0) for limit in self._limits(principal, "tokens")]
        for limit, cost in checks:
            wait = self._bucket(limit, now).wait_s(cost, now)
            if wait > 0:
                raise _rate_limited(
                    f"{limit.scope} limit of {limit.per_minute} {limit.unit}/minute reached", wait
                )
        for limit in self._limits(principal, "requests"):
            self._bucket(limit, now).take(1, now)

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

    def reserve(self, principal: Principal, tokens: int, what: str) -> None:
        """Admit a request that will make a model work, taking its estimated `tokens` from its token
        limits now: a 413 when a whole minute cannot cover them (refuse_oversized), a 429 when what is
        left cannot. Charging only once replies came left every concurrent request admitted against the
        same unspent budget (30 at once spent 8 times a key's minute). The replies' tokens are set against
        the reservation first (charge_tokens); a request refused after it keeps its estimate spent."""
        self.refuse_oversized(principal, tokens, what)
        if tokens <= 0:
            return
        now = time.monotonic()
        limits = self._limits(principal, "tokens")
        for limit in limits:
            wait = self._bucket(limit, now).wait_s(tokens, now)
            if wait > 0:
                raise _rate_limited(
                    f"{limit.scope} limit of {limit.per_minute} tokens/minute cannot cover this request "
                    f"now ({what}, with requests still running counted)",
                    wait,
                )
        for limit in limits:
            self._bucket(limit, now).take(tokens, now)
        _RESERVED.set(_Reservation(tokens) if limits else None)

    def charge_tokens(self, principal: Principal, tokens: int) -> None:
        """Charge tokens a reply used (prompt and completion) to every token limit of the caller: the
        request's first charge settles its reservation (what was reserved and not used is given back);
        it never raises and never waits, so it is safe in `finally` blocks and done-callbacks."""
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
        now = time.monotonic()
        for limit in self._limits(principal, "tokens"):
            self._bucket(limit, now).take(tokens, now)


def _rate_limited(reason: str, wait_s: float) -> ApiError:
    """The 429 for a spent limit: `reason`, then when to retry, also in Retry-After."""
    seconds = retry_after_s(wait_s)
    return ApiError(
        429, "RateLimited", f"{reason}; retry in {seconds} s", headers={"Retry-After": str(seconds)}
    )
