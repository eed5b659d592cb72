"""Chaos scenarios: parsing and validation as tables, and their Argo Workflows against Argo's schema."""

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from activities.argo_workflow import (
    ENGINE_DONE,
    ENGINE_STOPPED,
    VERDICT_NOT_PASS,
    VERDICT_PASS,
    render_workflow,
)
from chaos.experiments import Experiment, ExperimentError, Fault, Hypothesis, PromProbe, Target
from chaos.scenarios import (
    DEFAULT_SCENARIOS,
    MAX_FAULTS,
    Scenario,
    load_scenarios,
    parse_scenarios,
    scenario_engine_name,
    scenario_to_data,
    workflow_name,
)
from lab.kube import parse_label_selector
from tests.argo_schema import workflow_schema

TARGET = Target("lab", "app.kubernetes.io/name=chat-api")
PROBE = PromProbe("ok", "vector(1)", ">=", 1.0)


def fault(name: str, kind: str = "pod-delete", **env: str) -> Experiment:
    return Experiment(name, TARGET, Fault(kind, tuple(env.items())))


def scenario(*steps: tuple[Experiment, ...], name: str = "two-faults") -> Scenario:
    return Scenario(name, steps, Hypothesis((PROBE,), interval_s=2.0))


TWO_FAULTS = scenario(
    (fault("api-pod-delete", TOTAL_CHAOS_DURATION="20"),),
    (
        fault("api-cpu-hog", "pod-cpu-hog", TOTAL_CHAOS_DURATION="30"),
        fault("api-network-loss", "pod-network-loss", TOTAL_CHAOS_DURATION="10"),
    ),
)


def validate(manifest: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(workflow_schema())
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(manifest)
    ]


# ── validation ───────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (Scenario("Bad_Name", TWO_FAULTS.steps), "name:"),
        (Scenario("empty", ()), "steps: a scenario needs at least one step"),
        (Scenario("hollow", ((),)), "steps[0]: a step needs at least one fault"),
        (scenario((fault("a"),), (fault("a"),)), "steps[1][0].name: 'a' names two faults"),
        (scenario((fault("a", TOTAL_CHAOS_DURATION="0"),)), "steps[0][0].fault.env.TOTAL_CHAOS_DURATION"),
        (
            scenario((Experiment("a", TARGET, Fault("pod-delete"), Hypothesis((PROBE,))),)),
            "steps[0][0].hypothesis: a scenario's faults share the scenario's hypothesis",
        ),
        (scenario(tuple(fault(f"f{i}") for i in range(MAX_FAULTS + 1))), f"at most {MAX_FAULTS} faults"),
        (Scenario("s", ((fault("a"),),), Hypothesis(interval_s=0)), "hypothesis.interval_s"),
        (Scenario("s", ((fault("a"),),), recover_within_s=-1), "recover_within_s"),
    ],
)
def test_a_bad_scenario_says_what_is_wrong(bad: Scenario, problem: str) -> None:
    found = bad.problem()
    assert found is not None and problem in found, found


def test_a_good_scenario_has_no_problem_and_lasts_as_long_as_its_longest_fault_per_step() -> None:
    assert TWO_FAULTS.problem() is None
    assert TWO_FAULTS.duration_s == 20 + 30
    assert [f.name for f in TWO_FAULTS.faults] == ["api-pod-delete", "api-cpu-hog", "api-network-loss"]


def test_scenarios_round_trip_through_their_data_and_yaml() -> None:
    data = {"scenarios": [scenario_to_data(TWO_FAULTS)]}
    assert parse_scenarios(data) == [TWO_FAULTS]
    assert load_scenarios(yaml.safe_dump(data)) == [TWO_FAULTS]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"scenarios": [{"name": "s"}]}, "scenarios[0]: missing steps"),
        (
            {"scenarios": [{"name": "s", "steps": [{"name": "a"}]}]},
            "scenarios[0].steps: must be a list of steps",
        ),
        (
            {
                "scenarios": [
                    {"name": "s", "steps": [[{"name": "a", "target": {}, "fault": {}, "hypothesis": {}}]]}
                ]
            },
            "scenarios[0].steps[0][0]: unknown key 'hypothesis'",
        ),
        ({"scenarios": [], "extra": 1}, "top level: unknown key 'extra'"),
    ],
)
def test_malformed_scenario_data_is_refused_with_the_path_of_the_bad_field(data: Any, error: str) -> None:
    with pytest.raises(ExperimentError, match=error.replace("[", r"\[").replace("]", r"\]")):
        parse_scenarios(data)


def test_the_catalogue_loads_and_renders() -> None:
    scenarios = load_scenarios(DEFAULT_SCENARIOS, {"workload": "http://127.0.0.1:9"})
    assert scenarios
    for each in scenarios:
        assert validate(render_workflow(each, "r1")) == []
        assert any(len(step) > 1 for step in each.steps)  # the demo has a parallel step


# ── the Argo Workflow ────────────────────────────────────────────────────────────────────────────────


def test_the_rendered_workflow_validates_against_argos_schema_and_refers_to_what_it_defines() -> None:
    manifest = render_workflow(TWO_FAULTS, "r1")
    assert validate(manifest) == []
    assert manifest["apiVersion"] == "argoproj.io/v1alpha1" and manifest["kind"] == "Workflow"
    assert manifest["metadata"]["name"] == workflow_name(TWO_FAULTS, "r1") == "two-faults-r1"
    spec = manifest["spec"]
    templates = {template["name"]: template for template in spec["templates"]}
    assert len(templates) == len(spec["templates"])  # names are unique
    referred = {step["template"] for t in spec["templates"] for group in t.get("steps", []) for step in group}
    assert spec["entrypoint"] in templates and referred <= set(templates)
    # The scenario's steps: one group per step, a fault's steps named after it.
    entry = templates[spec["entrypoint"]]
    assert [[step["name"] for step in group] for group in entry["steps"]] == [
        ["api-pod-delete"],
        ["api-cpu-hog", "api-network-loss"],
    ]
    assert spec["activeDeadlineSeconds"] == 50 + 60


def test_each_fault_creates_its_engine_and_waits_for_its_results_verdict() -> None:
    manifest = render_workflow(TWO_FAULTS, "r1")
    resources = [t["resource"] for t in manifest["spec"]["templates"] if "resource" in t]
    creates = [r for r in resources if r["action"] == "create"]
    gets = [r for r in resources if r["action"] == "get"]
    engines = [yaml.safe_load(r["manifest"]) for r in creates]
    assert [e["metadata"]["name"] for e in engines] == [
        scenario_engine_name(TWO_FAULTS, f, "r1") for f in TWO_FAULTS.faults
    ]
    assert all(e["kind"] == "ChaosEngine" and e["spec"]["engineState"] == "active" for e in engines)
    assert {e["metadata"]["labels"]["lcp.dev/scenario"] for e in engines} == {"two-faults"}
    assert all(
        r["successCondition"] == ENGINE_DONE and r["failureCondition"] == ENGINE_STOPPED for r in creates
    )
    results = [yaml.safe_load(r["manifest"]) for r in gets]
    assert [r["metadata"]["name"] for r in results] == [
        f"{e['metadata']['name']}-{e['spec']['experiments'][0]['name']}" for e in engines
    ]
    assert all(
        r["successCondition"] == VERDICT_PASS and r["failureCondition"] == VERDICT_NOT_PASS for r in gets
    )


@pytest.mark.parametrize("condition", [ENGINE_DONE, ENGINE_STOPPED, VERDICT_PASS, VERDICT_NOT_PASS])
def test_the_conditions_parse_as_argo_parses_them_as_label_selectors(condition: str) -> None:
    [requirement] = parse_label_selector(condition)
    assert requirement.key.startswith("status.")


def test_an_invalid_scenario_is_not_rendered() -> None:
    with pytest.raises(ExperimentError, match="steps: a scenario needs at least one step"):
        render_workflow(Scenario("empty", ()), "r1")


def test_schema_refuses_what_argo_would_not_run() -> None:
    manifest = render_workflow(TWO_FAULTS, "r1")
    manifest["spec"]["templates"][2]["resource"].pop("action")
    manifest["spec"]["templates"][0]["stepz"] = []
    manifest["kind"] = "CronWorkflow"
    errors = validate(manifest)
    assert any("'action' is a required property" in e for e in errors), errors
    assert any("'stepz' was unexpected" in e for e in errors), errors
    assert any(e.startswith("kind:") for e in errors), errors


def test_lcp_chaos_scenario_render_prints_a_workflow_kubectl_can_create(tmp_path: Path) -> None:
    from cli import app

    file = tmp_path / "scenarios.yaml"
    file.write_text(yaml.safe_dump({"scenarios": [scenario_to_data(TWO_FAULTS)]}))
    result = CliRunner().invoke(app, ["chaos", "scenario", "render", "two-faults", "--file", str(file)])
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(result.output)
    assert validate(manifest) == [] and manifest == render_workflow(TWO_FAULTS, "manual")
    assert "manifest: |" in result.output  # the engines as YAML blocks, as people write them
    unknown = CliRunner().invoke(app, ["chaos", "scenario", "render", "nope", "--file", str(file)])
    assert unknown.exit_code == 2 and "no scenario 'nope' (there are: two-faults)" in unknown.output
