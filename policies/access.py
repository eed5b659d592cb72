"""Who may do what: the roles lcp knows, the caller's identity, and the checks on routes and key grants.

Two kinds of role. Tenant roles act inside the caller's own tenant: `client` (chat, conversations,
reading assistants) and `admin` (the tenant admin: also its tenant's keys and assistants). Platform
roles act on the shared cluster, which belongs to no tenant: `sre` (rollouts, scaling, chaos, model
canaries) and `platform` (the platform admin: every role, and keys with any role for any tenant).
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

CLIENT, ADMIN, SRE, PLATFORM = "client", "admin", "sre", "platform"
ROLES = (CLIENT, ADMIN, SRE, PLATFORM)
TENANT_ROLES = frozenset({CLIENT, ADMIN})
PLATFORM_ROLES = frozenset({SRE, PLATFORM})
# What holding a role grants besides itself. A tenant admin is no SRE: the cluster is not its tenant's.
IMPLIED: dict[str, frozenset[str]] = {ADMIN: frozenset({CLIENT}), PLATFORM: frozenset(ROLES)}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: an API key or an OIDC subject, always inside one tenant."""

    subject: str  # "key:<id>" for API keys, "oidc:<sub>" for bearer tokens
    tenant: str
    roles: frozenset[str] = field(default_factory=frozenset)
    key_id: str | None = None
    requests_per_minute: int | None = None  # per-key limits; None means the configured default
    tokens_per_minute: int | None = None


def effective_roles(roles: Iterable[str]) -> frozenset[str]:
    """The roles held, with what each implies: {"admin"} -> {"admin", "client"}."""
    held = frozenset(roles)
    return held.union(*(IMPLIED.get(role, frozenset()) for role in held))


def permits(roles: frozenset[str], needed: str) -> bool:
    """Whether a caller holding `roles` may use a route that needs the role `needed`."""
    return needed in effective_roles(roles)


def unknown_roles(roles: Iterable[str]) -> list[str]:
    return sorted(set(roles) - set(ROLES))


def grant_refusal(
    granter_roles: frozenset[str], granter_tenant: str, roles: Iterable[str], tenant: str
) -> str | None:
    """Why a caller may not mint a key with `roles` in `tenant`, or None when it may.

    A platform admin grants any role in any tenant. A tenant admin grants tenant roles in its own
    tenant only: platform roles come from a platform admin or `lcp keys create` (the deployer's tool).
    """
    if PLATFORM in granter_roles:
        return None
    if ADMIN not in granter_roles:
        return "minting keys needs the 'admin' role"
    if tenant != granter_tenant:
        return "a tenant admin mints keys in its own tenant only; leave 'tenant' out of the request"
    if platform := sorted(set(roles) & PLATFORM_ROLES):
        return (
            f"only a platform admin can grant platform roles ({', '.join(platform)}): ask for one, "
            "or have the deployer run `lcp keys create`"
        )
    return None


def may_revoke(
    revoker_roles: frozenset[str], revoker_tenant: str, key_roles: Iterable[str], key_tenant: str
) -> bool:
    """Whether a caller may revoke a key: a platform admin any key, a tenant admin the keys of its own
    tenant that carry no platform role (a platform key kept in a tenant is out of that tenant's reach)."""
    if PLATFORM in revoker_roles:
        return True
    return ADMIN in revoker_roles and key_tenant == revoker_tenant and not set(key_roles) & PLATFORM_ROLES
