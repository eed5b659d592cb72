"""`lcp dev`: runs the whole embedded stack in the foreground, restarts a child that exits (with backoff),
and stops all of it on Ctrl-C or when a child keeps failing. `lcp dev --split` runs it in the shape the
manifests deploy: the read model on PostgreSQL, API processes behind a load balancer, a worker per queue."""

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
from dataclasses import astuple, dataclass, replace
from pathlib import Path

import httpx
import yaml

from cli.balancer import start_haproxy
from cli.keys_db import dev_admin_key
from cli.show import plain
from lab.fleet import FLEET_NAMESPACE, FLEET_SERVICE
from lab.prometheus import SIMULATED, PrometheusStartError, ScrapeTarget, start_prometheus
from policies.errors import PermanentError
from policies.models import DEFAULT_POLICY_FILE
from settings import Settings
from store.migrate import upgrade_database
from store.postgres_server import LocalPostgres
from temporal.devserver import start_dev_server

STOP_GRACE_S = 10.0
READY_TIMEOUT_S = 90.0
FLEET_REPLICAS = 4  # the simulator's replicas in the dev stack: sim-llama-8b is a fleet of them
SPLIT_API_PROCESSES = 2  # `lcp dev --split`: API processes behind the load balancer
WORKLOAD_JOB = "lab-workload"  # Prometheus' job scraping the lab workload, whose history is seeded
PROMETHEUS_RETENTION = "3d"  # the seeded history (a day) and what the dev stack scraped since
Launch = Callable[[], subprocess.Popen[bytes]]


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


class StackError(PermanentError):
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
    # The simulator's other replicas (the first is at `llm`); empty: free ports are picked at start.
    llm_replicas: tuple[int, ...] = ()
    # `lcp dev --split` only (picked at start when empty or 0): the API processes behind the load
    # balancer, which listens on `api`, and PostgreSQL.
    api_processes: tuple[int, ...] = ()
    postgres: int = 0

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


def write_dev_models_policy(path: Path) -> None:
    """The dev stack's models policy: the default one, with sim-llama-8b's deployments discovered from
    the lab (the replicas' pods behind the Service inference/sim-llama-8b) instead of one base_url."""
    policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    for entry in policy["models"]:
        if entry["name"] == FLEET_SERVICE:
            entry.pop("base_url", None)
            entry["discovery"] = {
                "kubernetes": {"namespace": FLEET_NAMESPACE, "service": FLEET_SERVICE, "port": "http"}
            }
    header = "# Written by `lcp dev` (policies/models.yaml, with sim-llama-8b discovered from the lab).\n"
    path.write_text(header + yaml.safe_dump(policy, sort_keys=False))


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


def demo_probe_allow(host: str, workload_port: int) -> str:
    """LCP_EGRESS__PROBE_ALLOW for the demo: the caller's own entries, and the lab workload (on loopback and
    on the stack's host), which the catalogue's chaos HTTP probes check. Only probes (GET or HEAD, a
    platform operator's) get it: a tenant's tool could PUT /admin/faults there and fail the lab's services.
    Nothing else internal (Temporal, the lab's Kubernetes API, Prometheus, the API) is open to either."""
    own = json.loads(os.environ.get("LCP_EGRESS__PROBE_ALLOW") or "[]")
    hosts = dict.fromkeys(("127.0.0.1", host))
    entries = [f"[{h}]:{workload_port}" if ":" in h else f"{h}:{workload_port}" for h in hosts]
    return json.dumps([*own, *entries])


def spawn_lcp(args: Sequence[str], env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    """Start `lcp ARGS` as a child process, its output appended to `log_file`."""
    log = open(log_file, "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # Ctrl-C reaches the parent, which stops children in order
    )


@dataclass(frozen=True)
class RestartPolicy:
    """How `lcp dev` restarts a child that exits: after first_delay_s, doubling with each failure up to
    max_delay_s; a child that has failed max_failures times within window_s stops the whole stack (it
    will not come up by itself). Failures older than the window are forgotten, so a child that crashes
    once a day is restarted every time, after first_delay_s."""

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_failures: int = 5
    window_s: float = 300.0

    def delay(self, failures: int) -> float:
        """The wait before restarting a child with `failures` recent failures (this one included)."""
        return min(self.first_delay_s * 2.0 ** max(0, failures - 1), self.max_delay_s)


def _exit_said(code: int) -> str:
    """How a child ended, in words: `exited with code 1`, `was killed by SIGKILL (exit code -9)`."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name} (exit code {code})"
        except ValueError:
            pass
    return f"exited with code {code}"


class Supervisor:
    """Restarts `lcp dev`'s children with backoff. `children` is the stack's own list (name, process),
    updated in place, so that stopping stays in reverse start order; `launchers` start each child again;
    `note(name, line)` records what happened. Pure bookkeeping on a clock the caller passes: `step(now)`
    does what is due (notices exits, starts children whose delay is over) and returns a sentence when a
    child keeps failing; `drain()` hands over the lines to show on the console."""

    def __init__(
        self,
        children: list[tuple[str, subprocess.Popen[bytes]]],
        launchers: dict[str, Launch],
        policy: RestartPolicy,
        note: Callable[[str, str], None] = lambda name, line: None,
        last_words: Callable[[str], str] = lambda name: "",
    ) -> None:
        self.children, self.launchers, self.policy, self.note = children, launchers, policy, note
        self.last_words = last_words  # why a child that exited with an error did: its log's last line
        self.failures: dict[str, list[float]] = {}  # when each child failed, within the window
        self.due: dict[str, float] = {}  # children waiting to be started again, and when
        self._lines: list[str] = []

    def _say(self, name: str, line: str) -> None:
        self._lines.append(line)
        self.note(name, line)

    def drain(self) -> list[str]:
        lines, self._lines = self._lines, []
        return lines

    def _failed(self, name: str, now: float, what: str) -> str | None:
        """Count a failure; schedule the restart, or say why everything must stop."""
        recent = [at for at in self.failures.get(name, []) if at > now - self.policy.window_s] + [now]
        self.failures[name] = recent
        if len(recent) >= self.policy.max_failures:
            line = (
                f"lcp dev: {name} {what}: {len(recent)} failures in {self.policy.window_s:g} s, so it is "
                "not restarted again and everything stops"
            )
            self.note(name, line)
            return line
        delay = self.policy.delay(len(recent))
        self._say(name, f"lcp dev: {name} {what}; restarting it in {delay:g} s (failure {len(recent)})")
        self.due[name] = now + delay
        return None

    def step(self, now: float) -> str | None:
        for name, process in self.children:
            code = process.poll()
            if code is not None and name not in self.due:
                what = _exit_said(code)
                if code > 0 and (words := self.last_words(name)):
                    what += f" ({words})"  # e.g. its port taken: "exited with code 1" alone said nothing
                if given_up := self._failed(name, now, what):
                    return given_up
        for name, at in list(self.due.items()):
            if now < at:
                continue
            del self.due[name]
            try:
                process = self.launchers[name]()
            except Exception as err:  # e.g. its port still taken: one more failure, retried later
                if given_up := self._failed(name, now, f"could not be started again ({err})"):
                    return given_up
                continue
            index = next(i for i, (child, _) in enumerate(self.children) if child == name)
            self.children[index] = (name, process)
            self._say(name, f"lcp dev: {name} restarted (pid {process.pid})")
        return None


class Stack:
    """The child processes of `lcp dev`, started in order and stopped in reverse. `split`: the production
    shape (PostgreSQL, API processes behind HAProxy, the conversation worker a process of its own)."""

    def __init__(self, home: Path, ports: Ports, split: bool = False) -> None:
        # The ports asked for are not bound yet: the free ones picked below must not be among them.
        _given.update(port for port in astuple(ports) if isinstance(port, int))
        if not ports.llm_replicas:
            ports = replace(ports, llm_replicas=tuple(free_port() for _ in range(FLEET_REPLICAS - 1)))
        if split and not ports.api_processes:
            ports = replace(ports, api_processes=tuple(free_port() for _ in range(SPLIT_API_PROCESSES)))
        if split and not ports.postgres:
            ports = replace(ports, postgres=free_port())
        self.home, self.ports, self.split = home, ports, split
        self.logs = home / "logs"
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.launchers: dict[str, Launch] = {}
        self.stop_signals: dict[str, signal.Signals] = {}  # a child that stops on another than SIGTERM
        self.api_key = ""
        self.postgres = LocalPostgres(home / "postgres", ports.postgres, ports.host) if split else None
        self.history_said = ""  # what seeding Prometheus with history did, for the console

    def database_url(self) -> str:
        """The read model: the stack's PostgreSQL (split), else the settings' (a SQLite file by default)."""
        return self.postgres.url if self.postgres else Settings(home=self.home).resolved_database_url()

    def api_process_urls(self) -> list[str]:
        return [f"http://{self.ports.host}:{port}" for port in self.ports.api_processes]

    def _spawn(self, name: str, *args: str) -> None:
        env = self.child_env()
        self._add(name, lambda: spawn_lcp(args, env, self.logs / f"{name}.log"))

    def replica_ports(self) -> tuple[int, ...]:
        return (self.ports.llm, *self.ports.llm_replicas)

    def child_env(self) -> dict[str, str]:
        """The environment every lcp child of this stack runs with: the dev models policy (sim-llama-8b
        discovered from the lab) unless LCP_MODELS_FILE names another."""
        models = (
            {} if os.environ.get("LCP_MODELS_FILE") else {"LCP_MODELS_FILE": str(self.home / "models.yaml")}
        )
        # Both spellings: DATABASE_URL is read first, so the caller's own would win over ours.
        database = (
            {"DATABASE_URL": self.postgres.url, "LCP_DATABASE_URL": self.postgres.url}
            if self.postgres
            else {}
        )
        return lcp_env(
            self.home,
            f"{self.ports.host}:{self.ports.temporal}",
            self.ports.urls()["llm"],
            LCP_API__HOST=self.ports.host,
            LCP_API__PORT=str(self.ports.api),
            LCP_ROLLOUT__PROMETHEUS_URL=self.ports.urls()["prometheus"],
            LCP_EGRESS__PROBE_ALLOW=demo_probe_allow(self.ports.host, self.ports.workload),
            # The chaos catalogue's probes check the lab's workload where this stack runs it.
            LCP_CHAOS__WORKLOAD_URL=self.ports.urls()["workload"],
            **models,
            **database,
        )

    def _add(self, name: str, launch: Launch) -> None:
        """Start a child and remember how, so that supervision can start it again."""
        self.launchers[name] = launch
        self.children.append((name, launch()))

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        # Restarted, Temporal opens the same SQLite file: workflows carry on where they were.
        self._add(
            "temporal",
            lambda: start_dev_server(
                self.home / "temporal.db",
                self.ports.temporal,
                self.ports.ui,
                log_file=self.logs / "temporal.log",
            ),
        )
        if self.postgres is not None:
            self._start_postgres(self.postgres)
        write_dev_models_policy(self.home / "models.yaml")
        for index, port in enumerate(self.replica_ports()):
            name = "llm-simulator" if index == 0 else f"llm-simulator-{index}"
            self._spawn(name, "sim", "--host", self.ports.host, "--port", str(port))
        self._wait_tcp("temporal", self.ports.temporal)
        database_url = self.database_url()
        asyncio.run(upgrade_database(database_url))
        self.api_key = asyncio.run(dev_admin_key(database_url, self.home))
        ports = self.ports
        replicas = [arg for port in self.ports.llm_replicas for arg in ("--llm-replica-port", str(port))]
        self._spawn(
            "lab",
            "lab", "serve", "--home", str(self.home), "--host", ports.host,
            "--kube-port", str(ports.kube), "--workload-port", str(ports.workload),
            "--llm-replica-port", str(ports.llm), *replicas,
        )  # fmt: skip
        # The API discovers sim-llama-8b's replicas through the kubeconfig the lab writes as it starts.
        self._wait_http("lab", f"{ports.urls()['workload']}/healthz")
        if self.split:
            self._start_api_processes()
        else:
            # The conversation worker runs inside the API process, so streamed replies reach the
            # client through memory (a separate worker needs PostgreSQL's LISTEN/NOTIFY for that).
            self._spawn("api", "api", "--worker", "--host", self.ports.host, "--port", str(self.ports.api))
        self.seed_history()
        try:
            self._add(
                "prometheus",
                lambda: start_prometheus(
                    self.scrape_targets(),
                    self.home / "prometheus",
                    host=ports.host,
                    port=ports.prometheus,
                    log_file=self.logs / "prometheus.log",
                    retention=PROMETHEUS_RETENTION,
                    # every second: a rollout at --time-scale 0.1 judges 10 s windows, ten scrapes each
                    # (at 5 s, two: a p99 of one interval's requests rolled healthy releases back)
                    scrape_interval_s=1,
                ),
            )
        except (FileNotFoundError, PrometheusStartError) as err:
            raise StackError(str(err)) from None
        urls = ports.urls()
        for port in self.replica_ports():
            self._wait_http("llm-simulator", f"http://{ports.host}:{port}/healthz")
        self._wait_http("temporal", urls["ui"])
        for index, url in enumerate(self.api_process_urls()):
            self._wait_http(f"api-{index}", f"{url}/readyz")
        self._wait_http("api", f"{urls['api']}/readyz")
        self._wait_http("prometheus", f"{urls['prometheus']}/-/ready")
        # Canary rollouts and predictive scaling act on the lab through the kubeconfig it has written by now.
        self._spawn("ops-worker", "worker", "--queue", "ops", "--metrics-port", str(ports.ops_metrics))
        self._spawn("forecasting-worker", "worker", "--queue", "forecasting")

    def _start_postgres(self, postgres: LocalPostgres) -> None:
        """The read model's PostgreSQL, its cluster made on first use (kept across restarts)."""
        try:
            postgres.init()
        except (OSError, subprocess.CalledProcessError) as err:
            said = (
                err.stderr.decode(errors="replace").strip()
                if isinstance(err, subprocess.CalledProcessError)
                else err
            )
            raise StackError(f"cannot make PostgreSQL's cluster in {postgres.data}: {said}") from None
        self.stop_signals["postgres"] = signal.SIGINT  # a fast shutdown: SIGTERM waits for every session
        self._add("postgres", lambda: postgres.spawn(self.logs / "postgres.log"))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not postgres.ready():
            self._check_alive()
            if time.monotonic() > deadline:
                raise StackError(f"PostgreSQL did not accept connections in {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.2)

    def _start_api_processes(self) -> None:
        """The split shape's API: processes without a worker (replies reach them from the conversation
        worker through PostgreSQL's LISTEN/NOTIFY), HAProxy in front of them on the API port."""
        host = self.ports.host
        for index, port in enumerate(self.ports.api_processes):
            self._spawn(f"api-{index}", "api", "--host", host, "--port", str(port))
        self._add(
            "balancer",
            lambda: start_haproxy(
                self.home / "balancer",
                host,
                self.ports.api,
                self.ports.api_processes,
                self.logs / "balancer.log",
            ),
        )
        self._spawn("conversations-worker", "worker", "--queue", "conversations")

    def seed_history(self) -> None:
        """Before a fresh Prometheus first starts: the demo service's past traffic (lab/history.py), as
        the lab workload's own series, so that predictive scaling forecasts at once. Not fatal: without
        it, forecasts wait for hours of scraping."""
        from lab.history import HISTORY_S, HistoryError, backfill, is_fresh, openmetrics
        from lab.server import DEMO_NAMESPACE, DEMO_SERVICE, traffic_source

        tsdb = self.home / "prometheus" / "tsdb"
        if not is_fresh(tsdb):
            return
        labels = {
            "job": WORKLOAD_JOB,
            "instance": f"{self.ports.host}:{self.ports.workload}",
            "namespace": DEMO_NAMESPACE,
            "service": DEMO_SERVICE,
            "version": "v1",
            **SIMULATED,
        }
        try:
            backfill(tsdb, openmetrics(traffic_source(None), labels, time.time()))
        except (HistoryError, OSError, subprocess.SubprocessError) as err:
            self.history_said = f"prometheus: no history seeded ({err}); forecasts wait for hours of scraping"
        else:
            self.history_said = (
                f"prometheus: {HISTORY_S / 3600:.0f} h of simulated history of "
                f"{DEMO_NAMESPACE}/{DEMO_SERVICE} seeded, so `lcp scaling` forecasts from its first decision"
            )
        self._note("prometheus", f"lcp dev: {self.history_said}")

    def scrape_targets(self) -> list[ScrapeTarget]:
        """What Prometheus scrapes: the lab's workload and the LLM simulator (both simulated) and lcp."""
        host, ports = self.ports.host, self.ports
        token = Settings(home=self.home).metrics.token  # LCP_METRICS__TOKEN: then the API's /metrics needs it
        bearer = token.get_secret_value() if token else None
        return [
            ScrapeTarget(WORKLOAD_JOB, f"{host}:{ports.workload}", labels=SIMULATED),
            *(
                ScrapeTarget(f"llm-simulator-{i}", f"{host}:{port}", labels=SIMULATED)
                for i, port in enumerate(self.replica_ports())
            ),
            # Split: each API process, not the balancer in front of them (one job, an instance each).
            *(
                ScrapeTarget("lcp-api", f"{host}:{port}", bearer_token=bearer)
                for port in (ports.api_processes or (ports.api,))
            ),
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

    def supervise(self, echo: Callable[[str], None], policy: "RestartPolicy | None" = None) -> str:
        """Watch the children until a signal asks us to stop (returns ''): a child that exits is started
        again after a backoff, said on the console and in logs/dev.log; one that keeps failing (see
        RestartPolicy) ends the watch, and the returned sentence says why."""
        stop = {"asked": False}

        def _ask(*_: object) -> None:
            stop["asked"] = True

        for sig in STOP_SIGNALS:
            signal.signal(sig, _ask)
        supervisor = Supervisor(
            self.children, self.launchers, policy or RestartPolicy(), self._note, self.last_words
        )
        while not stop["asked"]:
            given_up = supervisor.step(time.monotonic())
            for line in [*supervisor.drain(), *([given_up] if given_up else [])]:
                echo(line)
            if given_up:
                return given_up
            time.sleep(0.2)
        return ""

    def last_words(self, name: str) -> str:
        """The last line a child wrote to its log (an exception's, typically) and where the rest is, with
        control characters escaped and cut to 200 characters; '' when there is none."""
        log = self.logs / f"{name}.log"
        try:
            with open(log, "rb") as source:
                source.seek(max(0, source.seek(0, os.SEEK_END) - 4096))
                tail = source.read().decode(errors="replace")
        except OSError:
            return ""
        said = [line.strip() for line in tail.splitlines() if line.strip() and "lcp dev: " not in line]
        if not said:
            return ""
        last = plain(said[-1])
        return f"{last[:200]}{'…' if len(last) > 200 else ''}; see {log}"

    def _note(self, name: str, line: str) -> None:
        """A supervision line, in logs/dev.log and in the child's own log (where its restart shows)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        for log in (self.logs / "dev.log", self.logs / f"{name}.log"):
            try:
                with open(log, "a", encoding="utf-8") as out:
                    out.write(f"{stamp} {line}\n")
            except OSError:
                pass

    def stop(self) -> None:
        for name, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(self.stop_signals.get(name, signal.SIGTERM))
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


def run_dev(home: Path, ports: Ports, echo: Callable[[str], None], split: bool = False) -> int:
    """Start the stack, announce it, supervise it; returns the process exit code."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    check_ports_free(ports)
    stack = Stack(home, ports, split)
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
    info = {
        **urls,
        "llm_replicas": [f"http://{ports.host}:{port}" for port in stack.replica_ports()],
        "kubeconfig": str(home / "kubeconfig"),
        "api_key": stack.api_key,
        **(
            {"api_processes": stack.api_process_urls(), "database_url": stack.database_url()} if split else {}
        ),
    }
    dev_json = home / "dev.json"
    dev_json.write_text(json.dumps(info, indent=2) + "\n")
    dev_json.chmod(0o600)  # it holds the admin key
    echo(
        f"lcp ready: api {urls['api']}  docs {urls['docs']}  temporal-ui {urls['ui']}  "
        f"llm {urls['llm']} (simulated)  temporal {urls['temporal']}  "
        f"kube {urls['kube']} (simulated)  prometheus {urls['prometheus']}"
    )
    echo(f"admin API key (tenant default) in {dev_json}; state in {home}, logs in {stack.logs}")
    if split:
        processes = " ".join(stack.api_process_urls())
        echo(f"split: api {urls['api']} is HAProxy in front of the API processes {processes}")
        echo(f"split: the read model is PostgreSQL: DATABASE_URL={stack.database_url()}")
    echo(f"lab: KUBECONFIG={home / 'kubeconfig'} reaches the simulated cluster; `lcp lab status` shows it")
    if stack.history_said:
        echo(stack.history_said)
    echo("Ctrl-C stops everything; a child that exits is restarted")
    given_up = stack.supervise(echo)
    stack.stop()
    if given_up:
        echo(f"lcp dev: everything was stopped: see {stack.logs}")
        return 1
    echo("lcp dev: stopped")
    return 0
