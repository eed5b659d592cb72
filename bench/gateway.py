"""`lcp bench gateway`: the overhead lcp's one-shot path adds to an LLM call, beside the LiteLLM
proxy's, in one run on one machine: the same zero-latency simulator called directly, through lcp and
through LiteLLM, by one client harness, the targets interleaved so machine noise hits all alike."""

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvloop
import yaml
from rich.table import Table

from bench.chat import bench_key, cpu_seconds, machine, percentile
from cli.dev import free_port, lcp_env, spawn_lcp
from policies.errors import LcpError
from temporal.devserver import start_dev_server

MODEL = "sim-zero"  # the simulator answers at once: only the gateways' own time shows
# The simulator echoes what follows the marker, so every target returns the same 24-word reply
# (24 content chunks when streamed) and every request costs the simulator the same.
REPLY = (
    "benchmark reply one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen twenty twenty-one twenty-two"
)
PROMPT = f"[echo] {REPLY}"
READY_TIMEOUT_S = 180.0  # LiteLLM imports for a while on a small machine
STOP_TIMEOUT_S = 15.0
DEFAULT_LITELLM_VENV = Path.home() / ".cache" / "lcp" / "litellm-venv"
LITELLM_REQUIREMENT = "litellm[proxy]"
INSTALLED_MARKER = ".lcp-installed"

# LiteLLM as lean as its documentation allows: no database, no master key (no per-request key
# lookup or spend tracking), no callbacks, no retries, one worker, no telemetry, errors-only logs.
LITELLM_CONFIG_SETTINGS: dict[str, Any] = {
    "litellm_settings": {
        "callbacks": [],
        "success_callback": [],
        "failure_callback": [],
        "num_retries": 0,  # lcp's one-shot path does not retry either
        "request_timeout": 30,  # lcp's timeout for sim-zero (policies/models.yaml)
        "set_verbose": False,
        "json_logs": False,
    },
    "general_settings": {
        "disable_spend_logs": True,
        "disable_error_logs": True,
    },
}
LITELLM_ENV = {
    "LITELLM_TELEMETRY": "False",  # the usual switch (1.108 reads no such variable: harmless)
    "LITELLM_TELEMETRY_DISABLED": "True",  # the switch 1.108 reads (litellm.proxy.telemetry.settings)
    "LITELLM_LOG": "ERROR",  # also sets uvicorn's log level: no access log
    "LITELLM_MODE": "PRODUCTION",  # no .env loading
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the cost map at start
    # Newer releases refuse to start without a master key; the proxy listens on 127.0.0.1 only.
    "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
}
# Settings in the environment that would make LiteLLM do more per request (a database, a key).
LITELLM_ENV_REMOVED = ("DATABASE_URL", "LITELLM_MASTER_KEY", "REDIS_HOST", "REDIS_URL", "STORE_MODEL_IN_DB")
LITELLM_RUN = "import sys; from litellm import run_server; sys.argv[0] = 'litellm'; sys.exit(run_server())"


class BenchError(LcpError, RuntimeError):
    """The benchmark could not run (a server did not start, or answered wrongly)."""


# ---- the LiteLLM virtualenv ----------------------------------------------------------------


def litellm_python(explicit: Path | None, echo: Callable[[str], None]) -> Path:
    """The interpreter that runs LiteLLM: `explicit`, or a virtualenv made on first use and reused."""
    if explicit is not None:
        if not explicit.exists():
            raise BenchError(f"--litellm-python {explicit} does not exist")
        return explicit
    venv = DEFAULT_LITELLM_VENV
    python = venv / "bin" / "python"
    if python.exists() and (venv / INSTALLED_MARKER).exists():
        return python
    echo(f"installing LiteLLM ({LITELLM_REQUIREMENT}) into {venv} (first use only; takes a few minutes)…")
    venv.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                LITELLM_REQUIREMENT,
            ],
            check=True,
        )
    except subprocess.CalledProcessError as err:
        raise BenchError(f"could not install LiteLLM into {venv}: {err}") from None
    (venv / INSTALLED_MARKER).write_text(LITELLM_REQUIREMENT + "\n")
    return python


_PROBE = """
import importlib.metadata as m, importlib.util as u
print(m.version("litellm"), "httptools" if u.find_spec("httptools") else "h11", sep="\\n")
"""


def litellm_probe(python: Path) -> tuple[str, str]:
    """LiteLLM's version, and the HTTP parser uvicorn picks beside it (httptools when installed)."""
    try:
        out = subprocess.run(
            [str(python), "-c", _PROBE], check=True, capture_output=True, text=True, timeout=60
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        raise BenchError(f"{python} cannot import LiteLLM: {err}") from None
    version, parser = out.stdout.split()
    return version, parser


def litellm_config(llm_url: str) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {"model": f"openai/{MODEL}", "api_base": llm_url, "api_key": "none"},
            }
        ],
        **LITELLM_CONFIG_SETTINGS,
    }


# ---- the servers ---------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    ready_url: str | None = None


@dataclass
class Target:
    """One way to reach the simulator; `servers` are the processes whose CPU it costs."""

    name: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    servers: tuple[str, ...] = ()


class Servers:
    """Temporal dev server, simulator, lcp API and LiteLLM, started as child processes and all
    stopped at the end (on errors and Ctrl-C too)."""

    def __init__(self, work: Path, litellm: Path | None) -> None:
        self.work, self.litellm_python = work, litellm
        self.running: dict[str, Server] = {}
        self.temporal_port, self.llm_port, self.api_port = free_port(), free_port(), free_port()
        self.litellm_port = free_port()
        self.llm_url = f"http://127.0.0.1:{self.llm_port}/v1"
        self.api_key = ""
        self.litellm_cli: list[str] = []
        self.trees: dict[str, list[int]] = {}

    def _add(self, name: str, process: subprocess.Popen[bytes], ready_url: str | None = None) -> None:
        self.running[name] = Server(name, process, self.work / f"{name}.log", ready_url)

    def start(self) -> None:
        address = f"127.0.0.1:{self.temporal_port}"
        self._add(
            "temporal", start_dev_server(None, self.temporal_port, None, log_file=self.work / "temporal.log")
        )
        database_url = f"sqlite+aiosqlite:///{self.work / 'lcp.db'}"
        env = lcp_env(self.work, address, self.llm_url, LCP_DATABASE_URL=database_url)
        self._add(
            "llm",
            spawn_lcp(["sim", "--port", str(self.llm_port)], env, self.work / "llm.log"),
            f"http://127.0.0.1:{self.llm_port}/healthz",
        )
        self.api_key = asyncio.run(bench_key(database_url))
        self._add(
            "lcp",
            spawn_lcp(["api", "--port", str(self.api_port)], env, self.work / "lcp.log"),
            f"http://127.0.0.1:{self.api_port}/readyz",
        )
        if self.litellm_python is not None:
            self._start_litellm(self.litellm_python)
        self._wait_ready()

    def _start_litellm(self, python: Path) -> None:
        config = self.work / "litellm-config.yaml"
        config.write_text(yaml.safe_dump(litellm_config(self.llm_url), sort_keys=False))
        env = {k: v for k, v in os.environ.items() if k not in LITELLM_ENV_REMOVED} | LITELLM_ENV
        args = ["--config", str(config), "--host", "127.0.0.1", "--port", str(self.litellm_port)]
        args += ["--num_workers", "1"]
        self.litellm_cli = ["litellm", *args[:1], "config.yaml", *args[2:]]
        log = open(self.work / "litellm.log", "ab")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen(
            [str(python), "-c", LITELLM_RUN, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.work,
            start_new_session=True,  # Ctrl-C reaches the benchmark, which stops LiteLLM in order
        )
        self._add("litellm", process, f"http://127.0.0.1:{self.litellm_port}/health/liveliness")

    def _wait_ready(self) -> None:
        waiting = {s.name: s for s in self.running.values() if s.ready_url}
        deadline = time.monotonic() + READY_TIMEOUT_S
        while waiting:
            for name, server in list(waiting.items()):
                if server.process.poll() is not None:
                    raise BenchError(f"{name} exited with {server.process.returncode}:\n{self.tail(name)}")
                try:
                    assert server.ready_url is not None
                    if httpx.get(server.ready_url, timeout=2).status_code == 200:
                        del waiting[name]
                except httpx.HTTPError:
                    pass
            if waiting and time.monotonic() > deadline:
                logs = "\n".join(f"--- {name}:\n{self.tail(name)}" for name in waiting)
                raise BenchError(f"{', '.join(waiting)} did not come up in {READY_TIMEOUT_S:.0f} s:\n{logs}")
            if waiting:
                time.sleep(0.3)

    def tail(self, name: str, lines: int = 20) -> str:
        try:
            return "\n".join(self.running[name].log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        servers = list(reversed(self.running.values()))
        for server in servers:
            if server.process.poll() is None:
                server.process.terminate()
        for server in servers:
            try:
                server.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(timeout=STOP_TIMEOUT_S)

    def pin_processes(self) -> None:
        """Note each server's process tree once, so that reading CPU time later is cheap."""
        self.trees = {name: _tree(server.process.pid) for name, server in self.running.items()}

    def cpu(self, names: tuple[str, ...], *, client_first: bool) -> dict[str, float]:
        """CPU seconds so far of the named servers (their child processes included) and of this
        client; the client is read first after a phase and last before one, so that reading the
        servers' counters is not counted as the client's."""
        client = cpu_seconds(os.getpid()) if client_first else None
        seconds = {name: sum(_cpu_or_zero(pid) for pid in self.trees[name]) for name in names}
        return {**seconds, "bench-client": client if client is not None else cpu_seconds(os.getpid())}

    def targets(self) -> list[Target]:
        targets = [
            Target("direct", f"{self.llm_url}/chat/completions", servers=("llm",)),
            Target(
                "lcp",
                f"http://127.0.0.1:{self.api_port}/v1/chat/completions",
                {"Authorization": f"Bearer {self.api_key}"},
                ("lcp", "llm"),
            ),
        ]
        if "litellm" in self.running:
            url = f"http://127.0.0.1:{self.litellm_port}/v1/chat/completions"
            targets.append(Target("litellm", url, servers=("litellm", "llm")))
        return targets


def _tree(pid: int) -> list[int]:
    """A process and its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:  # a child process that has gone
        return 0.0


# ---- the client harness (the same code for every target) -----------------------------------


LANES_PER_CLIENT = 8  # httpx's pool scans its connections on every request: small pools cost less
# The servers (uvicorn) close a connection idle for 5 s; the client lets go of it first, or a request
# sent on it as the server closes it fails (a target's connections idle while the others are measured).
KEEPALIVE_EXPIRY_S = 2.0


class Harness:
    """The client: httpx.AsyncClients made alike, a few per target (one pool for many connections,
    or for several targets, makes every request scan them all and the client the bottleneck)."""

    def __init__(self, clients: dict[str, list[httpx.AsyncClient]]) -> None:
        self.clients = clients

    @staticmethod
    def _body(stream: bool) -> dict[str, Any]:
        return {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "stream": stream}

    async def whole(self, target: Target, lane: int = 0) -> float:
        """One non-streamed completion; its latency in seconds."""
        http = self.clients[target.name][lane // LANES_PER_CLIENT]
        started = time.perf_counter()
        response = await http.post(target.url, json=self._body(False), headers=target.headers)
        if response.status_code != 200:
            raise BenchError(f"{target.name} answered HTTP {response.status_code}: {response.text[:300]}")
        content = response.json()["choices"][0]["message"]["content"]
        elapsed = time.perf_counter() - started
        if content != REPLY:
            raise BenchError(f"{target.name} answered {content!r}, not the simulator's echo")
        return elapsed

    async def streamed(self, target: Target) -> tuple[float, float]:
        """One streamed completion: seconds to the first content chunk, and to the end."""
        http = self.clients[target.name][0]
        started = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        async with http.stream("POST", target.url, json=self._body(True), headers=target.headers) as r:
            if r.status_code != 200:
                await r.aread()
                raise BenchError(f"{target.name} answered HTTP {r.status_code}: {r.text[:300]}")
            async for line in r.aiter_lines():
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                choices = json.loads(line[5:]).get("choices") or []
                if choices and (text := (choices[0].get("delta") or {}).get("content")):
                    parts.append(text)
                    if first is None:
                        first = time.perf_counter() - started
        total = time.perf_counter() - started
        if first is None or "".join(parts) != REPLY:
            raise BenchError(f"{target.name} streamed {''.join(parts)!r}, not the simulator's echo")
        return first, total

    async def burst(self, target: Target, requests: int, concurrency: int) -> tuple[list[float], float]:
        """`requests` non-streamed completions, `concurrency` in flight; latencies and wall time."""
        latencies: list[float] = []
        remaining = requests

        async def lane(index: int) -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                latencies.append(await self.whole(target, index))

        started = time.perf_counter()
        await asyncio.gather(*(lane(index) for index in range(min(concurrency, requests))))
        return latencies, time.perf_counter() - started


def _ms(samples_s: list[float]) -> dict[str, float]:
    ms = [value * 1000 for value in samples_s]
    return {
        "count": len(ms),
        "p50_ms": round(statistics.median(ms), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "min_ms": round(min(ms), 3),
    }


def _rotations(targets: list[Target], rounds: int) -> Iterator[list[Target]]:
    """Each round visits every target, starting one further on each time (no target always first)."""
    for index in range(rounds):
        shift = index % len(targets)
        yield targets[shift:] + targets[:shift]


@dataclass
class Plan:
    requests: int
    concurrency: int
    throughput_requests: int
    warmup: int

    @property
    def throughput_rounds(self) -> int:
        return max(1, min(5, self.throughput_requests // 200))


async def measure(servers: Servers, settings: Plan) -> dict[str, Any]:
    targets = servers.targets()
    limits = httpx.Limits(
        max_connections=LANES_PER_CLIENT,
        max_keepalive_connections=LANES_PER_CLIENT,
        keepalive_expiry=KEEPALIVE_EXPIRY_S,
    )
    per_target = -(-settings.concurrency // LANES_PER_CLIENT)
    async with contextlib.AsyncExitStack() as stack:
        clients: dict[str, list[httpx.AsyncClient]] = {}
        for target in targets:
            clients[target.name] = [
                await stack.enter_async_context(httpx.AsyncClient(timeout=60, limits=limits))
                for _ in range(per_target)
            ]
        harness = Harness(clients)
        for target in targets:  # warm connections, caches and code paths; nothing counted
            for _ in range(settings.warmup):
                await harness.whole(target)
                await harness.streamed(target)
            await harness.burst(target, max(settings.warmup, settings.concurrency), settings.concurrency)
        servers.pin_processes()

        whole: dict[str, list[float]] = {t.name: [] for t in targets}
        first: dict[str, list[float]] = {t.name: [] for t in targets}
        total: dict[str, list[float]] = {t.name: [] for t in targets}
        for order in _rotations(targets, settings.requests):
            for target in order:
                whole[target.name].append(await harness.whole(target))
            for target in order:
                ttfc, end = await harness.streamed(target)
                first[target.name].append(ttfc)
                total[target.name].append(end)

        # Throughput in interleaved rounds; CPU is counted for each target's own rounds only.
        loaded: dict[str, list[float]] = {t.name: [] for t in targets}
        wall: dict[str, float] = dict.fromkeys(whole, 0.0)
        cpu: dict[str, dict[str, float]] = {t.name: {} for t in targets}
        per_round = [settings.throughput_requests // settings.throughput_rounds] * settings.throughput_rounds
        per_round[-1] += settings.throughput_requests - sum(per_round)
        for order, count in zip(_rotations(targets, len(per_round)), per_round, strict=True):
            for target in order:
                before = servers.cpu(target.servers, client_first=False)
                latencies, seconds = await harness.burst(target, count, settings.concurrency)
                after = servers.cpu(target.servers, client_first=True)
                loaded[target.name] += latencies
                wall[target.name] += seconds
                for name in after:
                    cpu[target.name][name] = cpu[target.name].get(name, 0.0) + after[name] - before[name]

    result: dict[str, Any] = {}
    for target in targets:
        done = len(loaded[target.name])
        result[target.name] = {
            "url": target.url,
            "non_stream": _ms(whole[target.name]),
            "stream": {
                "first_content_chunk": _ms(first[target.name]),
                "total": _ms(total[target.name]),
            },
            "throughput": {
                "concurrency": settings.concurrency,
                "requests": done,
                "seconds": round(wall[target.name], 3),
                "requests_per_s": round(done / wall[target.name], 1),
                "latency": _ms(loaded[target.name]),
            },
            "cpu_ms_per_request": {
                name: round(seconds * 1000 / done, 3) for name, seconds in cpu[target.name].items()
            },
        }
    return result


# ---- the comparison ------------------------------------------------------------------------


def _added(side: dict[str, Any], direct: dict[str, Any]) -> dict[str, float]:
    def minus(*path: str) -> float:
        a: Any = side
        b: Any = direct
        for key in path:
            a, b = a[key], b[key]
        return round(float(a) - float(b), 3)

    return {
        "non_stream_p50_ms": minus("non_stream", "p50_ms"),
        "non_stream_p99_ms": minus("non_stream", "p99_ms"),
        "first_chunk_p50_ms": minus("stream", "first_content_chunk", "p50_ms"),
        "first_chunk_p99_ms": minus("stream", "first_content_chunk", "p99_ms"),
        "stream_total_p50_ms": minus("stream", "total", "p50_ms"),
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b > 0 else None


def compare(result: dict[str, Any]) -> None:
    """Added latencies, ratios and goals, in place."""
    direct = result["direct"]
    added = {name: _added(result[name], direct) for name in ("lcp", "litellm") if name in result}
    result["added"] = added
    rps = {name: result[name]["throughput"]["requests_per_s"] for name in ("direct", *added)}
    ratios: dict[str, float | None] = {
        f"throughput_{name}_over_direct": _ratio(rps[name], rps["direct"]) for name in added
    }
    goals: dict[str, bool] = {}
    if "litellm" in added:
        lcp, lite = added["lcp"], added["litellm"]
        for key in lcp:
            ratios[f"added_{key.removesuffix('_ms')}_lcp_over_litellm"] = _ratio(lcp[key], lite[key])
        ratios["throughput_lcp_over_litellm"] = _ratio(rps["lcp"], rps["litellm"])
        goals = {
            "lcp_added_p50_le_litellm": lcp["non_stream_p50_ms"] <= lite["non_stream_p50_ms"],
            "lcp_added_p99_le_litellm": lcp["non_stream_p99_ms"] <= lite["non_stream_p99_ms"],
            "lcp_throughput_ge_litellm": rps["lcp"] >= rps["litellm"],
        }
    result["ratios"] = ratios
    result["goals"] = goals


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the servers are stopped either way."""

    def _raise(*_: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_gateway_bench(
    settings: Plan,
    *,
    with_litellm: bool = True,
    litellm_python_path: Path | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    python = litellm_python(litellm_python_path, echo) if with_litellm else None
    version, parser = litellm_probe(python) if python else (None, None)
    with _sigterm_stops(), tempfile.TemporaryDirectory(prefix="lcp-bench-gateway-") as tmp:
        servers = Servers(Path(tmp), python)
        echo(
            "starting a Temporal dev server, the simulator, the lcp API"
            + (" and LiteLLM…" if python else "…")
        )
        try:
            servers.start()
            echo(f"measuring {', '.join(t.name for t in servers.targets())}, interleaved…")
            measured = uvloop.run(measure(servers, settings))  # the loop lcp and LiteLLM serve on
        finally:
            servers.stop()
    result: dict[str, Any] = {
        "machine": machine(),
        "settings": {
            "model": MODEL,
            "requests": settings.requests,
            "concurrency": settings.concurrency,
            "throughput_requests": settings.throughput_requests,
            "throughput_rounds": settings.throughput_rounds,
            "warmup": settings.warmup,
            "prompt": PROMPT,
            "reply_words": len(REPLY.split()),
            "client": (
                f"httpx {httpx.__version__} AsyncClients on uvloop, made alike, "
                f"{LANES_PER_CLIENT} connections each, one (sequential) or more (concurrent) per target"
            ),
            "order": "interleaved: each round visits every target, the first one rotating",
            "lcp_server": "lcp api: uvicorn, uvloop, httptools, one process; Temporal dev server, no worker",
            "simulator_server": "lcp sim: uvicorn, uvloop, httptools, one process",
        },
        "litellm_setup": (
            {
                "version": version,
                "python": str(python),
                "server": f"uvicorn, uvloop, {parser}, one process (--num_workers 1)",
                "cli": servers.litellm_cli,
                "config": LITELLM_CONFIG_SETTINGS,
                "env": LITELLM_ENV,
                "env_removed": list(LITELLM_ENV_REMOVED),
                "no_database": True,
                "no_master_key": True,
            }
            if python
            else None
        ),
        **measured,
    }
    compare(result)
    return result


def tables(result: dict[str, Any]) -> list[Table]:
    """Two tables: whole replies (sequential latency, throughput, CPU), and streamed replies."""
    m = result["machine"]
    names = [name for name in ("direct", "lcp", "litellm") if name in result]
    whole = Table(title=f"whole replies ({MODEL}), {m['cpus']} CPUs ({m['cpu']})")
    concurrency = result["settings"]["concurrency"]
    for column in ("", "p50 ms", "p99 ms", "added p50", "added p99", f"req/s @{concurrency}", "CPU ms/req"):
        whole.add_column(column, justify="right" if column else "left", no_wrap=True)
    stream = Table(title=f"streamed replies ({result['settings']['reply_words']} content chunks)")
    for column in ("", "1st chunk p50", "1st chunk p99", "added p50", "added p99", "total p50"):
        stream.add_column(column, justify="right" if column else "left", no_wrap=True)

    def signed(added: dict[str, float] | None, key: str) -> str:
        return f"{added[key]:+.2f}" if added else ""

    for name in names:
        side, added = result[name], result["added"].get(name)
        cpu = side["cpu_ms_per_request"].get("llm" if name == "direct" else name)
        whole.add_row(
            name,
            f"{side['non_stream']['p50_ms']:.2f}",
            f"{side['non_stream']['p99_ms']:.2f}",
            signed(added, "non_stream_p50_ms"),
            signed(added, "non_stream_p99_ms"),
            f"{side['throughput']['requests_per_s']:.0f}",
            f"{cpu:.2f}" if cpu is not None else "",
        )
        first = side["stream"]["first_content_chunk"]
        stream.add_row(
            name,
            f"{first['p50_ms']:.2f}",
            f"{first['p99_ms']:.2f}",
            signed(added, "first_chunk_p50_ms"),
            signed(added, "first_chunk_p99_ms"),
            f"{side['stream']['total']['p50_ms']:.2f}",
        )
    return [whole, stream]
