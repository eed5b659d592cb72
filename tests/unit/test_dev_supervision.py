"""`lcp dev` restarts a child that exits, with backoff, says so, and stops everything only when a child
keeps failing (it used to stop the whole stack when any child exited, an OOM-killed worker included)."""

import itertools
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli.dev import Ports, RestartPolicy, Stack, Supervisor


class FakeChild:
    """Enough of a Popen: running until `exit(code)`."""

    count = 0

    def __init__(self) -> None:
        FakeChild.count += 1
        self.pid = 1000 + FakeChild.count
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def exit(self, code: int) -> None:
        self.returncode = code


class FakeStack:
    def __init__(self, *names: str) -> None:
        self.started: dict[str, list[FakeChild]] = {name: [] for name in names}
        self.broken: set[str] = set()  # launching these raises
        self.launchers = {name: self._launcher(name) for name in names}
        self.children = [(name, self.launchers[name]()) for name in names]
        self.notes: list[tuple[str, str]] = []

    def _launcher(self, name: str) -> Callable[[], FakeChild]:
        def launch() -> FakeChild:
            if name in self.broken:
                raise OSError(f"port of {name} still taken")
            child = FakeChild()
            self.started[name].append(child)
            return child

        return launch

    def current(self, name: str) -> FakeChild:
        return dict(self.children)[name]

    def supervisor(self, policy: RestartPolicy) -> Supervisor:
        return Supervisor(
            self.children,  # type: ignore[arg-type]  # FakeChild stands in for the Popen
            self.launchers,  # type: ignore[arg-type]
            policy,
            lambda name, line: self.notes.append((name, line)),
        )


POLICY = RestartPolicy(first_delay_s=1.0, max_delay_s=4.0, max_failures=5, window_s=60.0)


def test_a_child_that_exits_is_restarted_with_doubling_delays_and_said_so() -> None:
    stack = FakeStack("temporal", "api", "ops-worker")
    supervisor = stack.supervisor(POLICY)
    assert supervisor.step(0.0) is None and supervisor.drain() == []

    stack.current("api").exit(137)  # e.g. OOM-killed
    assert supervisor.step(10.0) is None
    [line] = supervisor.drain()
    assert "api" in line and "137" in line and "restarting it in 1 s" in line
    assert supervisor.step(10.5) is None and len(stack.started["api"]) == 1  # not before its delay
    assert supervisor.step(11.0) is None
    assert len(stack.started["api"]) == 2 and stack.current("api") is stack.started["api"][-1]
    assert "api restarted" in supervisor.drain()[0]

    delays = []
    for now in (12.0, 20.0, 30.0):  # it keeps failing: 2 s, then 4 s, then capped at 4 s
        stack.current("api").exit(1)
        supervisor.step(now)
        delays.append(supervisor.due["api"] - now)
        supervisor.step(now + 5)
    assert delays == [2.0, 4.0, 4.0]
    # the others were never touched, and the order of the children (stopped in reverse) is kept
    assert [name for name, _ in stack.children] == ["temporal", "api", "ops-worker"]
    assert len(stack.started["temporal"]) == len(stack.started["ops-worker"]) == 1
    assert all(name == "api" for name, _ in stack.notes)  # every line also went to the logs

    supervisor.drain()
    stack.current("temporal").exit(-9)
    supervisor.step(40.0)
    assert "temporal was killed by SIGKILL (exit code -9); restarting it in 1 s" in supervisor.drain()[0]


def test_a_child_that_keeps_failing_stops_everything_with_a_clear_sentence() -> None:
    stack = FakeStack("temporal", "forecasting-worker")
    supervisor = stack.supervisor(POLICY)
    now = 0.0
    for _ in range(POLICY.max_failures - 1):
        stack.current("forecasting-worker").exit(1)
        assert supervisor.step(now) is None
        now += 5
        assert supervisor.step(now) is None
    stack.current("forecasting-worker").exit(1)
    given_up = supervisor.step(now)
    assert given_up is not None
    assert (
        "forecasting-worker" in given_up
        and "5 failures in 60 s" in given_up
        and "everything stops" in given_up
    )
    assert ("forecasting-worker", given_up) in stack.notes


def test_failures_outside_the_window_are_forgotten() -> None:
    stack = FakeStack("lab")
    supervisor = stack.supervisor(POLICY)
    for day in range(10):  # once a day, forever: restarted every time, after the first delay
        now = day * 86400.0
        stack.current("lab").exit(1)
        assert supervisor.step(now) is None
        assert supervisor.due["lab"] == now + POLICY.first_delay_s
        supervisor.step(now + 1)
    assert len(stack.started["lab"]) == 11


def test_a_restart_that_cannot_start_counts_as_a_failure_and_is_tried_again() -> None:
    stack = FakeStack("prometheus")
    supervisor = stack.supervisor(POLICY)
    stack.current("prometheus").exit(2)
    supervisor.step(0.0)
    stack.broken.add("prometheus")
    assert supervisor.step(1.0) is None
    assert "could not be started again (port of prometheus still taken)" in supervisor.drain()[-1]
    stack.broken.clear()
    supervisor.step(3.0)  # 1 s + 2 s
    assert len(stack.started["prometheus"]) == 2 and stack.current("prometheus").poll() is None


@pytest.fixture
def signals() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_lcp_dev_supervises_real_children_and_says_so_on_the_console_and_in_the_logs(
    tmp_path: Path, signals: None
) -> None:
    """Stack.supervise as run_dev calls it: a real child that exits is started again (its pid changes),
    each restart is one console line and a line in logs/dev.log and the child's log; one that always
    fails ends the watch with the reason, and stop() then ends the survivor."""
    stack = Stack(tmp_path, Ports("127.0.0.1", 1, 2, 3, 4, 5, 6, 7))
    stack.logs.mkdir(parents=True)
    marker = tmp_path / "runs"

    def flaky() -> subprocess.Popen[bytes]:  # appends a line per start, then fails
        return subprocess.Popen([sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x'); exit(3)"])

    def steady() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    stack._add("steady", steady)
    stack._add("flaky", flaky)
    steady_pid = dict(stack.children)["steady"].pid
    echoed: list[str] = []
    policy = RestartPolicy(first_delay_s=0.05, max_delay_s=0.1, max_failures=3, window_s=60.0)
    try:
        given_up = stack.supervise(echoed.append, policy)
    finally:
        stack.stop()
    assert marker.read_text() == "xxx"  # started, then restarted twice
    assert "flaky exited with code 3" in given_up and "3 failures in 60 s" in given_up
    restarts = [line for line in echoed if "restarting it in" in line]
    assert len(restarts) == 2 and all("flaky exited with code 3" in line for line in restarts)
    assert echoed[-1] == given_up
    assert given_up in (stack.logs / "dev.log").read_text()
    assert "restarted (pid" in (stack.logs / "flaky.log").read_text()
    steady_child = dict(stack.children)["steady"]
    assert steady_child.pid == steady_pid and steady_child.poll() is not None  # never restarted; stopped


def test_a_child_that_exits_with_an_error_is_said_with_its_last_words(tmp_path: Path) -> None:
    """An ops worker whose metrics port was taken crash-looped with "exited with code 1" and nothing else
    on the console: the line now carries the last line of the child's log and where that log is."""
    stack = FakeStack("ops-worker", "api")
    real = Stack(tmp_path, Ports("127.0.0.1", 1, 2, 3, 4, 5, 6, 7))
    real.logs.mkdir()
    (real.logs / "ops-worker.log").write_text(
        "Traceback (most recent call last):\n  ...\nOSError: [Errno 98] Address already in use\x1b[2J\n"
        "2026-12-03 08:33:51 lcp dev: ops-worker restarted (pid 17673)\n"
    )
    supervisor = Supervisor(
        stack.children,  # type: ignore[arg-type]  # FakeChild stands in for the Popen
        stack.launchers,  # type: ignore[arg-type]
        POLICY,
        last_words=real.last_words,
    )
    stack.current("ops-worker").exit(1)
    stack.current("api").exit(-9)
    supervisor.step(0.0)
    worker, api = supervisor.drain()
    assert "exited with code 1 (OSError: [Errno 98] Address already in use\\x1b[2J; see " in worker
    assert str(real.logs / "ops-worker.log") in worker and "\x1b" not in worker
    assert api.startswith("lcp dev: api was killed by SIGKILL (exit code -9); restarting")  # no log to read


def test_the_ports_a_split_stack_picks_are_never_those_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The free ports `lcp dev` picks (simulator replicas; split: API processes, PostgreSQL) are free when
    picked, but the ones given on the command line are not bound yet: a pick among them made the lab
    fail on "address already in use"."""
    monkeypatch.setenv("LCP_PORT_SLICE", "0/1")
    monkeypatch.setattr("cli.dev._given", set())  # earlier tests in this process gave ports out too
    asked = Ports("127.0.0.1", 30001, 30002, 30003, 30004, 30005, 30006, 30007, 30008)
    offered = itertools.chain([30001, 30004, 30008], itertools.count(30011))
    monkeypatch.setattr("cli.dev.random.randint", lambda low, high: next(offered))
    stack = Stack(tmp_path, asked, split=True)
    picked = [*stack.ports.llm_replicas, *stack.ports.api_processes, stack.ports.postgres]
    assert len(set(picked)) == len(picked) == 6
    assert all(port > 30010 for port in picked)  # none of the asked ones offered first


def test_lcp_dev_keeps_its_state_where_LCP_HOME_says(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The state directory every other command reads (LCP_HOME) is where `lcp dev` writes, unless --home
    says otherwise."""
    from typer.testing import CliRunner

    import cli.dev
    from cli import app

    homes: list[Path] = []

    def run_dev(home: Path, *args: object, **kwargs: object) -> int:
        homes.append(home)
        return 0

    monkeypatch.setattr(cli.dev, "run_dev", run_dev)
    assert CliRunner().invoke(app, ["dev"], env={"LCP_HOME": str(tmp_path / "from-env")}).exit_code == 0
    assert (
        CliRunner().invoke(app, ["dev", "--home", str(tmp_path / "flag")], env={"LCP_HOME": "x"}).exit_code
        == 0
    )
    assert homes == [tmp_path / "from-env", tmp_path / "flag"]
