"""Importing the API app or the CLI entry point loads none of the heavy or lab-only libraries, and
`lcp --help` answers: the API imports workflows' and activities' contracts, never their implementations."""

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY: tuple[str, ...] = ("sklearn", "numpy", "scipy", "matplotlib", "kubernetes", "kmock", "jsonpatch")
HEAVY += ("prometheus_api_client",)
# What a workflow module may import of the project (ARCHITECTURE.md: stdlib, temporalio, policies, activity
# contracts), and what a contract may: never an activity's implementation, the read model or a client.
WORKFLOWS_MAY_IMPORT = ("workflows", "activities.contracts", "policies", "chaos", "temporal.constants")
CONTRACTS_MAY_IMPORT = ("activities.contracts", "policies", "chaos", "inference.messages")
CONTRACTS = ROOT / "activities" / "contracts"
PROJECT = {path.name for path in ROOT.iterdir() if (path / "__init__.py").is_file()}  # its packages


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
        "import workflows.canary, workflows.scaling, workflows.chaos, workflows.conversation",
    ],
)
def test_the_api_and_the_cli_load_no_heavy_library(statement: str) -> None:
    assert loaded_after(statement) == []


def project_imports(path: Path) -> set[str]:
    """The project modules a file imports, wherever the import statement is (passed-through blocks too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name.split(".")[0] in PROJECT}


def outside(names: set[str], allowed: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if not any(n == a or n.startswith(a + ".") for a in allowed))


@pytest.mark.parametrize("path", sorted((ROOT / "workflows").glob("*.py")), ids=lambda p: p.name)
def test_a_workflow_imports_activity_contracts_never_implementations(path: Path) -> None:
    assert outside(project_imports(path), WORKFLOWS_MAY_IMPORT) == []


@pytest.mark.parametrize("path", sorted(CONTRACTS.glob("*.py")), ids=lambda p: p.name)
def test_a_contract_imports_no_implementation(path: Path) -> None:
    assert outside(project_imports(path), CONTRACTS_MAY_IMPORT) == []


def test_the_import_rule_can_fail(tmp_path: Path) -> None:
    """The checks above see an implementation imported inside a passed-through block."""
    workflow = tmp_path / "w.py"
    workflow.write_text("with imports_passed_through():\n    from activities.tools import ToolActivities\n")
    assert outside(project_imports(workflow), WORKFLOWS_MAY_IMPORT) == ["activities.tools"]


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
