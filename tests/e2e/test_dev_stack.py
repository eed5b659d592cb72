"""`lcp dev` as a user runs it: ready line, dev.json, Temporal UI, Ctrl-C, restart, busy port."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from kubernetes import client, config

from tests.http_server import free_port
from tests.waiting import eventually_sync

READY_TIMEOUT_S = 120


class DevStack:
    def __init__(self, home: Path, ports: dict[str, int]) -> None:
        self.home, self.ports = home, ports
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []

    def args(self) -> list[str]:
        return [
            sys.executable, "-m", "cli", "dev", "--home", str(self.home),
            "--api-port", str(self.ports["api"]), "--temporal-port", str(self.ports["temporal"]),
            "--ui-port", str(self.ports["ui"]), "--llm-port", str(self.ports["llm"]),
            "--kube-port", str(self.ports["kube"]), "--workload-port", str(self.ports["workload"]),
            "--prometheus-port", str(self.ports["prometheus"]),
            "--ops-metrics-port", str(self.ports["ops_metrics"]),
        ]  # fmt: skip

    def start(self) -> str:
        """Start `lcp dev` and return its `lcp ready:` line."""
        self.lines = []
        self.process = subprocess.Popen(
            self.args(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        ready = threading.Event()

        def _read() -> None:
            assert self.process and self.process.stdout
            for line in self.process.stdout:
                self.lines.append(line)
                if line.startswith("lcp ready:"):
                    ready.set()

        threading.Thread(target=_read, daemon=True).start()
        if not ready.wait(READY_TIMEOUT_S):
            self.stop()
            pytest.fail("lcp dev never printed `lcp ready:`; output:\n" + "".join(self.lines))
        return next(line for line in self.lines if line.startswith("lcp ready:"))

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=60)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DevStack]:
    ports = {
        name: free_port()
        for name in ("api", "temporal", "ui", "llm", "kube", "workload", "prometheus", "ops_metrics")
    }
    dev = DevStack(tmp_path / "state", ports)
    yield dev
    if dev.process and dev.process.poll() is None:
        dev.stop()


def test_dev_runs_resumes_and_stops_cleanly(stack: DevStack, tmp_path: Path) -> None:
    ready = stack.start()
    info = json.loads((stack.home / "dev.json").read_text())
    assert {"api", "temporal", "ui", "llm", "api_key", "kube", "kubeconfig", "workload", "prometheus"} <= set(
        info
    )
    for key in ("api", "ui", "llm", "kube", "prometheus"):
        assert info[key] in ready
    assert info["api_key"] not in ready  # the key is in dev.json (mode 0600), not on the screen
    assert (stack.home / "dev.json").stat().st_mode & 0o777 == 0o600

    auth = {"Authorization": f"Bearer {info['api_key']}"}
    assert httpx.get(f"{info['api']}/v1/conversations").status_code == 401
    api = httpx.Client(base_url=info["api"], timeout=60, headers=auth)
    created = api.post("/v1/conversations", json={"model": "sim-zero", "message": {"content": "remember me"}})
    assert created.status_code == 201, created.text
    conversation_id = created.json()["conversation"]["id"]
    assert httpx.get(f"{info['llm']}/models").json()["data"][0]["owned_by"] == "lcp-simulator"

    # The lab: the official client reaches the simulated cluster through the kubeconfig dev wrote
    apps = client.AppsV1Api(config.new_client_from_config(config_file=info["kubeconfig"]))
    assert "chat-api" in [
        d.metadata and d.metadata.name for d in apps.list_namespaced_deployment("lab").items
    ]

    def lab_status() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli", "lab", "status", "--home", str(stack.home)],
            capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip

    status = eventually_sync(  # Prometheus discovers its scrape targets a few seconds after it starts
        lab_status,
        until=lambda status: "lab-workload" in status.stdout,
        what="`lcp lab status` to list the lab-workload target",
        within=60,
        interval=0.5,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert "SIMULATED" in status.stdout and "chat-api" in status.stdout and "lab-workload" in status.stdout

    # A canary rollout of the lab's demo service, through the REST API and the ops worker dev started.
    steps = [{"kind": "set_weight", "percent": 50}, {"kind": "pause", "duration_s": 1}]
    body = {"namespace": "lab", "service": "chat-api", "image": "lab.local/chat-api:v2", "version": "v2"}
    started = api.post(
        "/v1/rollouts", json={**body, "steps": [*steps, {"kind": "set_weight", "percent": 100}]}
    )
    assert started.status_code == 201, started.text
    rollout = eventually_sync(
        lambda: api.get("/v1/rollouts/lab/chat-api").json(),
        until=lambda rollout: rollout["phase"] not in ("Progressing", "Paused"),
        what="the rollout to finish",
        within=60,
        interval=0.5,
    )
    assert rollout["phase"] == "Succeeded", rollout["message"]
    template = apps.read_namespaced_deployment("chat-api", "lab").spec.template
    assert template.metadata is not None and template.metadata.labels is not None
    assert template.metadata.labels["lcp.dev/version"] == "v2"

    if shutil.which("chromium"):
        _ui_lists_workflow(info["ui"], f"conversation/default/{conversation_id}", "Conversation", tmp_path)
        # Admins find rollouts by service and phase: the search attributes filter the UI's list.
        query = "LcpService = 'lab/chat-api' AND LcpPhase = 'Succeeded'"
        _ui_lists_workflow(info["ui"], "rollout/lab/chat-api", "CanaryRollout", tmp_path, query)
    elif os.environ.get("LCP_REQUIRE_CHROMIUM"):
        pytest.fail("chromium is required (LCP_REQUIRE_CHROMIUM) to look at the Temporal UI")

    # A second `lcp dev` on the same ports is refused in one clear line, not a traceback.
    clash = subprocess.run(stack.args(), capture_output=True, text=True, timeout=60)
    assert clash.returncode == 1
    assert "already in use" in clash.stderr and "Traceback" not in clash.stderr
    assert len(clash.stderr.strip().splitlines()) == 1

    assert stack.stop() == 0
    for name, port in stack.ports.items():
        assert not _port_open(port), f"{name} still listening on {port} after Ctrl-C"

    stack.start()  # same state dir: the conversation and its workflow are still there
    assert json.loads((stack.home / "dev.json").read_text())["api_key"] == info["api_key"]  # same key
    api = httpx.Client(base_url=info["api"], timeout=60, headers=auth)
    detail = api.get(f"/v1/conversations/{conversation_id}")
    assert detail.status_code == 200
    assert [m["content"] for m in detail.json()["messages"]][0] == "remember me"
    follow_up = api.post(f"/v1/conversations/{conversation_id}/messages", json={"content": "again"})
    assert follow_up.status_code == 200, follow_up.text
    assert api.get(f"/v1/conversations/{conversation_id}").json()["conversation"]["message_count"] == 4
    assert stack.stop(signal.SIGTERM) == 0
    for name, port in stack.ports.items():
        assert not _port_open(port), f"{name} still listening on {port} after SIGTERM"


def _ui_lists_workflow(
    ui_url: str, workflow_id: str, workflow_type: str, tmp_path: Path, query: str | None = None
) -> None:
    """Open the Temporal UI's workflow list (filtered by `query`) in headless Chromium, as an admin would."""
    url = f"{ui_url}/namespaces/default/workflows" + (f"?query={quote(query)}" if query else "")
    base = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=10000",
        "--window-size=1400,900",
    ]  # fmt: skip

    def listed() -> str:
        dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=90).stdout
        assert workflow_id in dom, f"a page of {len(dom)} characters without it"
        return dom

    # visibility is eventually consistent: allow a few tries
    dom = eventually_sync(listed, what=f"the Temporal UI to list {workflow_id}", within=60, interval=1)
    assert workflow_type in dom  # the workflow type column
    if shots := os.environ.get("LCP_SCREENSHOT_DIR"):  # to look at the page yourself
        shot = Path(shots) / f"temporal-ui-{workflow_type.lower()}.png"
        subprocess.run([*base, f"--screenshot={shot}", url], capture_output=True, timeout=90)
