"""API keys: create (shown once), list, revoke. A tenant admin manages its own tenant's keys with tenant
roles; a platform admin any tenant's keys, with any role."""

from datetime import UTC, datetime

from fastapi import APIRouter, Query

from api.auth import AdminDep
from api.deps import SessionDep, StateDep
from api.errors import ApiError
from api.keys import create_key
from api.schemas import ERROR_RESPONSES, KeyCreate, KeyCreated, KeyList, KeyOut
from policies.access import PLATFORM, grant_refusal, may_revoke
from settings import LimitSettings
from store import crud

router = APIRouter(prefix="/v1/admin/keys", tags=["admin"], responses=ERROR_RESPONSES)


@router.post("", status_code=201, response_model=KeyCreated)
async def create(body: KeyCreate, session: SessionDep, state: StateDep, caller: AdminDep) -> KeyCreated:
    """Mint a key, in your tenant or (platform admins) in the tenant the body names. Platform roles (sre,
    platform) only a platform admin grants, as it does limits above the platform's defaults for keys (a
    tenant admin may set lower ones). The response holds the key; lcp keeps only its hash."""
    tenant = body.tenant or caller.tenant
    if refusal := grant_refusal(caller.roles, caller.tenant, body.roles, tenant):
        raise ApiError(403, "Forbidden", refusal)
    if PLATFORM not in caller.roles and (refusal := _limit_refusal(body, state.settings.limits)):
        raise ApiError(403, "Forbidden", refusal)
    row, key = await create_key(
        session,
        tenant=tenant,
        name=body.name,
        roles=list(body.roles),
        requests_per_minute=body.requests_per_minute,
        tokens_per_minute=body.tokens_per_minute,
    )
    return KeyCreated(**KeyOut.model_validate(row, from_attributes=True).model_dump(), key=key)


def _limit_refusal(body: KeyCreate, limits: LimitSettings) -> str | None:
    """Why a tenant admin may not give a key these limits, or None. The limits a key carries stand in for
    the platform's per-key defaults (LCP_LIMITS__PER_KEY__*), which guard the shared model endpoints:
    a tenant admin may lower them for a key, never raise them (or it could lift its tenant's limits
    by minting itself a key of 2,000,000,000 tokens a minute)."""
    for field, asked, most in (
        ("requests_per_minute", body.requests_per_minute, limits.per_key.requests_per_minute),
        ("tokens_per_minute", body.tokens_per_minute, limits.per_key.tokens_per_minute),
    ):
        if asked is not None and most is not None and asked > most:
            return (
                f"{field} {asked} is above this platform's default of {most} for a key: a tenant admin may "
                "set a lower limit or leave it out; only a platform admin grants a higher one"
            )
    return None


@router.get("", response_model=KeyList)
async def list_keys(
    session: SessionDep,
    caller: AdminDep,
    tenant: str | None = Query(
        default=None, max_length=100, description="Platform admins: only this tenant's."
    ),
) -> KeyList:
    """Your tenant's keys, revoked ones included (never the keys themselves). A platform admin sees every
    tenant's, or the one `tenant` names."""
    if PLATFORM not in caller.roles:
        if tenant not in (None, caller.tenant):
            raise ApiError(
                403, "Forbidden", "a tenant admin lists its own tenant's keys only: leave 'tenant' out"
            )
        tenant = caller.tenant
    rows = await crud.list_api_keys(session, tenant=tenant)
    return KeyList(data=[KeyOut.model_validate(row, from_attributes=True) for row in rows])


@router.delete("/{key_id}", response_model=KeyOut)
async def revoke(key_id: str, session: SessionDep, state: StateDep, caller: AdminDep) -> KeyOut:
    """Revoke a key of your tenant (a platform admin: any key); it stops working at once here and within
    1 s everywhere. A key with a platform role only a platform admin revokes."""
    row = await crud.get_api_key(session, key_id=key_id)
    if row is None or (PLATFORM not in caller.roles and row.tenant != caller.tenant):
        raise ApiError(
            404, "KeyNotFound", f"no key {key_id} in your tenant: list them with GET /v1/admin/keys"
        )
    if not may_revoke(caller.roles, caller.tenant, row.roles, row.tenant):
        raise ApiError(
            403, "Forbidden", f"key {key_id} carries a platform role: only a platform admin revokes it"
        )
    row = await crud.revoke_api_key(session, key_id=key_id, at=datetime.now(UTC))
    state.auth.forget(key_id)
    return KeyOut.model_validate(row, from_attributes=True)
