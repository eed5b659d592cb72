"""The lab's simulated Kubernetes API server: kmock's emulator with what the official client relies on."""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import functools
import logging
import random
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml

log = logging.getLogger(__name__)

SIMULATED_LABEL = "lcp.dev/simulated"
VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

Obj = dict[str, Any]
Listener = Callable[["Kind", str, Obj], None]


@dataclass(frozen=True)
class Kind:
    """One resource type the lab serves, named as in its URL paths and in discovery."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: frozenset[str] = frozenset({"status"})
    custom: bool = False  # a CRD's resource: merge and JSON patches only, as on a real cluster
    returns_deleted_object: bool = False  # DELETE answers with the object, not a Status
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @functools.cached_property
    def resource(self) -> kmock.resource:
        return kmock.resource(self.group, self.version, self.plural)


_STATUS_SCALE = frozenset({"status", "scale"})

KINDS: tuple[Kind, ...] = (
    Kind("", "v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",)),
    Kind("", "v1", "pods", "Pod", returns_deleted_object=True, short_names=("po",)),
    Kind("", "v1", "services", "Service", returns_deleted_object=True, short_names=("svc",)),
    Kind("", "v1", "configmaps", "ConfigMap", subresources=frozenset(), short_names=("cm",)),
    Kind("", "v1", "events", "Event", subresources=frozenset(), short_names=("ev",)),
    Kind("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", subresources=frozenset()),
    Kind("apps", "v1", "deployments", "Deployment", subresources=_STATUS_SCALE, short_names=("deploy",)),
    Kind("apps", "v1", "replicasets", "ReplicaSet", subresources=_STATUS_SCALE, short_names=("rs",)),
    Kind(
        "argoproj.io",
        "v1alpha1",
        "rollouts",
        "Rollout",
        subresources=_STATUS_SCALE,
        custom=True,
        returns_deleted_object=True,
        short_names=("ro",),
    ),
    Kind("argoproj.io", "v1alpha1", "analysisruns", "AnalysisRun", custom=True, returns_deleted_object=True),
    Kind(  # Argo's Workflow CRD has no status subresource: its controller writes the whole object
        "argoproj.io",
        "v1alpha1",
        "workflows",
        "Workflow",
        subresources=frozenset(),
        custom=True,
        returns_deleted_object=True,
        short_names=("wf",),
    ),
    Kind(
        "networking.istio.io",
        "v1beta1",
        "virtualservices",
        "VirtualService",
        custom=True,
        returns_deleted_object=True,
        short_names=("vs",),
    ),
    Kind(
        "gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute", custom=True, returns_deleted_object=True
    ),
    Kind(
        "litmuschaos.io", "v1alpha1", "chaosengines", "ChaosEngine", custom=True, returns_deleted_object=True
    ),
    Kind(
        "litmuschaos.io", "v1alpha1", "chaosresults", "ChaosResult", custom=True, returns_deleted_object=True
    ),
)


def api_error(status: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    """An error that kmock renders as a Kubernetes `Status` with this code and reason."""
    return kmock.KubernetesError(status, reason, message, details or {})


def _not_found(kind: Kind, name: str | None) -> kmock.KubernetesError:
    resource = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
    return api_error(
        404, "NotFound", f'{resource} "{name}" not found', name=name, group=kind.group, kind=kind.plural
    )


def _invalid(kind: Kind, name: str | None, message: str) -> kmock.KubernetesError:
    return api_error(422, "Invalid", f'{kind.kind} "{name}" is invalid: {message}', name=name, kind=kind.kind)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------------------
# Selectors


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        match self.op:
            case "exists":
                return present
            case "!exists":
                return not present
            case "=" | "in":
                return present and labels[self.key] in self.values
            case _:  # "!=" and "notin" also match objects without the label, as on a real cluster
                return not present or labels[self.key] not in self.values


_LABEL_TERM = re.compile(
    r"\s*(?:(?P<not>!)\s*(?P<absent>[\w./-]+)"
    r"|(?P<key>[\w./-]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[\w./-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?)\s*"
)


def parse_label_selector(text: str) -> list[_Requirement]:
    """A label selector in the API's text form, e.g. `app=web,tier in (a,b),!canary`."""
    requirements = []
    for term in re.split(r",(?![^(]*\))", text):
        if not term.strip():
            continue
        match = _LABEL_TERM.fullmatch(term)
        if match is None:
            raise api_error(400, "BadRequest", f"unable to parse requirement: {term.strip()!r}")
        if match["absent"]:
            requirements.append(_Requirement(match["absent"], "!exists"))
        elif match["op"]:
            requirements.append(
                _Requirement(match["key"], "!=" if match["op"] == "!=" else "=", frozenset({match["value"]}))
            )
        elif match["setop"]:
            values = frozenset(v.strip() for v in match["values"].split(",") if v.strip())
            requirements.append(_Requirement(match["key"], match["setop"], values))
        else:
            requirements.append(_Requirement(match["key"], "exists"))
    return requirements


def _parse_field_selector(text: str) -> list[tuple[list[str], bool, str]]:
    """Field selector terms as (dotted path, equal?, value), e.g. `metadata.name=web,status.phase!=Failed`."""
    terms = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        match = re.fullmatch(r"([\w.]+)\s*(==|=|!=)\s*(.*)", term)
        if match is None:
            raise api_error(400, "BadRequest", f"invalid field selector: {term!r}")
        terms.append((match[1].split("."), match[2] != "!=", match[3]))
    return terms


def _field(obj: Obj, path: list[str]) -> str:
    value: Any = obj
    for step in path:
        value = value.get(step) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def format_label_selector(selector: Mapping[str, Any] | None) -> str:
    """A `LabelSelector` object in text form (what a Scale's `status.selector` shows)."""
    selector = selector or {}
    terms = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values") or []
        if op in ("In", "NotIn"):
            terms.append(f"{key} {op.lower()} ({','.join(values)})")
        else:
            terms.append(key if op == "Exists" else f"!{key}")
    return ",".join(terms)


@dataclass(frozen=True)
class _Selection:
    """Which objects of a kind a list or watch wants."""

    kind: Kind
    namespace: str | None = None
    name: str | None = None
    labels: list[_Requirement] = field(default_factory=list)
    fields: list[tuple[list[str], bool, str]] = field(default_factory=list)

    def wants(self, obj: Obj) -> bool:
        meta = obj["metadata"]
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        if self.name is not None and meta["name"] != self.name:
            return False
        labels = meta.get("labels") or {}
        if not all(requirement.matches(labels) for requirement in self.labels):
            return False
        return all((_field(obj, path) == value) == equal for path, equal, value in self.fields)


# ---------------------------------------------------------------------------------------------------------
# Patches

# Strategic-merge keys of the list fields the lab's clients patch; other lists are replaced whole.
_MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "imagePullSecrets": ("name",),
    "ports": ("containerPort", "port"),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
}


def merge_patch(target: Any, patch: Any, *, strategic: bool = False, field_name: str = "") -> Any:
    """RFC 7386 JSON merge patch; `strategic` also merges the known list fields by their keys."""
    if isinstance(patch, dict):
        result = dict(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = merge_patch(result.get(key), value, strategic=strategic, field_name=key)
        return result
    if strategic and isinstance(patch, list) and isinstance(target, list):
        key = _merge_key(field_name, target + patch)
        if key is not None:
            return _merge_list(target, patch, key)
    return copy.deepcopy(patch)


def _merge_key(field_name: str, items: list[Any]) -> str | None:
    for key in _MERGE_KEYS.get(field_name, ()):
        if all(isinstance(item, dict) and key in item for item in items):
            return key
    return None


def _merge_list(target: list[Any], patch: list[Any], key: str) -> list[Any]:
    merged = list(target)
    for item in patch:
        position = next((i for i, old in enumerate(merged) if old[key] == item[key]), None)
        if item.get("$patch") == "delete":
            if position is not None:
                del merged[position]
        elif position is None:
            merged.append(merge_patch({}, item, strategic=True))
        else:
            merged[position] = merge_patch(merged[position], item, strategic=True)
    return merged


def apply_patch(target: Obj, patch: Any, patch_type: str) -> Obj:
    """Apply a patch of type "json" (RFC 6902), "merge" (RFC 7386) or "strategic" to a copy of `target`."""
    if patch_type == "json":
        if not isinstance(patch, list):
            raise api_error(400, "BadRequest", "a JSON patch must be a list of operations")
        try:
            result = jsonpatch.apply_patch(target, patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
            raise api_error(422, "Invalid", f"the JSON patch does not apply: {error}") from None
        return dict(result)
    if not isinstance(patch, dict):
        raise api_error(400, "BadRequest", "a merge patch must be a JSON object")
    return dict(merge_patch(target, patch, strategic=patch_type == "strategic"))


_PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
}


# ---------------------------------------------------------------------------------------------------------
# URL paths


@dataclass(frozen=True)
class _Path:
    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None


def _parse_path(path: str) -> _Path | None:
    """A resource URL, e.g. `/apis/apps/v1/namespaces/ns/deployments/web/scale`; None for anything else."""
    parts = [part for part in path.split("/") if part]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    namespace_subresource = group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")
    if rest[0] == "namespaces" and len(rest) >= 3 and not namespace_subresource:
        namespace, rest = rest[1], rest[2:]
    name = rest[1] if len(rest) > 1 else None
    return _Path(group, version, rest[0], namespace, name, "/".join(rest[2:]) or None)


def _action(method: str, name: str | None, params: Mapping[str, str]) -> kmock.action | None:
    if method == "GET":
        if params.get("watch") in ("true", "1"):
            return kmock.action.WATCH
        return kmock.action.FETCH if name else kmock.action.LIST
    if name is None:
        return kmock.action.CREATE if method == "POST" else None
    return {"PATCH": kmock.action.UPDATE, "DELETE": kmock.action.DELETE}.get(method)


# kmock's path parser reads `/api/v1/namespaces/<x>` as a namespace scope and raises on the bare
# `/api/v1/namespaces`; that one URL reaches kmock under this stand-in, and `_handle` maps it back.
_NAMESPACES_PATH = "/api/v1/namespaces"
_NAMESPACES_STANDIN = "/api/v1/namespaces/-"


# ---------------------------------------------------------------------------------------------------------
# The emulator


@dataclass(eq=False)
class _Watcher:
    selection: _Selection
    queue: asyncio.Queue[Obj | None] = field(default_factory=asyncio.Queue)


class LabEmulator(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator, extended with what the official client and the lab's controllers rely on.

    Added: resourceVersion, uid, generation and creationTimestamp; label and field selectors; the status and
    scale subresources; strategic-merge, merge and JSON patches; replace (PUT); optimistic concurrency;
    namespaces that must exist; garbage collection by ownerReferences; watches that resume from a
    resourceVersion and end after timeoutSeconds; Kubernetes-style errors; bounded memory.

    The `*_object` methods are the in-process API for the lab's controllers. They are synchronous, so each
    call is atomic on the event loop; call them from the loop's thread only.
    """

    def __init__(
        self, kinds: Iterable[Kind] = KINDS, *, history_limit: int = 5, request_limit: int = 50
    ) -> None:
        super().__init__()
        self.history_limit = history_limit  # kmock keeps every version of every object: keep the last few
        self.request_limit = request_limit  # ... and every request it served: keep the last few
        self.kinds: dict[tuple[str, str, str], Kind] = {}
        self._resource_version = 0
        self._events: collections.deque[tuple[int, Kind, Obj]] = collections.deque(maxlen=1000)
        self._oldest_event = 1  # watches may resume from here on; older resourceVersions are gone (410)
        self._watchers: set[_Watcher] = set()
        self._listeners: list[Listener] = []
        for kind in kinds:
            self.add_kind(kind)
        # kmock's fallbacks cover GET, POST, PATCH and DELETE of one object; these add PUT and DELETE of many.
        self.fallback[kmock.method.PUT] << self._serve_replace
        self.fallback[kmock.method.DELETE] << self._serve_delete_collection
        for namespace in ("default", "kube-system"):
            self.create_object(
                "namespaces", {"metadata": {"name": namespace, "labels": {SIMULATED_LABEL: "true"}}}
            )

    def add_kind(self, kind: Kind) -> None:
        """Serve one more resource type (e.g. another CRD)."""
        self.kinds[kind.group, kind.version, kind.plural] = kind
        self.resources[kind.resource] = kmock.ResourceInfo(
            kind=kind.kind,
            namespaced=kind.namespaced,
            singular=kind.kind.lower(),
            verbs=VERBS,
            shortnames=kind.short_names,
            subresources=kind.subresources,
        )

    def kind(self, ref: Kind | str) -> Kind:
        """A served kind by reference: `"apps/v1/deployments"`, `"v1/pods"`, or a unique plural (`"pods"`)."""
        if isinstance(ref, Kind):
            return ref
        wanted = kmock.resource(ref)
        found = [kind for kind in self.kinds.values() if wanted.check(kind.resource)]
        if len(found) != 1:
            raise KeyError(f"not exactly one served kind matches {ref!r}: {found}")
        return found[0]

    # --- the in-process API -------------------------------------------------------------------------------

    def get_object(self, kind: Kind | str, namespace: str | None, name: str) -> Obj | None:
        """A copy of the object, or None."""
        stored = self._stored(self.kind(kind), namespace, name)
        return copy.deepcopy(stored) if stored is not None else None

    def list_objects(
        self,
        kind: Kind | str,
        namespace: str | None = None,
        *,
        label_selector: str | Mapping[str, str] | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        """Copies of the matching objects in all namespaces, or in one."""
        if isinstance(label_selector, Mapping):
            label_selector = ",".join(f"{key}={value}" for key, value in label_selector.items())
        selection = _Selection(
            self.kind(kind),
            namespace,
            labels=parse_label_selector(label_selector or ""),
            fields=_parse_field_selector(field_selector or ""),
        )
        return copy.deepcopy(self._select(selection))

    def create_object(self, kind: Kind | str, body: Mapping[str, Any], namespace: str | None = None) -> Obj:
        """Create an object (`metadata.generateName` works); its namespace from the argument or the body."""
        kind = self.kind(kind)
        obj = copy.deepcopy(dict(body))
        meta = obj.setdefault("metadata", {})
        namespace = (namespace or meta.get("namespace")) if kind.namespaced else None
        if kind.namespaced:
            if not namespace:
                raise _invalid(kind, meta.get("name"), "metadata.namespace: Required value")
            if self._stored(self.kind("namespaces"), None, namespace) is None:
                raise _not_found(self.kind("namespaces"), namespace)
        name = meta.get("name") or self._generate_name(kind, namespace, meta.get("generateName"))
        if not name:
            raise _invalid(kind, None, "metadata.name: Required value: name or generateName is required")
        if self._stored(kind, namespace, name) is not None:
            raise api_error(
                409,
                "AlreadyExists",
                f'{kind.plural} "{name}" already exists',
                name=name,
                group=kind.group,
                kind=kind.plural,
            )
        meta.update(name=name, uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        meta.pop("deletionTimestamp", None)
        meta.pop("resourceVersion", None)
        if namespace:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        obj.update(apiVersion=kind.api_version, kind=kind.kind)
        if "status" in kind.subresources:
            obj.pop("status", None)  # the status subresource is how status is written
        self._default_and_validate(kind, obj)
        meta["resourceVersion"] = self._next_resource_version()
        self.objects[kind.resource, namespace, name] = obj
        self._emit(kind, "ADDED", obj)
        return copy.deepcopy(obj)

    def patch_object(
        self,
        kind: Kind | str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: str = "merge",
        subresource: str | None = None,
    ) -> Obj:
        """Patch an object, or its `status` subresource; `patch_type` is "merge", "strategic" or "json"."""
        kind = self.kind(kind)
        old = self._require(kind, namespace, name)
        new = apply_patch(copy.deepcopy(old), patch, patch_type)
        return copy.deepcopy(self._update(kind, old, new, subresource))

    def replace_object(
        self, kind: Kind | str, body: Mapping[str, Any], *, subresource: str | None = None
    ) -> Obj:
        """Replace an object, or its `status` subresource; a stale `metadata.resourceVersion` fails (409)."""
        kind = self.kind(kind)
        meta = body.get("metadata") or {}
        old = self._require(kind, meta.get("namespace") if kind.namespaced else None, meta.get("name", ""))
        return copy.deepcopy(self._update(kind, old, copy.deepcopy(dict(body)), subresource))

    def delete_object(
        self, kind: Kind | str, namespace: str | None, name: str, *, propagation: str = "Background"
    ) -> Obj:
        """Delete an object and, unless `propagation` is "Orphan", what it owns; finalizers postpone it."""
        kind = self.kind(kind)
        obj = self._require(kind, namespace, name)
        meta = obj["metadata"]
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return copy.deepcopy(obj)
            marked = copy.deepcopy(obj)
            marked["metadata"]["deletionTimestamp"] = _now()
            return copy.deepcopy(self._store(kind, marked, "MODIFIED"))
        return copy.deepcopy(self._remove(kind, obj, orphan=propagation == "Orphan"))

    def on_change(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(kind, event_type, obj)` on each change (read `obj` only); returns unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @property
    def resource_version(self) -> str:
        """The latest resourceVersion: a watch from here sees only later changes."""
        return str(self._resource_version)

    def stop_watches(self) -> None:
        """End every open watch stream (the server is going away)."""
        for watcher in self._watchers:
            watcher.queue.put_nowait(None)

    # --- state changes --------------------------------------------------------------------------------------

    def _stored(self, kind: Kind, namespace: str | None, name: str) -> Obj | None:
        key = (kind.resource, namespace if kind.namespaced else None, name)
        return self.objects[key].raw if key in self.objects else None

    def _require(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        if kind.namespaced and not namespace:
            raise _not_found(kind, name)
        obj = self._stored(kind, namespace, name)
        if obj is None:
            raise _not_found(kind, name)
        return obj

    def _select(self, selection: _Selection) -> list[Obj]:
        resource = selection.kind.resource
        found = [obj.raw for (stored, _, _), obj in self.objects.items() if stored == resource]
        found = [obj for obj in found if selection.wants(obj)]
        return sorted(found, key=lambda obj: (obj["metadata"].get("namespace", ""), obj["metadata"]["name"]))

    def _generate_name(self, kind: Kind, namespace: str | None, prefix: str | None) -> str | None:
        if not prefix:
            return None
        while True:
            name = prefix + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
            if self._stored(kind, namespace, name) is None:
                return name

    def _next_resource_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def _default_and_validate(self, kind: Kind, obj: Obj) -> None:
        """The few API-server defaults and checks that the lab's workflows would meet on a real cluster."""
        if kind.kind == "Namespace":
            obj["status"] = {"phase": "Active"}
        if kind.kind in ("Deployment", "ReplicaSet"):
            spec = obj.setdefault("spec", {})
            spec.setdefault("replicas", 1)
            replicas = spec["replicas"]
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise _invalid(kind, obj["metadata"]["name"], "spec.replicas: must be a non-negative integer")
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if not selector or any(labels.get(key) != value for key, value in selector.items()):
                raise _invalid(
                    kind,
                    obj["metadata"]["name"],
                    "spec.template.metadata.labels: Invalid value: `selector` does not match template labels",
                )

    def _update(self, kind: Kind, old: Obj, new: Obj, subresource: str | None) -> Obj:
        """Store `new` as the next version of `old`, keeping what this kind of write may not change."""
        meta = new.get("metadata") or {}
        sent_version = meta.get("resourceVersion")
        if sent_version and sent_version != old["metadata"]["resourceVersion"]:
            raise api_error(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {kind.plural} "{old["metadata"]["name"]}": '
                "the object has been modified; please apply your changes to the latest version and try again",
                name=old["metadata"]["name"],
                kind=kind.plural,
            )
        if subresource == "status" and "status" in kind.subresources:
            result = copy.deepcopy(old)
            result["status"] = new.get("status")
        elif subresource is None:
            result = new
            result["metadata"] = meta
            for system in (
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
            ):
                if system in old["metadata"]:
                    meta[system] = old["metadata"][system]
                else:
                    meta.pop(system, None)
            if "status" in kind.subresources:
                result["status"] = old.get("status")
        else:
            raise _not_found(kind, f"{old['metadata']['name']}/{subresource}")
        if result.get("status") is None:
            result.pop("status", None)
        result.update(apiVersion=kind.api_version, kind=kind.kind)
        result["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if result == old:
            return old  # a no-op write changes nothing, not even the resourceVersion
        if _spec(result) != _spec(old):
            result["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if result["metadata"].get("deletionTimestamp") and not result["metadata"].get("finalizers"):
            return self._remove(kind, result)
        return self._store(kind, result, "MODIFIED")

    def _store(self, kind: Kind, obj: Obj, event_type: str) -> Obj:
        meta = obj["metadata"]
        meta["resourceVersion"] = self._next_resource_version()
        versions = self.objects[kind.resource, meta.get("namespace"), meta["name"]].history
        versions.append(obj)
        del versions[: -self.history_limit]
        self._emit(kind, event_type, obj)
        return obj

    def _remove(self, kind: Kind, obj: Obj, *, orphan: bool = False) -> Obj:
        meta = obj["metadata"]
        del self.objects[kind.resource, meta.get("namespace"), meta["name"]]
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = self._next_resource_version()
        self._emit(kind, "DELETED", gone)
        if kind.kind == "Namespace":
            self._remove_all(
                lambda other, child: other.namespaced and child["metadata"]["namespace"] == meta["name"]
            )
        elif not orphan:  # the garbage collector, in the background
            owner = meta["uid"]
            self._remove_all(lambda _, child: any(ref.get("uid") == owner for ref in _owners(child)))
        return gone

    def _remove_all(self, doomed: Callable[[Kind, Obj], bool]) -> None:
        for kind in list(self.kinds.values()):
            for obj in self._select(_Selection(kind)):
                meta = obj["metadata"]
                # an earlier removal may have taken this one with it
                if doomed(kind, obj) and self._stored(kind, meta.get("namespace"), meta["name"]) is not None:
                    self._remove(kind, obj)

    def _emit(self, kind: Kind, event_type: str, obj: Obj) -> None:
        version = int(obj["metadata"]["resourceVersion"])
        event = {"type": event_type, "object": obj}
        if len(self._events) == self._events.maxlen:
            self._oldest_event = self._events[0][0] + 1
        self._events.append((version, kind, event))
        for watcher in self._watchers:
            if watcher.selection.kind is kind and watcher.selection.wants(obj):
                watcher.queue.put_nowait(event)
        for listener in list(self._listeners):
            listener(kind, event_type, obj)

    # --- HTTP ---------------------------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        path = raw_request.path.rstrip("/") or "/"  # the official client asks for `/apis/` and `/version/`
        if path == _NAMESPACES_PATH:
            path = _NAMESPACES_STANDIN
        if path != raw_request.path:
            raw_request = raw_request.clone(rel_url=raw_request.rel_url.with_path(path, keep_query=True))
        return await super().__call__(raw_request)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        self._forget_old_requests()
        path = _parse_path(_NAMESPACES_PATH if request.url.path == _NAMESPACES_STANDIN else request.url.path)
        if path is not None:  # kmock's parse of resource URLs, redone where it goes wrong (namespaces)
            parsed = attrs.evolve(
                request,
                resource=kmock.resource(path.group, path.version, path.plural),
                namespace=path.namespace,
                name=path.name,
                subresource=path.subresource,
                action=_action(request.method, path.name, request.params),
            )
            # kmock's views match a request by identity among those recorded: record this one instead.
            if self._requests and self._requests[-1] is request:
                self._requests[-1] = parsed
            request = parsed
        # KubernetesEmulator._handle writes to its store before any reaction runs; the lab writes in its
        # fallbacks instead, so that a reaction placed ahead of them (an injected fault) really stops a write.
        return await super(kmock.KubernetesEmulator, self)._handle(request)

    def _forget_old_requests(self) -> None:
        """kmock records every request (and error) for assertions; a long-running lab keeps the latest.
        Few: kmock matches each request by walking every reaction's view of that record, so the cost of
        a request grows with it (500 kept made a busy lab spin at full CPU)."""
        keep = self.request_limit
        del self._requests[:-keep]
        for reaction in self._payloads:
            del reaction._requests[:-keep]
        if self.active:
            del self.errors[:-keep]

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        discovery = await super()._serve_version(request)
        assert isinstance(discovery, dict)  # kmock's APIResourceList
        for resource in discovery["resources"]:
            if resource["name"].endswith("/scale"):  # kmock gives subresources their parent's kind
                resource.update(
                    kind="Scale", group="autoscaling", version="v1", verbs=["get", "patch", "update"]
                )
            elif "/" in resource["name"]:
                resource["verbs"] = ["get", "patch", "update"]
        discovery["resources"].sort(key=lambda resource: resource["name"])
        return discovery

    async def _serve_server_version(self, request: kmock.Request) -> kmock.Payload:
        return {
            "major": "1",
            "minor": "31",
            "gitVersion": "v1.31.0+lcp-lab-simulated",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2024-08-13T00:00:00Z",
            "goVersion": "none: a simulated cluster",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def _kind_of(self, request: kmock.Request) -> Kind:
        resource = request.resource
        key = (resource.group or "", resource.version or "", resource.plural or "") if resource else None
        kind = self.kinds.get(key) if key else None
        if kind is None or (request.namespace is not None and not kind.namespaced):
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        return kind

    def _body(self, request: kmock.Request) -> Any:
        if request.data is None:
            raise api_error(400, "BadRequest", "the request body must be JSON")
        return request.data

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        kind = self._kind_of(request)
        return {
            "apiVersion": kind.api_version,
            "kind": f"{kind.kind}List",
            "metadata": {"resourceVersion": self.resource_version},
            "items": self._select(self._selection(kind, request)),
        }

    def _selection(self, kind: Kind, request: kmock.Request) -> _Selection:
        return _Selection(
            kind,
            request.namespace,
            request.name,
            labels=parse_label_selector(request.params.get("labelSelector", "")),
            fields=_parse_field_selector(request.params.get("fieldSelector", "")),
        )

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[kmock.Payload]:
        kind = self._kind_of(request)
        selection = self._selection(kind, request)
        since = request.params.get("resourceVersion", "")
        timeout = float(request.params.get("timeoutSeconds") or 1800)
        if since not in ("", "0") and (not since.isdigit() or int(since) + 1 < self._oldest_event):
            gone = api_error(410, "Expired", f"too old resource version: {since} ({self._oldest_event - 1})")
            yield b""
            yield {"type": "ERROR", "object": _status_body(gone)}
            return
        backlog: list[Obj]
        if since in ("", "0"):
            backlog = [{"type": "ADDED", "object": obj} for obj in self._select(selection)]
        else:
            backlog = [event for version, k, event in self._events if version > int(since) and k is kind]
            backlog = [event for event in backlog if selection.wants(event["object"])]
        watcher = _Watcher(selection)
        self._watchers.add(watcher)  # in the same step as the backlog: nothing falls between them
        try:
            yield b""  # sends the headers: the client knows the watch is open even if nothing happens
            for event in backlog:
                yield event
            async with asyncio.timeout(timeout):
                while (change := await watcher.queue.get()) is not None:
                    yield change
        except TimeoutError:
            pass  # timeoutSeconds is up: the stream ends, as on a real cluster
        finally:
            self._watchers.discard(watcher)

    async def _serve_fetch(self, request: kmock.Request) -> kmock.Payload:
        kind = self._kind_of(request)
        assert request.name is not None  # FETCH names an object
        obj = self._require(kind, request.namespace, request.name)
        if request.subresource is None or (request.subresource == "status" and "status" in kind.subresources):
            return obj
        if request.subresource == "scale" and "scale" in kind.subresources:
            return _scale(obj)
        raise _not_found(kind, f"{request.name}/{request.subresource}")

    async def _serve_create(self, request: kmock.Request) -> kmock.Payload:
        kind = self._kind_of(request)
        body = self._body(request)
        if not isinstance(body, dict):
            raise api_error(400, "BadRequest", "the object must be a JSON object")
        body_namespace = (body.get("metadata") or {}).get("namespace")
        if kind.namespaced and (request.namespace is None or body_namespace not in (None, request.namespace)):
            raise api_error(
                400, "BadRequest", "the namespace of the object does not match the namespace of the URL"
            )
        created = self.create_object(kind, body, request.namespace)
        return kmock.Response(status=201, payload=created)  # type: ignore[attr-defined]  # missing in __all__

    async def _serve_update(self, request: kmock.Request) -> kmock.Payload:
        kind = self._kind_of(request)
        assert request.name is not None  # UPDATE names an object
        content_type = next((v for k, v in request.headers.items() if k.lower() == "content-type"), "")
        patch_type = _PATCH_TYPES.get(content_type.split(";")[0].strip())
        if patch_type is None or (patch_type == "strategic" and kind.custom):
            raise api_error(
                415, "UnsupportedMediaType", f"the lab does not support {content_type!r} patches here"
            )
        body = self._body(request)
        if request.subresource == "scale" and "scale" in kind.subresources:
            old = self._require(kind, request.namespace, request.name)
            return self._write_scale(kind, old, apply_patch(_scale(old), body, patch_type))
        return self.patch_object(
            kind,
            request.namespace,
            request.name,
            body,
            patch_type=patch_type,
            subresource=request.subresource,
        )

    async def _serve_replace(self, request: kmock.Request) -> kmock.Payload:
        kind = self._kind_of(request)
        body = self._body(request)
        if request.name is None or not isinstance(body, dict):
            raise api_error(405, "MethodNotAllowed", "PUT needs an object's URL and the whole object")
        meta = body.setdefault("metadata", {})
        if meta.setdefault("name", request.name) != request.name:
            raise api_error(400, "BadRequest", "the name of the object does not match the name of the URL")
        if request.subresource == "scale" and "scale" in kind.subresources:
            return self._write_scale(kind, self._require(kind, request.namespace, request.name), body)
        meta["namespace"] = request.namespace
        return self.replace_object(kind, body, subresource=request.subresource)

    def _write_scale(self, kind: Kind, old: Obj, scale: Obj) -> Obj:
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise _invalid(kind, old["metadata"]["name"], "spec.replicas: must be a non-negative integer")
        new = copy.deepcopy(old)
        new["spec"]["replicas"] = replicas
        new["metadata"]["resourceVersion"] = (scale.get("metadata") or {}).get("resourceVersion")
        return _scale(self._update(kind, old, new, None))

    async def _serve_delete(self, request: kmock.Request) -> kmock.Payload:
        kind = self._kind_of(request)
        assert request.name is not None  # DELETE names an object
        options = request.data if isinstance(request.data, dict) else {}
        propagation = (
            request.params.get("propagationPolicy") or options.get("propagationPolicy") or "Background"
        )
        gone = self.delete_object(kind, request.namespace, request.name, propagation=propagation)
        return gone if kind.returns_deleted_object else _success(kind, gone)

    async def _serve_delete_collection(self, request: kmock.Request) -> kmock.Payload:
        kind = self._kind_of(request)
        if request.name is not None:
            raise api_error(405, "MethodNotAllowed", "this DELETE is not supported by the lab")
        for obj in self._select(self._selection(kind, request)):
            meta = obj["metadata"]
            if self._stored(kind, meta.get("namespace"), meta["name"]) is not None:
                self.delete_object(kind, meta.get("namespace"), meta["name"])
        return {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success"}


def _owners(obj: Obj) -> list[Obj]:
    return list(obj["metadata"].get("ownerReferences") or [])


def _spec(obj: Obj) -> Obj:
    """What counts as the object's spec for `metadata.generation`: all but metadata and status."""
    return {
        key: value for key, value in obj.items() if key not in ("metadata", "status", "apiVersion", "kind")
    }


def _scale(obj: Obj) -> Obj:
    meta = obj["metadata"]
    keep = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
    status: Obj = {"replicas": (obj.get("status") or {}).get("replicas", 0)}
    selector = format_label_selector((obj.get("spec") or {}).get("selector"))
    if selector:
        status["selector"] = selector
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {key: meta[key] for key in keep if key in meta},
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": status,
    }


def _success(kind: Kind, obj: Obj) -> Obj:
    meta = obj["metadata"]
    details = {"name": meta["name"], "group": kind.group, "kind": kind.plural, "uid": meta["uid"]}
    return {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success", "details": details}


def _status_body(error: kmock.KubernetesError) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "code": error.status,
        "reason": error.reason,
        "message": error.message,
    }


# ---------------------------------------------------------------------------------------------------------
# The server


class LabKubernetes:
    """The lab's simulated Kubernetes cluster API, served over plain HTTP to the official client.

    Start it inside a running asyncio program (`await kube.start(...)`), point clients at the kubeconfig
    from `write_kubeconfig`, and give its objects life with `lab.controllers`. `api` is the in-process view
    of the same state.
    """

    def __init__(self, kinds: Iterable[Kind] = KINDS) -> None:
        self.api = LabEmulator(kinds)
        self._server: kmock.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0: any free port); returns the base URL."""
        if self._server is not None:
            raise RuntimeError("the lab Kubernetes API is already serving")
        await self.api.__aenter__()  # entered, kmock renders errors as Kubernetes Status responses
        server = kmock.Server(self.api, host=host, port=port or None)
        try:
            await server.__aenter__()
        except BaseException:
            await self.api.__aexit__(None, None, None)
            raise
        self._server = server
        log.info("lab: simulated Kubernetes API (kmock emulator, not a real cluster) serving at %s", self.url)
        return self.url

    async def stop(self) -> None:
        """Close open watches and stop serving."""
        server, self._server = self._server, None
        if server is None:
            return
        self.api.stop_watches()  # aiohttp waits for open requests to finish before it stops
        try:
            await server.__aexit__(None, None, None)
        finally:
            await self.api.__aexit__(None, None, None)
        log.info("lab: simulated Kubernetes API stopped")

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the lab Kubernetes API is not serving")
        host = self._server.host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
        return f"http://{host}:{self._server.port}"

    def write_kubeconfig(self, path: str | Path, context: str = "lcp-lab") -> Path:
        """Write a kubeconfig for this server (plain HTTP, a dummy token) and return its path."""
        path = Path(path)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {"token": "lcp-lab-simulated"}}],
            "contexts": [
                {"name": context, "context": {"cluster": context, "user": context, "namespace": "default"}}
            ],
            "current-context": context,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "# The lcp lab's simulated Kubernetes cluster: not a real one.\n" + yaml.safe_dump(config)
        )
        return path
