"""The models policy: which endpoint serves a model name, read from a parsed policy document.

An entry may carry a `version` (default "stable") and a `canary`: the next version of the same
model, served from its own endpoint or upstream model. How much traffic the canary gets is not in
this file: a canary rollout sets it in the read model (table model_canaries), and the gateway reads it.
"""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from policies.errors import PermanentError

DEFAULT_POLICY_FILE = Path(__file__).with_name("models.yaml")
STABLE_VERSION = "stable"
_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
# What a canary may set; everything else (tenants, owned_by) it takes from its entry.
CANARY_KEYS = ("version", "base_url", "upstream_model", "api_key", "timeout_s")


@dataclass(frozen=True)
class ModelRoute:
    name: str
    base_url: str
    upstream_model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    tenants: tuple[str, ...] | None = None  # who may use it; None: every tenant
    owned_by: str = "lcp"
    version: str = STABLE_VERSION
    # The next version of this model (same name, tenants and owner); its share of the traffic is
    # the canary weight in the read model. None: the model has no canary.
    canary: "ModelRoute | None" = None

    def serves(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants


class ModelsPolicyError(PermanentError, ValueError):
    """The models policy file is malformed."""


def expand_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """Replace ${VAR} and ${VAR:-default}; an unset VAR without default becomes ''."""
    values = os.environ if env is None else env
    return _VAR.sub(lambda m: values.get(m.group(1)) or (m.group(2) or ""), text)


def _version(value: Any, where: str) -> str:
    # YAML reads `version: 2` as a number: accept it as "2"; a bool, list or mapping is a mistake.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ModelsPolicyError(f"{where} must be a version name such as v2, not {value!r}")
    text = str(value)
    if not _VERSION.fullmatch(text):
        raise ModelsPolicyError(
            f"{where} {text!r} is not a version name: 1-64 letters, digits, '.', '_', '+' or '-', "
            "starting with a letter or digit"
        )
    return text


def _timeout(value: Any, where: str) -> float:
    try:
        timeout = float(value)
    except (TypeError, ValueError):
        timeout = 0.0
    if isinstance(value, bool) or not timeout > 0:
        raise ModelsPolicyError(f"{where}: timeout_s must be a number of seconds above 0, not {value!r}")
    return timeout


def _canary(stable: ModelRoute, spec: Any, where: str) -> ModelRoute:
    where = f"{where}: canary"
    if not isinstance(spec, dict):
        raise ModelsPolicyError(
            f"{where} must be a mapping with a version, e.g. {{version: v2, base_url: ...}}"
        )
    unknown = sorted(str(key) for key in spec if key not in CANARY_KEYS)
    if unknown:
        raise ModelsPolicyError(
            f"{where} has unknown keys {', '.join(unknown)} (a canary may set: {', '.join(CANARY_KEYS)})"
        )
    if spec.get("version") is None or spec.get("version") == "":
        raise ModelsPolicyError(f"{where} is missing version (the canary's version name, e.g. v2)")
    version = _version(spec["version"], f"{where}.version")
    if version == stable.version:
        raise ModelsPolicyError(
            f"{where}.version {version!r} is the entry's own version: a canary is a different version "
            "(set the entry's `version:` or the canary's to another name)"
        )
    return ModelRoute(
        name=stable.name,
        base_url=str(spec["base_url"]).rstrip("/") if spec.get("base_url") else stable.base_url,
        upstream_model=str(spec.get("upstream_model") or stable.upstream_model),
        api_key=str(spec["api_key"]) if spec.get("api_key") else stable.api_key,
        timeout_s=_timeout(spec["timeout_s"], where) if "timeout_s" in spec else stable.timeout_s,
        tenants=stable.tenants,
        owned_by=stable.owned_by,
        version=version,
    )


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
        where = f"{where} ({name})"
        tenants = entry.get("tenants")
        if tenants is not None and not (
            isinstance(tenants, list) and all(isinstance(t, str) and t for t in tenants)
        ):
            raise ModelsPolicyError(f"{where}: tenants must be a list of tenant names")
        if name in routes:
            raise ModelsPolicyError(f"{where}: model {name!r} is listed twice")
        version = entry.get("version")
        route = ModelRoute(
            name=name,
            base_url=str(entry["base_url"]).rstrip("/"),
            upstream_model=str(entry.get("upstream_model") or name),
            api_key=str(entry["api_key"]) if entry.get("api_key") else None,
            timeout_s=_timeout(entry.get("timeout_s", 60), where),
            tenants=tuple(tenants) if tenants is not None else None,
            owned_by=str(entry.get("owned_by") or "lcp"),
            version=STABLE_VERSION if version is None else _version(version, f"{where}: version"),
        )
        if entry.get("canary") is not None:
            route = replace(route, canary=_canary(route, entry["canary"], where))
        routes[name] = route
    return routes
