"""Who is calling: API keys and OIDC bearer tokens become a Principal; each route names the role it needs."""

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.errors import ApiError
from api.keys import hash_key, key_id_of
from api.oidc import OidcError, OidcUnavailable, OidcVerifier
from policies.access import ADMIN, CLIENT, SRE, Principal, permits
from store import crud

KEY_CACHE_S = 10.0  # a revoked key stops working in other API processes within this time
KEY_CACHE_MAX = 10_000
CHALLENGE = {"WWW-Authenticate": "Bearer"}
# Declares the scheme in the OpenAPI spec (the Authorize button in /docs); checking is ours.
BEARER = HTTPBearer(auto_error=False, description="An lcp API key (lcp_...) or an OIDC access token.")


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "Unauthorized", message, headers=CHALLENGE)


class Authenticator:
    """Turns an Authorization header into a Principal. Error messages never repeat the credential."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], oidc: OidcVerifier | None = None) -> None:
        self._sessions = sessions
        self._oidc = oidc  # set when an OIDC issuer is configured
        self._keys: dict[str, tuple[Principal | None, float]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        scheme, _, credential = (authorization or "").partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise _unauthorized(
                "missing credentials: send 'Authorization: Bearer <API key or OIDC token>' "
                "(create a key with `lcp keys create`)"
            )
        if key_id_of(credential) is not None:
            return await self._from_key(credential)
        if self._oidc is not None and credential.count(".") == 2:
            return await self._from_token(self._oidc, credential)
        raise _unauthorized("the bearer credential is neither an lcp API key nor an accepted OIDC token")

    async def _from_key(self, key: str) -> Principal:
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._keys.get(digest)
        if cached is None or cached[1] < now:
            principal = await self._lookup(key)
            if len(self._keys) >= KEY_CACHE_MAX:
                self._keys.clear()
            self._keys[digest] = cached = (principal, now + KEY_CACHE_S)
        if cached[0] is None:
            raise _unauthorized("the API key is not valid: it is unknown or was revoked")
        return cached[0]

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
        self._keys = {
            digest: entry
            for digest, entry in self._keys.items()
            if entry[0] is None or entry[0].key_id != key_id
        }

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
        caller: Principal = await state.auth.authenticate(request.headers.get("authorization"))
        if not permits(caller.roles, role):
            held = ", ".join(sorted(caller.roles)) or "none"
            raise ApiError(
                403, "Forbidden", f"this route needs the {role!r} role; your credentials carry: {held}"
            )
        state.limiter.admit(caller)
        return caller

    return principal


ClientDep = Annotated[Principal, Depends(require(CLIENT))]
SreDep = Annotated[Principal, Depends(require(SRE))]
AdminDep = Annotated[Principal, Depends(require(ADMIN))]
