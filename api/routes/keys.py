"""API keys of the caller's tenant: create (shown once), list, revoke — role `admin`."""

from datetime import UTC, datetime

from fastapi import APIRouter

from api.auth import AdminDep
from api.deps import SessionDep, StateDep
from api.errors import ApiError
from api.keys import create_key
from api.schemas import ERROR_RESPONSES, KeyCreate, KeyCreated, KeyList, KeyOut
from store import crud

router = APIRouter(prefix="/v1/admin/keys", tags=["admin"], responses=ERROR_RESPONSES)


@router.post("", status_code=201, response_model=KeyCreated)
async def create(body: KeyCreate, session: SessionDep, caller: AdminDep) -> KeyCreated:
    """Mint a key in your tenant. The response holds the key; lcp keeps only its hash."""
    row, key = await create_key(
        session,
        tenant=caller.tenant,
        name=body.name,
        roles=list(body.roles),
        requests_per_minute=body.requests_per_minute,
        tokens_per_minute=body.tokens_per_minute,
    )
    return KeyCreated(**KeyOut.model_validate(row, from_attributes=True).model_dump(), key=key)


@router.get("", response_model=KeyList)
async def list_keys(session: SessionDep, caller: AdminDep) -> KeyList:
    """Your tenant's keys, revoked ones included (never the keys themselves)."""
    rows = await crud.list_api_keys(session, tenant=caller.tenant)
    return KeyList(data=[KeyOut.model_validate(row, from_attributes=True) for row in rows])


@router.delete("/{key_id}", response_model=KeyOut)
async def revoke(key_id: str, session: SessionDep, state: StateDep, caller: AdminDep) -> KeyOut:
    """Revoke a key of your tenant; it stops working at once here and within 10 s everywhere."""
    row = await crud.get_api_key(session, key_id=key_id)
    if row is None or row.tenant != caller.tenant:
        raise ApiError(
            404, "KeyNotFound", f"no key {key_id} in your tenant: list them with GET /v1/admin/keys"
        )
    row = await crud.revoke_api_key(session, key_id=key_id, at=datetime.now(UTC))
    state.auth.forget(key_id)
    return KeyOut.model_validate(row, from_attributes=True)
