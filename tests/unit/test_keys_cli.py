"""`lcp keys create|list|revoke` as an operator runs them, against a SQLite read model."""

import json
import os
import subprocess
import sys
from pathlib import Path

from api.keys import hash_key, key_id_of
from cli.keys_db import DEV_KEY_FILE, dev_admin_key, list_keys, mint


def _lcp(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LCP_HOME": str(home), "DATABASE_URL": "", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "cli", "keys", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_keys_are_shown_once_stored_hashed_listed_and_revoked(tmp_path: Path) -> None:
    created = _lcp(
        tmp_path, "create", "--tenant", "acme", "--name", "librechat", "--role", "client", "--rpm", "60"
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()  # alone on stdout
    assert key.startswith("lcp_") and "acme" in created.stderr
    database = (tmp_path / "lcp.db").read_bytes()
    assert key.encode() not in database and hash_key(key).encode() in database

    listed = _lcp(tmp_path, "list", "--tenant", "acme")
    key_id = key.split("_")[1]
    assert listed.returncode == 0 and key_id in listed.stdout and "librechat" in listed.stdout
    assert key not in listed.stdout and "60" in listed.stdout
    as_json = json.loads(_lcp(tmp_path, "list", "--tenant", "acme", "--json").stdout)
    assert [(k["id"], k["name"], k["requests_per_minute"]) for k in as_json] == [(key_id, "librechat", 60)]
    assert "key_hash" not in as_json[0] and hash_key(key) not in json.dumps(as_json)

    revoked = _lcp(tmp_path, "revoke", key_id)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert _lcp(tmp_path, "revoke", "nosuchkey").returncode == 1

    bad = _lcp(tmp_path, "create", "--tenant", "acme", "--name", "x", "--role", "root")
    assert bad.returncode == 2 and "unknown role(s) root" in bad.stderr and "Traceback" not in bad.stderr


def test_the_deployer_grants_platform_roles(tmp_path: Path) -> None:
    created = _lcp(
        tmp_path, "create", "--tenant", "ops", "--name", "oncall", "--role", "sre", "--role", "platform"
    )
    assert created.returncode == 0, created.stderr
    assert "(platform, sre)" in created.stderr


async def test_the_dev_key_is_a_platform_admins_and_an_older_one_is_replaced(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'lcp.db'}"
    key = await dev_admin_key(url, tmp_path)
    assert await dev_admin_key(url, tmp_path) == key  # kept across starts
    (row,) = await list_keys(url, "default")
    assert {"admin", "platform"} <= set(row.roles)
    # A dev key from before the platform role cannot run the README's rollouts: it is replaced.
    _, old = await mint(url, tenant="default", name="lcp dev admin", roles=["admin"])
    (tmp_path / DEV_KEY_FILE).write_text(old + "\n")
    new = await dev_admin_key(url, tmp_path)
    assert new != old and (tmp_path / DEV_KEY_FILE).read_text().strip() == new
    rows = {row.id: row for row in await list_keys(url, "default")}
    assert rows[key_id_of(old) or ""].revoked_at is not None
    assert "platform" in rows[key_id_of(new) or ""].roles
