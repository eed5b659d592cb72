"""`lcp keys create|list|revoke` as an operator runs them, against a SQLite read model."""

import os
import subprocess
import sys
from pathlib import Path

from api.keys import hash_key


def _lcp(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LCP_HOME": str(home), "DATABASE_URL": "", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "keys", *args], capture_output=True, text=True, env=env, timeout=60
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

    revoked = _lcp(tmp_path, "revoke", key_id)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert _lcp(tmp_path, "revoke", "nosuchkey").returncode == 1

    bad = _lcp(tmp_path, "create", "--tenant", "acme", "--name", "x", "--role", "root")
    assert bad.returncode == 2 and "unknown role(s) root" in bad.stderr and "Traceback" not in bad.stderr
