"""Runs a real Prometheus for the lab, with a config lcp generates (queries: activities/prometheus.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from policies.errors import LcpError

DEBIAN_BINARY = Path("/usr/bin/prometheus")
CONFIG_NAME = "prometheus.yml"
LOG_NAME = "prometheus.log"
LAB_NAME = "lcp-lab"
# Labels for a scrape target that the lab simulates (workload simulator, LLM simulator, ...).
SIMULATED = {"simulated": "true"}


class PrometheusStartError(LcpError, RuntimeError):
    """Prometheus could not be started, did not become ready, or refused a config reload."""


def prometheus_binary() -> str:
    """The `prometheus` binary on PATH, else Debian's /usr/bin/prometheus."""
    found = shutil.which("prometheus")
    if found:
        return found
    if DEBIAN_BINARY.exists():
        return str(DEBIAN_BINARY)
    raise FileNotFoundError("the `prometheus` binary is missing: apt-get install prometheus (Debian package)")


@dataclass(frozen=True)
class ScrapeTarget:
    """One endpoint for Prometheus to scrape: `address` is host:port, `labels` are added to its series,
    `bearer_token` is sent to it (lcp's API with LCP_METRICS__TOKEN set)."""

    job: str
    address: str
    metrics_path: str = "/metrics"
    labels: dict[str, str] = field(default_factory=dict)
    bearer_token: str | None = field(default=None, repr=False)


def duration(seconds: float) -> str:
    """A Prometheus duration string: 1 -> "1s", 0.5 -> "500ms"."""
    if seconds <= 0:
        raise ValueError(f"a Prometheus interval must be positive, got {seconds}")
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def render_config(
    targets: Sequence[ScrapeTarget],
    scrape_interval_s: float = 5.0,
    evaluation_interval_s: float | None = None,
    lab: str = LAB_NAME,
) -> str:
    """Prometheus YAML config: one scrape job per `job`, one static group per target with its labels."""
    jobs: dict[str, dict[str, Any]] = {}
    tokens: dict[str, str | None] = {}
    for target in targets:
        job = jobs.setdefault(
            target.job,
            {"job_name": target.job, "metrics_path": target.metrics_path, "static_configs": []},
        )
        if job["metrics_path"] != target.metrics_path:
            raise ValueError(f"job {target.job!r} has targets with different metrics paths")
        if tokens.setdefault(target.job, target.bearer_token or None) != (target.bearer_token or None):
            raise ValueError(f"job {target.job!r} has targets with different bearer tokens")
        if target.bearer_token:
            job["authorization"] = {"type": "Bearer", "credentials": target.bearer_token}
        group: dict[str, Any] = {"targets": [target.address]}
        if target.labels:
            group["labels"] = {str(k): str(v) for k, v in target.labels.items()}
        job["static_configs"].append(group)
    config = {
        "global": {
            "scrape_interval": duration(scrape_interval_s),
            "evaluation_interval": duration(evaluation_interval_s or scrape_interval_s),
            "external_labels": {"lab": lab},
        },
        "scrape_configs": list(jobs.values()),
    }
    return str(yaml.safe_dump(config, sort_keys=False))


def write_config(
    path: Path,
    targets: Sequence[ScrapeTarget],
    scrape_interval_s: float = 5.0,
    evaluation_interval_s: float | None = None,
    lab: str = LAB_NAME,
) -> Path:
    """Render the config for `targets` into `path` (then `reload` a running Prometheus to apply it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)  # it may hold a scrape token: readable by its owner only
    os.chmod(path, 0o600)
    path.write_text(render_config(targets, scrape_interval_s, evaluation_interval_s, lab))
    return path


def prometheus_url(host: str, port: int) -> str:
    return f"http://{host}:{port}"


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port (Prometheus would fail to bind it)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def start_prometheus(
    config: Path | Sequence[ScrapeTarget],
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 9090,
    log_file: Path | None = None,
    retention: str = "2h",
    scrape_interval_s: float = 5.0,
    lab: str = LAB_NAME,
) -> subprocess.Popen[bytes]:
    """Start Prometheus as a child process; the caller `wait_ready`s it and `stop_prometheus`es it.

    `config` is a config file, or targets to render into `data_dir/prometheus.yml`. Samples go to
    `data_dir/tsdb`, the log to `log_file` (default `data_dir/prometheus.log`).
    """
    if port_in_use(host, port):
        raise PrometheusStartError(f"cannot start prometheus: port {port} on {host} is already in use")
    data_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(config, Path):
        config_file = config
    else:
        config_file = write_config(data_dir / CONFIG_NAME, config, scrape_interval_s, lab=lab)
    args = [
        prometheus_binary(),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data_dir / 'tsdb'}",
        f"--storage.tsdb.retention.time={retention}",
        f"--web.listen-address={host}:{port}",
        "--web.enable-lifecycle",
    ]
    log_file = log_file or data_dir / LOG_NAME
    with open(log_file, "ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def log_tail(log_file: Path | None) -> str:
    """The last error line of a Prometheus log, else its last lines, as one line."""
    if log_file is None or not log_file.exists():
        return "(no log)"
    lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "level=error" in line]
    return errors[-1] if errors else " | ".join(lines[-3:]) or "(empty log)"


def wait_ready(
    url: str,
    timeout_s: float = 30.0,
    process: subprocess.Popen[bytes] | None = None,
    log_file: Path | None = None,
) -> None:
    """Poll `url/-/ready` until Prometheus answers 200; fail early if `process` exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            code = process.returncode
            raise PrometheusStartError(f"prometheus exited with code {code}: {log_tail(log_file)}")
        try:
            if httpx.get(f"{url}/-/ready", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise PrometheusStartError(f"prometheus at {url} not ready in {timeout_s}s: {log_tail(log_file)}")
        time.sleep(0.05)


def reload(url: str, timeout_s: float = 10.0) -> None:
    """Make Prometheus re-read its config file (needs --web.enable-lifecycle)."""
    try:
        response = httpx.post(f"{url}/-/reload", timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise PrometheusStartError(f"cannot reach prometheus at {url} to reload: {exc}") from exc
    if response.status_code != 200:
        raise PrometheusStartError(f"prometheus refused the new config: {response.text.strip()}")


def stop_prometheus(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM (Prometheus shuts down cleanly), then SIGKILL after `timeout_s`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
