"""`lcp keys`: API keys straight in the read-model database (no admin key needed to mint the first)."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.keys import create_key, hash_key, key_id_of
from policies.access import ADMIN, PLATFORM
from store import crud
from store.db import make_engine, make_sessionmaker
from store.migrate import upgrade
from store.models import ApiKey

DEV_KEY_FILE = "dev-admin.key"
DEV_KEY_ROLES = (ADMIN, PLATFORM)  # a tenant admin of "default", and the platform admin


@asynccontextmanager
async def _session(database_url: str) -> AsyncIterator[AsyncSession]:
    engine = make_engine(database_url)
    try:
        await upgrade(engine)
        async with make_sessionmaker(engine)() as session:
            yield session
    finally:
        await engine.dispose()


async def mint(database_url: str, **spec: Any) -> tuple[ApiKey, str]:
    """`api.keys.create_key` on the database at `database_url` (same keyword arguments)."""
    async with _session(database_url) as session:
        return await create_key(session, **spec)


async def list_keys(database_url: str, tenant: str | None) -> list[ApiKey]:
    async with _session(database_url) as session:
        return await crud.list_api_keys(session, tenant=tenant)


async def revoke(database_url: str, key_id: str) -> ApiKey | None:
    async with _session(database_url) as session:
        return await crud.revoke_api_key(session, key_id=key_id, at=datetime.now(UTC))


async def dev_admin_key(database_url: str, home: Path) -> str:
    """The `lcp dev` key of the default tenant, a platform admin's (the README's tour runs rollouts, scaling
    and chaos with it): minted on first start, kept (mode 0600) in the state dir so later starts reuse it,
    and minted again if it was revoked or predates the platform role."""
    path = home / DEV_KEY_FILE
    if path.exists():
        key = path.read_text().strip()
        key_id = key_id_of(key)
        if key_id:
            async with _session(database_url) as session:
                row = await crud.get_api_key(session, key_id=key_id)
            if row is not None and row.revoked_at is None and row.key_hash == hash_key(key):
                if PLATFORM in row.roles:
                    return key
                await revoke(database_url, key_id)
    _, key = await mint(database_url, tenant="default", name="lcp dev admin", roles=list(DEV_KEY_ROLES))
    path.write_text(key + "\n")
    os.chmod(path, 0o600)
    return key
