"""A hostile tenant admin against the limits that guard the shared model endpoints, on the real stack: the
platform's per-key defaults (tenants are unlimited unless the deployer says otherwise) are the platform's,
so a tenant admin may mint keys with lower limits, never with higher ones."""

import httpx
import pytest

from tests.api.conftest import MintKey

pytestmark = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)


async def test_a_tenant_admin_cannot_mint_itself_a_key_above_the_platform_limits(
    api_url: str, mint_key: MintKey
) -> None:
    tenant_admin = {"Authorization": f"Bearer {await mint_key(tenant='hooli', roles=('admin',))}"}
    platform = {"Authorization": f"Bearer {await mint_key(tenant='ops', roles=('platform',))}"}
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        for limits in (
            {"tokens_per_minute": 2_000_000_000},  # before: 201, the tenant's token limit gone
            {"requests_per_minute": 1_000_000_000},
            {"tokens_per_minute": 1_000_001},  # one above the default of 1,000,000
        ):
            refused = await http.post(
                "/v1/admin/keys", json={"name": "unlimited", **limits}, headers=tenant_admin
            )
            assert refused.status_code == 403, (limits, refused.text)
            assert "only a platform admin" in refused.json()["error"]["message"]
        listed = await http.get("/v1/admin/keys", headers=tenant_admin)
        assert not any(key["name"] == "unlimited" for key in listed.json()["data"])

        # Lower limits, or none (the defaults), are the tenant admin's to give.
        for limits in (
            {},
            {"tokens_per_minute": 1_000_000, "requests_per_minute": 1200},
            {"tokens_per_minute": 50},
        ):
            minted = await http.post("/v1/admin/keys", json={"name": "app", **limits}, headers=tenant_admin)
            assert minted.status_code == 201, (limits, minted.text)

        # A platform admin grants more.
        raised = await http.post(
            "/v1/admin/keys",
            json={"name": "batch", "tenant": "hooli", "tokens_per_minute": 2_000_000_000},
            headers=platform,
        )
        assert raised.status_code == 201, raised.text
        assert raised.json()["tokens_per_minute"] == 2_000_000_000
