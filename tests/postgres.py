"""Throwaway PostgreSQL clusters for tests: made with initdb on a free port, started, stopped (or frozen,
to stand for a database that no longer answers) and removed."""

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from store.postgres_server import pg_bin
from tests.http_server import free_port


class PostgresCluster:
    def __init__(self, initdb: str, pg_ctl: str, data: Path) -> None:
        self._pg_ctl, self._data = pg_ctl, data
        self._as_user: list[str] = []
        if os.geteuid() == 0:  # postgres refuses to run as root
            shutil.chown(data, "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self.url = f"postgresql+asyncpg://lcp@127.0.0.1:{self.port}/postgres"
        subprocess.run(
            [*self._as_user, initdb, "-D", str(data / "db"), "-A", "trust", "-U", "lcp"],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self._data} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [*self._as_user, self._pg_ctl, "-D", str(self._data / "db"), "-l", str(self._data / "log")]
            + ["-w", "start", "-o", options],
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        if (self._data / "db" / "postmaster.pid").exists():
            self.freeze(False)  # a frozen server would not hear the request to stop
        subprocess.run(
            [*self._as_user, self._pg_ctl, "-D", str(self._data / "db"), "-m", "immediate", "stop"],
            capture_output=True,
        )

    def freeze(self, frozen: bool = True) -> None:
        """Stop (SIGSTOP) or resume (SIGCONT) the server and its backends: connections stay open and
        nothing answers on them, as when the database hangs or the network drops its packets."""
        postmaster = int((self._data / "db" / "postmaster.pid").read_text().split()[0])
        children = [
            int(stat.parent.name)
            for stat in Path("/proc").glob("[0-9]*/stat")
            if _parent_pid(stat) == postmaster
        ]
        for pid in [postmaster, *children]:
            os.kill(pid, signal.SIGSTOP if frozen else signal.SIGCONT)


def _parent_pid(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None  # the process ended meanwhile


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A started cluster, removed at the end; the test is skipped where PostgreSQL is not installed
    (and fails under LCP_REQUIRE_POSTGRES)."""
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        if os.environ.get("LCP_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is required (LCP_REQUIRE_POSTGRES) but initdb/pg_ctl are missing")
        pytest.skip("PostgreSQL is not installed: `make test` installs it")
    data = Path(tempfile.mkdtemp(prefix="lcp-pg-"))
    cluster = PostgresCluster(initdb, pg_ctl, data)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(data, ignore_errors=True)
