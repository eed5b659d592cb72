"""The models policy: which deployments serve a model name, read from a parsed policy document.

A model is a group of deployments (OpenAI-compatible endpoints: vLLM replicas, often in several
clusters); an entry with one `base_url` is a group of one. Deployments are listed in the file or
discovered from a Kubernetes Service's ready endpoints. `routing` says how the gateway picks one
(policies/picker.py), when a failing one cools down (policies/cooldown.py) and when the gateway holds
a request because every one is saturated (`flow_control`, policies/picker.py FlowControl); `fallbacks`
name the models to try when this one cannot answer.

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
from urllib.parse import urlsplit

from policies.cooldown import CooldownSettings
from policies.errors import PermanentError
from policies.picker import FlowControl, ScoreWeights, Strategy

DEFAULT_POLICY_FILE = Path(__file__).with_name("models.yaml")
STABLE_VERSION = "stable"
_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
# What a canary may set; everything else (tenants, owned_by) it takes from its entry.
CANARY_KEYS = ("version", "base_url", "upstream_model", "api_key", "timeout_s", "deployments")
DEPLOYMENT_KEYS = (
    "name", "base_url", "upstream_model", "api_key", "weight", "max_in_flight", "context_window", "labels"
)  # fmt: skip
ROUTING_KEYS = ("strategy", "scorer_weights", "cooldown", "flow_control")
FALLBACK_KINDS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")
ENTRY_KEYS = (
    "name", "base_url", "upstream_model", "api_key", "timeout_s", "tenants", "owned_by", "version",
    "canary", "deployments", "discovery", "routing", "kind", *FALLBACK_KINDS,
)  # fmt: skip
# What a model serves: chat completions, or embeddings (POST /v1/embeddings). A chat route refuses an
# embedding model and the other way round.
MODEL_KINDS = ("chat", "embedding")
KUBERNETES_KEYS = ("namespace", "service", "port", "scheme", "path")


@dataclass(frozen=True)
class Deployment:
    """One OpenAI-compatible endpoint serving a model: a vLLM replica, a cluster's gateway, OpenAI."""

    id: str  # unique within its model: the entry's `name`, else the URL's host:port
    base_url: str
    upstream_model: str
    api_key: str | None = None
    weight: float = 1.0
    max_in_flight: int | None = None  # lcp's concurrent calls to it at most; None: no cap
    context_window: int | None = None  # prompt + reply tokens at most; None: unknown, anything fits
    labels: tuple[tuple[str, str], ...] = ()  # e.g. (("cluster", "a"), ("region", "eu"))


@dataclass(frozen=True)
class Routing:
    """How the gateway picks a deployment. `flow_control` (None: off, the default) holds a request in
    the gateway while the deployments it could go to are saturated (with cache_aware: the one where its
    first token comes soonest): `flow_control: on` or a mapping of its settings."""

    strategy: Strategy = Strategy.CACHE_AWARE
    scorer_weights: ScoreWeights = ScoreWeights()
    cooldown: CooldownSettings = CooldownSettings()
    flow_control: FlowControl | None = None


@dataclass(frozen=True)
class KubernetesDiscovery:
    """Deployments are the ready endpoints of a Service (its EndpointSlices), as an InferencePool's."""

    namespace: str
    service: str
    port: int | str = 8000  # the port number, or the EndpointSlice port's name
    scheme: str = "http"
    path: str = "/v1"


@dataclass(frozen=True)
class Fallbacks:
    """Models to try, in order, when this one cannot answer (LiteLLM's three kinds)."""

    general: tuple[str, ...] = ()  # every deployment failed or is cooling down
    context_window: tuple[str, ...] = ()  # the prompt is too long for every deployment's window
    content_policy: tuple[str, ...] = ()  # the endpoint refused the content

    def names(self) -> tuple[str, ...]:
        return self.general + self.context_window + self.content_policy


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
    kind: str = "chat"  # one of MODEL_KINDS
    # The next version of this model (same name, tenants and owner); its share of the traffic is
    # the canary weight in the read model. None: the model has no canary.
    canary: "ModelRoute | None" = None
    deployments: tuple[Deployment, ...] = ()  # () with no discovery: the one at base_url
    discovery: KubernetesDiscovery | None = None
    routing: Routing = Routing()
    fallbacks: Fallbacks = Fallbacks()

    def serves(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants

    def listed_deployments(self) -> tuple[Deployment, ...]:
        """The deployments the policy file lists: its `deployments`, or the one at `base_url`."""
        if self.deployments or self.discovery is not None:
            return self.deployments
        return (Deployment(_url_id(self.base_url), self.base_url, self.upstream_model, self.api_key),)


def _url_id(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url


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
    canary = ModelRoute(
        name=stable.name,
        base_url=str(spec["base_url"]).rstrip("/") if spec.get("base_url") else stable.base_url,
        upstream_model=str(spec.get("upstream_model") or stable.upstream_model),
        api_key=str(spec["api_key"]) if spec.get("api_key") else stable.api_key,
        timeout_s=_timeout(spec["timeout_s"], where) if "timeout_s" in spec else stable.timeout_s,
        tenants=stable.tenants,
        owned_by=stable.owned_by,
        version=version,
        kind=stable.kind,
        routing=stable.routing,
        fallbacks=stable.fallbacks,
    )
    if spec.get("deployments") is not None:
        return replace(canary, deployments=_deployments(spec["deployments"], canary, where))
    if spec.get("base_url"):
        return canary
    # Same endpoints as the stable version, another upstream model.
    served = [replace(d, upstream_model=canary.upstream_model) for d in stable.deployments]
    return replace(canary, deployments=tuple(served), discovery=stable.discovery)


def _unknown(spec: dict[Any, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(key) for key in spec if key not in known)
    if unknown:
        raise ModelsPolicyError(f"{where} has unknown keys {', '.join(unknown)} (known: {', '.join(known)})")


def _number(value: Any, where: str, *, minimum: float, integer: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and value >= minimum
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "a whole number" if integer else "a number"
        raise ModelsPolicyError(f"{where} must be {kind} of at least {minimum:g}, not {value!r}")
    return float(value)


def _deployments(spec: Any, route: ModelRoute, where: str) -> tuple[Deployment, ...]:
    where = f"{where}: deployments"
    if not isinstance(spec, list) or not spec:
        raise ModelsPolicyError(f"{where} must be a list of at least one deployment (each with a base_url)")
    deployments: list[Deployment] = []
    for index, item in enumerate(spec):
        at = f"{where}[{index}]"
        if not isinstance(item, dict):
            raise ModelsPolicyError(f"{at} must be a mapping with a base_url")
        _unknown(item, DEPLOYMENT_KEYS, at)
        if not item.get("base_url"):
            raise ModelsPolicyError(
                f"{at} is missing base_url (the endpoint's URL, e.g. http://vllm-0:8000/v1)"
            )
        url = str(item["base_url"]).rstrip("/")
        labels = item.get("labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(v, str | int | float) for v in labels.values()):
            raise ModelsPolicyError(f"{at}.labels must be a mapping of names to values, e.g. {{cluster: a}}")
        window = item.get("context_window")
        cap = item.get("max_in_flight")
        deployment = Deployment(
            id=str(item.get("name") or _url_id(url)),
            base_url=url,
            upstream_model=str(item.get("upstream_model") or route.upstream_model),
            api_key=str(item["api_key"]) if item.get("api_key") else route.api_key,
            weight=_number(item.get("weight", 1), f"{at}.weight", minimum=0),
            max_in_flight=None
            if cap is None
            else int(_number(cap, f"{at}.max_in_flight", minimum=1, integer=True)),
            context_window=None
            if window is None
            else int(_number(window, f"{at}.context_window", minimum=1, integer=True)),
            labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        )
        if any(d.id == deployment.id for d in deployments):
            raise ModelsPolicyError(f"{at}: deployment {deployment.id!r} is listed twice (give each a name)")
        deployments.append(deployment)
    return tuple(deployments)


def _routing(spec: Any, where: str) -> Routing:
    where = f"{where}: routing"
    if spec is None:
        return Routing()
    if not isinstance(spec, dict):
        raise ModelsPolicyError(f"{where} must be a mapping, e.g. {{strategy: cache_aware}}")
    _unknown(spec, ROUTING_KEYS, where)
    strategies = ", ".join(s.value for s in Strategy)
    try:
        strategy = Strategy(spec.get("strategy", Strategy.CACHE_AWARE.value))
    except ValueError:
        raise ModelsPolicyError(
            f"{where}.strategy {spec.get('strategy')!r} is not a strategy (one of: {strategies})"
        ) from None
    weights = _fields(ScoreWeights, spec.get("scorer_weights"), f"{where}.scorer_weights")
    cooldown = _fields(CooldownSettings, spec.get("cooldown"), f"{where}.cooldown")
    flow = _flow_control(spec.get("flow_control", False), f"{where}.flow_control")
    return Routing(strategy, ScoreWeights(**weights), CooldownSettings(**cooldown), flow)


def _flow_control(spec: Any, where: str) -> FlowControl | None:
    """`off`/false, `on`/true (FlowControl's defaults), or a mapping of FlowControl's fields."""
    if spec is False:
        return None
    if spec is True:
        return FlowControl()
    flow = FlowControl(**_fields(FlowControl, spec, where))
    if flow.max_held < 1 or flow.max_wait_s <= 0:
        raise ModelsPolicyError(
            f"{where}: max_held must be at least 1 and max_wait_s above 0 (flow_control: off turns it off)"
        )
    return flow


def _fields(kind: type, spec: Any, where: str) -> dict[str, Any]:
    """A mapping of some of `kind`'s numeric fields, each checked to be a number of at least 0."""
    if spec is None:
        return {}
    defaults = kind()
    names = tuple(defaults.__dataclass_fields__)
    if not isinstance(spec, dict):
        raise ModelsPolicyError(f"{where} must be a mapping of {', '.join(names)}")
    _unknown(spec, names, where)
    values: dict[str, Any] = {}
    for key, value in spec.items():
        integer = isinstance(getattr(defaults, key), int)
        number = _number(value, f"{where}.{key}", minimum=0, integer=integer)
        values[key] = int(number) if integer else number
    return values


def _fallbacks(entry: dict[Any, Any], where: str) -> Fallbacks:
    lists: list[tuple[str, ...]] = []
    for kind in FALLBACK_KINDS:
        names = entry.get(kind) or []
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ModelsPolicyError(f"{where}: {kind} must be a list of model names")
        lists.append(tuple(names))
    return Fallbacks(*lists)


def _discovery(spec: Any, where: str) -> KubernetesDiscovery | None:
    if spec is None:
        return None
    where = f"{where}: discovery"
    if not isinstance(spec, dict) or set(spec) != {"kubernetes"} or not isinstance(spec["kubernetes"], dict):
        raise ModelsPolicyError(
            f"{where} must be {{kubernetes: {{namespace: ..., service: ..., port: ...}}}}"
        )
    k8s = spec["kubernetes"]
    where = f"{where}.kubernetes"
    _unknown(k8s, KUBERNETES_KEYS, where)
    missing = [key for key in ("namespace", "service") if not k8s.get(key)]
    if missing:
        raise ModelsPolicyError(f"{where} is missing {', '.join(missing)}")
    port = k8s.get("port", 8000)
    if isinstance(port, bool) or not isinstance(port, int | str) or not str(port):
        raise ModelsPolicyError(f"{where}.port must be a port number or the port's name, not {port!r}")
    if k8s.get("scheme", "http") not in ("http", "https"):
        raise ModelsPolicyError(f"{where}.scheme must be http or https")
    return KubernetesDiscovery(
        namespace=str(k8s["namespace"]),
        service=str(k8s["service"]),
        port=port,
        scheme=str(k8s.get("scheme", "http")),
        path="/" + str(k8s.get("path", "/v1")).strip("/"),
    )


def _check_fallbacks(routes: dict[str, ModelRoute]) -> None:
    """Every fallback names a model of the file, and no chain of fallbacks comes back to its start."""
    for name, route in routes.items():
        for target in route.fallbacks.names():
            if target not in routes:
                raise ModelsPolicyError(
                    f"models policy: model {name!r}: fallback {target!r} is not a model here"
                )
            if routes[target].kind != route.kind:
                raise ModelsPolicyError(
                    f"models policy: model {name!r} serves {route.kind}: its fallback {target!r} serves "
                    f"{routes[target].kind}"
                )

    def visit(name: str, path: tuple[str, ...]) -> None:
        for target in routes[name].fallbacks.names():
            if target in path:
                cycle = " -> ".join((*path[path.index(target) :], target))
                raise ModelsPolicyError(f"models policy: fallbacks go round in a cycle: {cycle}")
            visit(target, (*path, target))

    for name in routes:
        visit(name, (name,))


def parse_routes(document: Any) -> dict[str, ModelRoute]:
    """Validate a parsed policy document and index its routes by model name."""
    if not isinstance(document, dict) or not isinstance(document.get("models"), list):
        raise ModelsPolicyError("models policy: top level must be a mapping with a 'models' list")
    routes: dict[str, ModelRoute] = {}
    for index, entry in enumerate(document["models"]):
        where = f"models policy: models[{index}]"
        if not isinstance(entry, dict):
            raise ModelsPolicyError(f"{where} must be a mapping")
        if not entry.get("name"):
            raise ModelsPolicyError(f"{where} is missing name")
        name = str(entry["name"])
        _unknown(entry, ENTRY_KEYS, f"{where} ({name})")
        if not any(entry.get(key) for key in ("base_url", "deployments", "discovery")):
            raise ModelsPolicyError(f"{where} is missing base_url (or deployments, or discovery)")
        where = f"{where} ({name})"
        tenants = entry.get("tenants")
        if tenants is not None and not (
            isinstance(tenants, list) and all(isinstance(t, str) and t for t in tenants)
        ):
            raise ModelsPolicyError(f"{where}: tenants must be a list of tenant names")
        if name in routes:
            raise ModelsPolicyError(f"{where}: model {name!r} is listed twice")
        version = entry.get("version")
        kind = entry.get("kind", "chat")
        if kind not in MODEL_KINDS:
            raise ModelsPolicyError(f"{where}: kind must be one of {', '.join(MODEL_KINDS)}, not {kind!r}")
        route = ModelRoute(
            name=name,
            base_url=str(entry.get("base_url") or "").rstrip("/"),
            upstream_model=str(entry.get("upstream_model") or name),
            api_key=str(entry["api_key"]) if entry.get("api_key") else None,
            timeout_s=_timeout(entry.get("timeout_s", 60), where),
            tenants=tuple(tenants) if tenants is not None else None,
            owned_by=str(entry.get("owned_by") or "lcp"),
            version=STABLE_VERSION if version is None else _version(version, f"{where}: version"),
            kind=kind,
            discovery=_discovery(entry.get("discovery"), where),
            routing=_routing(entry.get("routing"), where),
            fallbacks=_fallbacks(entry, where),
        )
        if entry.get("deployments") is not None:
            route = replace(route, deployments=_deployments(entry["deployments"], route, where))
        if entry.get("canary") is not None:
            route = replace(route, canary=_canary(route, entry["canary"], where))
        routes[name] = route
    _check_fallbacks(routes)
    return routes
