"""Crash safety: SIGKILL the worker mid-reply, restart the Temporal dev server mid-conversation."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.cli.keys import mint
from settings import Settings, TemporalSettings
from store import crud
from store.db import make_engine, make_sessionmaker
from temporal.devserver import start_dev_server
from tests.conftest import fresh_postgres_database
from tests.http_server import free_port, serve_in_thread


@dataclass
class Cluster:
    """A dev server persisted to a file, worker and API processes, all restartable."""

    tmp: Path
    settings: Settings
    port: int
    simulator_root: str
    temporal: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    api: subprocess.Popen[bytes] | None = None
    api_port: int = 0
    auth: dict[str, str] = field(default_factory=dict)

    def start_temporal(self) -> None:
        self.temporal = start_dev_server(
            self.tmp / "temporal.db", self.port, None, log_file=self.tmp / "temporal.log"
        )
        _wait_port(self.port)

    def stop_temporal(self) -> None:
        assert self.temporal is not None
        self.temporal.send_signal(signal.SIGTERM)
        self.temporal.wait(timeout=30)

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = dict(
            os.environ,
            LCP_HOME=str(self.settings.home),
            LCP_DATABASE_URL=self.settings.database_url,
            LCP_TEMPORAL__ADDRESS=self.settings.temporal.address,
            LCP_LLM_URL=self.settings.llm_url,
        )
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115
        return subprocess.Popen(
            [sys.executable, "-m", "api.cli", *args], env=env, stdout=log, stderr=subprocess.STDOUT
        )

    def start_worker(self) -> None:
        self.worker = self._spawn("worker", "worker", "--queue", "conversations")

    def kill_worker(self) -> None:
        assert self.worker is not None
        self.worker.send_signal(signal.SIGKILL)
        self.worker.wait(timeout=10)

    def start_api(self) -> str:
        self.api_port = self.api_port or free_port()
        self.api = self._spawn("api", "api", "--port", str(self.api_port))
        _wait_port(self.api_port)
        return f"http://127.0.0.1:{self.api_port}"

    def kill_api(self) -> None:
        assert self.api is not None
        self.api.send_signal(signal.SIGKILL)
        self.api.wait(timeout=10)

    def stop_all(self) -> None:
        for process in (self.api, self.worker, self.temporal):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()


def _wait_port(port: int, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


def _cluster(tmp_path: Path, simulator: str, database_url: str) -> Cluster:
    port = free_port()
    settings = Settings(
        home=tmp_path,
        database_url=database_url,
        llm_url=simulator,
        temporal=TemporalSettings(address=f"127.0.0.1:{port}"),
    )
    cluster = Cluster(tmp_path, settings, port, simulator.removesuffix("/v1"))
    _, key = asyncio.run(mint(settings.database_url, tenant="default", name="crash", roles=["client"]))
    cluster.auth = {"Authorization": f"Bearer {key}"}
    cluster.start_temporal()
    cluster.start_worker()
    return cluster


@pytest.fixture
def cluster(tmp_path: Path, simulator: str) -> Iterator[Cluster]:
    cluster = _cluster(tmp_path, simulator, f"sqlite+aiosqlite:///{tmp_path / 'lcp.db'}")
    yield cluster
    cluster.stop_all()
    httpx.delete(f"{cluster.simulator_root}/admin/faults")


@pytest.fixture
def pg_cluster(tmp_path: Path, simulator: str, postgres_url: str) -> Iterator[Cluster]:
    """API and worker in separate processes on PostgreSQL: streamed tokens cross over LISTEN/NOTIFY."""
    database_url = asyncio.run(fresh_postgres_database(postgres_url))
    cluster = _cluster(tmp_path, simulator, database_url)
    yield cluster
    cluster.stop_all()


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    with serve_in_thread(create_app(cluster.settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=120, headers=cluster.auth) as http:
            yield http


async def _stored_messages(settings: Settings, conversation_id: str) -> list[tuple[str, str]]:
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            rows = await crud.list_messages(session, tenant="default", conversation_id=conversation_id)
            return [(row.role, row.content) for row in rows]
    finally:
        await engine.dispose()


async def _in_flight(simulator_root: str, before: int) -> None:
    """Wait until the simulator has received one more request than `before` (it then holds it
    for the injected latency, so the caller acts while the reply is being generated)."""
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            stats = (await http.get(f"{simulator_root}/admin/stats")).json()
            if stats["received"] > before:
                return
            await asyncio.sleep(0.05)
    raise AssertionError("the inference request never reached the simulator")


async def test_worker_killed_mid_reply_loses_nothing_and_duplicates_nothing(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    created = await api.post("/v1/conversations", json={"model": "sim-zero", "message": {"content": "hi"}})
    assert created.status_code == 201, created.text
    conversation_id = created.json()["conversation"]["id"]

    async with httpx.AsyncClient() as http:
        before = (await http.get(f"{cluster.simulator_root}/admin/stats")).json()["received"]
        await http.put(f"{cluster.simulator_root}/admin/faults", json={"latency_ms": 4000})
    turn = asyncio.create_task(
        api.post(f"/v1/conversations/{conversation_id}/messages", json={"content": "[echo] survive this"})
    )
    await _in_flight(cluster.simulator_root, before)
    cluster.kill_worker()  # the reply is being generated right now
    async with httpx.AsyncClient() as http:
        await http.delete(f"{cluster.simulator_root}/admin/faults")
    cluster.start_worker()

    response = await turn
    assert response.status_code == 200, response.text
    assert response.json()["reply"]["content"] == "survive this"
    messages = await _stored_messages(cluster.settings, conversation_id)
    assert messages.count(("user", "[echo] survive this")) == 1
    assert messages.count(("assistant", "survive this")) == 1
    assert len(messages) == 4


async def test_temporal_restart_mid_conversation_loses_nothing(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    created = await api.post(
        "/v1/conversations", json={"model": "sim-zero", "message": {"content": "[echo] one"}}
    )
    assert created.status_code == 201, created.text
    conversation_id = created.json()["conversation"]["id"]

    cluster.stop_temporal()
    cluster.start_temporal()  # same database file

    for _ in range(60):  # the API and worker reconnect on their own; 503 until they have
        response = await api.post(
            f"/v1/conversations/{conversation_id}/messages", json={"content": "[echo] two"}
        )
        if response.status_code != 503:
            break
        await asyncio.sleep(0.5)
    assert response.status_code == 200, response.text
    detail = (await api.get(f"/v1/conversations/{conversation_id}")).json()
    assert [m["content"] for m in detail["messages"]] == ["[echo] one", "one", "[echo] two", "two"]


async def test_api_killed_mid_request_then_retried_with_the_same_key_applies_once(
    cluster: Cluster,
) -> None:
    url = cluster.start_api()
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=cluster.auth) as http:
        created = await http.post(
            "/v1/conversations", json={"model": "sim-zero", "message": {"content": "[echo] hi"}}
        )
        assert created.status_code == 201, created.text
    conversation_id = created.json()["conversation"]["id"]
    path = f"/v1/conversations/{conversation_id}/messages"
    body, headers = {"content": "[echo] exactly once"}, {"Idempotency-Key": "retry-me"}

    async with httpx.AsyncClient() as admin:
        before = (await admin.get(f"{cluster.simulator_root}/admin/stats")).json()["received"]
        await admin.put(f"{cluster.simulator_root}/admin/faults", json={"latency_ms": 1500})
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=cluster.auth) as http:
        request = asyncio.create_task(http.post(path, json=body, headers=headers))
        await _in_flight(cluster.simulator_root, before)
        cluster.kill_api()  # the turn goes on inside Temporal; the client sees a dropped connection
        with pytest.raises(httpx.TransportError):
            await request

    cluster.start_api()
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=cluster.auth) as http:
        retried = await http.post(path, json=body, headers=headers)
        assert retried.status_code == 200, retried.text
        assert retried.json()["reply"]["content"] == "exactly once"
        again = await http.post(path, json=body, headers=headers)
        assert again.json()["reply"]["id"] == retried.json()["reply"]["id"]
    messages = await _stored_messages(cluster.settings, conversation_id)
    assert messages.count(("user", "[echo] exactly once")) == 1
    assert messages.count(("assistant", "exactly once")) == 1
    assert len(messages) == 4


async def test_worker_killed_mid_stream_the_client_still_gets_the_reply_once(pg_cluster: Cluster) -> None:
    cluster = pg_cluster
    conversation_id = "streamed-through-a-crash"
    words = [f"w{i}" for i in range(400)]
    body = {
        "model": "sim-llama-8b",
        "stream": True,
        "messages": [{"role": "user", "content": "[echo] " + " ".join(words)}],
    }
    headers = {**cluster.auth, "X-Conversation-Id": conversation_id}
    texts: list[str] = []
    killed = False
    stats = f"{cluster.simulator_root}/admin/stats"
    with serve_in_thread(create_app(cluster.settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            before = (await http.get(stats)).json()["received"]
            async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line.removeprefix("data: "))
                    assert "error" not in chunk, chunk
                    texts.append(chunk["choices"][0]["delta"].get("content") or "")
                    if "".join(texts).strip() and not killed:
                        cluster.kill_worker()  # tokens are flowing: the worker dies mid-reply
                        cluster.start_worker()
                        killed = True
            after = (await http.get(stats)).json()["received"]
    assert killed
    assert after == before + 2  # killed mid-reply: the call ran again
    assert "".join(texts) == " ".join(words)  # what was streamed, then the rest from the record
    messages = await _stored_messages(cluster.settings, conversation_id)
    assert messages == [("user", body["messages"][0]["content"]), ("assistant", " ".join(words))]
