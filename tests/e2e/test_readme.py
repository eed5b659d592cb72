"""Every command of the README's `sh` blocks, run in order in one shell against a fresh `lcp dev`, as a
reader would paste them (from a directory holding `.lcp`, `.venv` and `examples`; the README's ports
moved to free ones). A command that cannot run here is listed in NOT_RUN with the reason, one expected to
fail in EXPECTED_EXIT; both lists are checked against the README, so neither can go stale."""

import os
import re
import shlex
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.test_dev_stack import DevStack, stack  # noqa: F401  (the fixture)

pytestmark = pytest.mark.minutes  # started first by `make test` (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"

# The beginning of a README command → why the suite does not run it.
NOT_RUN = {
    "make dev": "the stack this test runs is that command's (`lcp dev`, started by the fixture)",
    "make test": "the suite itself",
    ".venv/bin/lcp rollout pause|resume|abort": "three commands in one, each for a running rollout",
    ".venv/bin/lcp chaos run --file my-experiments.yaml": "a placeholder for the reader's own file",
    ".venv/bin/lcp chaos status chat-api-pod-delete 20261126-150600": "a placeholder run id",
    ".venv/bin/lcp chaos abort chat-api-network-loss 20261126-151200": "a placeholder run id",
    ".venv/bin/lcp chaos drill all": "starts stacks of its own: tests/e2e/test_drills.py runs every drill",
    ".venv/bin/lcp chaos drill api-kill-mid-request": "likewise, tests/e2e/test_drills.py",
    "export LCP_TEMPORAL__": "production: a real Temporal cluster, PostgreSQL and certificates",
    "export DATABASE_URL=postgresql": "production",
    "export LCP_MODELS_FILE=/etc/lcp": "production",
    "lcp temporal setup": "production (lcp dev registers the search attributes itself)",
    "lcp db upgrade": "production (lcp dev migrates its database itself)",
    "lcp worker --queue conversations": "production: a worker that runs until stopped",
    "lcp api --host 0.0.0.0": "production: an API that runs until stopped",
    "lcp keys create --tenant acme --name librechat": "production (the tour mints a key the same way)",
    "lcp keys create --tenant platform --name oncall": "production",
}
# The beginning of a README command → (the exit codes it may end with, why).
EXPECTED_EXIT = {
    ".venv/bin/lcp rollout start chat-api -n lab --image lab.local/chat-api:v2": (
        (0, 1),
        "a healthy release, judged at a tenth of the standard durations: over 10 s windows of a few hundred "
        "requests a reading can still fail (1) or be inconclusive and wait for a human (below)",
    ),
    ".venv/bin/lcp rollout start chat-api -n lab --image lab.local/chat-api:v3": (
        (1,),
        "v3 fails 8% of its requests: the analysis rolls it back, and the watch exits 1",
    ),
}
# The beginning of a README command → what a person does meanwhile, in the background (bash), and why.
MEANWHILE = {
    ".venv/bin/lcp rollout start chat-api -n lab --image lab.local/chat-api:v2": (
        'while sleep 2; do lcp rollout status chat-api -n lab --json | grep -q \'"phase": "Paused"\' '
        "&& lcp rollout promote chat-api -n lab --full --reason 'the README test, standing in for a human'; "
        "done",
        "an Inconclusive analysis waits for a human: the README says to promote",
    ),
}
# The beginning of a README command → what its output must show; it is run again (every 2 s, for at most
# a minute) until it does.
SHOWS_WITHIN_A_MINUTE = {
    ".venv/bin/lcp scaling status chat-api -n lab #": (
        r"forecast\s.*peak",
        "a forecast from the seeded history, in the stack's first minutes",
    ),
    ".venv/bin/lcp chaos schedules": (r"chaos-gameday-chat-api-pod-delete", "the schedule just made"),
}
README_PORTS = {
    "8000": "api",
    "9090": "prometheus",
    "8601": "workload",
    "8233": "ui",
    "7233": "temporal",
    "8400": "llm",
    "8600": "kube",
}


@dataclass
class Command:
    text: str  # as the README writes it (continuation lines and heredoc included)
    line: int
    expected: str = ""  # `# {...}` right under it: the JSON it prints
    words: list[str] = field(default_factory=list)


def readme_commands(text: str) -> Iterator[Command]:
    """The commands of the `sh` blocks: continued lines, open quotes and heredocs joined; comments left out
    (a `# {...}` line right under a command is what it prints)."""
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        if lines[index].strip() != "```sh":
            index += 1
            continue
        index += 1
        last: Command | None = None
        while lines[index].strip() != "```":
            start, line = index, lines[index]
            index += 1
            if not line.strip():
                continue
            if line.lstrip().startswith("#"):
                if last is not None and line.lstrip().startswith("# {"):
                    last.expected = line.lstrip()[2:]
                continue
            command = line
            while command.endswith("\\") or not _complete(command):
                command += "\n" + lines[index]
                index += 1
            if heredoc := re.search(r"<<-?\s*'?(\w+)'?", command):
                while lines[index] != heredoc.group(1):
                    command += "\n" + lines[index]
                    index += 1
                command += "\n" + lines[index]
                index += 1
            last = Command(command, start + 1)
            yield last
        index += 1


def _complete(command: str) -> bool:
    try:
        shlex.split(command, comments=True)
    except ValueError:  # an open quote: the command goes on on the next line
        return False
    return True


def _matching(table: Mapping[str, object], command: Command) -> str | None:
    flat = " ".join(command.text.split())
    return next((start for start in table if flat.startswith(" ".join(start.split()))), None)


def test_the_lists_name_only_readme_commands() -> None:
    commands = list(readme_commands(README.read_text()))
    for table in (NOT_RUN, EXPECTED_EXIT, SHOWS_WITHIN_A_MINUTE, MEANWHILE):
        for start in table:
            flat = [" ".join(c.text.split()) + " " for c in commands]
            assert any(f.startswith(" ".join(start.split())) for f in flat), (
                f"no README command starts {start!r}"
            )


def _script(commands: list[Command], ports: dict[str, int], outputs: Path) -> str:
    """One bash script: every command in order, each checked; it stops at the first surprise."""
    out = ["set -uo pipefail"]
    for number, command in enumerate(commands):
        text = command.text
        for readme_port, name in README_PORTS.items():
            text = re.sub(rf"\b(localhost|127\.0\.0\.1):{readme_port}\b", rf"\1:{ports[name]}", text)
        out.append(f"echo {shlex.quote(f'::: README line {command.line}: ' + command.text.splitlines()[0])}")
        if start := _matching(NOT_RUN, command):
            out.append(f"echo {shlex.quote('::: not run: ' + NOT_RUN[start])}")
            continue
        codes, _ = EXPECTED_EXIT.get(_matching(EXPECTED_EXIT, command) or "", ((0,), ""))
        output = outputs / f"{number}.out"
        run = f"{{ {text}\n}} > {output} 2>&1\nrc=$?"
        if start := _matching(SHOWS_WITHIN_A_MINUTE, command):
            pattern = SHOWS_WITHIN_A_MINUTE[start][0]
            run = (
                f"for try in $(seq 30); do\n{{ {text}\n}} > {output} 2>&1\nrc=$?\n"
                f"grep -Eq {shlex.quote(pattern)} {output} && break; sleep 2\ndone"
            )
        if start := _matching(MEANWHILE, command):
            run = f"{{ {MEANWHILE[start][0]}\n}} > /dev/null 2>&1 &\nhuman=$!\n{run}\nkill $human"
        out.append(run)
        out.append(f"cat {output}; echo")
        out.append(
            f"case $rc in {'|'.join(map(str, codes))}) ;; *) "
            f'echo "::: README line {command.line} exited $rc, not {codes}"; exit 97;; esac'
        )
        if start := _matching(SHOWS_WITHIN_A_MINUTE, command):
            pattern = SHOWS_WITHIN_A_MINUTE[start][0]
            out.append(
                f"grep -Eq {shlex.quote(pattern)} {output} || "
                f'{{ echo "::: README line {command.line} never showed {pattern}"; exit 98; }}'
            )
        if command.expected:
            check = (
                "import json,sys; a=json.load(open(sys.argv[1])); b=json.loads(sys.argv[2]); sys.exit(a != b)"
            )
            out.append(
                f"python3 -c {shlex.quote(check)} {output} {shlex.quote(command.expected)} || "
                f'{{ echo "::: README line {command.line} did not print what the README says"; exit 99; }}'
            )
    out.append("echo '::: every README command ran'")
    return "\n".join(out) + "\n"


def test_every_readme_command_runs_against_lcp_dev(stack: DevStack, tmp_path: Path) -> None:  # noqa: F811
    """The README, top to bottom, on a fresh stack: the tour, the lab, rollouts, scaling (a forecast in the
    first minutes, from the seeded history), chaos, assistants."""
    reader = stack.home.parent  # `.lcp` is the stack's home, as in a clone
    (reader / ".lcp").symlink_to(stack.home)
    (reader / ".venv").symlink_to(REPO / ".venv")
    (reader / "examples").symlink_to(REPO / "examples")
    stack.start()
    said = (stack.home / "logs" / "dev.log").read_text()
    assert "history of lab/chat-api seeded" in said, f"lcp dev did not seed Prometheus' history:\n{said}"
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    script = tmp_path / "readme.sh"
    script.write_text(_script(list(readme_commands(README.read_text())), stack.ports, outputs))
    env = {k: v for k, v in os.environ.items() if k not in ("LCP_HOME", "LCP_API_KEY", "COLUMNS")}
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env['PATH']}"  # the README's bare `lcp`
    done = subprocess.run(
        ["bash", str(script)], cwd=reader, env=env, capture_output=True, text=True, timeout=1400
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-6000:]
    assert "::: every README command ran" in said
