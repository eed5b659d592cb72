"""API keys: minted here, shown once, stored as a SHA-256 hash (admin route, `lcp keys`, `lcp dev`)."""

import hashlib
import re
import secrets
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas import MAX_REQUESTS_PER_MINUTE, MAX_TOKENS_PER_MINUTE
from policies.access import ROLES, unknown_roles
from policies.errors import PermanentError
from store import crud
from store.models import ApiKey

PREFIX = "lcp_"
ID_BYTES, SECRET_BYTES = 6, 32
# What `create_key` makes: lcp_<12 hex digits>_<43 URL-safe characters>.
KEY_SHAPE = re.compile(rf"{PREFIX}[0-9a-f]{{{2 * ID_BYTES}}}_[A-Za-z0-9_-]{{{(SECRET_BYTES * 4 + 2) // 3}}}")


class InvalidKeySpec(PermanentError, ValueError):
    """A key was asked for with a bad tenant, name or role."""


def hash_key(key: str) -> str:
    # Keys carry 256 random bits, so a plain SHA-256 is as strong as a slow hash here.
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    """The id part of `lcp_<id>_<secret>`, or None if `key` does not look like an lcp key."""
    if not key.startswith(PREFIX):
        return None
    key_id, _, secret = key.removeprefix(PREFIX).partition("_")
    return key_id if key_id and secret else None


def well_formed(key: str) -> bool:
    """Whether `key` has the exact shape of a key lcp mints (no other can be valid: no lookup needed)."""
    return KEY_SHAPE.fullmatch(key) is not None


async def create_key(
    session: AsyncSession,
    *,
    tenant: str,
    name: str,
    roles: list[str],
    requests_per_minute: int | None = None,
    tokens_per_minute: int | None = None,
) -> tuple[ApiKey, str]:
    """Store a new key and return its row and the key itself (the only time it is visible)."""
    if not tenant.strip() or not name.strip():
        raise InvalidKeySpec("tenant and name must not be empty")
    if not roles:
        raise InvalidKeySpec(f"a key needs at least one role: {', '.join(ROLES)}")
    if bad := unknown_roles(roles):
        raise InvalidKeySpec(f"unknown role(s) {', '.join(bad)}: roles are {', '.join(ROLES)}")
    for name_, value, most in (
        ("requests_per_minute", requests_per_minute, MAX_REQUESTS_PER_MINUTE),
        ("tokens_per_minute", tokens_per_minute, MAX_TOKENS_PER_MINUTE),
    ):
        if value is not None and not 1 <= value <= most:
            raise InvalidKeySpec(f"{name_} must be between 1 and {most}")
    key_id = secrets.token_hex(ID_BYTES)
    key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
    row = ApiKey(
        id=key_id,
        tenant=tenant,
        name=name,
        roles=sorted(set(roles)),
        key_hash=hash_key(key),
        requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute,
        created_at=datetime.now(UTC),
    )
    return await crud.add_api_key(session, key=row), key
