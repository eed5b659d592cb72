"""The models policy: which endpoint serves a model name, read from a parsed policy document."""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_POLICY_FILE = Path(__file__).with_name("models.yaml")
_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class ModelRoute:
    name: str
    base_url: str
    upstream_model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    tenants: tuple[str, ...] | None = None  # who may use it; None: every tenant
    owned_by: str = "lcp"

    def serves(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants


class ModelsPolicyError(ValueError):
    """The models policy file is malformed."""


def expand_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """Replace ${VAR} and ${VAR:-default}; an unset VAR without default becomes ''."""
    values = os.environ if env is None else env
    return _VAR.sub(lambda m: values.get(m.group(1)) or (m.group(2) or ""), text)


def parse_routes(document: Any) -> dict[str, ModelRoute]:
    """Validate a parsed policy document and index its routes by model name."""
    if not isinstance(document, dict) or not isinstance(document.get("models"), list):
        raise ModelsPolicyError("models policy: top level must be a mapping with a 'models' list")
    routes: dict[str, ModelRoute] = {}
    for index, entry in enumerate(document["models"]):
        where = f"models policy: models[{index}]"
        if not isinstance(entry, dict):
            raise ModelsPolicyError(f"{where} must be a mapping")
        missing = [key for key in ("name", "base_url") if not entry.get(key)]
        if missing:
            raise ModelsPolicyError(f"{where} is missing {', '.join(missing)}")
        name = str(entry["name"])
        tenants = entry.get("tenants")
        if tenants is not None and not (
            isinstance(tenants, list) and all(isinstance(t, str) and t for t in tenants)
        ):
            raise ModelsPolicyError(f"{where}: tenants must be a list of tenant names")
        if name in routes:
            raise ModelsPolicyError(f"{where}: model {name!r} is listed twice")
        routes[name] = ModelRoute(
            name=name,
            base_url=str(entry["base_url"]).rstrip("/"),
            upstream_model=str(entry.get("upstream_model") or name),
            api_key=str(entry["api_key"]) if entry.get("api_key") else None,
            timeout_s=float(entry.get("timeout_s", 60)),
            tenants=tuple(tenants) if tenants is not None else None,
            owned_by=str(entry.get("owned_by") or "lcp"),
        )
    return routes
