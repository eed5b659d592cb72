"""The API under test: a real uvicorn server running the conversation worker in-process, a real
dev server and simulator, reached over HTTP with API keys minted in the test's database."""

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from api.app import create_app
from cli.keys_db import mint
from settings import Settings
from tests.http_server import serve_in_thread

MintKey = Callable[..., Awaitable[str]]


@pytest.fixture
def mint_key(settings: Settings) -> MintKey:
    """Mint a key: `await mint_key(tenant="acme", roles=["client"])` returns the key itself."""

    async def _mint(tenant: str = "default", roles: tuple[str, ...] = ("client",), **limits: int) -> str:
        _, key = await mint(
            settings.resolved_database_url(), tenant=tenant, name="test", roles=list(roles), **limits
        )
        return key

    return _mint


@pytest.fixture
async def api_url(settings: Settings) -> AsyncIterator[str]:
    settings.conversation.task_queue = f"conversations-{uuid.uuid4().hex[:8]}"
    settings.api.with_worker = True
    with serve_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture
async def api(api_url: str, mint_key: MintKey) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the default tenant with the `client` role."""
    headers = {"Authorization": f"Bearer {await mint_key()}"}
    async with httpx.AsyncClient(base_url=api_url, timeout=60, headers=headers) as http:
        yield http


@pytest.fixture
async def admin(api_url: str, mint_key: MintKey) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the default tenant with the `admin` and `client` roles."""
    headers = {"Authorization": f"Bearer {await mint_key(roles=('admin', 'client'))}"}
    async with httpx.AsyncClient(base_url=api_url, timeout=60, headers=headers) as http:
        yield http
