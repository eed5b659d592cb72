"""HAProxy (Debian's package) as the load balancer in front of `lcp dev --split`'s API processes: round
robin, a process taken out while its /readyz fails, and the process that answered named in a header."""

import csv
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

# The response header naming the API process that answered (api-0, api-1, ...).
SERVED_BY = "X-Lcp-Api-Process"
STATS_SOCKET = "haproxy.sock"  # beside the config: HAProxy's runtime API, read-only (level user)


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if not found:
        raise FileNotFoundError(
            "HAProxy is not installed (lcp dev --split balances its API processes with it): "
            "`bash tests/system-deps.sh haproxy` installs Debian's package"
        )
    return found


def haproxy_config(host: str, port: int, backends: Sequence[int], stats_socket: Path | None = None) -> str:
    """The config: one frontend on host:port, the API processes on `backends` (their ports on host).

    Only a connection that failed is sent to another process (haproxy's default retry-on: the request
    never reached the first), so a turn is never posted twice; a stream may last as long as a reply
    takes (the server and client timeouts), and a process is out after two failed checks a second apart.
    """
    servers = "\n".join(
        f"  server api-{index} {host}:{backend} check" for index, backend in enumerate(backends)
    )
    stats = f"\n  stats socket {stats_socket} mode 600 level user" if stats_socket else ""
    return f"""# Written by `lcp dev --split`: HAProxy in front of the API processes.
global
  maxconn 4096{stats}

defaults
  mode http
  option redispatch
  retries 2
  timeout connect 5s
  timeout http-request 30s
  timeout client 10m
  timeout server 10m
  timeout tunnel 10m

frontend api
  bind {host}:{port}
  default_backend api_processes

backend api_processes
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server inter 1s fall 2 rise 1
  http-response set-header {SERVED_BY} %[srv_name]
{servers}
"""


def start_haproxy(
    config_dir: Path, host: str, port: int, backends: Sequence[int], log_file: Path
) -> subprocess.Popen[bytes]:
    """Write the config to config_dir/haproxy.cfg and run HAProxy in the foreground as a child."""
    binary = haproxy_binary()
    config_dir.mkdir(parents=True, exist_ok=True)
    config = config_dir / "haproxy.cfg"
    config.write_text(haproxy_config(host, port, backends, config_dir / STATS_SOCKET))
    with open(log_file, "ab") as out:
        return subprocess.Popen(
            [binary, "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def requests_in_progress(config_dir: Path) -> dict[str, int]:
    """The requests each API process is answering now (api-0: 1, ...), from HAProxy's runtime API."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(config_dir / STATS_SOCKET))
        sock.sendall(b"show stat\n")
        said = b""
        while chunk := sock.recv(65536):
            said += chunk
    rows = csv.DictReader(said.decode().removeprefix("# ").splitlines())
    return {
        row["svname"]: int(row["scur"] or 0)
        for row in rows
        if row["pxname"] == "api_processes" and row["svname"] not in ("FRONTEND", "BACKEND")
    }
