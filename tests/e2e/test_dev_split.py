"""`lcp dev --split` end to end: PostgreSQL, two API processes behind HAProxy, a worker process per task
queue. Chat turns through the balancer are served by both API processes (tokens cross from the worker
over LISTEN/NOTIFY); a key's limit and its revocation hold across the two processes; and an API process
killed mid-stream loses and duplicates no message."""

import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cli.balancer import SERVED_BY, haproxy_binary
from store.postgres_server import pg_bin
from tests.e2e.test_dev_stack import DevStack
from tests.http_server import free_port
from tests.waiting import eventually, eventually_sync

LIMIT = 60  # requests a minute: a whole minute at once (the bucket starts full), then one a second


class SplitDevStack(DevStack):
    def args(self) -> list[str]:
        return [*super().args(), "--split"]


@dataclass
class Split:
    stack: SplitDevStack
    info: dict[str, object]
    ready: str

    @property
    def api(self) -> str:
        return str(self.info["api"])

    @property
    def processes(self) -> list[str]:
        return [str(url) for url in self.info["api_processes"]]  # type: ignore[attr-defined]

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.info['api_key']}"}


def _require(found: bool, what: str, flag: str) -> None:
    if found:
        return
    if os.environ.get(flag):
        pytest.fail(f"{what} is required ({flag}) but missing")
    pytest.skip(f"{what} is not installed: `make test` installs it")


def require_split_engines() -> None:
    """PostgreSQL and HAProxy, which the split shape runs: the test is skipped where they are missing
    (and fails under LCP_REQUIRE_POSTGRES / LCP_REQUIRE_HAPROXY)."""
    _require(bool(pg_bin("initdb") and pg_bin("postgres")), "PostgreSQL", "LCP_REQUIRE_POSTGRES")
    try:
        haproxy_binary()
    except FileNotFoundError:
        _require(False, "HAProxy", "LCP_REQUIRE_HAPROXY")


@pytest.fixture(scope="module")
def split() -> Iterator[Split]:
    require_split_engines()
    # Not under pytest's tmp_path: as root, PostgreSQL runs as another user, which must reach its folder.
    home = Path(tempfile.mkdtemp(prefix="lcp-split-"))
    home.chmod(0o755)
    ports = {
        name: free_port()
        for name in ("api", "temporal", "ui", "llm", "kube", "workload", "prometheus", "ops_metrics")
    }
    stack = SplitDevStack(home / "state", ports)
    try:
        ready = stack.start()
        info = json.loads((stack.home / "dev.json").read_text())
        yield Split(stack, info, ready)
    finally:
        if stack.process and stack.process.poll() is None:
            assert stack.stop() == 0, "".join(stack.lines)
        shutil.rmtree(home, ignore_errors=True)


async def _streamed_turn(
    http: httpx.AsyncClient,
    conversation_id: str,
    messages: list[dict[str, str]],
    idempotency_key: str | None = None,
) -> tuple[str, str, int]:
    """One durable streamed turn through the balancer, the conversation so far sent whole as OpenAI
    clients do: (the API process that served it, the text streamed, how many content chunks brought it)."""
    body: dict[str, object] = {"model": "sim-llama-8b", "stream": True, "messages": messages}
    headers = {"X-Conversation-Id": conversation_id}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    texts: list[str] = []
    async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        served_by = response.headers[SERVED_BY]
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line.removeprefix("data: "))
                assert "error" not in chunk, chunk
                if content := chunk["choices"][0]["delta"].get("content"):
                    texts.append(content)
    return served_by, "".join(texts), len(texts)


def test_the_split_stack_says_what_it_runs(split: Split) -> None:
    assert len(split.processes) == 2
    assert split.api in split.ready
    assert str(split.info["database_url"]).startswith("postgresql+asyncpg://")
    said = eventually_sync(  # the lines after the ready line, as the reader gets them
        lambda: "".join(split.stack.lines),
        until=lambda said: "Ctrl-C stops everything" in said,
        what="lcp dev's lines after `lcp ready:`",
        within=10,
        interval=0.1,
    )
    assert "HAProxy in front of the API processes" in said and all(url in said for url in split.processes)
    logs = split.stack.home / "logs"
    for child in ("postgres", "balancer", "api-0", "api-1", "conversations-worker", "ops-worker"):
        assert (logs / f"{child}.log").exists(), child
    assert not (logs / "api.log").exists()  # no API process with a worker inside: the split shape
    # Prometheus scrapes each API process (not the balancer in front of them), as one job.
    up = eventually_sync(
        lambda: httpx.get(f"{split.info['prometheus']}/api/v1/query", params={"query": 'up{job="lcp-api"}'}),
        until=lambda answer: len(answer.json()["data"]["result"]) == 2,
        what="Prometheus to scrape both API processes",
        within=60,
        interval=0.5,
    )
    instances = {series["metric"]["instance"] for series in up.json()["data"]["result"]}
    assert instances == {url.removeprefix("http://") for url in split.processes}


async def test_streamed_turns_through_the_balancer_are_served_by_both_api_processes(split: Split) -> None:
    conversation_id = "split-turns"
    turns = [f"[echo] turn {i} " + " ".join(f"w{i}-{j}" for j in range(60)) for i in range(4)]
    served: list[str] = []
    messages: list[dict[str, str]] = []
    async with httpx.AsyncClient(base_url=split.api, timeout=120, headers=split.admin) as http:
        for said in turns:
            messages.append({"role": "user", "content": said})
            served_by, text, chunks = await _streamed_turn(http, conversation_id, messages)
            messages.append({"role": "assistant", "content": text})
            served.append(served_by)
            assert text == said.removeprefix("[echo] ")
            # Streamed as it was made: the worker is another process, the tokens crossed LISTEN/NOTIFY.
            assert chunks > 1, chunks
        detail = (await http.get(f"/v1/conversations/{conversation_id}")).json()
    assert set(served) == {"api-0", "api-1"}, served  # each turn's API process read what the other's wrote
    stored = [(m["role"], m["content"]) for m in detail["messages"]]
    assert stored == [
        pair for said in turns for pair in (("user", said), ("assistant", said.removeprefix("[echo] ")))
    ]


async def test_a_key_limit_holds_across_the_two_api_processes(split: Split) -> None:
    async with httpx.AsyncClient(base_url=split.api, timeout=60) as http:
        created = await http.post(
            "/v1/admin/keys", json={"name": "limited", "requests_per_minute": LIMIT}, headers=split.admin
        )
        assert created.status_code == 201, created.text
        use = {"Authorization": f"Bearer {created.json()['key']}"}
        started = time.monotonic()
        answers = await asyncio.gather(*(http.get("/v1/models", headers=use) for _ in range(2 * LIMIT)))
        elapsed = time.monotonic() - started
    codes = Counter(answer.status_code for answer in answers)
    assert set(codes) <= {200, 429}, codes
    # Counted per process, two processes would admit all 120.
    assert LIMIT <= codes[200] <= LIMIT + int(elapsed) + 1, (codes, elapsed)
    admitted_by = Counter(answer.headers[SERVED_BY] for answer in answers if answer.status_code == 200)
    assert set(admitted_by) == {"api-0", "api-1"}, admitted_by  # both processes shared the one minute
    assert all(int(answer.headers["Retry-After"]) >= 1 for answer in answers if answer.status_code == 429)


async def test_a_key_revoked_through_one_api_process_is_refused_by_the_other_within_a_second(
    split: Split,
) -> None:
    first, second = split.processes
    async with httpx.AsyncClient(timeout=30) as http:
        created = await http.post(f"{first}/v1/admin/keys", json={"name": "revoked"}, headers=split.admin)
        assert created.status_code == 201, created.text
        use = {"Authorization": f"Bearer {created.json()['key']}"}
        assert (await http.get(f"{second}/v1/models", headers=use)).status_code == 200  # cached there now
        revoked = await http.delete(f"{first}/v1/admin/keys/{created.json()['id']}", headers=split.admin)
        assert revoked.status_code == 200, revoked.text
        revoked_at = time.monotonic()
        assert (await http.get(f"{first}/v1/models", headers=use)).status_code == 401
        await asyncio.sleep(max(0.0, revoked_at + 1.0 - time.monotonic()))
        assert (await http.get(f"{second}/v1/models", headers=use)).status_code == 401


def _pid_listening_as(port: int) -> int:
    """The pid of the `lcp api` process started with `--port PORT`."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"api" in args and b"--port" in args and args[args.index(b"--port") + 1] == str(port).encode():
            return int(cmdline.parent.name)
    raise AssertionError(f"no `lcp api --port {port}` process")


async def test_an_api_process_killed_mid_stream_loses_and_duplicates_no_message(split: Split) -> None:
    """The client's stream breaks with its API process; sent again with the same Idempotency-Key, the
    turn is answered by the other process from the same workflow update: one user message, one reply."""
    conversation_id = "split-api-killed"
    said = "[echo] " + " ".join(f"w{i}" for i in range(400))
    messages: list[dict[str, str]] = [{"role": "user", "content": said}]
    body: dict[str, object] = {"model": "sim-llama-8b", "stream": True, "messages": messages}
    headers = {"X-Conversation-Id": conversation_id, "Idempotency-Key": "killed-mid-stream"}
    texts: list[str] = []
    killed, pid = "", 0
    async with httpx.AsyncClient(base_url=split.api, timeout=120, headers=split.admin) as http:
        with pytest.raises(httpx.HTTPError):  # the stream ends unfinished: its process died
            async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
                assert response.status_code == 200
                killed = response.headers[SERVED_BY]
                port = split.processes[int(killed.removeprefix("api-"))].rsplit(":", 1)[1]
                async for line in response.aiter_lines():
                    if line.startswith("data: {"):
                        texts.append(
                            json.loads(line.removeprefix("data: "))["choices"][0]["delta"].get("content")
                            or ""
                        )
                    if "".join(texts).strip() and not pid:
                        pid = _pid_listening_as(int(port))
                        os.kill(pid, signal.SIGKILL)  # tokens are flowing: its API process dies
        assert pid and "".join(texts).strip()
        served_by, text, _ = await _streamed_turn(http, conversation_id, messages, "killed-mid-stream")
        assert served_by != killed  # the balancer sent the retry to the process still up
        assert text == said.removeprefix("[echo] ")

        async def stored() -> list[tuple[str, str]]:
            detail = (await http.get(f"/v1/conversations/{conversation_id}")).json()
            return [(m["role"], m["content"]) for m in detail["messages"]]

        assert await stored() == [("user", said), ("assistant", said.removeprefix("[echo] "))]
        # lcp dev restarts the killed process, and the balancer sends it requests again.
        await eventually(
            lambda: http.get("/v1/models"),
            until=lambda answer: answer.headers.get(SERVED_BY) == killed,
            what=f"{killed} to be restarted and back behind the balancer",
            within=60,
            interval=0.2,
        )
