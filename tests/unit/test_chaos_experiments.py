"""Chaos experiments: validation, Litmus ChaosEngine manifests, YAML loading and Temporal payloads."""

import operator
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.contrib.pydantic import pydantic_data_converter

from chaos.experiments import (
    DEFAULT_CATALOGUE,
    FAULTS,
    WHEN,
    Experiment,
    ExperimentError,
    Fault,
    HttpProbe,
    Hypothesis,
    PromProbe,
    Target,
    engine_name,
    experiment_to_data,
    load_experiments,
    parse_experiments,
    render_engine,
    result_name,
)
from policies.chaos import probe_passes

SUCCESS_RATE = (
    'sum(rate(http_requests_total{namespace="lab",service="chat-api",code!~"5.."}[30s]))'
    ' / sum(rate(http_requests_total{namespace="lab",service="chat-api"}[30s]))'
)
TARGET = Target("lab", "app.kubernetes.io/name=chat-api")
PROM = PromProbe("success-rate", SUCCESS_RATE, ">=", 0.99, tolerance=0.005)
HTTP = HttpProbe("healthz", "http://127.0.0.1:8601/healthz", when=("before", "after"))
EXPERIMENT = Experiment(
    "chat-api-pod-delete",
    TARGET,
    Fault("pod-delete", (("PODS_AFFECTED_PERC", "25"),)),
    Hypothesis((PROM, HTTP), interval_s=5.0),
)
RFC1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def env_of(manifest: dict[str, Any]) -> dict[str, str]:
    entries = manifest["spec"]["experiments"][0]["spec"]["components"]["env"]
    assert all(set(entry) == {"name", "value"} and isinstance(entry["value"], str) for entry in entries)
    return {entry["name"]: entry["value"] for entry in entries}


# ── the definitions ──────────────────────────────────────────────────────────────────────────────────


def test_target_service_is_the_label_value() -> None:
    assert TARGET.service == "chat-api"
    assert Target("lab", "app=web").service == "web"
    assert TARGET.kind == "deployment"


@pytest.mark.parametrize(
    ("fault", "defaults"),
    [
        ("pod-delete", {"TOTAL_CHAOS_DURATION": "30", "CHAOS_INTERVAL": "10", "FORCE": "false"}),
        ("pod-network-loss", {"TOTAL_CHAOS_DURATION": "60", "NETWORK_PACKET_LOSS_PERCENTAGE": "100"}),
        ("pod-cpu-hog", {"TOTAL_CHAOS_DURATION": "60", "CPU_CORES": "1", "CPU_LOAD": "100"}),
    ],
)
def test_fault_environment_has_litmus_defaults(fault: str, defaults: dict[str, str]) -> None:
    environment = Fault(fault).environment()
    assert defaults.items() <= environment.items()
    assert environment["PODS_AFFECTED_PERC"] == "0"
    assert Fault(fault).duration_s == float(defaults["TOTAL_CHAOS_DURATION"])
    assert Fault(fault).pods_affected_perc == 0.0  # one pod


def test_fault_env_overrides_defaults_in_place() -> None:
    fault = Fault("pod-delete", (("FORCE", "true"), ("TOTAL_CHAOS_DURATION", "45"), ("TARGET_PODS", "a")))
    environment = fault.environment()
    assert environment["FORCE"] == "true" and environment["CHAOS_INTERVAL"] == "10"
    assert list(environment)[:3] == ["TOTAL_CHAOS_DURATION", "CHAOS_INTERVAL", "FORCE"]
    assert list(environment)[-1] == "TARGET_PODS"
    assert fault.duration_s == 45.0


@pytest.mark.parametrize(("value", "expected"), [("", 0.0), ("0", 0.0), ("25", 25.0), ("100", 100.0)])
def test_pods_affected_perc(value: str, expected: float) -> None:
    assert Fault("pod-cpu-hog", (("PODS_AFFECTED_PERC", value),)).pods_affected_perc == expected


def test_faults_with_the_same_settings_are_equal() -> None:
    forward = Fault("pod-delete", (("FORCE", "true"), ("CHAOS_INTERVAL", "5")))
    backward = Fault("pod-delete", (("CHAOS_INTERVAL", "5"), ("FORCE", "true")))
    assert forward == backward
    assert forward.env == (("CHAOS_INTERVAL", "5"), ("FORCE", "true"))


def test_fault_accepts_a_mapping_or_lists() -> None:
    assert Fault("pod-delete", {"FORCE": "true"}).env == (("FORCE", "true"),)  # type: ignore[arg-type]
    assert Fault("pod-delete", [["FORCE", "true"]]).env == (("FORCE", "true"),)  # type: ignore[arg-type]
    assert PromProbe("p", "up", ">=", 1, when="during").when == ("during",)  # type: ignore[arg-type]
    assert Hypothesis([PROM]).probes == (PROM,)  # type: ignore[arg-type]


def test_probes_for_each_phase() -> None:
    hypothesis = EXPERIMENT.hypothesis
    assert hypothesis.probes_for("before") == (PROM, HTTP)
    assert hypothesis.probes_for("during") == (PROM,)
    assert hypothesis.probes_for("after") == (PROM, HTTP)
    with pytest.raises(ValueError, match="when must be one of before, during, after, got 'never'"):
        hypothesis.probes_for("never")


def _with_probe(probe: PromProbe | HttpProbe) -> Experiment:
    return replace(EXPERIMENT, hypothesis=Hypothesis((probe,)))


@pytest.mark.parametrize(
    ("experiment", "expected"),
    [
        (EXPERIMENT, None),
        (Experiment("x", TARGET, Fault("pod-cpu-hog")), None),
        (Experiment("x", Target("lab", "app=web", "statefulset"), Fault("pod-network-loss")), None),
        (
            replace(EXPERIMENT, name="Chat_API"),
            "name: 'Chat_API' is not an RFC 1123 label (1-63 lower-case letters, digits or '-', "
            "starting and ending with a letter or digit)",
        ),
        (
            replace(EXPERIMENT, name="x" * 64),
            f"name: {'x' * 64!r} is not an RFC 1123 label (1-63 lower-case letters, digits or '-', "
            "starting and ending with a letter or digit)",
        ),
        (
            replace(EXPERIMENT, target=Target("Lab", "app=web")),
            "target.namespace: 'Lab' is not a namespace name (an RFC 1123 label)",
        ),
        (
            replace(EXPERIMENT, target=Target("lab", "chat-api")),
            "target.app_label: must be one label as key=value, e.g. app.kubernetes.io/name=chat-api, "
            "got 'chat-api'",
        ),
        (
            replace(EXPERIMENT, target=Target("lab", "app=web,tier=front")),
            "target.app_label: must be one label as key=value, e.g. app.kubernetes.io/name=chat-api, "
            "got 'app=web,tier=front'",
        ),
        (
            replace(EXPERIMENT, target=Target("lab", "bad key=web")),
            "target.app_label: 'bad key' is not a Kubernetes label key, e.g. app or app.kubernetes.io/name",
        ),
        (
            replace(EXPERIMENT, target=Target("lab", "app=")),
            "target.app_label: '' is not a Kubernetes label value (1-63 letters, digits, '-', '_' or '.')",
        ),
        (
            replace(EXPERIMENT, target=Target("lab", "app=web", "job")),
            "target.kind: must be one of deployment, statefulset, daemonset, got 'job'",
        ),
        (
            replace(EXPERIMENT, fault=Fault("node-drain")),
            "fault.kind: must be one of pod-delete, pod-network-loss, pod-cpu-hog, got 'node-drain'",
        ),
        (
            replace(EXPERIMENT, fault=Fault("pod-delete", (("CPU_LOAD", "50"),))),
            "fault.env.CPU_LOAD: pod-delete has no such setting (it takes CHAOS_INTERVAL, "
            "DEFAULT_HEALTH_CHECK, FORCE, NODE_LABEL, PODS_AFFECTED_PERC, RAMP_TIME, RANDOMNESS, SEQUENCE, "
            "TARGET_CONTAINER, TARGET_PODS, TOTAL_CHAOS_DURATION)",
        ),
        (
            replace(EXPERIMENT, fault=Fault("pod-delete", (("FORCE", "true"), ("FORCE", "false")))),
            "fault.env.FORCE: set twice",
        ),
        (
            replace(EXPERIMENT, fault=Fault("pod-delete", (("TOTAL_CHAOS_DURATION", "-5"),))),
            "fault.env.TOTAL_CHAOS_DURATION: must be a whole number from 1 to 86400, got '-5'",
        ),
        (
            replace(EXPERIMENT, fault=Fault("pod-delete", (("TOTAL_CHAOS_DURATION", "30s"),))),
            "fault.env.TOTAL_CHAOS_DURATION: must be a whole number from 1 to 86400, got '30s'",
        ),
        (
            replace(EXPERIMENT, fault=Fault("pod-delete", (("CHAOS_INTERVAL", "0"),))),
            "fault.env.CHAOS_INTERVAL: must be a whole number from 1 to 3600, got '0'",
        ),
        (
            replace(EXPERIMENT, fault=Fault("pod-delete", (("PODS_AFFECTED_PERC", "150"),))),
            "fault.env.PODS_AFFECTED_PERC: must be a whole number from 0 to 100, got '150'",
        ),
        (replace(EXPERIMENT, fault=Fault("pod-delete", (("PODS_AFFECTED_PERC", ""),))), None),
        (
            replace(
                EXPERIMENT, fault=Fault("pod-network-loss", (("NETWORK_PACKET_LOSS_PERCENTAGE", "101"),))
            ),
            "fault.env.NETWORK_PACKET_LOSS_PERCENTAGE: must be a whole number from 0 to 100, got '101'",
        ),
        (
            replace(EXPERIMENT, fault=Fault("pod-delete", (("FORCE", "yes"),))),
            "fault.env.FORCE: must be one of true, false, got 'yes'",
        ),
        (
            replace(EXPERIMENT, fault=Fault("pod-cpu-hog", (("SEQUENCE", "random"),))),
            "fault.env.SEQUENCE: must be one of parallel, serial, got 'random'",
        ),
        (
            replace(EXPERIMENT, hypothesis=Hypothesis((PROM,), interval_s=0.0)),
            "hypothesis.interval_s: must be a number of seconds from 1 to 3600, got 0.0",
        ),
        (
            replace(EXPERIMENT, hypothesis=Hypothesis((PROM, replace(HTTP, name="success-rate")))),
            "hypothesis.probes[1].name: 'success-rate' names two probes; probe names must be unique",
        ),
        (_with_probe(replace(PROM, name=" ")), "hypothesis.probes[0].name: a probe needs a name"),
        (
            _with_probe(replace(PROM, comparator="=>")),
            "hypothesis.probes[0].comparator: must be one of >=, <=, >, <, ==, !=, got '=>'",
        ),
        (
            _with_probe(replace(PROM, when=("before", "later"))),
            "hypothesis.probes[0].when: must be among before, during, after, got 'later'",
        ),
        (
            _with_probe(replace(PROM, when=())),
            "hypothesis.probes[0].when: must list one or more of before, during, after, got ()",
        ),
        (
            _with_probe(replace(PROM, query=" ")),
            "hypothesis.probes[0].query: must be a PromQL query that returns one value",
        ),
        (
            _with_probe(replace(PROM, value=float("nan"))),
            "hypothesis.probes[0].value: must be a finite number, got nan",
        ),
        (
            _with_probe(replace(PROM, tolerance=-0.1)),
            "hypothesis.probes[0].tolerance: must be a finite number ≥ 0, got -0.1",
        ),
        (
            _with_probe(replace(HTTP, url="chat-api/healthz")),
            "hypothesis.probes[0].url: must be an http:// or https:// URL with a host, "
            "got 'chat-api/healthz'",
        ),
        (
            _with_probe(replace(HTTP, expected_status=700)),
            "hypothesis.probes[0].expected_status: must be an HTTP status code (100-599), got 700",
        ),
        (
            _with_probe(replace(HTTP, method="get")),
            "hypothesis.probes[0].method: a probe only reads, so it must be GET or HEAD, got 'get'",
        ),
        (
            _with_probe(replace(HTTP, method="DELETE")),
            "hypothesis.probes[0].method: a probe only reads, so it must be GET or HEAD, got 'DELETE'",
        ),
        (
            _with_probe(replace(HTTP, method="POST")),
            "hypothesis.probes[0].method: a probe only reads, so it must be GET or HEAD, got 'POST'",
        ),
        (_with_probe(replace(HTTP, method="HEAD")), None),
        (
            _with_probe(replace(HTTP, timeout_s=0.0)),
            "hypothesis.probes[0].timeout_s: must be a number of seconds > 0 and ≤ 60, got 0.0",
        ),
        (replace(EXPERIMENT, weight=11), "weight: must be a whole number from 0 to 10, got 11"),
        (replace(EXPERIMENT, weight=-1), "weight: must be a whole number from 0 to 10, got -1"),
        (replace(EXPERIMENT, weight=0), None),
        (
            replace(EXPERIMENT, recover_within_s=-1.0),
            "recover_within_s: must be a number of seconds from 0 to 3600, got -1.0",
        ),
    ],
)
def test_experiment_problem(experiment: Experiment, expected: str | None) -> None:
    assert experiment.problem() == expected


def _choices(problem: str | None) -> list[str]:
    """The choices a refusal offers: "…: must be one of a, b, c, got 'x'" → [a, b, c]."""
    found = re.search(r"must (?:be one of|be among) (.+), got", problem or "")
    assert found, problem
    return found.group(1).split(", ")


def test_every_choice_a_refusal_offers_is_accepted_and_does_what_it_says() -> None:
    """A user told "must be one of …" can pick any of them: each fault runs in Litmus under its own
    name, each comparator compares as its symbol reads, and a probe runs at each moment it names."""
    kinds = _choices(replace(EXPERIMENT, fault=Fault("node-drain")).problem())
    assert "pod-delete" in kinds
    for kind in kinds:
        chosen = replace(EXPERIMENT, fault=Fault(kind))
        assert chosen.problem() is None, kind
        assert render_engine(chosen, "r1")["spec"]["experiments"][0]["name"] == kind

    comparators = _choices(_with_probe(replace(PROM, comparator="=>")).problem())
    assert ">=" in comparators
    symbols = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
    symbols |= {"==": operator.eq, "!=": operator.ne}
    for comparator in comparators:
        assert _with_probe(replace(PROM, comparator=comparator)).problem() is None, comparator
        readings = (1.0, 2.0, 3.0)
        assert [probe_passes(comparator, reading, 2.0) for reading in readings] == [
            symbols[comparator](reading, 2.0) for reading in readings
        ], comparator

    moments = _choices(_with_probe(replace(PROM, when=("later",))).problem())
    assert "during" in moments
    for when in moments:
        probe = replace(PROM, when=(when,))
        assert _with_probe(probe).problem() is None, when
        assert Hypothesis((probe, HTTP)).probes_for(when)[0] == probe


# ── Litmus manifests ─────────────────────────────────────────────────────────────────────────────────


def test_render_engine_has_the_chaosengine_shape() -> None:
    manifest = render_engine(EXPERIMENT, "r1")
    assert manifest["apiVersion"] == "litmuschaos.io/v1alpha1"
    assert manifest["kind"] == "ChaosEngine"
    assert manifest["metadata"] == {
        "name": "chat-api-pod-delete-r1",
        "namespace": "lab",
        "labels": {
            "app.kubernetes.io/managed-by": "lcp",
            "lcp.dev/experiment": "chat-api-pod-delete",
            "lcp.dev/run": "r1",
        },
    }
    spec = manifest["spec"]
    assert spec["engineState"] == "active"
    assert spec["appinfo"] == {
        "appns": "lab",
        "applabel": "app.kubernetes.io/name=chat-api",
        "appkind": "deployment",
    }
    assert spec["chaosServiceAccount"] == "litmus-admin"
    assert spec["jobCleanUpPolicy"] == "delete"
    assert [experiment["name"] for experiment in spec["experiments"]] == ["pod-delete"]
    assert "probe" not in spec["experiments"][0]["spec"]  # lcp runs the probes itself
    assert (
        render_engine(EXPERIMENT, "r1", service_account="chaos-sa")["spec"]["chaosServiceAccount"]
        == "chaos-sa"
    )


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault("pod-delete"), {"TOTAL_CHAOS_DURATION": "30", "CHAOS_INTERVAL": "10", "FORCE": "false"}),
        (Fault("pod-network-loss"), {"NETWORK_PACKET_LOSS_PERCENTAGE": "100", "TOTAL_CHAOS_DURATION": "60"}),
        (Fault("pod-cpu-hog"), {"TOTAL_CHAOS_DURATION": "60"}),
        (
            Fault("pod-delete", (("FORCE", "true"), ("PODS_AFFECTED_PERC", "50"))),
            {"TOTAL_CHAOS_DURATION": "30", "FORCE": "true", "PODS_AFFECTED_PERC": "50"},
        ),
    ],
)
def test_render_engine_env(fault: Fault, expected: dict[str, str]) -> None:
    manifest = render_engine(replace(EXPERIMENT, fault=fault), "r1")
    assert manifest["spec"]["experiments"][0]["name"] == fault.kind
    env = env_of(manifest)
    assert expected.items() <= env.items()
    assert env == fault.environment()


def test_render_engine_refuses_an_invalid_experiment() -> None:
    with pytest.raises(ExperimentError, match="experiment 'chat-api-pod-delete': weight: must be a whole"):
        render_engine(replace(EXPERIMENT, weight=12), "r1")


def test_engine_and_result_names() -> None:
    assert engine_name(EXPERIMENT, "r1") == "chat-api-pod-delete-r1"
    assert result_name("chat-api-pod-delete-r1", EXPERIMENT) == "chat-api-pod-delete-r1-pod-delete"


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize(
    "run",
    [
        "20260101t000000",
        "0b6a5a9e-3c5d-4e0f-9d7a-2f8d1c3b4a5e",
        "Run_With.Odd/Characters",
        "x" * 200,
    ],
)
def test_engine_names_stay_valid_labels(fault: str, run: str) -> None:
    experiment = replace(
        EXPERIMENT, name="a-rather-long-experiment-name-for-the-chat-api", fault=Fault(fault)
    )
    name = engine_name(experiment, run)
    assert len(name) <= 63 and RFC1123_LABEL.fullmatch(name)
    # Litmus labels the ChaosResult with its name, so that must be a valid label value too.
    assert len(result_name(name, experiment)) <= 63
    assert engine_name(experiment, run) == name  # stable
    assert engine_name(experiment, run + "2") != name  # a different run gets a different engine
    label = render_engine(experiment, run)["metadata"]["labels"]["lcp.dev/run"]
    assert len(label) <= 63 and RFC1123_LABEL.fullmatch(label)


def test_short_engine_names_are_kept_whole() -> None:
    assert engine_name(replace(EXPERIMENT, name="e"), "9f3c") == "e-9f3c"


# ── YAML ─────────────────────────────────────────────────────────────────────────────────────────────


def test_catalogue_loads() -> None:
    experiments = load_experiments(DEFAULT_CATALOGUE)
    assert [experiment.fault.kind for experiment in experiments] == list(FAULTS)
    assert len({experiment.name for experiment in experiments}) == 3
    for experiment in experiments:
        assert experiment.problem() is None
        assert experiment.target == Target("lab", "app.kubernetes.io/name=chat-api", "deployment")
        assert experiment.target.service == "chat-api"
        probes = experiment.hypothesis.probes
        success = next(probe for probe in probes if isinstance(probe, PromProbe))
        assert success.query == SUCCESS_RATE
        assert (success.comparator, success.value) == (">=", 0.99)
        assert success.when == WHEN
        assert any(isinstance(probe, HttpProbe) and probe.expected_status == 200 for probe in probes)
        manifest = render_engine(experiment, "demo")
        assert manifest["metadata"]["namespace"] == "lab"
    assert experiments[1].fault.environment()["NETWORK_PACKET_LOSS_PERCENTAGE"] == "100"


def test_load_accepts_text_and_paths(tmp_path: Path) -> None:
    data = {"experiments": [experiment_to_data(EXPERIMENT)]}
    text = yaml.safe_dump(data)
    assert load_experiments(text) == [EXPERIMENT]
    file = tmp_path / "mine.yaml"
    file.write_text(text)
    assert load_experiments(file) == [EXPERIMENT]
    assert load_experiments(str(file)) == [EXPERIMENT]


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ExperimentError, match=rf"^{re.escape(str(missing))}: can't read the file"):
        load_experiments(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("experiments:\n  - name: [unclosed\n")
    with pytest.raises(ExperimentError, match=rf"^{re.escape(str(broken))}: not valid YAML"):
        load_experiments(broken)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "experiments:\n  - name: x\n"
        "    target: {namespace: lab, app_label: app=web}\n"
        "    fault: {kind: boom}\n"
    )
    with pytest.raises(ExperimentError) as caught:
        load_experiments(bad)
    assert str(caught.value) == (
        f"{bad}: experiments[0].fault.kind: "
        "must be one of pod-delete, pod-network-loss, pod-cpu-hog, got 'boom'"
    )
    with pytest.raises(ExperimentError, match=r"^<text>: top level: must be a mapping"):
        load_experiments("- a\n- b\n")


def _entry(**changes: Any) -> dict[str, Any]:
    entry = experiment_to_data(EXPERIMENT)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node: Any = entry
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return entry


_DELETE = object()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "top level: must be a mapping with an 'experiments' list"),
        ({"experiment": []}, "top level: must be a mapping with an 'experiments' list"),
        ({"experiments": [], "extra": 1}, "top level: unknown key 'extra' (expected experiments)"),
        ({"experiments": ["x"]}, "experiments[0]: must be a mapping, got 'x'"),
        ({"experiments": [_entry(fault=_DELETE)]}, "experiments[0]: missing fault"),
        (
            {"experiments": [_entry(steps=[])]},
            "experiments[0]: unknown key 'steps' "
            "(expected name, target, fault, hypothesis, weight, recover_within_s)",
        ),
        ({"experiments": [_entry(name=7)]}, "experiments[0].name: must be a string, got 7"),
        (
            {"experiments": [_entry(), _entry(weight=3)]},
            "experiments[1].name: 'chat-api-pod-delete' is already the name of experiments[0]",
        ),
        (
            {"experiments": [_entry(target="lab/chat-api")]},
            "experiments[0].target: must be a mapping, got 'lab/chat-api'",
        ),
        (
            {"experiments": [_entry(target__label="app=web")]},
            "experiments[0].target: unknown key 'label' (expected namespace, app_label, kind)",
        ),
        (
            {"experiments": [_entry(target__app_label="web")]},
            "experiments[0].target.app_label: must be one label as key=value, "
            "e.g. app.kubernetes.io/name=chat-api, got 'web'",
        ),
        (
            {"experiments": [_entry(fault__env=["FORCE=true"])]},
            "experiments[0].fault.env: must be a mapping of setting names to values, got ['FORCE=true']",
        ),
        (
            {"experiments": [_entry(fault__env={"FORCE": [True]})]},
            "experiments[0].fault.env.FORCE: must be a string or a number, got [True]",
        ),
        (
            {"experiments": [_entry(fault__env={"BOGUS": "1"})]},
            "experiments[0].fault.env.BOGUS: pod-delete has no such setting (it takes CHAOS_INTERVAL, "
            "DEFAULT_HEALTH_CHECK, FORCE, NODE_LABEL, PODS_AFFECTED_PERC, RAMP_TIME, RANDOMNESS, SEQUENCE, "
            "TARGET_CONTAINER, TARGET_PODS, TOTAL_CHAOS_DURATION)",
        ),
        (
            {"experiments": [_entry(fault__env={"TOTAL_CHAOS_DURATION": -30})]},
            "experiments[0].fault.env.TOTAL_CHAOS_DURATION: must be a whole number from 1 to 86400, "
            "got '-30'",
        ),
        (
            {"experiments": [_entry(hypothesis__interval_s="5s")]},
            "experiments[0].hypothesis.interval_s: must be a number, got '5s'",
        ),
        (
            {"experiments": [_entry(hypothesis__probes={"a": 1})]},
            "experiments[0].hypothesis.probes: must be a list of probes",
        ),
        (
            {"experiments": [_entry(hypothesis__probes__0__type="graphite")]},
            "experiments[0].hypothesis.probes[0].type: must be prometheus or http, got 'graphite'",
        ),
        (
            {"experiments": [_entry(hypothesis__probes__0__comparator="=>")]},
            "experiments[0].hypothesis.probes[0].comparator: must be one of >=, <=, >, <, ==, !=, got '=>'",
        ),
        (
            {"experiments": [_entry(hypothesis__probes__0__value=_DELETE)]},
            "experiments[0].hypothesis.probes[0]: missing value",
        ),
        (
            {"experiments": [_entry(hypothesis__probes__0__value="high")]},
            "experiments[0].hypothesis.probes[0].value: must be a number, got 'high'",
        ),
        (
            {"experiments": [_entry(hypothesis__probes__0__when=["sometimes"])]},
            "experiments[0].hypothesis.probes[0].when: must be among before, during, after, got 'sometimes'",
        ),
        (
            {"experiments": [_entry(hypothesis__probes__0__when=5)]},
            "experiments[0].hypothesis.probes[0].when: must list one or more of before, during, after, got 5",
        ),
        (
            {"experiments": [_entry(hypothesis__probes__1__url=_DELETE)]},
            "experiments[0].hypothesis.probes[1]: missing url",
        ),
        (
            {"experiments": [_entry(hypothesis__probes__1__query="up")]},
            "experiments[0].hypothesis.probes[1]: unknown key 'query' "
            "(expected name, type, url, expected_status, method, timeout_s, when)",
        ),
        (
            {"experiments": [_entry(hypothesis__probes__1__expected_status="200")]},
            "experiments[0].hypothesis.probes[1].expected_status: must be a whole number, got '200'",
        ),
        ({"experiments": [_entry(weight=True)]}, "experiments[0].weight: must be a whole number, got True"),
        (
            {"experiments": [_entry(weight=20)]},
            "experiments[0].weight: must be a whole number from 0 to 10, got 20",
        ),
    ],
)
def test_parse_errors_name_the_path(data: Any, message: str) -> None:
    with pytest.raises(ExperimentError) as caught:
        parse_experiments(data)
    assert str(caught.value) == message


def test_parse_fills_defaults_and_reads_yaml_scalars() -> None:
    text = """
experiments:
  - name: minimal
    target: {namespace: lab, app_label: app=web}
    fault:
      kind: pod-delete
      env: {TOTAL_CHAOS_DURATION: 60, FORCE: true, PODS_AFFECTED_PERC: 50.0}
    hypothesis:
      probes:
        - {name: up, type: prometheus, query: up, comparator: ">=", value: 1, when: during}
        - {name: web, type: http, url: "https://web.lab.svc/healthz"}
"""
    (experiment,) = load_experiments(text)
    assert experiment.target.kind == "deployment"
    assert experiment.fault.env == (  # sorted by name
        ("FORCE", "true"),
        ("PODS_AFFECTED_PERC", "50"),
        ("TOTAL_CHAOS_DURATION", "60"),
    )
    assert experiment.hypothesis.interval_s == 5.0
    assert experiment.hypothesis.probes == (
        PromProbe("up", "up", ">=", 1.0, when=("during",)),
        HttpProbe("web", "https://web.lab.svc/healthz"),
    )
    assert (experiment.weight, experiment.recover_within_s) == (10, 60.0)
    assert load_experiments("experiments: []\n") == []


def test_experiment_to_data_round_trips() -> None:
    for experiment in [EXPERIMENT, *load_experiments(DEFAULT_CATALOGUE)]:
        data = {"experiments": [experiment_to_data(experiment)]}
        assert parse_experiments(data) == [experiment]
        assert load_experiments(yaml.safe_dump(data)) == [experiment]  # survives YAML too


# ── Temporal payloads ────────────────────────────────────────────────────────────────────────────────


def test_experiments_survive_the_pydantic_data_converter() -> None:
    converter = pydantic_data_converter.payload_converter
    for experiment in [EXPERIMENT, *load_experiments(DEFAULT_CATALOGUE)]:
        payloads = converter.to_payloads([experiment])
        (decoded,) = converter.from_payloads(payloads, [Experiment])
        assert decoded == experiment
        assert [type(probe) for probe in decoded.hypothesis.probes] == [
            type(probe) for probe in experiment.hypothesis.probes
        ]


def test_probe_union_decodes_by_its_type_tag() -> None:
    converter = pydantic_data_converter.payload_converter
    hypothesis = Hypothesis((HTTP, PROM, HttpProbe("bare", "http://x")))
    (decoded,) = converter.from_payloads(converter.to_payloads([hypothesis]), [Hypothesis])
    assert decoded == hypothesis
    assert [probe.type for probe in decoded.probes] == ["http", "prometheus", "http"]
