"""Tests of the OIDC verifier against a real HTTP identity provider (JWKS and discovery) in a thread."""

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from api.oidc import OidcError, OidcUnavailable, OidcVerifier
from settings import OidcSettings
from tests.http_server import free_port, serve_in_thread

REALM = "/realms/lcp"
AUDIENCE = "lcp"
SUB = "5f1c2a9e-7d4b-4c1e-9a3f-2b8d6e0c4f71"


@dataclass
class Signer:
    kid: str
    alg: str
    private: Any
    jwk: dict[str, Any]

    def token(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **header})


Signers = dict[str, Signer]


def rsa_signer(kid: str, alg: str = "RS256", publish_alg: bool = True) -> Signer:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True) | {"kid": kid, "use": "sig"}
    if publish_alg:
        jwk["alg"] = alg
    return Signer(kid, alg, private, jwk)


@dataclass
class Provider:
    """A Keycloak-like issuer: its published keys, how it answers, and how often it was asked."""

    base: str = ""
    keys: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    hits: Counter[str] = field(default_factory=Counter)

    @property
    def issuer(self) -> str:
        return self.base + REALM

    @property
    def jwks_url(self) -> str:
        return self.issuer + "/protocol/openid-connect/certs"


def provider_app(provider: Provider) -> Starlette:
    async def discovery(request: Request) -> Response:
        provider.hits["discovery"] += 1
        if provider.status != 200:
            return PlainTextResponse("down", status_code=provider.status)
        return JSONResponse({"issuer": provider.issuer, "jwks_uri": provider.jwks_url})

    async def certs(request: Request) -> Response:
        provider.hits["jwks"] += 1
        if provider.status != 200:
            return PlainTextResponse("down", status_code=provider.status)
        return JSONResponse({"keys": provider.keys})

    return Starlette(
        routes=[
            Route(f"{REALM}/.well-known/openid-configuration", discovery),
            Route(f"{REALM}/protocol/openid-connect/certs", certs),
        ]
    )


@pytest.fixture(scope="module")
def signers() -> Signers:
    ec_private = ec.generate_private_key(ec.SECP256R1())
    ec_jwk = ECAlgorithm.to_jwk(ec_private.public_key(), as_dict=True) | {"kid": "ec", "alg": "ES256"}
    return {
        "k1": rsa_signer("k1"),
        "k2": rsa_signer("k2"),
        "pss": rsa_signer("pss", "PS256", publish_alg=False),
        "ec": Signer("ec", "ES256", ec_private, ec_jwk),
    }


@pytest.fixture(scope="module")
def served() -> Iterator[Provider]:
    provider = Provider()
    with serve_in_thread(provider_app(provider)) as base:
        provider.base = base
        yield provider


@pytest.fixture
def idp(served: Provider, signers: Signers) -> Provider:
    """The served provider, publishing k1 only, answering, with its request counts at zero."""
    served.keys = [signers["k1"].jwk]
    served.status = 200
    served.hits.clear()
    return served


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


class Clock:
    """A monotonic clock the test moves by hand, so time-based rules are tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def verifier(
    idp: Provider, http: httpx.AsyncClient, clock: Clock | None = None, **overrides: Any
) -> OidcVerifier:
    settings = {"issuer": idp.issuer, "audience": AUDIENCE, "jwks_url": idp.jwks_url} | overrides
    if clock is None:
        return OidcVerifier(OidcSettings(**settings), http)
    return OidcVerifier(OidcSettings(**settings), http, clock=clock)


def claims(idp: Provider, **overrides: Any) -> dict[str, Any]:
    """Keycloak-shaped access-token claims; an override of None removes the claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "exp": now + 300,
        "iat": now,
        "jti": "0c6f4d0e-1111-4a7b-9c55-0d3c2b1a0f99",
        "iss": idp.issuer,
        "aud": [AUDIENCE, "account"],
        "sub": SUB,
        "typ": "Bearer",
        "azp": "lcp-cli",
        "realm_access": {"roles": ["offline_access", "uma_authorization", "sre", "client"]},
        "resource_access": {"account": {"roles": ["manage-account"]}},
        "scope": "openid profile email",
        "preferred_username": "alice",
        "tenant": "acme",
    }
    return {k: v for k, v in (base | overrides).items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(payload: dict[str, Any], kid: str) -> str:
    """An "alg": "none" token: no signature at all."""
    header = {"alg": "none", "typ": "JWT", "kid": kid}
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}."


def hs256(payload: dict[str, Any], secret: bytes, kid: str) -> str:
    """An HS256 token built by hand (PyJWT refuses to use a PEM public key as an HMAC secret)."""
    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode()) + "."
    signing_input += b64(json.dumps(payload).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


async def refused(v: OidcVerifier, token: str, *reason: str) -> OidcError:
    with pytest.raises(OidcError) as caught:
        await v.verify(token)
    message = str(caught.value)
    for words in reason:
        assert words in message, message
    assert_token_not_in(token, caught.value)
    return caught.value


def assert_token_not_in(token: str, err: Exception) -> None:
    text = str(err) + repr(err.args)
    assert token not in text
    for part in token.split("."):
        if len(part) >= 8:
            assert part not in text, text
            assert part[:16] not in text, text


async def test_a_keycloak_token_becomes_a_principal(
    idp: Provider, http: httpx.AsyncClient, signers: Signers
) -> None:
    principal = await verifier(idp, http, role_map={"sre": "sre"}).verify(signers["k1"].token(claims(idp)))
    assert principal.subject == f"oidc:{SUB}"
    assert principal.tenant == "acme"
    assert principal.roles == frozenset({"sre", "client"})
    assert principal.key_id is None


async def test_a_single_string_audience_is_accepted(
    idp: Provider, http: httpx.AsyncClient, signers: Signers
) -> None:
    principal = await verifier(idp, http).verify(signers["k1"].token(claims(idp, aud=AUDIENCE)))
    assert principal.tenant == "acme"


async def test_tenant_from_a_dotted_claim(idp: Provider, http: httpx.AsyncClient, signers: Signers) -> None:
    token = signers["k1"].token(claims(idp, org={"tenant": "globex"}))
    principal = await verifier(idp, http, tenant_claim="org.tenant").verify(token)
    assert principal.tenant == "globex"


async def test_tenant_from_a_claim_named_with_dots(
    idp: Provider, http: httpx.AsyncClient, signers: Signers
) -> None:
    """Namespaced claims (Auth0 style) hold dots in their name: the name itself is looked up first."""
    token = signers["k1"].token(claims(idp, tenant=None, **{"https://lcp.example/tenant": "initech"}))
    principal = await verifier(idp, http, tenant_claim="https://lcp.example/tenant").verify(token)
    assert principal.tenant == "initech"


async def test_es256_and_ps256_keys(idp: Provider, http: httpx.AsyncClient, signers: Signers) -> None:
    """An RSA key published without "alg" still verifies PS256; an EC key verifies ES256."""
    idp.keys = [signers["pss"].jwk, signers["ec"].jwk]
    v = verifier(idp, http)
    assert (await v.verify(signers["pss"].token(claims(idp)))).tenant == "acme"
    assert (await v.verify(signers["ec"].token(claims(idp)))).tenant == "acme"


async def test_expired(idp: Provider, http: httpx.AsyncClient, signers: Signers) -> None:
    v = verifier(idp, http, leeway_s=30)
    now = int(time.time())
    await refused(v, signers["k1"].token(claims(idp, exp=now - 120)), "expired")
    assert (await v.verify(signers["k1"].token(claims(idp, exp=now - 10)))).tenant == "acme"  # leeway


async def test_exp_is_required(idp: Provider, http: httpx.AsyncClient, signers: Signers) -> None:
    await refused(verifier(idp, http), signers["k1"].token(claims(idp, exp=None)), "'exp'")


async def test_not_valid_yet(idp: Provider, http: httpx.AsyncClient, signers: Signers) -> None:
    v = verifier(idp, http, leeway_s=30)
    now = int(time.time())
    await refused(v, signers["k1"].token(claims(idp, nbf=now + 300)), "not valid yet")
    assert (await v.verify(signers["k1"].token(claims(idp, nbf=now + 10)))).tenant == "acme"  # leeway


async def test_wrong_audience(idp: Provider, http: httpx.AsyncClient, signers: Signers) -> None:
    v = verifier(idp, http)
    await refused(v, signers["k1"].token(claims(idp, aud=["account", "other"])), "wrong audience")
    await refused(v, signers["k1"].token(claims(idp, aud=None)), "'aud'")


async def test_wrong_issuer(idp: Provider, http: httpx.AsyncClient, signers: Signers) -> None:
    v = verifier(idp, http)
    await refused(v, signers["k1"].token(claims(idp, iss=idp.base + "/realms/other")), "wrong issuer")
    await refused(v, signers["k1"].token(claims(idp, iss=None)), "'iss'")


async def test_signed_by_an_unknown_key(idp: Provider, http: httpx.AsyncClient, signers: Signers) -> None:
    v = verifier(idp, http)
    await refused(v, signers["k2"].token(claims(idp)), "unknown kid")
    forged = jwt.encode(claims(idp), signers["k2"].private, algorithm="RS256", headers={"kid": "k1"})
    await refused(v, forged, "bad signature")


async def test_tampered_claims_break_the_signature(
    idp: Provider, http: httpx.AsyncClient, signers: Signers
) -> None:
    header, _, signature = signers["k1"].token(claims(idp)).split(".")
    payload = b64(json.dumps(claims(idp, realm_access={"roles": ["admin"]})).encode())
    await refused(verifier(idp, http), f"{header}.{payload}.{signature}", "bad signature")


async def test_alg_none_and_hs256_are_refused(
    idp: Provider, http: httpx.AsyncClient, signers: Signers
) -> None:
    """Even when configured: never "none", nor HS256 with the public key or with a published secret."""
    secret = b"a-shared-secret-of-enough-length-for-hs256"
    idp.keys = [signers["k1"].jwk, {"kty": "oct", "kid": "shared", "alg": "HS256", "k": b64(secret)}]
    v = verifier(idp, http, algorithms=["RS256", "none", "HS256"])
    await refused(v, unsigned(claims(idp), "k1"), "algorithm that is not accepted")
    public_pem = (
        signers["k1"]
        .private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    await refused(v, hs256(claims(idp), public_pem, "k1"), "algorithm that is not accepted")
    await refused(v, hs256(claims(idp), secret, "shared"), "algorithm that is not accepted")
    assert (await v.verify(signers["k1"].token(claims(idp)))).tenant == "acme"


async def test_algorithm_must_fit_the_published_key(
    idp: Provider, http: httpx.AsyncClient, signers: Signers
) -> None:
    v = verifier(idp, http, algorithms=["RS256", "PS256"])
    pss_with_k1 = jwt.encode(claims(idp), signers["k1"].private, algorithm="PS256", headers={"kid": "k1"})
    await refused(v, pss_with_k1, "not the one its signing key is published for")
    idp.keys = [signers["pss"].jwk]  # published without "alg": the type of key must still fit
    header = b64(json.dumps({"alg": "ES256", "kid": "pss"}).encode())
    es256_with_rsa = f"{header}.{b64(json.dumps(claims(idp)).encode())}.{b64(b'x' * 64)}"
    await refused(verifier(idp, http), es256_with_rsa, "does not fit")


async def test_malformed_tokens(idp: Provider, http: httpx.AsyncClient, signers: Signers) -> None:
    v = verifier(idp, http)
    for token in ["not-a-jwt", "aaaaaaaaaaaa.bbbbbbbbbbbb.cccccccccccc", "..", b64(b"[1]") + ".e30.c2ln"]:
        await refused(v, token, "malformed")
    good = signers["k1"].token(claims(idp))
    await refused(v, good.rsplit(".", 1)[0] + ".!!!!!!!!", "malformed")
    await refused(
        v, jwt.encode(claims(idp), signers["k1"].private, algorithm="RS256"), "no signing key (kid)"
    )
    assert idp.hits["jwks"] == 0  # tokens that do not parse, or name no key, fetch nothing


async def test_missing_tenant(idp: Provider, http: httpx.AsyncClient, signers: Signers) -> None:
    token = signers["k1"].token(claims(idp, tenant=None))
    await refused(verifier(idp, http), token, "'tenant'", "no default tenant")
    principal = await verifier(idp, http, default_tenant="public").verify(token)
    assert principal.tenant == "public"
    token = signers["k1"].token(claims(idp, tenant=["acme", "globex"]))
    await refused(verifier(idp, http, default_tenant="public"), token, "not a string")


async def test_missing_sub(idp: Provider, http: httpx.AsyncClient, signers: Signers) -> None:
    await refused(verifier(idp, http), signers["k1"].token(claims(idp, sub=None)), "'sub'")
    await refused(verifier(idp, http), signers["k1"].token(claims(idp, sub="")), "'sub'")


async def test_role_map_and_unknown_roles(idp: Provider, http: httpx.AsyncClient, signers: Signers) -> None:
    roles = ["offline_access", "lcp-operators", "lcp-owners", "client", "viewer", "admin", 7]
    token = signers["k1"].token(claims(idp, realm_access={"roles": roles}))
    role_map = {"lcp-operators": "sre", "lcp-owners": "admin", "viewer": "no-such-role", "admin": "client"}
    principal = await verifier(idp, http, role_map=role_map).verify(token)
    # lcp-operators -> sre, lcp-owners -> admin, client as is, the issuer's "admin" mapped down to client
    assert principal.roles == frozenset({"sre", "admin", "client"})
    principal = await verifier(idp, http, role_map={"admin": "client"}).verify(token)
    assert principal.roles == frozenset({"client"})


async def test_issuer_roles_map_to_the_platform_roles(
    idp: Provider, http: httpx.AsyncClient, signers: Signers
) -> None:
    token = signers["k1"].token(claims(idp, realm_access={"roles": ["lcp-platform-admins", "oncall"]}))
    role_map = {"lcp-platform-admins": "platform", "oncall": "sre"}
    principal = await verifier(idp, http, role_map=role_map).verify(token)
    assert principal.roles == frozenset({"platform", "sre"})


async def test_platform_roles_come_only_from_the_role_map(
    idp: Provider, http: httpx.AsyncClient, signers: Signers
) -> None:
    """An issuer role or group literally named sre or platform grants nothing unless the map names it: in
    many identity providers a tenant's admins can create groups, and a group called "platform" must not
    make its members platform admins."""
    token = signers["k1"].token(claims(idp, realm_access={"roles": ["platform", "sre", "admin"]}))
    assert (await verifier(idp, http).verify(token)).roles == frozenset({"admin"})
    principal = await verifier(idp, http, role_map={"sre": "sre"}).verify(token)
    assert principal.roles == frozenset({"admin", "sre"})


async def test_roles_from_another_claim(idp: Provider, http: httpx.AsyncClient, signers: Signers) -> None:
    token = signers["k1"].token(claims(idp, realm_access=None, groups=["client"]))
    assert (await verifier(idp, http).verify(token)).roles == frozenset()
    assert (await verifier(idp, http, roles_claim="groups").verify(token)).roles == frozenset({"client"})
    token = signers["k1"].token(claims(idp, realm_access={"roles": "admin"}))
    await refused(verifier(idp, http), token, "not a list")


async def test_key_rotation(idp: Provider, http: httpx.AsyncClient, signers: Signers) -> None:
    v = verifier(idp, http, jwks_refresh_min_s=0)
    assert (await v.verify(signers["k1"].token(claims(idp)))).tenant == "acme"
    assert idp.hits["jwks"] == 1
    idp.keys = [signers["k2"].jwk]  # the issuer rotates: k2 in, k1 retired
    assert (await v.verify(signers["k2"].token(claims(idp)))).tenant == "acme"
    assert idp.hits["jwks"] == 2
    await v.verify(signers["k2"].token(claims(idp)))
    assert idp.hits["jwks"] == 2  # cached
    await refused(v, signers["k1"].token(claims(idp)), "unknown kid")


async def test_concurrent_verifications_fetch_once(
    idp: Provider, http: httpx.AsyncClient, signers: Signers
) -> None:
    v = verifier(idp, http, jwks_refresh_min_s=0)
    results = await asyncio.gather(*(v.verify(signers["k1"].token(claims(idp))) for _ in range(20)))
    assert {p.tenant for p in results} == {"acme"}
    assert idp.hits["jwks"] == 1
    idp.keys = [signers["k1"].jwk, signers["k2"].jwk]
    results = await asyncio.gather(*(v.verify(signers["k2"].token(claims(idp))) for _ in range(20)))
    assert len(results) == 20
    assert idp.hits["jwks"] == 2


async def test_unknown_kids_refetch_at_most_once_per_interval(
    idp: Provider, http: httpx.AsyncClient, signers: Signers
) -> None:
    clock = Clock()
    v = verifier(idp, http, clock, jwks_refresh_min_s=0.5)
    await v.verify(signers["k1"].token(claims(idp)))
    assert idp.hits["jwks"] == 1
    garbage = [signers["k1"].token(claims(idp), kid=f"garbage-{i}") for i in range(30)]
    for token in garbage[:10]:
        await refused(v, token, "unknown kid")
    await asyncio.gather(*(refused(v, token, "unknown kid") for token in garbage[10:]))
    assert idp.hits["jwks"] == 1  # all within the interval of the first fetch
    clock.now += 0.6
    await asyncio.gather(*(refused(v, token, "unknown kid") for token in garbage))
    assert idp.hits["jwks"] == 2  # one refetch once the interval passed, whatever the number of kids
    assert (await v.verify(signers["k1"].token(claims(idp)))).tenant == "acme"
    assert idp.hits["jwks"] == 2


async def test_jwks_cache_expires(idp: Provider, http: httpx.AsyncClient, signers: Signers) -> None:
    clock = Clock()
    v = verifier(idp, http, clock, jwks_cache_s=0.3, jwks_refresh_min_s=0)
    token = signers["k1"].token(claims(idp))
    await v.verify(token)
    await v.verify(token)
    assert idp.hits["jwks"] == 1
    clock.now += 0.4
    await v.verify(token)
    assert idp.hits["jwks"] == 2


async def test_discovery_document(idp: Provider, http: httpx.AsyncClient, signers: Signers) -> None:
    v = verifier(idp, http, jwks_url="", jwks_refresh_min_s=0)
    assert (await v.verify(signers["k1"].token(claims(idp)))).tenant == "acme"
    assert idp.hits == Counter({"discovery": 1, "jwks": 1})
    idp.keys = [signers["k2"].jwk]
    await v.verify(signers["k2"].token(claims(idp)))
    assert idp.hits == Counter({"discovery": 1, "jwks": 2})  # discovery is read once


async def test_no_discovery_with_a_jwks_url(idp: Provider, http: httpx.AsyncClient, signers: Signers) -> None:
    await verifier(idp, http).verify(signers["k1"].token(claims(idp)))
    assert idp.hits == Counter({"jwks": 1})


async def test_issuer_down(idp: Provider, http: httpx.AsyncClient, signers: Signers) -> None:
    token = signers["k1"].token(claims(idp))
    idp.status = 503
    for jwks_url in (idp.jwks_url, ""):
        v = verifier(idp, http, jwks_url=jwks_url, jwks_refresh_min_s=0)
        with pytest.raises(OidcUnavailable, match="HTTP 503") as caught:
            await v.verify(token)
        assert_token_not_in(token, caught.value)
    assert idp.hits == Counter({"jwks": 1, "discovery": 1})
    idp.status = 200
    assert (await v.verify(token)).tenant == "acme"  # recovers, discovery included


async def test_issuer_unreachable(idp: Provider, http: httpx.AsyncClient, signers: Signers) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}{REALM}"
    for jwks_url in (nowhere + "/protocol/openid-connect/certs", ""):
        v = OidcVerifier(OidcSettings(issuer=nowhere, audience=AUDIENCE, jwks_url=jwks_url), http)
        with pytest.raises(OidcUnavailable, match="ConnectError"):
            await v.verify(signers["k1"].token(claims(idp)))


async def test_failed_fetches_are_throttled_too(
    idp: Provider, http: httpx.AsyncClient, signers: Signers
) -> None:
    idp.status = 500
    v = verifier(idp, http, jwks_refresh_min_s=60)
    for _ in range(5):
        with pytest.raises(OidcUnavailable, match="HTTP 500"):
            await v.verify(signers["k1"].token(claims(idp)))
    assert idp.hits["jwks"] == 1


async def test_a_jwks_that_is_not_json(idp: Provider, http: httpx.AsyncClient, signers: Signers) -> None:
    idp.keys = "not a list"  # type: ignore[assignment]
    with pytest.raises(OidcUnavailable, match="no list of keys"):
        await verifier(idp, http).verify(signers["k1"].token(claims(idp)))


async def test_unusable_published_keys_are_skipped(
    idp: Provider, http: httpx.AsyncClient, signers: Signers
) -> None:
    encryption = signers["k2"].jwk | {"use": "enc"}
    broken = {"kty": "RSA", "kid": "broken", "n": "AQAB"}
    leaked = RSAAlgorithm.to_jwk(signers["pss"].private, as_dict=True) | {"kid": "leaked"}  # has "d"
    idp.keys = [encryption, broken, leaked, signers["k1"].jwk]
    v = verifier(idp, http)
    assert (await v.verify(signers["k1"].token(claims(idp)))).tenant == "acme"
    await refused(v, signers["k2"].token(claims(idp)), "unknown kid")
    await refused(v, signers["k1"].token(claims(idp), kid="broken"), "unknown kid")
    await refused(v, signers["pss"].token(claims(idp), kid="leaked"), "unknown kid")


def test_an_audience_is_required(idp: Provider, http: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError, match="audience"):
        OidcVerifier(OidcSettings(issuer=idp.issuer), http)


async def test_no_error_message_contains_the_token(
    idp: Provider, http: httpx.AsyncClient, signers: Signers
) -> None:
    v = verifier(idp, http, jwks_refresh_min_s=0)
    now = int(time.time())
    k1, k2 = signers["k1"], signers["k2"]
    tokens = [
        k1.token(claims(idp, exp=now - 999)),
        k1.token(claims(idp, nbf=now + 999)),
        k1.token(claims(idp, aud="someone-else")),
        k1.token(claims(idp, iss="https://evil.example/realms/lcp")),
        k1.token(claims(idp, tenant=None)),
        k1.token(claims(idp, tenant=123)),
        k1.token(claims(idp, realm_access={"roles": "x"})),
        k1.token(claims(idp, exp="tomorrow")),
        k1.token(claims(idp), kid="k1-but-not-really"),
        k2.token(claims(idp)),
        jwt.encode(claims(idp), k2.private, algorithm="RS256", headers={"kid": "k1"}),
        unsigned(claims(idp), "k1"),
        k1.token(claims(idp)) + "tail",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl",
    ]
    for token in tokens:
        with pytest.raises(OidcError) as caught:
            await v.verify(token)
        assert_token_not_in(token, caught.value)
