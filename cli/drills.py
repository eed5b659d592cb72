"""`lcp chaos drill`: breaks lcp's own processes on a disposable stack and checks nothing was lost or
duplicated. The stack is lcp's real processes (Temporal dev server, API, workers) with the LLM simulator
and the lab as the model and the cluster; it never touches a running `lcp dev`. `--split`: in the shape
of `lcp dev --split` (PostgreSQL, two API processes behind HAProxy)."""

import asyncio
import contextlib
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client as kube_client
from kubernetes import config as kube_config

from chaos.drills import Check, Drill, DrillReport, exactly, stored_once
from cli.balancer import requests_in_progress, start_haproxy
from cli.dev import SPLIT_API_PROCESSES, free_port, lcp_env, spawn_lcp
from cli.keys_db import mint
from lab.cluster_view import VERSION_LABEL
from lab.server import DEMO_NAMESPACE, DEMO_SERVICE
from store.migrate import upgrade_database
from store.postgres_server import LocalPostgres
from temporal.devserver import start_dev_server

READY_TIMEOUT_S = 90.0
REPLY_TIMEOUT_S = 180.0  # a turn whose activity was lost waits out its start-to-close timeout
ROLLOUT_TIMEOUT_S = 180.0
INFERENCE_LATENCY_MS = 3000  # long enough to land the fault while the model is still "generating"
ROLLOUT_PAUSE_S = 6.0


class DrillStack:
    """A disposable lcp in `home`: Temporal dev server persisted to a file, LLM simulator, conversation
    worker and API as separate processes, and — for rollout drills — the lab and an ops worker. `split`:
    the read model on a PostgreSQL of its own and two API processes behind HAProxy (on the API port)."""

    def __init__(self, home: Path, database_url: str | None = None, split: bool = False) -> None:
        self.home = home.resolve()
        self.logs = self.home / "logs"
        self.apis = [f"api-{i}" for i in range(SPLIT_API_PROCESSES)] if split else ["api"]
        names = ("temporal", "llm", "api", "kube", "workload", *(("postgres", *self.apis) if split else ()))
        self.ports = {name: free_port() for name in names}
        self.postgres = LocalPostgres(self.home / "postgres", self.ports["postgres"]) if split else None
        self.database_url = (
            self.postgres.url
            if self.postgres
            else database_url or f"sqlite+aiosqlite:///{self.home / 'lcp.db'}"
        )
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.key = ""

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    @property
    def simulator_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['llm']}"

    @property
    def kubeconfig(self) -> Path:
        return self.home / "kubeconfig"

    def api_process_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def serving_api(self) -> str:
        """The API process answering a request now: the only one, or the one HAProxy gave it to."""
        if self.postgres is None:
            return "api"
        busy = [name for name, requests in requests_in_progress(self.home).items() if requests]
        if len(busy) != 1:
            raise RuntimeError(f"expected one API process answering a request, HAProxy says {busy}")
        return busy[0]

    async def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        if self.postgres is not None:
            self.postgres.init()
            self.start_process("postgres")
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not await asyncio.to_thread(self.postgres.ready):
                self._check_alive("postgres")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not come up in {READY_TIMEOUT_S:.0f} s")
                await asyncio.sleep(0.2)
        await upgrade_database(self.database_url)
        _, self.key = await mint(self.database_url, tenant="drills", name="drills", roles=["client", "sre"])
        self.start_process("temporal")
        self.start_process("llm")
        await self.wait_tcp("temporal", self.ports["temporal"])
        await self.wait_http("llm", f"{self.simulator_url}/healthz")
        self.start_process("conversation-worker")
        for name in self.apis:
            self.start_process(name)
        if self.postgres is not None:
            self.start_process("balancer")
            for name in self.apis:
                await self.wait_http(name, f"{self.api_process_url(name)}/readyz")
        await self.wait_http("api", f"{self.api_url}/readyz")

    async def start_lab(self) -> None:
        """The simulated cluster with its demo service, and an ops worker acting on it (once)."""
        if "lab" in self.processes:
            return
        self.start_process("lab")
        await self.wait_http("lab", f"http://127.0.0.1:{self.ports['workload']}/healthz")
        self.start_process("ops-worker")

    def start_process(self, name: str) -> int:
        """Start (again) the process called `name`; returns its pid."""
        if name == "temporal":
            process = start_dev_server(
                self.home / "temporal.db", self.ports["temporal"], None, log_file=self.logs / "temporal.log"
            )
        elif name == "postgres" and self.postgres is not None:
            process = self.postgres.spawn(self.logs / "postgres.log")
        elif name == "balancer":
            backends = [self.ports[api] for api in self.apis]
            process = start_haproxy(
                self.home, "127.0.0.1", self.ports["api"], backends, self.logs / "balancer.log"
            )
        else:
            env = lcp_env(
                self.home,
                f"127.0.0.1:{self.ports['temporal']}",
                f"{self.simulator_url}/v1",
                LCP_DATABASE_URL=self.database_url,
                DATABASE_URL=self.database_url,
                LCP_ROLLOUT__KUBECONFIG=str(self.kubeconfig),
            )
            process = spawn_lcp(self._args(name), env, self.logs / f"{name}.log")
        self.processes[name] = process
        return process.pid

    def _args(self, name: str) -> list[str]:
        ports = {key: str(port) for key, port in self.ports.items()}
        return {
            "llm": ["sim", "--port", ports["llm"]],
            "conversation-worker": ["worker", "--queue", "conversations"],
            "ops-worker": ["worker", "--queue", "ops"],
            **{api: ["api", "--host", "127.0.0.1", "--port", ports[api]] for api in self.apis},
            "lab": [
                "lab",
                "serve",
                "--home",
                str(self.home),
                "--pod-startup-s",
                "1",
                "--kube-port",
                ports["kube"],
                "--workload-port",
                ports["workload"],
            ],  # fmt: skip
        }[name]

    def kill(self, name: str) -> int:
        """SIGKILL the process: no shutdown, no goodbye. Returns the pid it had."""
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        return process.pid

    def stop(self, name: str) -> int:
        """SIGTERM the process and wait for it to exit. Returns the pid it had."""
        process = self.processes[name]
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return process.pid

    def close(self) -> None:
        for name in reversed(list(self.processes)):
            if self.processes[name].poll() is None:
                self.stop(name)

    def _check_alive(self, name: str) -> None:
        process = self.processes.get(name)
        if process is not None and process.poll() is not None:
            log = self.logs / f"{name}.log"
            raise RuntimeError(f"{name} exited with code {process.returncode}: see {log}")

    async def wait_tcp(self, name: str, port: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive(name)
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{name} did not open port {port} in {READY_TIMEOUT_S:.0f} s")

    async def wait_http(self, name: str, url: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                self._check_alive(name)
                try:
                    if (await http.get(url)).status_code < 400:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.25)
        raise RuntimeError(f"{name} did not answer at {url} in {READY_TIMEOUT_S:.0f} s")


class _Run:
    """One drill in progress: its report, a REST client with the drill's key, the simulator's knobs."""

    def __init__(self, stack: DrillStack, drill: Drill, http: httpx.AsyncClient) -> None:
        self.stack, self.drill, self.http = stack, drill, http
        self.simulator = httpx.AsyncClient(base_url=stack.simulator_url, timeout=10)
        self.report = DrillReport(drill.name, datetime.now(UTC).isoformat(timespec="seconds"))
        self._t0 = time.monotonic()

    def note(self, event: str) -> None:
        self.report.timeline.append((time.monotonic() - self._t0, event))

    def check(self, *checks: Check) -> None:
        self.report.checks.extend(checks)

    async def simulator_received(self) -> int:
        return int((await self.simulator.get("/admin/stats")).json()["received"])

    async def slow_model(self, latency_ms: int) -> None:
        if latency_ms:
            await self.simulator.put("/admin/faults", json={"latency_ms": latency_ms})
        else:
            await self.simulator.delete("/admin/faults")

    async def until_generating(self, received_before: int) -> None:
        """Until the model has one more request than before (it holds it for the injected latency)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while await self.simulator_received() <= received_before:
            if time.monotonic() > deadline:
                raise RuntimeError("the inference request never reached the model")
            await asyncio.sleep(0.05)
        self.note("the model is generating the reply")

    async def new_conversation(self) -> str:
        body = {"model": "sim-zero", "message": {"content": "[echo] before the fault"}}
        response = await self.http.post("/v1/conversations", json=body)
        if response.status_code != 201:
            raise RuntimeError(f"creating a conversation answered {response.status_code}: {response.text}")
        conversation_id = str(response.json()["conversation"]["id"])
        self.note(f"conversation {conversation_id} holds one turn")
        return conversation_id

    async def stored(self, conversation_id: str) -> list[tuple[str, str]]:
        response = await self.http.get(f"/v1/conversations/{conversation_id}")
        response.raise_for_status()
        return [(m["role"], m["content"]) for m in response.json()["messages"]]

    async def check_stored_once(self, conversation_id: str, said: str, reply: str) -> None:
        """The conversation holds its first turn and the drilled one, each message once."""
        self.check(*stored_once(await self.stored(conversation_id), said, reply, total=4))

    async def retry_until_answered(self, path: str, body: dict[str, Any], key: str) -> httpx.Response:
        """What a well-behaved client does after a failure: the same request, the same key, until it is
        answered (503 means lcp is still reconnecting to Temporal)."""
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        attempts = 0
        while True:
            attempts += 1
            try:
                response = await self.http.post(path, json=body, headers={"Idempotency-Key": key})
                if response.status_code != 503 or time.monotonic() > deadline:
                    self.note(f"retry {attempts} with the same Idempotency-Key: {response.status_code}")
                    return response
            except httpx.TransportError as err:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the API did not come back: {err!r}") from None
            await asyncio.sleep(0.5)

    async def check_retries(self, path: str, body: dict[str, Any], key: str, reply: str) -> None:
        retried = await self.retry_until_answered(path, body, key)
        again = await self.http.post(path, json=body, headers={"Idempotency-Key": key})
        self.check(
            exactly("a retry with the same Idempotency-Key gets the reply", _reply(retried), reply),
            exactly(
                "a second retry gets the same reply, not a new one", _reply_id(again), _reply_id(retried)
            ),
        )

    async def rollout(self) -> dict[str, Any] | None:
        """The rollout's view; None while lcp answers 503 (the killed worker is not back to answer yet)."""
        response = await self.http.get(f"/v1/rollouts/{DEMO_NAMESPACE}/{DEMO_SERVICE}")
        if response.status_code == 503:
            return None
        if response.status_code != 200:
            raise RuntimeError(f"reading the rollout answered {response.status_code}: {response.text[:300]}")
        return dict(response.json())


def _reply(response: httpx.Response) -> str:
    if response.status_code != 200:
        return f"{response.status_code}: {response.text[:200]}"
    return str(response.json()["reply"]["content"])


def _reply_id(response: httpx.Response) -> str:
    return str(response.json()["reply"]["id"]) if response.status_code == 200 else _reply(response)


async def _worker_kill_mid_turn(run: _Run) -> None:
    conversation_id = await run.new_conversation()
    received = await run.simulator_received()
    await run.slow_model(INFERENCE_LATENCY_MS)
    path, body = f"/v1/conversations/{conversation_id}/messages", {"content": "[echo] survive this"}
    turn = asyncio.create_task(run.http.post(path, json=body))
    await run.until_generating(received)
    run.note(f"SIGKILL conversation-worker (pid {run.stack.kill('conversation-worker')})")
    await run.slow_model(0)
    run.note(f"conversation-worker started again (pid {run.stack.start_process('conversation-worker')})")
    response = await asyncio.wait_for(turn, REPLY_TIMEOUT_S)
    run.note(f"the waiting client got {response.status_code}")
    run.check(exactly("the waiting client gets the reply", _reply(response), "survive this"))
    await run.check_stored_once(conversation_id, "[echo] survive this", "survive this")


async def _temporal_restart_mid_turn(run: _Run) -> None:
    conversation_id = await run.new_conversation()
    path, body = f"/v1/conversations/{conversation_id}/messages", {"content": "[echo] through a restart"}
    key = f"drill-{uuid.uuid4().hex[:12]}"
    received = await run.simulator_received()
    await run.slow_model(INFERENCE_LATENCY_MS)
    turn = asyncio.create_task(run.http.post(path, json=body, headers={"Idempotency-Key": key}))
    await run.until_generating(received)
    run.note(f"Temporal dev server stopped (pid {run.stack.stop('temporal')})")
    pid = run.stack.start_process("temporal")
    run.note(f"Temporal dev server started again on the same database (pid {pid})")
    await run.stack.wait_tcp("temporal", run.stack.ports["temporal"])
    try:
        first = await asyncio.wait_for(turn, REPLY_TIMEOUT_S)
        run.note(f"the waiting client got {first.status_code}")
    except (httpx.TransportError, TimeoutError) as err:
        run.note(f"the waiting client got no answer ({type(err).__name__})")
    await run.slow_model(0)
    await run.check_retries(path, body, key, "through a restart")
    await run.check_stored_once(conversation_id, "[echo] through a restart", "through a restart")


async def _api_kill_mid_request(run: _Run) -> None:
    conversation_id = await run.new_conversation()
    path, body = f"/v1/conversations/{conversation_id}/messages", {"content": "[echo] exactly once"}
    key = f"drill-{uuid.uuid4().hex[:12]}"
    received = await run.simulator_received()
    await run.slow_model(INFERENCE_LATENCY_MS)
    turn = asyncio.create_task(run.http.post(path, json=body, headers={"Idempotency-Key": key}))
    await run.until_generating(received)
    api = run.stack.serving_api()
    run.note(f"SIGKILL {api} (pid {run.stack.kill(api)})")
    try:
        response = await turn
        run.note(f"the client got {response.status_code} from a killed API")
    except httpx.TransportError as err:
        run.note(f"the client lost its connection ({type(err).__name__})")
    await run.slow_model(0)
    run.note(f"{api} started again (pid {run.stack.start_process(api)})")
    await run.stack.wait_http(api, f"{run.stack.api_process_url(api)}/readyz")
    await run.check_retries(path, body, key, "exactly once")
    await run.check_stored_once(conversation_id, "[echo] exactly once", "exactly once")


async def _worker_kill_mid_rollout(run: _Run) -> None:
    await run.stack.start_lab()
    version = f"drill-{uuid.uuid4().hex[:6]}"
    steps = [
        {"kind": "set_weight", "percent": 25},  # the demo's 4 replicas carry 25% exactly
        {"kind": "pause", "duration_s": ROLLOUT_PAUSE_S},
        {"kind": "set_weight", "percent": 100},
    ]
    body = {
        "service": DEMO_SERVICE,
        "namespace": DEMO_NAMESPACE,
        "image": f"registry.lab/chat-api:{version}",
        "version": version,
        "steps": steps,
    }
    response = await run.http.post("/v1/rollouts", json=body)
    if response.status_code != 201:
        raise RuntimeError(f"starting the rollout answered {response.status_code}: {response.text}")
    run.note(f"rollout of {DEMO_NAMESPACE}/{DEMO_SERVICE} to {version} started")
    view = await _rollout_until(run, lambda v: any(e["kind"] == "weight" for e in v["history"]))
    run.note(f"the canary takes {view['desired_weight']}% of traffic")
    run.note(f"SIGKILL ops-worker (pid {run.stack.kill('ops-worker')})")
    run.note(f"ops-worker started again (pid {run.stack.start_process('ops-worker')})")
    view = await _rollout_until(run, lambda v: v["finished_at"] is not None)
    run.note(f"the rollout ended {view['phase']}: {view['message']}")
    weights = [e["message"] for e in view["history"] if e["kind"] == "weight"]
    stable, canary = await asyncio.to_thread(_deployments, run.stack.kubeconfig, view["canary_deployment"])
    run.check(
        exactly("the rollout finishes Succeeded", view["phase"], "Succeeded"),
        exactly("each traffic weight is set once, in order", weights, ["canary at 25%", "canary at 100%"]),
        exactly("the stable Deployment runs the new version", stable, version),
        exactly("the canary Deployment is gone", canary, "absent"),
    )


async def _rollout_until(run: _Run, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + ROLLOUT_TIMEOUT_S
    while time.monotonic() < deadline:
        view = await run.rollout()
        if view is not None and done(view):
            return view
        await asyncio.sleep(0.25)
    raise RuntimeError(f"the rollout did not get there in {ROLLOUT_TIMEOUT_S:.0f} s")


def _deployments(kubeconfig: Path, canary_name: str) -> tuple[str, str]:
    """The stable Deployment's version label, and whether the canary Deployment still exists."""
    apps = kube_client.AppsV1Api(kube_config.new_client_from_config(str(kubeconfig)))
    stable = apps.read_namespaced_deployment(DEMO_SERVICE, DEMO_NAMESPACE)
    pod = stable.spec.template.metadata
    version = ((pod.labels if pod else None) or {}).get(VERSION_LABEL, "")
    try:
        apps.read_namespaced_deployment(canary_name, DEMO_NAMESPACE)
        return version, "present"
    except kube_client.ApiException as err:
        if err.status == 404:
            return version, "absent"
        raise


SCENARIOS: dict[str, Callable[[_Run], Awaitable[None]]] = {
    "worker-kill-mid-turn": _worker_kill_mid_turn,
    "temporal-restart-mid-turn": _temporal_restart_mid_turn,
    "api-kill-mid-request": _api_kill_mid_request,
    "worker-kill-mid-rollout": _worker_kill_mid_rollout,
}


async def run_drill(stack: DrillStack, drill: Drill) -> DrillReport:
    """Run one drill on a started stack. A drill that cannot run to its end reports why, and fails."""
    headers = {"Authorization": f"Bearer {stack.key}"}
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=REPLY_TIMEOUT_S) as http:
        run = _Run(stack, drill, http)
        run.note(f"{drill.victim} is the target: {drill.summary}")
        try:
            await SCENARIOS[drill.name](run)
        except (RuntimeError, httpx.HTTPError, TimeoutError, KeyError) as err:
            run.report.error = str(err) or type(err).__name__
            run.note(f"the drill stopped: {run.report.error}")
        finally:
            with contextlib.suppress(httpx.HTTPError):
                await run.slow_model(0)
            await run.simulator.aclose()
        run.report.duration_s = time.monotonic() - run._t0
        return run.report


async def run_drills(
    home: Path, drills: list[Drill], on_report: Callable[[DrillReport], None], split: bool = False
) -> bool:
    """Start a disposable stack in `home` (`split`: in `lcp dev --split`'s shape), run the drills one after
    another on it, stop it. Returns whether every drill passed."""
    stack = DrillStack(home, split=split)
    try:
        await stack.start()
        reports = []
        for drill in drills:
            reports.append(await run_drill(stack, drill))
            on_report(reports[-1])
        return all(report.passed for report in reports)
    finally:
        await asyncio.to_thread(stack.close)
