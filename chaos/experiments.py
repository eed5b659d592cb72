"""Chaos experiments as typed data: a Litmus fault, its target and a steady-state hypothesis lcp checks."""

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from policies.chaos import COMPARATORS
from policies.errors import PermanentError
from policies.ranges import DAY_S, HOUR_S, seconds

__all__ = [
    "COMPARATORS",
    "DEFAULT_CATALOGUE",
    "FAULTS",
    "WHEN",
    "Experiment",
    "ExperimentError",
    "Fault",
    "HttpProbe",
    "Hypothesis",
    "Probe",
    "PROBE_METHODS",
    "PromProbe",
    "Target",
    "engine_name",
    "experiment_to_data",
    "hypothesis_to_data",
    "load_definitions",
    "load_experiments",
    "parse_experiments",
    "render_engine",
    "result_name",
]

FAULTS = ("pod-delete", "pod-network-loss", "pod-cpu-hog")
WHEN = ("before", "during", "after")
APP_KINDS = ("deployment", "statefulset", "daemonset")
# A probe observes: a method that could change something would let a run's request act on whatever its URL
# reaches (a DELETE through the Kubernetes API was one), with the status code told back.
PROBE_METHODS = ("GET", "HEAD")
LITMUS_API_VERSION = "litmuschaos.io/v1alpha1"
MAX_WEIGHT = 10  # ChaosCenter's fault weights run from 0 to 10
# Numeric ranges: probes run at most once a second, each waits at most a minute, a hypothesis holds at most
# MAX_PROBES of them, and a fault lasts at most a day.
MAX_PROBES = 20
PROBE_INTERVAL_RANGE = seconds(1, HOUR_S)
PROBE_TIMEOUT_RANGE = seconds(0, 60, low_open=True)
RECOVER_RANGE = seconds(0, HOUR_S)
MAX_ENV_VALUE = 1000  # characters of one fault setting
# A probe's name, URL and query are shown in every run's journal, the CLI and the logs, and the URL is sent:
# control, bidi and separator characters are refused (a URL holding one is one httpx will not send, which
# made the probe's activity raise on every attempt and held the run in its steady-state check), and lengths
# are bounded.
MAX_PROBE_NAME = 100
MAX_PROBE_URL = 2000
MAX_PROBE_QUERY = 2000
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_UNSHOWABLE_IN_QUERY = re.compile(  # a query may span lines
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)


def _unshowable(text: str, pattern: re.Pattern[str] = _UNSHOWABLE) -> str | None:
    """Where `text` holds a character that may not be in it (e.g. 'U+001B at character 4'), or None."""
    found = pattern.search(text)
    return None if found is None else f"U+{ord(found.group()):04X} at character {found.start()}"


T = TypeVar("T")

DEFAULT_CATALOGUE = Path(__file__).with_name("catalogue.yaml")  # the lab demo's experiments
# What a catalogue's {{name}} placeholders stand for unless the loader is told otherwise: the lab's workload
# simulator at its default address (`lcp dev --workload-port` moves it, and tells the API through
# LCP_CHAOS__WORKLOAD_URL).
DEFAULT_PLACEHOLDERS = {"workload": "http://127.0.0.1:8601"}

# litmus-go's own defaults: what each experiment's Go code reads when a variable is unset
# (pkg/generic/<fault>/environment). They are rendered into every engine on purpose: chaos-charts'
# ChaosExperiment CRs carry other values (pod-delete: 15 s, every 5 s, FORCE true), and the engine's env
# wins over the CR's. PODS_AFFECTED_PERC "0" (or "") means one pod. pod-cpu-hog's CPU_CORES is
# chaos-charts' 1: the newer Go default 0 means every core.
_COMMON_DEFAULTS = {"RAMP_TIME": "0", "PODS_AFFECTED_PERC": "0", "SEQUENCE": "parallel"}
FAULT_DEFAULTS: dict[str, dict[str, str]] = {
    "pod-delete": {
        "TOTAL_CHAOS_DURATION": "30",
        "CHAOS_INTERVAL": "10",
        "FORCE": "false",
        **_COMMON_DEFAULTS,
    },
    "pod-network-loss": {
        "TOTAL_CHAOS_DURATION": "60",
        "NETWORK_PACKET_LOSS_PERCENTAGE": "100",
        "NETWORK_INTERFACE": "eth0",
        **_COMMON_DEFAULTS,
    },
    "pod-cpu-hog": {
        "TOTAL_CHAOS_DURATION": "60",
        "CPU_CORES": "1",
        "CPU_LOAD": "100",
        **_COMMON_DEFAULTS,
    },
}
# Further settings each experiment reads that have no default worth rendering (the ChaosExperiment CR's
# value, e.g. CONTAINER_RUNTIME containerd, stays in force unless an experiment sets one).
_TARGETING = ("TARGET_PODS", "TARGET_CONTAINER", "NODE_LABEL", "DEFAULT_HEALTH_CHECK")
_RUNTIME = ("LIB_IMAGE", "CONTAINER_RUNTIME", "SOCKET_PATH")
FAULT_EXTRA_KEYS: dict[str, tuple[str, ...]] = {
    "pod-delete": (*_TARGETING, "RANDOMNESS"),
    "pod-network-loss": (*_TARGETING, *_RUNTIME, "TC_IMAGE", "DESTINATION_IPS", "DESTINATION_HOSTS"),
    "pod-cpu-hog": (*_TARGETING, *_RUNTIME, "STRESS_IMAGE"),
}
# Settings litmus-go parses as whole numbers (strconv.Atoi), with the range that makes sense.
_WHOLE_NUMBERS: dict[str, tuple[int, int]] = {
    "TOTAL_CHAOS_DURATION": (1, int(DAY_S)),
    "CHAOS_INTERVAL": (1, int(HOUR_S)),
    "RAMP_TIME": (0, int(HOUR_S)),
    "PODS_AFFECTED_PERC": (0, 100),
    "NETWORK_PACKET_LOSS_PERCENTAGE": (0, 100),
    "CPU_CORES": (0, 256),
    "CPU_LOAD": (0, 100),
}
_CHOICES = {
    "FORCE": ("true", "false"),
    "RANDOMNESS": ("true", "false"),
    "DEFAULT_HEALTH_CHECK": ("true", "false"),
    "SEQUENCE": ("parallel", "serial"),
}
# Settings where "" means Litmus' default (one pod, no ramp).
_EMPTY_MEANS_DEFAULT = ("PODS_AFFECTED_PERC", "RAMP_TIME")

_RFC1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = _LABEL_NAME
MAX_NAME = 63


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _tuple_field(instance: object, name: str) -> None:
    """Let callers pass a list (or one `when` as a bare string) where a tuple belongs."""
    value = getattr(instance, name)
    if isinstance(value, list):
        object.__setattr__(instance, name, tuple(value))
    elif name == "when" and isinstance(value, str):
        object.__setattr__(instance, name, (value,))


# ── The definitions ───────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Target:
    """The workload the fault hits: Litmus' appinfo (namespace, one `key=value` label, kind)."""

    namespace: str
    app_label: str  # "key=value", e.g. "app.kubernetes.io/name=chat-api"
    kind: str = "deployment"  # Litmus' appkind: deployment | statefulset | daemonset

    @property
    def service(self) -> str:
        """The label's value: the service's name (what a rollout of it is keyed by)."""
        return self.app_label.partition("=")[2]

    def problem(self) -> str | None:
        if not isinstance(self.namespace, str) or not _RFC1123_LABEL.fullmatch(self.namespace):
            return f"namespace: {self.namespace!r} is not a namespace name (an RFC 1123 label)"
        if label_problem := _app_label_problem(self.app_label):
            return f"app_label: {label_problem}"
        if self.kind not in APP_KINDS:
            return f"kind: must be one of {', '.join(APP_KINDS)}, got {self.kind!r}"
        return None


@dataclass(frozen=True)
class PromProbe:
    """A PromQL query that returns one value, which must satisfy `<comparator> value` (within tolerance)."""

    name: str
    query: str  # PromQL, one value
    comparator: str  # one of COMPARATORS
    value: float
    tolerance: float = 0.0  # absolute slack in the comparator's favour (>= 0.99 with 0.005 passes 0.986)
    when: tuple[str, ...] = WHEN
    # A tag so that a Temporal payload decodes into the right member of `Probe` (the converter tries the
    # union's members in order and rejects a mismatched Literal).
    type: Literal["prometheus"] = field(default="prometheus", init=False)

    def __post_init__(self) -> None:
        _tuple_field(self, "when")

    def problem(self) -> str | None:
        if not isinstance(self.query, str) or not self.query.strip():
            return "query: must be a PromQL query that returns one value"
        if len(self.query) > MAX_PROBE_QUERY:
            return f"query: at most {MAX_PROBE_QUERY} characters, got {len(self.query)}"
        if where := _unshowable(self.query, _UNSHOWABLE_IN_QUERY):
            return f"query: control and bidi-override characters are not allowed (found {where})"
        if self.comparator not in COMPARATORS:
            return f"comparator: must be one of {', '.join(COMPARATORS)}, got {self.comparator!r}"
        if not _is_finite(self.value):
            return f"value: must be a finite number, got {self.value!r}"
        if not _is_finite(self.tolerance) or self.tolerance < 0:
            return f"tolerance: must be a finite number ≥ 0, got {self.tolerance!r}"
        return None


@dataclass(frozen=True)
class HttpProbe:
    """An HTTP request that must answer with `expected_status` within `timeout_s`."""

    name: str
    url: str
    expected_status: int = 200
    method: str = "GET"
    timeout_s: float = 5.0
    when: tuple[str, ...] = WHEN
    type: Literal["http"] = field(default="http", init=False)

    def __post_init__(self) -> None:
        _tuple_field(self, "when")

    def problem(self) -> str | None:
        if isinstance(self.url, str) and len(self.url) > MAX_PROBE_URL:
            return f"url: at most {MAX_PROBE_URL} characters, got {len(self.url)}"
        if isinstance(self.url, str) and (where := _unshowable(self.url)):
            return f"url: control and bidi-override characters are not allowed (found {where})"
        try:
            parts = urlsplit(self.url) if isinstance(self.url, str) else None
        except ValueError:  # e.g. an unclosed IPv6 bracket
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            return f"url: must be an http:// or https:// URL with a host, got {self.url!r}"
        if not _is_whole(self.expected_status) or not 100 <= self.expected_status <= 599:
            return f"expected_status: must be an HTTP status code (100-599), got {self.expected_status!r}"
        if self.method not in PROBE_METHODS:
            return f"method: a probe only reads, so it must be GET or HEAD, got {self.method!r}"
        if problem := PROBE_TIMEOUT_RANGE.problem("timeout_s", self.timeout_s, ": "):
            return problem
        return None


Probe = PromProbe | HttpProbe


@dataclass(frozen=True)
class Hypothesis:
    """The steady state: probes that must pass before the fault, continuously during it, and after it."""

    probes: tuple[Probe, ...] = ()
    interval_s: float = 5.0  # between continuous ("during") probe rounds

    def __post_init__(self) -> None:
        _tuple_field(self, "probes")

    def probes_for(self, when: str) -> tuple[Probe, ...]:
        """The probes that run at `when` ("before", "during" or "after"), in their declared order."""
        if when not in WHEN:
            raise ValueError(f"when must be one of {', '.join(WHEN)}, got {when!r}")
        return tuple(probe for probe in self.probes if when in probe.when)

    def problem(self) -> str | None:
        if problem := PROBE_INTERVAL_RANGE.problem("interval_s", self.interval_s, ": "):
            return problem
        if len(self.probes) > MAX_PROBES:
            return f"probes: at most {MAX_PROBES} probes, got {len(self.probes)}"
        seen: set[str] = set()
        for index, probe in enumerate(self.probes):
            where = f"probes[{index}]"
            if not isinstance(probe, PromProbe | HttpProbe):
                return f"{where}: must be a PromProbe or an HttpProbe, got {type(probe).__name__}"
            if not isinstance(probe.name, str) or not probe.name.strip():
                return f"{where}.name: a probe needs a name"
            if len(probe.name) > MAX_PROBE_NAME:
                return f"{where}.name: at most {MAX_PROBE_NAME} characters, got {len(probe.name)}"
            if found := _unshowable(probe.name):
                return f"{where}.name: control and bidi-override characters are not allowed (found {found})"
            if probe.name in seen:
                return f"{where}.name: {probe.name!r} names two probes; probe names must be unique"
            seen.add(probe.name)
            if isinstance(probe.when, str) or not probe.when:
                return f"{where}.when: must list one or more of {', '.join(WHEN)}, got {probe.when!r}"
            if unknown := [when for when in probe.when if when not in WHEN]:
                return f"{where}.when: must be among {', '.join(WHEN)}, got {unknown[0]!r}"
            if problem := probe.problem():
                return f"{where}.{problem}"
        return None


@dataclass(frozen=True)
class Fault:
    """A Litmus experiment and its settings: `env` (kept sorted by name) overrides Litmus' defaults."""

    kind: str  # one of FAULTS
    env: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        # Kept sorted by name, so that equal settings make equal faults whatever order they came in.
        pairs = list(self.env.items()) if isinstance(self.env, dict) else list(self.env)
        if all(isinstance(pair, tuple | list) and len(pair) == 2 for pair in pairs):
            object.__setattr__(
                self, "env", tuple(sorted((tuple(pair) for pair in pairs), key=lambda p: str(p[0])))
            )

    def environment(self) -> dict[str, str]:
        """The experiment's env: Litmus' defaults for the kind (in their order), then the overrides."""
        return {**FAULT_DEFAULTS.get(self.kind, {}), **dict(self.env)}

    @property
    def duration_s(self) -> float:
        """How long the fault lasts: TOTAL_CHAOS_DURATION (RAMP_TIME waits before and after it)."""
        return _env_number(self.environment(), "TOTAL_CHAOS_DURATION")

    @property
    def pods_affected_perc(self) -> float:
        """PODS_AFFECTED_PERC; 0.0 stands for Litmus' default ("", unset or 0): one pod."""
        return _env_number(self.environment(), "PODS_AFFECTED_PERC")

    def problem(self) -> str | None:
        if self.kind not in FAULTS:
            return f"kind: must be one of {', '.join(FAULTS)}, got {self.kind!r}"
        known = (*FAULT_DEFAULTS[self.kind], *FAULT_EXTRA_KEYS[self.kind])
        seen: set[str] = set()
        for pair in self.env:
            if not (
                isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(part, str) for part in pair)
            ):
                return f"env: each setting must be a (name, value) pair of strings, got {pair!r}"
            key, value = pair
            if key not in known:
                return f"env.{key}: {self.kind} has no such setting (it takes {', '.join(sorted(known))})"
            if key in seen:
                return f"env.{key}: set twice"
            seen.add(key)
            if problem := _env_value_problem(key, value):
                return f"env.{key}: {problem}"
        return None


@dataclass(frozen=True)
class Experiment:
    """One chaos experiment: inject `fault` into `target` while `hypothesis` must keep holding."""

    name: str  # an RFC 1123 label
    target: Target
    fault: Fault
    hypothesis: Hypothesis = Hypothesis()
    weight: int = MAX_WEIGHT  # the fault's weight in the resilience score (ChaosCenter: 0..10)
    recover_within_s: float = 60.0  # after cleanup, the steady state must hold again within this

    def problem(self) -> str | None:
        """What is wrong with this experiment, as one sentence starting with the field's path; None when
        it is fine."""
        if not isinstance(self.name, str) or not _RFC1123_LABEL.fullmatch(self.name):
            return (
                f"name: {self.name!r} is not an RFC 1123 label (1-63 lower-case letters, digits or '-', "
                "starting and ending with a letter or digit)"
            )
        parts: tuple[tuple[str, Target | Fault | Hypothesis], ...] = (
            ("target", self.target),
            ("fault", self.fault),
            ("hypothesis", self.hypothesis),
        )
        for where, part in parts:
            if problem := part.problem():
                return f"{where}.{problem}"
        if not _is_whole(self.weight) or not 0 <= self.weight <= MAX_WEIGHT:
            return f"weight: must be a whole number from 0 to {MAX_WEIGHT}, got {self.weight!r}"
        if problem := RECOVER_RANGE.problem("recover_within_s", self.recover_within_s, ": "):
            return problem
        return None


# ── Litmus manifests ──────────────────────────────────────────────────────────────────────────────────


def engine_name(experiment: Experiment, run: str) -> str:
    """The ChaosEngine's name, `<experiment>-<run>`, short enough that its ChaosResult's name
    (`result_name`, which Litmus also sets as a label value) stays within 63 characters. A longer or
    irregular one is cut and ends in a hash of the whole, so different runs keep different names."""
    return _shortened(f"{experiment.name}-{run}", MAX_NAME - len(f"-{experiment.fault.kind}"))


def result_name(engine: str, experiment: Experiment) -> str:
    """The name Litmus gives the engine's ChaosResult: `<engine>-<experiment kind>`."""
    return f"{engine}-{experiment.fault.kind}"


def render_engine(
    experiment: Experiment, run: str, *, service_account: str = "litmus-admin"
) -> dict[str, Any]:
    """The ChaosEngine manifest for one run of `experiment`. Probes are not rendered: lcp runs them."""
    if problem := experiment.problem():
        raise ExperimentError(f"experiment {experiment.name!r}: {problem}")
    target = experiment.target
    return {
        "apiVersion": LITMUS_API_VERSION,
        "kind": "ChaosEngine",
        "metadata": {
            "name": engine_name(experiment, run),
            "namespace": target.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "lcp",
                "lcp.dev/experiment": experiment.name,
                "lcp.dev/run": _shortened(run, MAX_NAME),
            },
        },
        "spec": {
            "engineState": "active",
            "appinfo": {"appns": target.namespace, "applabel": target.app_label, "appkind": target.kind},
            "chaosServiceAccount": service_account,
            "jobCleanUpPolicy": "delete",
            "experiments": [
                {
                    "name": experiment.fault.kind,
                    "spec": {
                        "components": {
                            "env": [
                                {"name": key, "value": value}
                                for key, value in experiment.fault.environment().items()
                            ]
                        }
                    },
                }
            ],
        },
    }


# ── Experiments as data (YAML) ────────────────────────────────────────────────────────────────────────


class ExperimentError(PermanentError, ValueError):
    """An experiment definition is malformed; the message starts with the path of the bad field."""


def parse_experiments(data: Any) -> list[Experiment]:
    """Experiments from YAML-loaded data, `{"experiments": [...]}` (see chaos/catalogue.yaml), validated."""
    if not isinstance(data, dict) or not isinstance(data.get("experiments"), list):
        raise ExperimentError("top level: must be a mapping with an 'experiments' list")
    _keys(data, "top level", required=("experiments",), optional=())
    experiments: list[Experiment] = []
    first_index: dict[str, int] = {}
    for index, entry in enumerate(data["experiments"]):
        where = f"experiments[{index}]"
        experiment = _experiment(entry, where)
        if problem := experiment.problem():
            raise ExperimentError(f"{where}.{problem}")
        if experiment.name in first_index:
            raise ExperimentError(
                f"{where}.name: {experiment.name!r} is already the name of "
                f"experiments[{first_index[experiment.name]}]"
            )
        first_index[experiment.name] = index
        experiments.append(experiment)
    return experiments


def load_experiments(path: str | Path, placeholders: Mapping[str, str] | None = None) -> list[Experiment]:
    """Experiments from a YAML file, or from YAML text (a str with a line break); ExperimentError names
    the file. Every `{{name}}` in its strings is replaced by `placeholders[name]` (DEFAULT_PLACEHOLDERS for
    those not given), e.g. `url: "{{workload}}/healthz"`."""
    return load_definitions(path, parse_experiments, placeholders)


def load_definitions(
    path: str | Path, parse: Callable[[Any], list[T]], placeholders: Mapping[str, str] | None = None
) -> list[T]:
    """`parse` of a YAML file's (or YAML text's) data, placeholders filled; ExperimentError names the file.
    PyYAML is imported here, not at the top: it is not stdlib, and the module stays importable wherever only
    the definitions are needed (a workflow sandbox)."""
    import yaml

    if isinstance(path, str) and "\n" in path:
        source, text = "<text>", path
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ExperimentError(f"{source}: can't read the file: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ExperimentError(f"{source}: not valid YAML: {exc}") from None
    try:
        return parse(_filled(data, {**DEFAULT_PLACEHOLDERS, **(placeholders or {})}))
    except ExperimentError as exc:
        raise ExperimentError(f"{source}: {exc}") from None


def _filled(data: Any, placeholders: Mapping[str, str]) -> Any:
    """`data` with each `{{name}}` in its strings replaced by its value."""
    if isinstance(data, str):
        for name, value in placeholders.items():
            data = data.replace("{{" + name + "}}", value)
        return data
    if isinstance(data, list):
        return [_filled(item, placeholders) for item in data]
    if isinstance(data, dict):
        return {key: _filled(value, placeholders) for key, value in data.items()}
    return data


def experiment_to_data(experiment: Experiment) -> dict[str, Any]:
    """One entry of an `experiments` list, as parse_experiments reads it back (env holds overrides only)."""
    return {
        "name": experiment.name,
        "target": {
            "namespace": experiment.target.namespace,
            "app_label": experiment.target.app_label,
            "kind": experiment.target.kind,
        },
        "fault": {"kind": experiment.fault.kind, "env": dict(experiment.fault.env)},
        "hypothesis": hypothesis_to_data(experiment.hypothesis),
        "weight": experiment.weight,
        "recover_within_s": experiment.recover_within_s,
    }


def hypothesis_to_data(hypothesis: Hypothesis) -> dict[str, Any]:
    """A `hypothesis` entry, as the parsers read it back."""
    return {
        "interval_s": hypothesis.interval_s,
        "probes": [_probe_to_data(probe) for probe in hypothesis.probes],
    }


def _probe_to_data(probe: Probe) -> dict[str, Any]:
    if isinstance(probe, PromProbe):
        return {
            "name": probe.name,
            "type": probe.type,
            "query": probe.query,
            "comparator": probe.comparator,
            "value": probe.value,
            "tolerance": probe.tolerance,
            "when": list(probe.when),
        }
    return {
        "name": probe.name,
        "type": probe.type,
        "url": probe.url,
        "expected_status": probe.expected_status,
        "method": probe.method,
        "timeout_s": probe.timeout_s,
        "when": list(probe.when),
    }


def _experiment(entry: Any, where: str) -> Experiment:
    _keys(
        entry,
        where,
        required=("name", "target", "fault"),
        optional=("hypothesis", "weight", "recover_within_s"),
    )
    target = entry["target"]
    _keys(target, f"{where}.target", required=("namespace", "app_label"), optional=("kind",))
    fault = entry["fault"]
    _keys(fault, f"{where}.fault", required=("kind",), optional=("env",))
    return Experiment(
        name=_text(entry, "name", where),
        target=Target(
            namespace=_text(target, "namespace", f"{where}.target"),
            app_label=_text(target, "app_label", f"{where}.target"),
            kind=_text(target, "kind", f"{where}.target", "deployment"),
        ),
        fault=Fault(
            kind=_text(fault, "kind", f"{where}.fault"), env=_env(fault.get("env"), f"{where}.fault")
        ),
        hypothesis=_hypothesis(entry.get("hypothesis"), f"{where}.hypothesis"),
        weight=_whole(entry, "weight", where, MAX_WEIGHT),
        recover_within_s=_number(entry, "recover_within_s", where, 60.0),
    )


def _hypothesis(entry: Any, where: str) -> Hypothesis:
    hypothesis = {} if entry is None else entry
    _keys(hypothesis, where, required=(), optional=("interval_s", "probes"))
    probes = [] if hypothesis.get("probes") is None else hypothesis["probes"]
    if not isinstance(probes, list):
        raise ExperimentError(f"{where}.probes: must be a list of probes")
    return Hypothesis(
        probes=tuple(_probe(probe, f"{where}.probes[{index}]") for index, probe in enumerate(probes)),
        interval_s=_number(hypothesis, "interval_s", where, 5.0),
    )


def _probe(entry: Any, where: str) -> Probe:
    if not isinstance(entry, dict):
        raise ExperimentError(f"{where}: must be a mapping")
    kind = entry.get("type")
    if kind == "prometheus":
        _keys(
            entry,
            where,
            required=("name", "type", "query", "comparator", "value"),
            optional=("tolerance", "when"),
        )
        return PromProbe(
            name=_text(entry, "name", where),
            query=_text(entry, "query", where),
            comparator=_text(entry, "comparator", where),
            value=_number(entry, "value", where),
            tolerance=_number(entry, "tolerance", where, 0.0),
            when=_when(entry, where),
        )
    if kind == "http":
        _keys(
            entry,
            where,
            required=("name", "type", "url"),
            optional=("expected_status", "method", "timeout_s", "when"),
        )
        return HttpProbe(
            name=_text(entry, "name", where),
            url=_text(entry, "url", where),
            expected_status=_whole(entry, "expected_status", where, 200),
            method=_text(entry, "method", where, "GET"),
            timeout_s=_number(entry, "timeout_s", where, 5.0),
            when=_when(entry, where),
        )
    raise ExperimentError(f"{where}.type: must be prometheus or http, got {kind!r}")


def _keys(entry: Any, where: str, *, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    if not isinstance(entry, dict):
        raise ExperimentError(f"{where}: must be a mapping, got {entry!r}")
    if missing := [key for key in required if key not in entry]:
        raise ExperimentError(f"{where}: missing {', '.join(missing)}")
    if unknown := [str(key) for key in entry if key not in required and key not in optional]:
        raise ExperimentError(
            f"{where}: unknown key {unknown[0]!r} (expected {', '.join((*required, *optional))})"
        )


def _text(entry: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str):
        raise ExperimentError(f"{where}.{key}: must be a string, got {value!r}")
    return value


def _number(entry: dict[str, Any], key: str, where: str, default: float | None = None) -> float:
    value: Any = entry.get(key, default)
    if not _is_finite(value):
        raise ExperimentError(f"{where}.{key}: must be a number, got {value!r}")
    return float(value)


def _whole(entry: dict[str, Any], key: str, where: str, default: int) -> int:
    value = entry.get(key, default)
    if not _is_whole(value):
        raise ExperimentError(f"{where}.{key}: must be a whole number, got {value!r}")
    return int(value)


def _when(entry: dict[str, Any], where: str) -> tuple[str, ...]:
    value = entry.get("when", list(WHEN))
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ExperimentError(f"{where}.when: must list one or more of {', '.join(WHEN)}, got {value!r}")
    return tuple(value)


def _env(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ExperimentError(f"{where}.env: must be a mapping of setting names to values, got {value!r}")
    pairs: list[tuple[str, str]] = []
    for key, item in value.items():
        # YAML reads `TOTAL_CHAOS_DURATION: 60` as a number and `FORCE: true` as a bool: Litmus wants text.
        if isinstance(item, bool):
            text = "true" if item else "false"
        elif isinstance(item, int) or (isinstance(item, float) and item.is_integer()):
            text = str(int(item))
        elif isinstance(item, str | float):
            text = str(item)
        else:
            raise ExperimentError(f"{where}.env.{key}: must be a string or a number, got {item!r}")
        pairs.append((str(key), text))
    return tuple(pairs)


# ── Helpers ───────────────────────────────────────────────────────────────────────────────────────────


def _app_label_problem(label: object) -> str | None:
    if not isinstance(label, str) or label.count("=") != 1:
        return f"must be one label as key=value, e.g. app.kubernetes.io/name=chat-api, got {label!r}"
    key, value = label.split("=")
    prefix, slash, name = key.rpartition("/")
    if (slash and not (len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix))) or not _LABEL_NAME.fullmatch(
        name
    ):
        return f"{key!r} is not a Kubernetes label key, e.g. app or app.kubernetes.io/name"
    if not _LABEL_VALUE.fullmatch(value):
        return f"{value!r} is not a Kubernetes label value (1-63 letters, digits, '-', '_' or '.')"
    return None


def _env_value_problem(key: str, value: str) -> str | None:
    if key in _WHOLE_NUMBERS:
        if value == "" and key in _EMPTY_MEANS_DEFAULT:
            return None
        low, high = _WHOLE_NUMBERS[key]
        # At most 9 digits: int() of thousands of digits raises instead of answering.
        number = int(value) if value.isdigit() and value.isascii() and len(value) <= 9 else None
        if number is None or not low <= number <= high:
            return f"must be a whole number from {low} to {high}, got {value[:20]!r}"
    if key in _CHOICES and value not in _CHOICES[key]:
        return f"must be one of {', '.join(_CHOICES[key])}, got {value[:20]!r}"
    if len(value) > MAX_ENV_VALUE:
        return f"must be at most {MAX_ENV_VALUE} characters, got {len(value)}"
    return None


def _env_number(env: dict[str, str], key: str) -> float:
    text = env.get(key, "")
    if text == "" and key in _EMPTY_MEANS_DEFAULT:
        return 0.0
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{key} must be a whole number, got {text!r}") from None


def _shortened(text: str, limit: int) -> str:
    """`text` as a valid name of at most `limit` characters: kept when it already is one, else cleaned up
    (lower case, '-' for anything else), cut, and ended with 8 hex digits of a hash of the original."""
    if len(text) <= limit and _RFC1123_LABEL.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    cleaned = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    head = cleaned[: limit - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}" if head else digest
