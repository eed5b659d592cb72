"""The API key cache on a SQLite read model: requests for a key nobody has looked up in the last second
share one lookup, and a key is looked up again once its entry is a second old (so a revocation reaches
every API process within a second)."""

import asyncio
import time
from pathlib import Path

from sqlalchemy import event

from api.auth import KEY_CACHE_S, Authenticator
from cli.keys_db import mint
from store.db import make_engine, make_sessionmaker


async def test_concurrent_requests_share_one_lookup_and_a_key_is_looked_up_again_after_a_second(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'lcp.db'}"
    _, key = await mint(url, tenant="acme", name="app", roles=["client"])
    engine = make_engine(url)
    lookups: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: lookups.append(args[2]))
    auth = Authenticator(make_sessionmaker(engine))
    try:
        callers = await asyncio.gather(*(auth.authenticate(f"Bearer {key}") for _ in range(50)))
        assert {caller.tenant for caller in callers} == {"acme"} and len(lookups) == 1
        started = time.monotonic()
        await auth.authenticate(f"Bearer {key}")
        assert len(lookups) == 1  # from the cache
        await asyncio.sleep(max(0.0, started + KEY_CACHE_S - time.monotonic()))
        await auth.authenticate(f"Bearer {key}")
        assert len(lookups) == 2
    finally:
        await engine.dispose()
