"""`lcp bench fleet`: a prefix-hash trace replayed against one simulated fleet (N replicas of the LLM
simulator, each with its own queue and prefix cache: a simulation, not GPUs) through lcp's gateway with
each of its strategies and through the LiteLLM proxy with each of its, fresh replicas (empty caches) for
every run, each run once more with one replica killed halfway.

Reported per run: TTFT p50/p90/p99, end-to-end p50/p99, the fleet's prefix-cache hit rate (from the
replicas' vLLM counters), requests completed per second, how busy the replicas were, and what the
client saw fail: refused or failed before any token, or broken off mid-stream.
"""

import asyncio
import contextlib
import functools
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvloop
import yaml
from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.table import Table

from bench.chat import bench_key, machine, percentile
from bench.gateway import (
    LITELLM_CONFIG_SETTINGS,
    LITELLM_ENV,
    LITELLM_ENV_REMOVED,
    LITELLM_RUN,
    READY_TIMEOUT_S,
    BenchError,
    litellm_probe,
    litellm_python,
)
from bench.replay import TraceRequest, prompt, read_prefix_trace, schedule, shared_prefix_bound
from cli.dev import free_port, lcp_env, spawn_lcp
from lab.llm_simulator import DEFAULT_PROFILES
from temporal.devserver import start_dev_server

PROFILE = "sim-llama-8b"  # the simulator's H200 profile: prefill ~33k tokens/s, ~700k tokens of KV cache
# lcp's runs: each strategy, and cache_aware once more with flow control (to show what holding requests
# in the gateway while every replica is saturated does)
LCP_ROUTINGS: dict[str, dict[str, Any]] = {
    "cache_aware": {"strategy": "cache_aware"},
    "cache_aware, flow control": {"strategy": "cache_aware", "flow_control": True},
    "round_robin": {"strategy": "round_robin"},
    "least_in_flight": {"strategy": "least_in_flight"},
}
LITELLM_STRATEGIES = ("simple-shuffle", "least-busy", "latency-based-routing")
# LiteLLM's router as its documentation sets it up for a fleet: its default cooldowns, and retries so
# that a dead replica can be routed around (lcp's one-shot path retries before the first byte too).
LITELLM_ROUTER = {"num_retries": 2, "allowed_fails": 3, "cooldown_time": 5, "timeout": 600}
REQUEST_TIMEOUT_S = 600.0
SAMPLE_EVERY_S = 0.5  # how often the replicas' running requests are sampled (how busy they are)
STOP_TIMEOUT_S = 15.0
MAX_MESSAGE_CHARS = 3_000_000  # the trace's longest prompt is ~1.2 MB of text; the body limit is 4 MiB
# The requests of a replay are built in memory beforehand, at ~4.5 bytes a prompt token: 100M tokens is
# about 450 MB (the whole Mooncake synthetic trace is 61M).
MAX_REPLAY_TOKENS = 100_000_000


@dataclass(frozen=True)
class FleetPlan:
    trace: Path
    replicas: int = 4
    speed: float = 1.0
    skip: int = 0  # records of the trace left out at its start
    limit: int | None = 600  # records replayed after those
    kill: bool = True  # each run once more with a replica killed halfway
    litellm: bool = True
    only: tuple[str, ...] = ()  # the strategies run (names in LCP_ROUTINGS, LITELLM_STRATEGIES); () all


@dataclass
class Outcome:
    sent_s: float  # after the replay's start
    ttft_s: float | None = None
    total_s: float | None = None
    failure: str | None = None  # "before the first token: ..." or "mid-stream: ..."
    detail: str = ""  # what the gateway said, for a failure it answered


@dataclass
class Processes:
    """Child processes, stopped in reverse order at the end (on errors and Ctrl-C too)."""

    work: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def spawn(self, name: str, process: subprocess.Popen[bytes]) -> None:
        self.running[name] = process

    def wait_ready(self, name: str, url: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            process = self.running[name]
            if process.poll() is not None:
                raise BenchError(f"{name} exited with {process.returncode}:\n{self.tail(name)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise BenchError(f"{name} did not come up in {READY_TIMEOUT_S:.0f} s:\n{self.tail(name)}")
            time.sleep(0.2)

    def tail(self, name: str, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.work / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def kill(self, name: str) -> None:
        process = self.running.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop(self, names: list[str] | None = None) -> None:
        chosen = [n for n in reversed(list(self.running)) if names is None or n in names]
        for name in chosen:
            if self.running[name].poll() is None:
                self.running[name].terminate()
        for name in chosen:
            process = self.running.pop(name)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Bench:
    """The processes of one benchmark: a Temporal dev server (for the lcp API) for the whole of it; the
    replicas and the gateway under test started fresh for every run."""

    def __init__(self, work: Path, plan: FleetPlan, litellm: Path | None) -> None:
        self.work, self.plan, self.litellm = work, plan, litellm
        self.processes = Processes(work)
        self.replica_ports = [free_port() for _ in range(plan.replicas)]
        self.temporal = f"127.0.0.1:{free_port()}"
        self.database_url = f"sqlite+aiosqlite:///{work / 'lcp.db'}"
        self.api_key = ""

    def log(self, name: str) -> Path:
        return self.work / f"{name}.log"

    def start(self) -> None:
        port = int(self.temporal.rsplit(":", 1)[1])
        self.processes.spawn("temporal", start_dev_server(None, port, None, log_file=self.log("temporal")))
        self.api_key = asyncio.run(bench_key(self.database_url))

    def env(self, **extra: str) -> dict[str, str]:
        return lcp_env(self.work, self.temporal, "", LCP_DATABASE_URL=self.database_url, **extra)

    def start_replicas(self) -> list[str]:
        names = []
        for i, port in enumerate(self.replica_ports):
            name = f"replica-{i}"
            args = ["sim", "--host", "127.0.0.1", "--port", str(port)]
            self.processes.spawn(name, spawn_lcp(args, self.env(), self.log(name)))
            names.append(name)
        for name, port in zip(names, self.replica_ports, strict=True):
            self.processes.wait_ready(name, f"http://127.0.0.1:{port}/healthz")
        return names

    def replica_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.replica_ports]

    def start_lcp(self, strategy: str) -> tuple[str, dict[str, str]]:
        """The lcp API, its one model a group of the replicas routed as LCP_ROUTINGS[strategy] says."""
        policy = {
            "models": [
                {
                    "name": "fleet",
                    "owned_by": "lcp-simulator",
                    "upstream_model": PROFILE,
                    "timeout_s": REQUEST_TIMEOUT_S,
                    "routing": LCP_ROUTINGS[strategy],
                    "deployments": [
                        {"name": f"replica-{i}", "base_url": f"{url}/v1"}
                        for i, url in enumerate(self.replica_urls())
                    ],
                }
            ]
        }
        models_file = self.work / f"models-{list(LCP_ROUTINGS).index(strategy)}.yaml"
        models_file.write_text(yaml.safe_dump(policy))
        port = free_port()
        # The trace's prompts run to 190k tokens in one message: above the default per-message limit,
        # which a long-context deployment raises the same way.
        env = self.env(
            LCP_MODELS_FILE=str(models_file), LCP_CONVERSATION__MAX_MESSAGE_CHARS=str(MAX_MESSAGE_CHARS)
        )
        self.processes.spawn(
            "gateway", spawn_lcp(["api", "--port", str(port)], env, self.log(f"lcp-{models_file.stem}"))
        )
        self.processes.wait_ready("gateway", f"http://127.0.0.1:{port}/readyz")
        return f"http://127.0.0.1:{port}/v1/chat/completions", {"Authorization": f"Bearer {self.api_key}"}

    def start_litellm(self, strategy: str) -> tuple[str, dict[str, str]]:
        """The LiteLLM proxy, its one model a group of the replicas routed by `strategy`."""
        assert self.litellm is not None
        config = {
            "model_list": [
                {
                    "model_name": "fleet",
                    "litellm_params": {
                        "model": f"openai/{PROFILE}",
                        "api_base": f"{url}/v1",
                        "api_key": "none",
                    },
                }
                for url in self.replica_urls()
            ],
            "router_settings": {"routing_strategy": strategy, **LITELLM_ROUTER},
            **LITELLM_CONFIG_SETTINGS,
        }
        path = self.work / f"litellm-{strategy}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in LITELLM_ENV_REMOVED} | LITELLM_ENV
        args = ["--config", str(path), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
        log = open(self.log(f"litellm-{strategy}"), "ab")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen(
            [str(self.litellm), "-c", LITELLM_RUN, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.work,
            start_new_session=True,
        )
        self.processes.spawn("gateway", process)
        self.processes.wait_ready("gateway", f"http://127.0.0.1:{port}/health/liveliness")
        return f"http://127.0.0.1:{port}/v1/chat/completions", {}


def request_body(record: TraceRequest) -> bytes:
    """The streamed chat request of `record`, as the client sends it."""
    body = {
        "model": "fleet",
        "messages": [{"role": "user", "content": prompt(record)}],
        "max_tokens": max(1, record.output_tokens),
        "stream": True,
    }
    return json.dumps(body).encode()


async def _send(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], body: bytes, out: Outcome
) -> None:
    started = time.monotonic()
    got_token = False
    try:
        async with http.stream(
            "POST",
            url,
            content=body,
            headers={**headers, "Content-Type": "application/json"},
            timeout=REQUEST_TIMEOUT_S,
        ) as response:
            if response.status_code != 200:
                out.failure = f"before the first token: HTTP {response.status_code}"
                out.detail = (await response.aread())[:300].decode(errors="replace")
                return
            done = False
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    continue
                chunk = json.loads(data)
                if "error" in chunk:
                    where = "mid-stream" if got_token else "before the first token"
                    out.failure = f"{where}: error event"
                    out.detail = json.dumps(chunk["error"])[:300]
                    return
                for choice in chunk.get("choices") or []:
                    if (choice.get("delta") or {}).get("content") and not got_token:
                        got_token = True
                        out.ttft_s = time.monotonic() - started
            if not done:
                out.failure = f"{'mid-stream' if got_token else 'before the first token'}: no [DONE]"
                return
    except (httpx.HTTPError, ValueError) as err:
        where = "mid-stream" if got_token else "before the first token"
        out.failure = f"{where}: {type(err).__name__}"
        return
    out.total_s = time.monotonic() - started


def _metrics(url: str) -> dict[str, float]:
    values: dict[str, float] = {}
    with contextlib.suppress(httpx.HTTPError):
        text = httpx.get(f"{url}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


async def _replay(
    bench: Bench,
    records: list[TraceRequest],
    bodies: list[bytes],
    url: str,
    headers: dict[str, str],
    kill: Callable[[], None] | None,
) -> dict[str, Any]:
    outcomes: list[Outcome] = []
    busy: list[float] = []
    plan = list(schedule(records, bench.plan.speed))
    duration = plan[-1][0] if plan else 0.0
    alive = list(bench.replica_urls())
    # Idle connections are dropped well before the servers' own 5 s keep-alive ends: reusing one the
    # server is closing at that moment fails the request, a client artefact this must not count.
    limits = httpx.Limits(max_connections=4096, max_keepalive_connections=256, keepalive_expiry=1.0)
    async with httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT_S) as http:

        async def sample() -> None:
            while True:
                texts = await asyncio.gather(
                    *(http.get(f"{u}/metrics", timeout=2) for u in alive), return_exceptions=True
                )
                for text in texts:
                    if isinstance(text, httpx.Response):
                        running = next(
                            (
                                s.value
                                for f in text_string_to_metric_families(text.text)
                                for s in f.samples
                                if s.name == "vllm:num_requests_running"
                            ),
                            0.0,
                        )
                        busy.append(1.0 if running > 0 else 0.0)
                await asyncio.sleep(SAMPLE_EVERY_S)

        async def killer() -> None:
            await asyncio.sleep(duration / 2)
            assert kill is not None
            alive.pop(0)
            await asyncio.to_thread(kill)

        sampler = asyncio.create_task(sample())
        killing = asyncio.create_task(killer()) if kill is not None else None
        started = time.monotonic()
        tasks = []
        for (at_s, _), body in zip(plan, bodies, strict=True):
            delay = started + at_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the trace's arrival time
            outcome = Outcome(sent_s=time.monotonic() - started)
            outcomes.append(outcome)
            tasks.append(asyncio.create_task(_send(http, url, headers, body, outcome)))
        await asyncio.gather(*tasks)
        wall_s = time.monotonic() - started
        sampler.cancel()
        if killing is not None:
            await killing
    counters = [_metrics(u) for u in alive]
    queries = sum(c.get("vllm:prefix_cache_queries_total", 0.0) for c in counters)
    hits = sum(c.get("vllm:prefix_cache_hits_total", 0.0) for c in counters)
    result = _summary(
        outcomes, wall_s, hits / queries if queries else 0.0, statistics.fmean(busy) if busy else 0.0
    )
    # The replicas' own mean TTFT (from a request's arrival at the engine to its first token): what the
    # client saw on top of it is the way there and back (client, gateway, HTTP, parsing: CPU time here).
    first = sum(c.get("vllm:time_to_first_token_seconds_count", 0.0) for c in counters)
    engine_s = sum(c.get("vllm:time_to_first_token_seconds_sum", 0.0) for c in counters)
    result["replica_ttft_ms_mean"] = round(1000 * engine_s / first, 1) if first else None
    # The prompt tokens the replicas had to prefill (their cache missed), over what they could prefill.
    capacity = DEFAULT_PROFILES[PROFILE].prefill_tokens_per_s * wall_s * len(bench.replica_ports)
    result["prefill_load"] = round((queries - hits) / capacity, 3) if capacity else 0.0
    return result


def _summary(outcomes: list[Outcome], wall_s: float, hit_rate: float, busy: float) -> dict[str, Any]:
    ttft = [o.ttft_s * 1000 for o in outcomes if o.ttft_s is not None and o.failure is None]
    total = [o.total_s * 1000 for o in outcomes if o.total_s is not None and o.failure is None]
    failures: dict[str, int] = {}
    examples: dict[str, str] = {}  # one answer per kind of failure
    for o in outcomes:
        if o.failure:
            failures[o.failure] = failures.get(o.failure, 0) + 1
            if o.detail and o.failure not in examples:
                examples[o.failure] = o.detail

    def pct(samples: list[float], q: float) -> float | None:
        return round(percentile(samples, q), 1) if samples else None

    return {
        "requests": len(outcomes),
        "completed": len(total),
        "completed_per_s": round(len(total) / wall_s, 3) if wall_s else 0.0,
        "ttft_ms": {
            "p50": pct(ttft, 50),
            "p90": pct(ttft, 90),
            "p99": pct(ttft, 99),
            "mean": round(statistics.fmean(ttft), 1) if ttft else None,
        },
        "e2e_ms": {"p50": pct(total, 50), "p99": pct(total, 99)},
        "prefix_cache_hit_rate": round(hit_rate, 4),
        "busy": round(busy, 3),
        "failed_before_first_token": sum(n for k, n in failures.items() if k.startswith("before")),
        "broken_mid_stream": sum(n for k, n in failures.items() if k.startswith("mid-stream")),
        "failures": failures,
        "failure_examples": examples,
        "ttft_over_time": [
            [round(o.sent_s, 2), round(o.ttft_s * 1000, 1)] for o in outcomes if o.ttft_s is not None
        ],
    }


def _runs(plan: FleetPlan, litellm: bool) -> Iterator[tuple[str, str, bool]]:
    """(gateway, strategy, with a replica killed) of every run, in order."""
    sides = [("lcp", s) for s in LCP_ROUTINGS] + (
        [("litellm", s) for s in LITELLM_STRATEGIES] if litellm else []
    )
    if plan.only:
        sides = [(gateway, s) for gateway, s in sides if s in plan.only]
    for kill in (False, True) if plan.kill else (False,):
        for gateway, strategy in sides:
            yield gateway, strategy, kill


def run_fleet_bench(
    plan: FleetPlan, *, litellm_python_path: Path | None = None, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    everything = read_prefix_trace(plan.trace, None if plan.limit is None else plan.skip + plan.limit)
    records = everything[plan.skip :]
    if not records:
        raise BenchError(f"{plan.trace} has no records")
    prompt_tokens = sum(r.input_tokens for r in records)
    if prompt_tokens > MAX_REPLAY_TOKENS:
        raise BenchError(
            f"{len(records)} records ask for {prompt_tokens:,} prompt tokens, more than the "
            f"{MAX_REPLAY_TOKENS:,} a replay holds in memory: replay fewer (--skip, --limit)"
        )
    unknown = set(plan.only) - set(LCP_ROUTINGS) - set(LITELLM_STRATEGIES)
    if unknown:
        known = "; ".join(repr(s) for s in [*LCP_ROUTINGS, *LITELLM_STRATEGIES])
        raise BenchError(f"no strategy {'; '.join(map(repr, sorted(unknown)))}: the strategies are {known}")
    if not any(_runs(plan, plan.litellm)):
        raise BenchError("--run names only LiteLLM's strategies, and LiteLLM is left out (--no-litellm)")
    wants_litellm = plan.litellm and (not plan.only or bool(set(plan.only) & set(LITELLM_STRATEGIES)))
    python = litellm_python(litellm_python_path, echo) if wants_litellm else None
    version = litellm_probe(python)[0] if python else None
    # Every request is built before the clock starts: a long prompt takes the client a few hundred ms
    # of CPU to build, time that would delay every other request's send and first token on a busy machine.
    bodies = [request_body(r) for r in records]
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lcp-bench-fleet-") as tmp:
        bench = Bench(Path(tmp), plan, python)
        try:
            bench.start()
            for gateway, strategy, kill in _runs(plan, python is not None):
                name = f"{gateway} {strategy}" + (" (a replica killed)" if kill else "")
                echo(
                    f"run: {name}: {len(records)} requests, {plan.speed:g}x, {plan.replicas} fresh replicas…"
                )
                replicas = bench.start_replicas()
                try:
                    start = bench.start_lcp if gateway == "lcp" else bench.start_litellm
                    url, headers = start(strategy)
                    killer = functools.partial(bench.processes.kill, replicas[0]) if kill else None
                    runs[name] = uvloop.run(_replay(bench, records, bodies, url, headers, killer))
                finally:
                    bench.processes.stop(["gateway", *replicas])
        finally:
            bench.processes.stop()
    result: dict[str, Any] = {
        "machine": machine(),
        "settings": {
            "trace": str(plan.trace),
            "records": len(records),
            "skipped": plan.skip,
            "trace_span_s": round(records[-1].at_s - records[0].at_s, 1),
            "speed": plan.speed,
            "replicas": plan.replicas,
            "profile": f"{PROFILE} (lcp's LLM simulator: a simulation of one H200 per replica)",
            "litellm": {"version": version, "router_settings": LITELLM_ROUTER} if version else None,
            "client": "one httpx client, every request streamed, arrivals at the trace's times / speed",
        },
        "infinite_cache_hit_rate": round(shared_prefix_bound(records), 4),
        "runs": runs,
    }
    result["goals"] = goals(result)
    return result


def goals(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals, as measured: p99 TTFT against LiteLLM's best (cache_aware, and cache_aware with
    flow control), hit rate against the bound, and no client failure with a replica killed."""
    runs = result["runs"]
    ours = runs.get("lcp cache_aware")
    if ours is None:
        return {}
    found: dict[str, Any] = {
        "hit_rate_over_bound": round(ours["prefix_cache_hit_rate"] / result["infinite_cache_hit_rate"], 3)
        if result["infinite_cache_hit_rate"]
        else None,
        "round_robin_busy": (runs.get("lcp round_robin") or {}).get("busy"),
        "round_robin_prefill_load": (runs.get("lcp round_robin") or {}).get("prefill_load"),
    }
    litellm = [
        r["ttft_ms"]["p99"]
        for n, r in runs.items()
        if n.startswith("litellm") and "killed" not in n and r["ttft_ms"]["p99"]
    ]
    held = runs.get("lcp cache_aware, flow control")
    for key, run in (("p99_ttft_over_best_litellm", ours), ("p99_ttft_over_best_litellm_flow_control", held)):
        if litellm and run is not None and run["ttft_ms"]["p99"]:
            found[key] = round(run["ttft_ms"]["p99"] / min(litellm), 3)
    killed = runs.get("lcp cache_aware (a replica killed)")
    if killed is not None:
        found["failed_with_a_replica_killed"] = killed["failed_before_first_token"]
        found["broken_mid_stream_with_a_replica_killed"] = killed["broken_mid_stream"]
    return found


TABLE_LEGEND = (
    "TTFT p50/p90/p99 and e2e p99 (first token, whole reply) in seconds; hit: prefix-cache hit rate; "
    "pref: prefill computed over capacity; fail: failed before the first token; cut: broken mid-stream "
    "(the JSON has more)"
)


def table(result: dict[str, Any]) -> Table:
    m, s = result["machine"], result["settings"]
    title = (
        f"{s['records']} requests of {Path(s['trace']).name} at {s['speed']:g}x over {s['replicas']} "
        f"simulated replicas, {m['cpus']} CPUs ({m['cpu']})"
    )
    # Narrow enough for 80 columns: the run's name wraps, headers are short, seconds have one decimal
    # past 10 (a legend under the table says what the columns are; e2e p50 and busy are in the JSON).
    out = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, caption=TABLE_LEGEND)
    out.add_column("run", justify="left", min_width=14, overflow="fold")
    for column in ("TTFT50", "90", "99", "e2e99", "hit", "req/s", "pref", "fail", "cut"):
        out.add_column(column, justify="right", no_wrap=True)
    for name, run in result["runs"].items():
        ttft, e2e = run["ttft_ms"], run["e2e_ms"]
        out.add_row(
            name,
            *(
                "-" if v is None else f"{v / 1000:.2f}" if v < 10_000 else f"{v / 1000:.1f}"
                for v in (ttft["p50"], ttft["p90"], ttft["p99"], e2e["p99"])
            ),
            f"{run['prefix_cache_hit_rate']:.0%}",
            f"{run['completed_per_s']:.2f}",
            f"{run.get('prefill_load', 0):.0%}",
            str(run["failed_before_first_token"]),
            str(run["broken_mid_stream"]),
        )
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    """TTFT over the replay's time, per run (a rolling median of 25 requests)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(11, 5.5))
    for name, run in result["runs"].items():
        points = run["ttft_over_time"]
        if len(points) < 2:
            continue
        window = min(25, len(points))
        xs = [points[i][0] for i in range(window - 1, len(points))]
        ys = [
            statistics.median(p[1] for p in points[i - window + 1 : i + 1]) / 1000
            for i in range(window - 1, len(points))
        ]
        axes.plot(xs, ys, label=name, linestyle="--" if "killed" in name else "-")
    axes.set_xlabel("seconds into the replay")
    axes.set_ylabel("time to first token, s (rolling median of 25)")
    axes.set_yscale("log")
    axes.set_title("TTFT over time per routing strategy (simulated fleet)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
