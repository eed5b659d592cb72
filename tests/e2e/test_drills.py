"""The self-chaos drills against lcp's own processes: each finds nothing lost or duplicated, in the
single-API shape and in `lcp dev --split`'s (PostgreSQL, two API processes behind HAProxy)."""

import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chaos.drills import DRILLS, find_drill
from cli.drills import SCENARIOS, DrillStack, run_drill
from tests.e2e.test_dev_split import require_split_engines

pytestmark = pytest.mark.minutes  # started first by `make test` (tests/conftest.py)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DrillStack]:
    """One disposable stack for every drill in this module: each drill leaves it whole."""
    stack = DrillStack(tmp_path_factory.mktemp("drills"))
    try:
        await stack.start()
        yield stack
    finally:
        await asyncio.to_thread(stack.close)


@pytest.fixture(scope="module")
async def split_stack() -> AsyncIterator[DrillStack]:
    """The same, split. Not under pytest's tmp_path: as root, PostgreSQL runs as another user, which must
    reach its folder."""
    require_split_engines()
    home = Path(tempfile.mkdtemp(prefix="lcp-drills-split-"))
    os.chmod(home, 0o755)
    stack = DrillStack(home, split=True)
    try:
        await stack.start()
        yield stack
    finally:
        await asyncio.to_thread(stack.close)
        shutil.rmtree(home, ignore_errors=True)


def test_every_drill_has_a_scenario() -> None:
    assert sorted(SCENARIOS) == sorted(drill.name for drill in DRILLS)


@pytest.mark.parametrize("name", [drill.name for drill in DRILLS])
async def test_the_drill_finds_nothing_lost_or_duplicated(stack: DrillStack, name: str) -> None:
    drill = find_drill(name)
    report = await run_drill(stack, drill)
    assert report.passed, json.dumps(report.to_dict(), indent=2)
    assert [check.invariant for check in report.checks] == list(drill.invariants)
    fault = "SIGKILL" if drill.fault == "sigkill" else "stopped"
    assert any(event.startswith(fault) or fault in event for _, event in report.timeline)


@pytest.mark.parametrize("name", [drill.name for drill in DRILLS])
async def test_the_drill_finds_nothing_lost_or_duplicated_in_the_split_shape(
    split_stack: DrillStack, name: str
) -> None:
    drill = find_drill(name)
    report = await run_drill(split_stack, drill)
    assert report.passed, json.dumps(report.to_dict(), indent=2)
    assert [check.invariant for check in report.checks] == list(drill.invariants)
    if name == "api-kill-mid-request":  # the process HAProxy gave the request is the one killed
        assert any(event.startswith(("SIGKILL api-0", "SIGKILL api-1")) for _, event in report.timeline)


async def _lcp(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", "chaos", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_lcp_chaos_drill_runs_one_on_its_own_stack_and_reports_json(tmp_path: Path) -> None:
    code, out, err = await _lcp("drill", "api-kill-mid-request", "--json", "--home", str(tmp_path))
    assert code == 0, out + err
    report = json.loads(out)
    assert report["drill"] == "api-kill-mid-request" and report["passed"] is True
    assert {check["invariant"] for check in report["checks"]} == set(
        find_drill("api-kill-mid-request").invariants
    )
    assert (tmp_path / "logs" / "api.log").exists()  # kept: --home was given


async def test_lcp_chaos_drills_lists_them_and_an_unknown_name_is_refused() -> None:
    code, out, _ = await _lcp("drills")
    assert code == 0
    assert all(drill.name in out for drill in DRILLS)
    code, _, err = await _lcp("drill", "no-such-drill")
    assert code == 2
    assert "no drill named 'no-such-drill'" in err and "worker-kill-mid-turn" in err
