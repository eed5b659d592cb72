"""OIDC bearer tokens: a JWT checked against its issuer's published keys (JWKS) becomes a Principal."""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt

from policies.access import PLATFORM_ROLES, ROLES, Principal
from policies.errors import PermanentError, TransientError
from settings import OidcSettings

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 10.0  # discovery and JWKS requests; the verification lock is held meanwhile
REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]


class OidcError(PermanentError):
    """The token is refused (answer 401); the message says why, never repeating the token or a part of it."""


class OidcUnavailable(TransientError):
    """The issuer's signing keys cannot be fetched now, so no token can be checked (answer 503, not 401)."""


class OidcVerifier:
    """Checks bearer JWTs from one issuer; its JWKS is cached, refetched when stale or on an unknown kid."""

    def __init__(
        self,
        settings: OidcSettings,
        http: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,  # tests pass a clock they move by hand
    ) -> None:
        self._clock = clock
        if not settings.issuer or not settings.audience:
            raise ValueError(
                "OIDC needs both an issuer and an audience (LCP_OIDC__ISSUER, LCP_OIDC__AUDIENCE)"
            )
        self._settings = settings
        self._http = http
        # Never "none", and never HS*: an HMAC "secret" would be the issuer's public key.
        self._algorithms = [
            alg for alg in settings.algorithms if alg.lower() != "none" and not alg.upper().startswith("HS")
        ]
        self._jwks_url = settings.jwks_url  # when empty, read once from the discovery document
        self._keys: dict[str, dict[str, Any]] = {}  # kid -> JWK
        self._fetched_at: float | None = None  # monotonic time of the last successful JWKS fetch
        self._tried_at: float | None = None  # ... of the last attempt, successful or not
        self._error: str | None = None  # why the last attempt failed
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> Principal:
        key = await self._signing_key(token)
        s = self._settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_s,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as err:
            raise OidcError(self._reason(err)) from None
        return self._principal(claims)

    async def _signing_key(self, token: str) -> jwt.PyJWK:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise OidcError("the token is malformed: it is not a signed JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self._algorithms:
            accepted = ", ".join(self._algorithms)
            raise OidcError(
                f"the token is signed with an algorithm that is not accepted (accepted: {accepted})"
            )
        if not isinstance(kid, str) or not kid:
            raise OidcError("the token header names no signing key (kid)")
        jwk = await self._jwk(kid)
        if jwk is None:
            raise OidcError("the token is signed with a key the issuer does not publish (unknown kid)")
        if jwk.get("alg", alg) != alg:
            raise OidcError("the token's algorithm is not the one its signing key is published for")
        try:
            return jwt.PyJWK(jwk, algorithm=alg)
        except jwt.PyJWTError:
            raise OidcError("the token's algorithm does not fit the type of its signing key") from None

    async def _jwk(self, kid: str) -> dict[str, Any] | None:
        if not self._fresh() or kid not in self._keys:
            async with self._lock:
                await self._refresh(kid)
        return self._keys.get(kid)

    def _fresh(self) -> bool:
        return self._fetched_at is not None and self._clock() - self._fetched_at < self._settings.jwks_cache_s

    async def _refresh(self, kid: str) -> None:
        """Refetch the JWKS (lock held), at most once per jwks_refresh_min_s however many kids are unknown."""
        if self._fresh() and kid in self._keys:
            return  # fetched by another verification while this one waited for the lock
        now = self._clock()
        if self._tried_at is not None and now - self._tried_at < self._settings.jwks_refresh_min_s:
            if self._error is not None:
                raise OidcUnavailable(self._error)
            return
        self._tried_at = now
        try:
            self._keys = await self._fetch_keys()
        except OidcUnavailable as err:
            self._error = str(err)
            raise
        self._error = None
        self._fetched_at = self._clock()

    async def _fetch_keys(self) -> dict[str, dict[str, Any]]:
        if not self._jwks_url:
            discovery_url = f"{self._settings.issuer.rstrip('/')}/.well-known/openid-configuration"
            discovery = await self._get_json(discovery_url, "discovery document")
            jwks_uri = discovery.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri:
                raise OidcUnavailable("the identity provider's discovery document names no jwks_uri")
            self._jwks_url = jwks_uri
        jwks = await self._get_json(self._jwks_url, "signing keys (JWKS)")
        keys = jwks.get("keys")
        if not isinstance(keys, list):
            raise OidcUnavailable("the identity provider's JWKS has no list of keys")
        return {jwk["kid"]: jwk for jwk in keys if _usable(jwk)}

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url, timeout=FETCH_TIMEOUT_S, follow_redirects=True)
        except httpx.HTTPError as err:
            log.warning("cannot fetch the OIDC %s from %s: %r", what, url, err)
            raise OidcUnavailable(
                f"cannot fetch the identity provider's {what}: {type(err).__name__}"
            ) from err
        if response.status_code != 200:
            log.warning("the OIDC %s at %s answered HTTP %d", what, url, response.status_code)
            raise OidcUnavailable(f"the identity provider's {what} answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            log.warning("the OIDC %s at %s is not a JSON object", what, url)
            raise OidcUnavailable(f"the identity provider's {what} is not a JSON object")
        return body

    def _reason(self, err: jwt.PyJWTError) -> str:
        """Why PyJWT refused the token, in words of ours: its own messages are not repeated."""
        s = self._settings
        if isinstance(err, jwt.ExpiredSignatureError):
            return "the token has expired"
        if isinstance(err, jwt.ImmatureSignatureError):
            return "the token is not valid yet (its nbf or iat is in the future)"
        if isinstance(err, jwt.MissingRequiredClaimError):
            return f"the token lacks the required {err.claim!r} claim"
        if isinstance(err, jwt.InvalidAudienceError):
            return f"the token was not issued for this service (wrong audience; expected {s.audience!r})"
        if isinstance(err, jwt.InvalidIssuerError):
            return f"the token was not issued by the configured issuer (wrong issuer; expected {s.issuer!r})"
        if isinstance(err, jwt.InvalidSignatureError):
            return "the token's signature does not verify (bad signature)"
        if isinstance(err, jwt.DecodeError):
            return "the token is malformed"
        return f"the token is invalid ({type(err).__name__})"

    def _principal(self, claims: dict[str, Any]) -> Principal:
        s = self._settings
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise OidcError("the token's 'sub' claim is empty")
        tenant = _claim(claims, s.tenant_claim)
        if tenant is None or tenant == "":
            if not s.default_tenant:
                raise OidcError(
                    f"the token has no {s.tenant_claim!r} claim (its tenant) and no default tenant is set"
                )
            tenant = s.default_tenant
        if not isinstance(tenant, str):
            raise OidcError(f"the token's {s.tenant_claim!r} claim (its tenant) is not a string")
        names = _claim(claims, s.roles_claim)
        if names is None:
            names = []
        if not isinstance(names, list):
            raise OidcError(f"the token's {s.roles_claim!r} claim is not a list of role names")
        roles = set()
        for name in names:
            if not isinstance(name, str):
                continue
            if name in s.role_map:
                role = s.role_map[name]
            elif name not in PLATFORM_ROLES:
                role = name  # an unmapped tenant role name stands for itself
            else:
                continue  # a group a tenant could name "platform" must not make it one: map it explicitly
            if role in ROLES:
                roles.add(role)
        return Principal(subject=f"oidc:{subject}", tenant=tenant, roles=frozenset(roles))


def _claim(claims: dict[str, Any], path: str) -> Any:
    """The claim named `path` ("tenant", "https://x/tenant"), else the one at dotted path `path`."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _usable(jwk: Any) -> bool:
    """A public signing key with a kid, of a type PyJWT reads (a private one would be a leak, not a key)."""
    if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str) or not jwk["kid"]:
        return False
    if jwk.get("use", "sig") != "sig" or "d" in jwk:
        return False
    try:
        jwt.PyJWK(jwk)
    except (jwt.PyJWTError, TypeError, ValueError):
        return False
    return True
