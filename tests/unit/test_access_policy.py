"""policies/access.py as tables: which role opens which route, who may grant and revoke which keys."""

import pytest

from policies.access import ROLES, effective_roles, grant_refusal, may_revoke, permits

# (roles held, role a route needs, allowed)
PERMITS = [
    ({"client"}, "client", True),
    ({"client"}, "admin", False),
    ({"client"}, "sre", False),
    ({"admin"}, "client", True),  # a tenant admin also uses its tenant as a client
    ({"admin"}, "admin", True),
    ({"admin"}, "sre", False),  # the cluster is not the tenant's: a tenant admin is no SRE
    ({"admin"}, "platform", False),
    ({"admin", "client"}, "sre", False),
    ({"sre"}, "sre", True),
    ({"sre"}, "client", False),  # an SRE key reads no tenant's conversations
    ({"sre"}, "admin", False),
    ({"sre"}, "platform", False),
    ({"platform"}, "client", True),
    ({"platform"}, "admin", True),
    ({"platform"}, "sre", True),
    ({"platform"}, "platform", True),
    (set(), "client", False),
    ({"root"}, "client", False),  # an unknown role grants nothing
]


@pytest.mark.parametrize(("held", "needed", "allowed"), PERMITS)
def test_permits(held: set[str], needed: str, allowed: bool) -> None:
    assert permits(frozenset(held), needed) is allowed


def test_platform_implies_every_role_and_admin_only_client() -> None:
    assert effective_roles({"platform"}) == frozenset(ROLES)
    assert effective_roles({"admin"}) == {"admin", "client"}
    assert effective_roles({"sre", "client"}) == {"sre", "client"}


# (granter's roles, granter's tenant, roles asked for, tenant asked for, refusal contains | None)
GRANTS = [
    ({"admin"}, "b", ["client"], "b", None),
    ({"admin"}, "b", ["admin", "client"], "b", None),
    ({"admin"}, "b", ["sre"], "b", "only a platform admin can grant platform roles (sre)"),
    ({"admin"}, "b", ["platform"], "b", "only a platform admin can grant platform roles (platform)"),
    ({"admin"}, "b", ["client", "sre", "platform"], "b", "(platform, sre)"),
    ({"admin"}, "b", ["client"], "a", "its own tenant only"),
    ({"admin", "sre"}, "b", ["sre"], "b", "only a platform admin"),  # holding sre is not granting it
    ({"client"}, "b", ["client"], "b", "needs the 'admin' role"),
    ({"sre"}, "b", ["sre"], "b", "needs the 'admin' role"),
    ({"platform"}, "ops", ["sre"], "ops", None),
    ({"platform"}, "ops", ["platform"], "ops", None),
    ({"platform"}, "ops", ["sre", "client"], "a", None),  # a platform admin mints in any tenant
]


@pytest.mark.parametrize(("held", "own", "roles", "tenant", "refusal"), GRANTS)
def test_grant_refusal(held: set[str], own: str, roles: list[str], tenant: str, refusal: str | None) -> None:
    found = grant_refusal(frozenset(held), own, roles, tenant)
    if refusal is None:
        assert found is None
    else:
        assert found is not None and refusal in found


# (revoker's roles, revoker's tenant, key's roles, key's tenant, allowed)
REVOKES = [
    ({"admin"}, "b", ["client"], "b", True),
    ({"admin"}, "b", ["admin"], "b", True),
    ({"admin"}, "b", ["client"], "a", False),
    ({"admin"}, "b", ["sre"], "b", False),  # a platform key kept in the tenant is out of its reach
    ({"admin"}, "b", ["admin", "platform"], "b", False),
    ({"client"}, "b", ["client"], "b", False),
    ({"sre"}, "b", ["client"], "b", False),
    ({"platform"}, "ops", ["client"], "a", True),
    ({"platform"}, "ops", ["platform"], "b", True),
]


@pytest.mark.parametrize(("held", "own", "key_roles", "key_tenant", "allowed"), REVOKES)
def test_may_revoke(held: set[str], own: str, key_roles: list[str], key_tenant: str, allowed: bool) -> None:
    assert may_revoke(frozenset(held), own, key_roles, key_tenant) is allowed
