"""Who is calling: API keys and OIDC bearer tokens become a Principal; each route names the role it needs."""

import asyncio
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth_throttle import FailureThrottle
from api.db_deadline import DatabaseDeadline
from api.errors import ApiError
from api.keys import hash_key, key_id_of, well_formed
from api.oidc import OidcError, OidcUnavailable, OidcVerifier
from policies.access import ADMIN, CLIENT, PLATFORM_ROLES, SRE, Principal, permits
from settings import AuthSettings
from store import crud

# A revoked key stops working in other API processes within this time: a process looks a key up again
# once its entry is this old (measured from before the lookup), one primary-key read per key a second.
KEY_CACHE_S = 1.0
UNKNOWN_KEY_CACHE_S = 10.0  # an unknown or revoked key is looked up again no sooner than this
KEY_CACHE_MAX = 10_000
# An lcp key is 60 characters and an OIDC access token a few KB; a longer header is refused unread.
MAX_AUTHORIZATION_CHARS = 8192
CHALLENGE = {"WWW-Authenticate": "Bearer"}
# Declares the scheme in the OpenAPI spec (the Authorize button in /docs); checking is ours.
BEARER = HTTPBearer(auto_error=False, description="An lcp API key (lcp_...) or an OIDC access token.")


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "Unauthorized", message, headers=CHALLENGE)


def _invalid_key() -> ApiError:
    return _unauthorized("the API key is not valid: it is unknown or was revoked")


class Authenticator:
    """Turns an Authorization header into a Principal. Error messages never repeat the credential.

    Failed authentications that cost something are counted per client address (`throttle`, per
    process): a key or token that was looked up or checked and refused, and an oversized header. Past
    the burst, an address gets 429s until it has earned an attempt back, before its credential is
    even read. A credential refused on its shape alone costs nothing and is not counted: clients that
    send garbage get their 401 without locking out the address they share.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        oidc: OidcVerifier | None = None,
        settings: AuthSettings | None = None,
        database_timeout_s: float = 5.0,
    ) -> None:
        settings = settings or AuthSettings()
        self._sessions = sessions
        self._deadline = DatabaseDeadline("your API key", database_timeout_s)
        self._oidc = oidc  # set when an OIDC issuer is configured
        self.throttle = FailureThrottle(settings.failures_burst, settings.failures_per_minute)
        self._keys: dict[str, tuple[Principal, float]] = {}  # digest -> (principal, valid until)
        # Digests of keys found unknown or revoked, until when: a repeated bad key costs no lookup.
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._lookups: dict[str, asyncio.Future[Principal | None]] = {}  # digest -> the lookup in flight

    async def authenticate(self, authorization: str | None, client: str | None = None) -> Principal:
        """The caller behind `authorization`, sent from the address `client`."""
        self._refuse_throttled(client)
        if authorization is not None and len(authorization) > MAX_AUTHORIZATION_CHARS:
            self.throttle.failed(client)
            raise _too_large()
        scheme, _, credential = (authorization or "").partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise _unauthorized(
                "missing credentials: send 'Authorization: Bearer <API key or OIDC token>' "
                "(create a key with `lcp keys create`)"
            )
        if key_id_of(credential) is not None:
            if not well_formed(credential):
                raise _invalid_key()  # no key lcp mints looks like this: refused without a lookup
            return await self._counted(self._from_key(credential), client)
        if self._oidc is not None and credential.count(".") == 2:
            return await self._counted(self._from_token(self._oidc, credential), client)
        raise _unauthorized("the bearer credential is neither an lcp API key nor an accepted OIDC token")

    def check_token(self, authorization: str | None, expected: str, client: str | None = None) -> None:
        """Accept only `Authorization: Bearer <expected>` (a shared secret such as the metrics scrape
        token), counting a wrong one (a guess, not a missing one) as a failed authentication."""
        self._refuse_throttled(client)
        if authorization is not None and len(authorization) > MAX_AUTHORIZATION_CHARS:
            self.throttle.failed(client)
            raise _too_large()
        scheme, _, credential = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credential.strip().encode(), expected.encode()
        ):
            if authorization:
                self.throttle.failed(client)
            raise _unauthorized("this route needs 'Authorization: Bearer <its token>'")

    def _refuse_throttled(self, client: str | None) -> None:
        wait = self.throttle.retry_after(client)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            raise ApiError(
                429,
                "TooManyFailedAuthentications",
                f"too many failed authentications from your address: try again in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )

    async def _counted(self, check: Awaitable[Principal], client: str | None) -> Principal:
        """Await a lookup or a token check, counting a refusal against `client`."""
        try:
            return await check
        except ApiError as err:
            if err.status == 401:
                self.throttle.failed(client)
            raise

    async def _from_key(self, key: str) -> Principal:
        digest = hash_key(key)
        now = time.monotonic()
        known = self._keys.get(digest)
        if known is not None and known[1] > now:
            return known[0]
        if self._unknown.get(digest, 0.0) > now:
            raise _invalid_key()
        lookup = self._lookups.get(digest)
        if lookup is None:  # requests for a key whose entry just expired share one lookup
            lookup = self._lookups[digest] = asyncio.ensure_future(self._look_up_and_keep(key, digest))

            def done(lookup: asyncio.Future[Principal | None]) -> None:
                del self._lookups[digest]
                if not lookup.cancelled():
                    lookup.exception()  # read here too: a 503 nobody was left to await is not "lost"

            lookup.add_done_callback(done)
        principal = await asyncio.shield(lookup)  # a caller that goes away leaves it to the others
        if principal is None:
            raise _invalid_key()
        return principal

    async def _look_up_and_keep(self, key: str, digest: str) -> Principal | None:
        """Look `key` up and keep the answer, for as long as counted from before the lookup."""
        started = time.monotonic()
        principal = await self._deadline.run(lambda: self._lookup(key))
        if principal is None:
            self._unknown[digest] = started + UNKNOWN_KEY_CACHE_S
            self._unknown.move_to_end(digest)
            while len(self._unknown) > KEY_CACHE_MAX:
                self._unknown.popitem(last=False)
            return None
        if len(self._keys) >= KEY_CACHE_MAX:
            self._keys.clear()
        self._keys[digest] = (principal, started + KEY_CACHE_S)
        return principal

    async def _lookup(self, key: str) -> Principal | None:
        key_id = key_id_of(key)
        assert key_id is not None
        async with self._sessions() as session:
            row = await crud.get_api_key(session, key_id=key_id)
        if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, hash_key(key)):
            return None
        return Principal(
            subject=f"key:{row.id}",
            tenant=row.tenant,
            roles=frozenset(row.roles),
            key_id=row.id,
            requests_per_minute=row.requests_per_minute,
            tokens_per_minute=row.tokens_per_minute,
        )

    def forget(self, key_id: str) -> None:
        """Drop a (revoked) key from this process's cache at once."""
        self._keys = {digest: entry for digest, entry in self._keys.items() if entry[0].key_id != key_id}

    @staticmethod
    async def _from_token(oidc: OidcVerifier, token: str) -> Principal:
        try:
            return await oidc.verify(token)
        except OidcError as err:
            raise _unauthorized(f"the bearer token was refused: {err}") from None
        except OidcUnavailable as err:
            raise ApiError(503, "IdentityProviderUnavailable", f"cannot check the token now: {err}") from None


def require(role: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the caller, checks `role` and counts the request."""

    async def principal(
        request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
    ) -> Principal:
        state = request.app.state.lcp
        client = request.client.host if request.client else None
        caller: Principal = await state.auth.authenticate(request.headers.get("authorization"), client)
        if not permits(caller.roles, role):
            held = ", ".join(sorted(caller.roles)) or "none"
            grantor = " (a platform role: only a platform admin grants it)" if role in PLATFORM_ROLES else ""
            raise ApiError(
                403,
                "Forbidden",
                f"this route needs the {role!r} role{grantor}; your credentials carry: {held}",
            )
        await state.limiter.admit(caller)
        return caller

    return principal


ClientDep = Annotated[Principal, Depends(require(CLIENT))]
SreDep = Annotated[Principal, Depends(require(SRE))]
AdminDep = Annotated[Principal, Depends(require(ADMIN))]


def _too_large() -> ApiError:
    return ApiError(
        431,
        "AuthorizationTooLarge",
        f"the Authorization header is longer than {MAX_AUTHORIZATION_CHARS} characters, so it was not "
        "read: send 'Authorization: Bearer <API key or OIDC token>'",
    )
