"""`lcp bench stream`: what a durable streamed turn costs with lcp's token relay, against the same
token batches sent to a workflow as signals (the design lcp did not take), in one run."""

import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from bench.chat import bench_key, cpu_seconds, machine
from bench.floor import BenchTokenSinkWorkflow
from cli.dev import free_port, lcp_env, spawn_lcp
from temporal.devserver import start_dev_server

SINK_QUEUE = "bench-token-sink"
REPLY_WORDS = 128  # the simulator's longest natural reply; echoed so every turn is the same size
BATCH_S = 0.02  # a publisher that gathers 20 ms of tokens per message, as the PostgreSQL relay does


async def _wait_ready(url: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            try:
                if (await http.get(url, timeout=2)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError(f"{url} did not answer")


async def _streamed_turn(http: httpx.AsyncClient, model: str) -> dict[str, Any]:
    """One durable streamed turn in a new conversation, as a client sees it."""
    conversation_id = uuid.uuid4().hex
    words = " ".join(f"w{i}" for i in range(REPLY_WORDS))
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": f"[echo] {words}"}]}
    started = time.perf_counter()
    first: float | None = None
    batches: list[str] = []
    batch_started = 0.0
    async with http.stream(
        "POST", "/v1/chat/completions", json=body, headers={"X-Conversation-Id": conversation_id}
    ) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            delta = (
                json.loads(line[6:])["choices"][0]["delta"].get("content") if '"choices":[{' in line else None
            )
            if delta:
                now = time.perf_counter()
                first = first or now
                if batches and now - batch_started < BATCH_S:
                    batches[-1] += delta
                else:
                    batches.append(delta)
                    batch_started = now
    done = time.perf_counter()
    assert first is not None
    return {
        "conversation_id": conversation_id,
        "ttft_ms": (first - started) * 1000,
        "total_ms": (done - started) * 1000,
        "batches": batches,
    }


async def _history_events(client: Client, workflow_id: str) -> int:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return len(history.events)


async def run(turns: int, model: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="lcp-bench-stream-"))
    temporal_port, api_port, llm_port = free_port(), free_port(), free_port()
    address = f"127.0.0.1:{temporal_port}"
    database_url = f"sqlite+aiosqlite:///{work / 'lcp.db'}"
    server = start_dev_server(None, temporal_port, None, log_file=work / "temporal.log")
    env = lcp_env(work, address, f"http://127.0.0.1:{llm_port}/v1", LCP_DATABASE_URL=database_url)
    children = [
        spawn_lcp(["sim", "--port", str(llm_port)], env, work / "llm.log"),
        spawn_lcp(["api", "--worker", "--port", str(api_port)], env, work / "api.log"),
    ]
    try:
        key = await bench_key(database_url)
        await _wait_ready(f"http://127.0.0.1:{api_port}/readyz")
        client = await Client.connect(address)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{api_port}", headers=headers, timeout=120
        ) as http:
            await _streamed_turn(http, model)  # warm-up
            cpu_before = cpu_seconds(server.pid)
            relay_turns = [await _streamed_turn(http, model) for _ in range(turns)]
            relay_cpu = cpu_seconds(server.pid) - cpu_before
        relay_events = [
            await _history_events(client, f"conversation/bench/{t['conversation_id']}") for t in relay_turns
        ]

        # The alternative: every batch the relay carried becomes a signal to a workflow.
        async with Worker(client, task_queue=SINK_QUEUE, workflows=[BenchTokenSinkWorkflow]):
            cpu_before = cpu_seconds(server.pid)
            sink_events, signal_ms = [], []
            for turn in relay_turns:
                handle = await client.start_workflow(
                    BenchTokenSinkWorkflow.run, id=f"bench-sink/{uuid.uuid4().hex}", task_queue=SINK_QUEUE
                )
                for batch in turn["batches"]:
                    started = time.perf_counter()
                    await handle.signal(BenchTokenSinkWorkflow.tokens, batch)
                    signal_ms.append((time.perf_counter() - started) * 1000)
                await handle.signal(BenchTokenSinkWorkflow.finish)
                await handle.result()
                sink_events.append(len((await handle.fetch_history()).events))
            signals_cpu = cpu_seconds(server.pid) - cpu_before
    finally:
        for child in children:
            child.terminate()
        server.terminate()
        for process in (*children, server):
            process.wait(timeout=20)

    batches = [len(t["batches"]) for t in relay_turns]
    median = statistics.median
    return {
        "machine": machine(),
        "model": model,
        "turns": turns,
        "reply_tokens": REPLY_WORDS,
        "relay": {
            "ttft_p50_ms": round(median(t["ttft_ms"] for t in relay_turns), 1),
            "turn_p50_ms": round(median(t["total_ms"] for t in relay_turns), 1),
            "batches_per_turn_p50": median(batches),
            "history_events_per_turn_p50": median(relay_events),
            "temporal_cpu_ms_per_turn": round(relay_cpu / turns * 1000, 2),
        },
        "signals": {
            "signals_per_turn_p50": median(batches),
            "history_events_for_the_signals_p50": median(sink_events),
            "signal_round_trip_p50_ms": round(median(signal_ms), 2),
            "temporal_cpu_ms_per_turn": round(signals_cpu / turns * 1000, 2),
        },
        "note": "signals: one workflow receiving, as signals, the batches the relay carried for each "
        "turn; its history events and server CPU come on top of the turn's own",
    }
