"""`lcp` run as a subprocess against a served API, as a person would run it."""

import asyncio
import os
import sys


async def run_lcp(api_url: str, key: str, *args: str) -> tuple[int, str, str]:
    """`lcp ARGS --api URL --api-key KEY`: its exit code, stdout and stderr. Awaited, so that workers
    running in the test's event loop keep serving meanwhile."""
    env = {**os.environ, "COLUMNS": "160", "LCP_API_KEY": ""}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        *args,
        "--api",
        api_url,
        "--api-key",
        key,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
