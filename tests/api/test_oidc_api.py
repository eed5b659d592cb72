"""Bearer JWTs from an OIDC issuer through the running API, with the official `openai` client."""

import time
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest

from api.app import create_app
from settings import OidcSettings, Settings
from tests.http_server import serve_in_thread
from tests.unit.test_oidc import AUDIENCE, Provider, claims, provider_app, rsa_signer

SIGNER = rsa_signer("realm-key")


@pytest.fixture(scope="module")
def issuer() -> Iterator[Provider]:
    provider = Provider(keys=[SIGNER.jwk])
    with serve_in_thread(provider_app(provider)) as base:
        provider.base = base
        yield provider


@pytest.fixture
async def api_url(settings: Settings, issuer: Provider) -> AsyncIterator[str]:
    settings.oidc = OidcSettings(issuer=issuer.issuer, audience=AUDIENCE)  # JWKS found by discovery
    settings.conversation.task_queue = f"conversations-{uuid.uuid4().hex[:8]}"
    settings.api.with_worker = True
    with serve_in_thread(create_app(settings)) as url:
        yield url


@pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)
async def test_a_keycloak_token_is_a_tenant_and_roles(api_url: str, issuer: Provider) -> None:
    token = SIGNER.token(claims(issuer))  # tenant acme, realm roles client and sre
    sdk = openai.AsyncOpenAI(base_url=f"{api_url}/v1", api_key=token, max_retries=0)
    conversation_id = uuid.uuid4().hex
    reply = await sdk.chat.completions.create(
        model="sim-zero",
        messages=[{"role": "user", "content": "[echo] via oidc"}],
        extra_headers={"X-Conversation-Id": conversation_id},
    )
    assert reply.choices[0].message.content == "via oidc"
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {token}"}) as http:
        detail = (await http.get(f"/v1/conversations/{conversation_id}")).json()
        assert detail["conversation"]["tenant"] == "acme"
        assert (await http.get("/v1/admin/keys")).status_code == 403  # no admin role in the token

    expired = SIGNER.token(claims(issuer, exp=int(time.time()) - 3600))
    with pytest.raises(openai.AuthenticationError) as err:
        await openai.AsyncOpenAI(base_url=f"{api_url}/v1", api_key=expired, max_retries=0).models.list()
    assert "expired" in err.value.message and expired.split(".")[1] not in str(err.value.body)

    stranger = rsa_signer("realm-key").token(claims(issuer))  # same kid, another key: forged
    with pytest.raises(openai.AuthenticationError):
        await openai.AsyncOpenAI(base_url=f"{api_url}/v1", api_key=stranger, max_retries=0).models.list()
