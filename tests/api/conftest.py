"""The API under test: a real uvicorn server, a real worker and dev server, reached over HTTP."""

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.client import Client

from api.app import create_app
from settings import Settings
from tests.http_server import serve_in_thread
from workers.main import conversation_worker


@pytest.fixture
async def api(settings: Settings, client: Client) -> AsyncIterator[httpx.AsyncClient]:
    settings.conversation.task_queue = f"conversations-{uuid.uuid4().hex[:8]}"
    async with conversation_worker(client, settings) as worker, worker:
        with serve_in_thread(create_app(settings)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                yield http
