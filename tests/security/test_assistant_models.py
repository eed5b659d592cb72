"""A hostile tenant admin against the models policy's `tenants:`, on the real stack: a model limited to
one tenant (a fine-tuned or paid-for one) was out of another tenant's reach on every route but one: an
assistant names its model itself, and neither saving it nor a turn with it checked the tenant."""

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from settings import Settings
from tests.api.conftest import MintKey
from tests.http_server import serve_in_thread

pytestmark = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)

MODELS = """
default_model: sim-zero
models:
  - name: sim-zero
    base_url: {llm}
  - name: acme-only
    base_url: {llm}
    upstream_model: sim-zero
    tenants: [acme]
"""


@pytest.fixture
async def api_url(settings: Settings, tmp_path: Path) -> AsyncIterator[str]:
    policy = tmp_path / "models.yaml"
    policy.write_text(MODELS.format(llm=settings.llm_url))
    settings.models_file = policy
    settings.conversation.task_queue = f"conversations-{uuid.uuid4().hex[:8]}"
    settings.api.with_worker = True
    with serve_in_thread(create_app(settings)) as url:
        yield url


async def _client(api_url: str, mint_key: MintKey, tenant: str) -> httpx.AsyncClient:
    key = await mint_key(tenant=tenant, roles=("admin", "client"))
    return httpx.AsyncClient(base_url=api_url, timeout=60, headers={"Authorization": f"Bearer {key}"})


async def test_an_assistant_cannot_use_another_tenants_model(api_url: str, mint_key: MintKey) -> None:
    async with (
        await _client(api_url, mint_key, "globex") as globex,
        await _client(api_url, mint_key, "acme") as acme,
    ):
        models = (await globex.get("/v1/models")).json()["data"]
        assert "acme-only" not in {model["id"] for model in models}
        body = {"id": "borrowed", "name": "Borrowed", "model": "acme-only", "publish": True}
        saved = await globex.post("/v1/assistants", json=body)
        assert saved.status_code == 422, saved.text  # before: 201
        assert "not served to your tenant" in saved.json()["error"]["message"]
        turn = await globex.post(
            "/v1/chat/completions",
            json={"model": "assistant:borrowed", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert turn.status_code == 404, turn.text  # before: 200, answered by acme-only

        # An edit cannot move an assistant of globex onto it either.
        mine = {"id": "mine", "name": "Mine", "model": "sim-zero", "publish": True}
        assert (await globex.post("/v1/assistants", json=mine)).status_code == 201
        edited = await globex.patch("/v1/assistants/mine", json={"model": "acme-only"})
        assert edited.status_code == 422, edited.text

        # acme itself still may.
        assert (await acme.post("/v1/assistants", json=body)).status_code == 201
        ok = await acme.post(
            "/v1/chat/completions",
            json={"model": "assistant:borrowed", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert ok.status_code == 200, ok.text
