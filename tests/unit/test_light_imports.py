"""Importing the API app or the CLI entry point loads none of the heavy or lab-only libraries, and
`lcp --help` answers: the API imports workflows' and activities' contracts, never their implementations."""

import json
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY: tuple[str, ...] = ("sklearn", "numpy", "scipy", "matplotlib", "kubernetes", "kmock", "jsonpatch")
HEAVY += ("prometheus_api_client",)


def loaded_after(statement: str) -> list[str]:
    """The heavy top-level packages in sys.modules after `statement`, in a fresh interpreter."""
    probe = (
        f"import json, sys\n{statement}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    return cast(list[str], json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "statement",
    [
        "import api.app",
        "from api.app import create_app; from settings import Settings; create_app(Settings()).openapi()",
        "import cli",
        "import workflows.canary, workflows.scaling, workflows.chaos",
    ],
)
def test_the_api_and_the_cli_load_no_heavy_library(statement: str) -> None:
    assert loaded_after(statement) == []


def test_the_workers_still_load_them() -> None:
    """The check above can fail: the ops worker's import does load the heavy clients."""
    assert {"kubernetes", "sklearn", "numpy"} <= set(loaded_after("import workers.main"))


def test_lcp_help_answers() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for command in ("dev", "api", "worker", "rollout", "scaling", "chaos", "bench"):
        assert command in done.stdout
