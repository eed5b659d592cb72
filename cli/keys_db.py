"""API keys read and written straight in the read-model database, past the API (no admin key is needed to
mint the first): what `lcp keys` does, and `lcp dev` for its admin key."""

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from api.keys import InvalidKeySpec, create_key, hash_key, key_id_of
from api.text import Name
from cli.show import plain
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


# What POST /v1/admin/keys takes (api/schemas.py's KeyCreate): this tool writes to the database past the
# API's checks, and a tenant or a name holding an escape sequence reached terminals (this command's own
# "key ... for tenant ..." line printed it raw), workflow ids and logs.
TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_NAME = 200


def spec_problem(tenant: str, name: str) -> str | None:
    """Why `lcp keys create` refuses this tenant or name (as the API would), or None."""
    if not TENANT.fullmatch(tenant):
        return (
            "--tenant must be 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit, "
            f"got {plain(tenant)}"
        )
    if not name.strip() or len(name) > MAX_NAME:
        return f"--name must be 1 to {MAX_NAME} characters, not blank"
    try:
        TypeAdapter(Name).validate_python(name)
    except ValidationError as err:
        return f"--name: {err.errors()[0]['msg']}"
    return None


async def mint(database_url: str, **spec: Any) -> tuple[ApiKey, str]:
    """`api.keys.create_key` on the database at `database_url` (same keyword arguments), with the tenant and
    the name checked as the API checks them."""
    if problem := spec_problem(str(spec.get("tenant", "")), str(spec.get("name", ""))):
        raise InvalidKeySpec(problem)
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
