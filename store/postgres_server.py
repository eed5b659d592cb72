"""A PostgreSQL server of lcp's own on one machine (`lcp dev --split`, the tests): Debian's binaries, a
cluster made with initdb on first use, the server run as a child process on a loopback port."""

import os
import shutil
import subprocess
from pathlib import Path

SERVER_USER = "postgres"  # PostgreSQL refuses to run as root: as root, its files and process are this user's


def pg_bin(name: str) -> str | None:
    """A PostgreSQL program (initdb, postgres, pg_ctl): on PATH, else the newest in Debian's folders."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def _server_user() -> str | None:
    """The user the server runs as: ours, or SERVER_USER when we are root."""
    return SERVER_USER if os.geteuid() == 0 else None


class LocalPostgres:
    """One cluster in `data` (the database files in data/db, the socket in data itself) that listens on
    `host:port`, reached as user `lcp` without a password (trust: loopback only, for one machine)."""

    def __init__(self, data: Path, port: int, host: str = "127.0.0.1") -> None:
        self.data, self.port, self.host = data, port, host
        self.url = f"postgresql+asyncpg://lcp@{host}:{port}/postgres"

    def _programs(self) -> tuple[str, str]:
        initdb, postgres = pg_bin("initdb"), pg_bin("postgres")
        if not (initdb and postgres):
            raise FileNotFoundError(
                "PostgreSQL is not installed (no initdb/postgres): `bash tests/system-deps.sh postgresql` "
                "installs Debian's package"
            )
        return initdb, postgres

    def init(self) -> None:
        """Make the cluster unless it is there already (a restarted stack keeps its data)."""
        initdb, _ = self._programs()
        self.data.mkdir(parents=True, exist_ok=True)
        user = _server_user()
        if user:
            try:
                shutil.chown(self.data, user)
            except LookupError:
                raise FileNotFoundError(f"running as root, PostgreSQL needs the user {user!r}") from None
            for folder in self.data.resolve().parents:
                if not folder.stat().st_mode & 0o001:
                    raise PermissionError(
                        f"PostgreSQL runs as {user!r}, which cannot reach {self.data}: {folder} is closed "
                        f"to other users (chmod o+x {folder}, or choose a state folder elsewhere)"
                    )
        if (self.data / "db" / "PG_VERSION").exists():
            return
        subprocess.run(
            [initdb, "-D", str(self.data / "db"), "-A", "trust", "-U", "lcp", "-E", "UTF8"],
            check=True,
            capture_output=True,
            user=user,
            cwd=self.data,
        )

    def ready(self) -> bool:
        """Whether the server accepts connections (pg_isready: not while it starts or recovers)."""
        pg_isready = pg_bin("pg_isready")
        if pg_isready is None:
            raise FileNotFoundError("PostgreSQL's pg_isready is missing")
        checked = subprocess.run(
            [pg_isready, "-q", "-h", self.host, "-p", str(self.port), "-t", "2"], capture_output=True
        )
        return checked.returncode == 0

    def server_args(self) -> list[str]:
        """The server's command line: fsync off (a dev and test database, rebuilt at will)."""
        _, postgres = self._programs()
        return [
            postgres, "-D", str(self.data / "db"), "-p", str(self.port), "-k", str(self.data),
            "-c", f"listen_addresses={self.host}", "-c", "fsync=off", "-c", "max_connections=200",
        ]  # fmt: skip

    def spawn(self, log_file: Path) -> subprocess.Popen[bytes]:
        """Start the server in the foreground as a child process (stop it with SIGINT: a fast shutdown,
        which ends the sessions still open; SIGTERM waits for them)."""
        with open(log_file, "ab") as out:
            return subprocess.Popen(
                self.server_args(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                user=_server_user(),
                cwd=self.data,
            )
