"""Who may do what: the roles lcp knows, the caller's identity, and the role check every route makes."""

from dataclasses import dataclass, field

CLIENT, SRE, ADMIN = "client", "sre", "admin"
ROLES = (CLIENT, SRE, ADMIN)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: an API key or an OIDC subject, always inside one tenant."""

    subject: str  # "key:<id>" for API keys, "oidc:<sub>" for bearer tokens
    tenant: str
    roles: frozenset[str] = field(default_factory=frozenset)
    key_id: str | None = None
    requests_per_minute: int | None = None  # per-key limits; None means the configured default
    tokens_per_minute: int | None = None


def permits(roles: frozenset[str], needed: str) -> bool:
    """`admin` may do everything; any other role grants exactly what it names."""
    return needed in roles or ADMIN in roles


def unknown_roles(roles: list[str] | tuple[str, ...] | frozenset[str]) -> list[str]:
    return sorted(set(roles) - set(ROLES))
