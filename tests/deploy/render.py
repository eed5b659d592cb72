"""Renders deploy/'s kustomize overlays with `kubectl kustomize`, for the deployment tests."""

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("dev", "prod")

Obj = dict[str, Any]


def kubectl() -> str:
    """kubectl's path: required under `make test` (LCP_REQUIRE_KUBECTL), a skip elsewhere."""
    found = shutil.which("kubectl")
    if found is None:
        if os.environ.get("LCP_REQUIRE_KUBECTL"):
            pytest.fail("kubectl is required (LCP_REQUIRE_KUBECTL) to render deploy/ but is not on PATH")
        pytest.skip("kubectl is not on PATH: the kustomize overlays cannot be rendered here")
    return found


def kustomize(directory: Path) -> list[Obj]:
    """The objects `kubectl kustomize DIRECTORY` renders (what `kubectl apply -k` would send)."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


@functools.cache
def _rendered(overlay: str) -> tuple[Obj, ...]:
    return tuple(kustomize(DEPLOY / "overlays" / overlay))


def render(overlay: str) -> list[Obj]:
    """The overlay's objects, rendered once per test process (callers get their own copy)."""
    return [yaml.safe_load(yaml.safe_dump(obj)) for obj in _rendered(overlay)]


def name_of(obj: Obj) -> str:
    meta = obj["metadata"]
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj['kind']} {where}{meta['name']}"


def pod_templates(objs: list[Obj]) -> dict[str, Obj]:
    """Each Deployment's and Job's pod spec, by object name."""
    return {
        name_of(obj): obj["spec"]["template"]["spec"] for obj in objs if obj["kind"] in ("Deployment", "Job")
    }
