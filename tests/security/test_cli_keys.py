"""`lcp keys create` writes straight to the database, past the API's checks: it must refuse what the API
refuses in a tenant and a name. Found by the adversarial pass on the platform side: `--tenant $'b\\e[2J'`
minted a key of a tenant named with an escape sequence (every id, workflow id and log line of that tenant
then carried it) and the command's own "key ... for tenant ..." line cleared the operator's screen; a name
with ANSI, bidi and rich markup was stored too."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.keys import InvalidKeySpec
from cli.keys_db import list_keys, mint


def _lcp(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LCP_HOME": str(home), "DATABASE_URL": "", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "cli", "keys", *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.parametrize(
    ("tenant", "name", "words"),
    [
        ("b\x1b[2J", "x", "--tenant"),
        ("b\u202e", "x", "--tenant"),
        ("acme/../other", "x", "--tenant"),
        ("-acme", "x", "--tenant"),
        ("a" * 101, "x", "--tenant"),
        ("acme", "evil\x1b[31mRED", "--name"),
        ("acme", "x\u202eabc", "--name"),
        ("acme", "a\nb", "--name"),
        ("acme", " ", "--name"),
        ("acme", "n" * 201, "--name"),
    ],
)
async def test_a_tenant_or_name_the_api_refuses_is_refused_here_too(
    tmp_path: Path, tenant: str, name: str, words: str
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'lcp.db'}"
    with pytest.raises(InvalidKeySpec, match=words):
        await mint(url, tenant=tenant, name=name, roles=["client"])
    await mint(url, tenant="acme", name="ok [red]x[/]", roles=["client"])  # markup is text, not refused
    assert [row.tenant for row in await list_keys(url, None)] == ["acme"]


def test_the_command_refuses_them_and_never_prints_them_raw(tmp_path: Path) -> None:
    refused = _lcp(tmp_path, "create", "--tenant", "b\x1b[2J", "--name", "x")
    assert refused.returncode == 2 and "--tenant" in refused.stderr
    assert "\x1b" not in refused.stderr + refused.stdout and "Traceback" not in refused.stderr
    created = _lcp(tmp_path, "create", "--tenant", "acme", "--name", "ok [red]x[/]")
    assert created.returncode == 0, created.stderr
    listed = _lcp(tmp_path, "list")
    assert "[red]x[/]" in listed.stdout and "\x1b" not in listed.stdout
