"""`lcp bench neighbours`: how much one tenant's burst of durable turns slows another tenant's, with the API's
turn admission (api/turn_gate.py) off and on, in one run on this machine. A quiet tenant sends turns one
after another, alone and then beside a noisy tenant keeping `burst` turns in flight (within its limits)."""

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.chat import Bench, bench_key, machine, summarize

MODEL = "sim-zero"  # the simulator answers at once: what is measured is lcp's part of a turn


async def _conversation(http: httpx.AsyncClient) -> str:
    response = await http.post("/v1/conversations", json={"model": MODEL})
    response.raise_for_status()
    return str(response.json()["conversation"]["id"])


async def _turn(http: httpx.AsyncClient, conversation_id: str) -> int:
    response = await http.post(
        f"/v1/conversations/{conversation_id}/messages", json={"content": "neighbours: say something short"}
    )
    return response.status_code


async def _quiet_turns(http: httpx.AsyncClient, conversation_id: str, turns: int) -> list[float]:
    latencies = []
    for _ in range(turns):
        started = time.perf_counter()
        status = await _turn(http, conversation_id)
        if status != 200:
            raise RuntimeError(f"the quiet tenant's turn got HTTP {status}")
        latencies.append(time.perf_counter() - started)
    return latencies


async def measure(api_url: str, quiet_key: str, noisy_key: str, burst: int, turns: int) -> dict[str, Any]:
    """The quiet tenant's turns alone, then beside the noisy tenant's burst; the burst's own throughput."""

    def client(key: str) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=burst + 8)
        return httpx.AsyncClient(
            base_url=api_url, timeout=120, limits=limits, headers={"Authorization": f"Bearer {key}"}
        )

    async with client(quiet_key) as quiet, client(noisy_key) as noisy:
        conversation = await _conversation(quiet)
        await _quiet_turns(quiet, conversation, 5)  # warm-up
        started = time.perf_counter()
        alone = await _quiet_turns(quiet, conversation, turns)
        alone_wall = time.perf_counter() - started
        lanes = [await _conversation(noisy) for _ in range(burst)]
        stop = asyncio.Event()
        statuses: list[int] = []

        async def flood(conversation_id: str) -> None:
            while not stop.is_set():
                statuses.append(await _turn(noisy, conversation_id))

        flooding = [asyncio.create_task(flood(lane)) for lane in lanes]
        await asyncio.sleep(3)  # the burst reaches its steady state (and the limit adapts to it)
        counted_from, started = len(statuses), time.perf_counter()
        beside = await _quiet_turns(quiet, conversation, turns)
        wall = time.perf_counter() - started
        burst_statuses = statuses[counted_from:]
        gate = _gate_metrics((await quiet.get("/metrics")).text)
        stop.set()
        await asyncio.gather(*flooding)
    return {
        "quiet_alone": summarize(alone, alone_wall),
        "quiet_beside_burst": summarize(beside, wall),
        "burst_turns_per_s": round(sum(1 for s in burst_statuses if s == 200) / wall, 1),
        "burst_refused": sum(1 for s in burst_statuses if s != 200),
        "slowdown_p50": round(statistics.median(beside) / statistics.median(alone), 2),
        "gate_at_the_end": gate,
    }


def _gate_metrics(exposition: str) -> dict[str, float]:
    """The API's turn gate as its /metrics showed it: limit, turns in flight and waiting."""
    wanted = {
        "lcp_api_turn_limit": "limit",
        "lcp_api_turns_in_flight": "in_flight",
        "lcp_api_turns_waiting": "waiting",
    }
    return {
        wanted[name]: round(float(value), 1)
        for name, _, value in (line.partition(" ") for line in exposition.splitlines())
        if name in wanted
    }


def run_bench(burst: int, turns: int, targets_s: list[float]) -> dict[str, Any]:
    """Admission off, then on at each target (LCP_CONVERSATION__ADMISSION__TARGET_S), a fresh stack each."""
    settings = {"off": {"LCP_CONVERSATION__ADMISSION__ENABLED": "false"}}
    settings |= {
        f"on {target:g} s": {"LCP_CONVERSATION__ADMISSION__TARGET_S": str(target)} for target in targets_s
    }
    results: dict[str, Any] = {"machine": machine(), "burst": burst, "turns": turns, "admission": {}}
    for name, env in settings.items():
        with tempfile.TemporaryDirectory(prefix="lcp-neighbours-") as work:
            bench = Bench(Path(work), turns, burst, 0, turns, env=env)
            try:
                bench.start()
                quiet_key = asyncio.run(bench_key(bench.database_url, "quiet"))
                noisy_key = asyncio.run(bench_key(bench.database_url, "noisy"))
                measured = measure(f"http://127.0.0.1:{bench.api_port}", quiet_key, noisy_key, burst, turns)
                results["admission"][name] = asyncio.run(measured)
            finally:
                bench.stop()
    off = results["admission"]["off"]
    results["ratios_to_off"] = {
        name: {
            "quiet_p50_beside_burst": _ratio(on, off, "quiet_beside_burst", "p50_ms"),
            "quiet_p95_beside_burst": _ratio(on, off, "quiet_beside_burst", "p95_ms"),
            "burst_turns_per_s": round(on["burst_turns_per_s"] / max(off["burst_turns_per_s"], 0.1), 2),
        }
        for name, on in results["admission"].items()
        if name != "off"
    }
    return results


def _ratio(on: dict[str, Any], off: dict[str, Any], phase: str, figure: str) -> float:
    return round(float(on[phase][figure]) / float(off[phase][figure]), 2)
