"""`lcp dev`: runs the whole embedded stack in the foreground and stops all of it on Ctrl-C."""

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from api.cli.keys import dev_admin_key
from lab.prometheus import SIMULATED, PrometheusStartError, ScrapeTarget, start_prometheus
from settings import Settings
from store.migrate import upgrade_database
from temporal.devserver import start_dev_server

STOP_GRACE_S = 10.0
READY_TIMEOUT_S = 90.0


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


_given: set[int] = set()  # never the same port twice in one test run, bound or not yet


def free_port() -> int:
    """A free TCP port below the kernel's ephemeral range: a port the kernel handed out (port 0) can be
    taken again as an outbound connection's source port before a child process binds it, which once
    stopped `lcp dev` from restarting in a test ("address already in use")."""
    index, count = _port_slice()
    for _ in range(1000):
        port = random.randint(20000, _ephemeral_low() - 1)
        if port in _given or port % count != index:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError("no free TCP port between 20000 and the ephemeral range")


def _port_slice() -> tuple[int, int]:
    """LCP_PORT_SLICE="i/n": take only the ports p with p % n == i, so that parallel test processes (and
    the processes they start) never hand out the same port before a child binds it."""
    index, _, count = os.environ.get("LCP_PORT_SLICE", "0/1").partition("/")
    return int(index), int(count or 1)


class StackError(Exception):
    """A problem the user can fix, said in one line."""


@dataclass
class Ports:
    host: str
    api: int
    temporal: int
    ui: int
    llm: int
    kube: int
    workload: int
    prometheus: int
    ops_metrics: int = 8602

    def urls(self) -> dict[str, str]:
        base = f"http://{self.host}"
        return {
            "api": f"{base}:{self.api}",
            "docs": f"{base}:{self.api}/docs",
            "temporal": f"{self.host}:{self.temporal}",
            "ui": f"{base}:{self.ui}",
            "llm": f"{base}:{self.llm}/v1",
            "kube": f"{base}:{self.kube}",
            "workload": f"{base}:{self.workload}",
            "prometheus": f"{base}:{self.prometheus}",
        }


def check_ports_free(ports: Ports) -> None:
    for name, port, flag in (
        ("API", ports.api, "--api-port"),
        ("Temporal", ports.temporal, "--temporal-port"),
        ("Temporal UI", ports.ui, "--ui-port"),
        ("LLM simulator", ports.llm, "--llm-port"),
        ("lab Kubernetes API", ports.kube, "--kube-port"),
        ("lab workload", ports.workload, "--workload-port"),
        ("Prometheus", ports.prometheus, "--prometheus-port"),
        ("ops worker metrics", ports.ops_metrics, "--ops-metrics-port"),
    ):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((ports.host, port))
            except OSError:
                raise StackError(
                    f"port {port} ({name}) is already in use on {ports.host}: "
                    f"stop what uses it or pass {flag} PORT"
                ) from None


def lcp_env(home: Path, temporal: str, llm_url: str, **extra: str) -> dict[str, str]:
    """The environment that points an lcp child process at one stack."""
    return {
        **os.environ,
        "LCP_HOME": str(home),
        "LCP_TEMPORAL__ADDRESS": temporal,
        "LCP_LLM_URL": llm_url,
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def demo_egress_allow(host: str, workload_port: int) -> str:
    """LCP_EGRESS__ALLOW for the demo: the caller's own entries, and the lab workload (on loopback and on
    the stack's host), which the catalogue's chaos HTTP probes check; nothing else internal (Temporal,
    the lab's Kubernetes API, Prometheus, the API) is open to tools or probes."""
    own = json.loads(os.environ.get("LCP_EGRESS__ALLOW") or "[]")
    hosts = dict.fromkeys(("127.0.0.1", host))
    entries = [f"[{h}]:{workload_port}" if ":" in h else f"{h}:{workload_port}" for h in hosts]
    return json.dumps([*own, *entries])


def spawn_lcp(args: Sequence[str], env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    """Start `lcp ARGS` as a child process, its output appended to `log_file`."""
    log = open(log_file, "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # Ctrl-C reaches the parent, which stops children in order
    )


class Stack:
    """The child processes of `lcp dev`, started in order and stopped in reverse."""

    def __init__(self, home: Path, ports: Ports) -> None:
        self.home, self.ports = home, ports
        self.logs = home / "logs"
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.api_key = ""

    def _spawn(self, name: str, *args: str) -> None:
        env = lcp_env(
            self.home,
            f"{self.ports.host}:{self.ports.temporal}",
            self.ports.urls()["llm"],
            LCP_API__HOST=self.ports.host,
            LCP_API__PORT=str(self.ports.api),
            LCP_ROLLOUT__PROMETHEUS_URL=self.ports.urls()["prometheus"],
            LCP_EGRESS__ALLOW=demo_egress_allow(self.ports.host, self.ports.workload),
        )
        self.children.append((name, spawn_lcp(args, env, self.logs / f"{name}.log")))

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        temporal = start_dev_server(
            self.home / "temporal.db",
            self.ports.temporal,
            self.ports.ui,
            log_file=self.logs / "temporal.log",
        )
        self.children.append(("temporal", temporal))
        self._spawn("llm-simulator", "sim", "--host", self.ports.host, "--port", str(self.ports.llm))
        self._wait_tcp("temporal", self.ports.temporal)
        database_url = Settings(home=self.home).resolved_database_url()
        asyncio.run(upgrade_database(database_url))
        self.api_key = asyncio.run(dev_admin_key(database_url, self.home))
        # The conversation worker runs inside the API process, so streamed replies reach the
        # client through memory (a separate worker needs PostgreSQL's LISTEN/NOTIFY for that).
        self._spawn("api", "api", "--worker", "--host", self.ports.host, "--port", str(self.ports.api))
        ports = self.ports
        self._spawn(
            "lab",
            "lab", "serve", "--home", str(self.home), "--host", ports.host,
            "--kube-port", str(ports.kube), "--workload-port", str(ports.workload),
        )  # fmt: skip
        try:
            prometheus = start_prometheus(
                self.scrape_targets(),
                self.home / "prometheus",
                host=ports.host,
                port=ports.prometheus,
                log_file=self.logs / "prometheus.log",
                scrape_interval_s=5,
            )
        except (FileNotFoundError, PrometheusStartError) as err:
            raise StackError(str(err)) from None
        self.children.append(("prometheus", prometheus))
        urls = ports.urls()
        self._wait_http("llm-simulator", f"http://{ports.host}:{ports.llm}/healthz")
        self._wait_http("temporal", urls["ui"])
        self._wait_http("api", f"{urls['api']}/readyz")
        self._wait_http("lab", f"{urls['workload']}/healthz")
        self._wait_http("prometheus", f"{urls['prometheus']}/-/ready")
        # Canary rollouts and predictive scaling act on the lab through the kubeconfig it has written by now.
        self._spawn("ops-worker", "worker", "--queue", "ops", "--metrics-port", str(ports.ops_metrics))
        self._spawn("forecasting-worker", "worker", "--queue", "forecasting")

    def scrape_targets(self) -> list[ScrapeTarget]:
        """What Prometheus scrapes: the lab's workload and the LLM simulator (both simulated) and lcp."""
        host, ports = self.ports.host, self.ports
        token = Settings(home=self.home).metrics.token  # LCP_METRICS__TOKEN: then the API's /metrics needs it
        bearer = token.get_secret_value() if token else None
        return [
            ScrapeTarget("lab-workload", f"{host}:{ports.workload}", labels=SIMULATED),
            ScrapeTarget("llm-simulator", f"{host}:{ports.llm}", labels=SIMULATED),
            ScrapeTarget("lcp-api", f"{host}:{ports.api}", bearer_token=bearer),
            ScrapeTarget("lcp-ops-worker", f"{host}:{ports.ops_metrics}"),
        ]

    def _check_alive(self) -> None:
        for name, process in self.children:
            if process.poll() is not None:
                raise StackError(
                    f"{name} exited with code {process.returncode} while starting: "
                    f"see {self.logs / (name + '.log')}"
                )

    def _wait_tcp(self, name: str, port: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with socket.create_connection((self.ports.host, port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise StackError(f"{name} did not open port {port} in {READY_TIMEOUT_S:.0f} s")

    def _wait_http(self, name: str, url: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if httpx.get(url, timeout=2).status_code < 400:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise StackError(f"{name} did not answer at {url} in {READY_TIMEOUT_S:.0f} s")

    def wait(self) -> str:
        """Block until a signal asks us to stop (returns '') or a child dies (returns its name)."""
        stop = {"asked": False}

        def _ask(*_: object) -> None:
            stop["asked"] = True

        for sig in STOP_SIGNALS:
            signal.signal(sig, _ask)
        while not stop["asked"]:
            for name, process in self.children:
                if process.poll() is not None:
                    return name
            time.sleep(0.2)
        return ""

    def stop(self) -> None:
        for _, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for _, process in reversed(self.children):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# Ctrl-C, a kill, or the terminal closing (SIGHUP: Prometheus would take it as "reload" and outlive us).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run_dev(home: Path, ports: Ports, echo: Callable[[str], None]) -> int:
    """Start the stack, announce it, supervise it; returns the process exit code."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    check_ports_free(ports)
    stack = Stack(home, ports)
    for sig in STOP_SIGNALS:  # stopped while starting: stop what started
        signal.signal(sig, _interrupt)
    try:
        stack.start()
    except (StackError, KeyboardInterrupt) as err:
        stack.stop()
        if isinstance(err, KeyboardInterrupt):
            return 130
        raise
    urls = stack.ports.urls()
    info = {**urls, "kubeconfig": str(home / "kubeconfig"), "api_key": stack.api_key}
    dev_json = home / "dev.json"
    dev_json.write_text(json.dumps(info, indent=2) + "\n")
    dev_json.chmod(0o600)  # it holds the admin key
    echo(
        f"lcp ready: api {urls['api']}  docs {urls['docs']}  temporal-ui {urls['ui']}  "
        f"llm {urls['llm']} (simulated)  temporal {urls['temporal']}  "
        f"kube {urls['kube']} (simulated)  prometheus {urls['prometheus']}"
    )
    echo(f"admin API key (tenant default) in {dev_json}; state in {home}, logs in {stack.logs}")
    echo(f"lab: KUBECONFIG={home / 'kubeconfig'} reaches the simulated cluster; `lcp lab status` shows it")
    echo("Ctrl-C stops everything")
    died = stack.wait()
    stack.stop()
    if died:
        echo(f"lcp dev: {died} stopped unexpectedly, so everything was stopped: see {stack.logs}")
        return 1
    echo("lcp dev: stopped")
    return 0
