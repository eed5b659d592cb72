"""Runs an ASGI app under a real uvicorn server in a background thread, for tests."""

import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn


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
    for _ in range(1000):
        port = random.randint(20000, _ephemeral_low() - 1)
        if port in _given:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError("no free TCP port between 20000 and the ephemeral range")


@contextmanager
def serve_in_thread(app: object, port: int | None = None) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 and yield its base URL until the block ends."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"test server on port {port} did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
