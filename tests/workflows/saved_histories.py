"""The saved workflow histories test_replay.py replays, and how a test records a fresh one."""

import os
import re
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle

HISTORIES = Path(__file__).parent / "histories"


def saved() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


def _next_version(kind: str) -> int:
    """One more than the highest version of `kind` saved when this test session began."""
    pattern = re.compile(rf"{re.escape(kind)}_v(\d+)(_.+)?")
    versions = [int(found[1]) for path in saved() if (found := pattern.fullmatch(path.stem))]
    return max(versions, default=0) + 1


# Every recording of one test session gets the same version, whatever it finds saved by then.
_KINDS = (
    "assistant",
    "canary_rollout",
    "chaos_experiment",
    "chaos_scenario",
    "conversation",
    "predictive_scaling",
)
NEXT_VERSION = {kind: _next_version(kind) for kind in _KINDS}


async def save_history(handle: WorkflowHandle[Any, Any], kind: str, scenario: str = "") -> None:
    """With LCP_SAVE_HISTORIES set, write the workflow's history as histories/{kind}_v{N}[_{scenario}].json,
    N being the next version of `kind`; test_replay.py replays it from then on. Nothing is overwritten:
    older histories stay, because workflows still running were recorded by older code."""
    if not os.environ.get("LCP_SAVE_HISTORIES"):
        return
    name = f"{kind}_v{NEXT_VERSION[kind]}" + (f"_{scenario}" if scenario else "")
    history = await handle.fetch_history()
    with (HISTORIES / f"{name}.json").open("x") as saved_file:
        saved_file.write(history.to_json())
