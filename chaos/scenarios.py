"""Chaos scenarios as typed data: Litmus faults in steps (in sequence; a step's faults in parallel) under
one steady-state hypothesis, and the names of what a run of one creates."""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos.experiments import (
    _RFC1123_LABEL,
    MAX_NAME,
    RECOVER_RANGE,
    Experiment,
    ExperimentError,
    Hypothesis,
    _experiment,
    _hypothesis,
    _keys,
    _number,
    _shortened,
    _text,
    engine_name,
    experiment_to_data,
    hypothesis_to_data,
    load_definitions,
)

__all__ = [
    "DEFAULT_SCENARIOS",
    "MAX_FAULTS",
    "Scenario",
    "load_scenarios",
    "parse_scenarios",
    "scenario_engine_name",
    "scenario_to_data",
    "workflow_name",
]

DEFAULT_SCENARIOS = Path(__file__).with_name("scenarios.yaml")  # the lab demo's scenarios
MAX_FAULTS = 10  # faults in one scenario, all steps together
MAX_STEPS = 10


@dataclass(frozen=True)
class Scenario:
    """Several faults under one hypothesis: `steps` run one after another, the faults of a step at once.
    Each fault is an Experiment without a hypothesis of its own (the scenario's covers them all); its weight
    counts in the scenario's resilience score."""

    name: str  # an RFC 1123 label
    steps: tuple[tuple[Experiment, ...], ...]
    hypothesis: Hypothesis = Hypothesis()
    recover_within_s: float = 60.0  # after cleanup, the steady state must hold again within this

    def __post_init__(self) -> None:
        if isinstance(self.steps, list) or any(isinstance(step, list) for step in self.steps):
            object.__setattr__(self, "steps", tuple(tuple(step) for step in self.steps))

    @property
    def faults(self) -> tuple[Experiment, ...]:
        """Every fault, in the order the steps list them."""
        return tuple(fault for step in self.steps for fault in step)

    @property
    def duration_s(self) -> float:
        """How long the faults last if none is stopped: each step lasts as long as its longest fault."""
        return sum(max(fault.fault.duration_s for fault in step) for step in self.steps)

    def problem(self) -> str | None:
        """What is wrong with this scenario, as one sentence starting with the field's path; None when it is
        fine."""
        if not isinstance(self.name, str) or not _RFC1123_LABEL.fullmatch(self.name):
            return f"name: {self.name!r} is not an RFC 1123 label (1-63 lower-case letters, digits or '-')"
        if not self.steps:
            return "steps: a scenario needs at least one step"
        if len(self.steps) > MAX_STEPS:
            return f"steps: at most {MAX_STEPS} steps, got {len(self.steps)}"
        if len(self.faults) > MAX_FAULTS:
            return f"steps: at most {MAX_FAULTS} faults in all, got {len(self.faults)}"
        seen: set[str] = set()
        for index, step in enumerate(self.steps):
            if not step:
                return f"steps[{index}]: a step needs at least one fault"
            for position, fault in enumerate(step):
                where = f"steps[{index}][{position}]"
                if not isinstance(fault, Experiment):
                    return f"{where}: must be a fault (an Experiment), got {type(fault).__name__}"
                if problem := fault.problem():
                    return f"{where}.{problem}"
                if fault.hypothesis.probes:
                    return f"{where}.hypothesis: a scenario's faults share the scenario's hypothesis"
                if fault.name in seen:
                    return f"{where}.name: {fault.name!r} names two faults; fault names must be unique"
                seen.add(fault.name)
        if problem := self.hypothesis.problem():
            return f"hypothesis.{problem}"
        if problem := RECOVER_RANGE.problem("recover_within_s", self.recover_within_s, ": "):
            return problem
        return None


# ── Names of what a run creates ────────────────────────────────────────────────────────────────────────


def workflow_name(scenario: Scenario, run: str) -> str:
    """The Argo Workflow's name, `<scenario>-<run>` (cut and hashed to 63 characters when longer)."""
    return _shortened(f"{scenario.name}-{run}", MAX_NAME)


def scenario_engine_name(scenario: Scenario, fault: Experiment, run: str) -> str:
    """The ChaosEngine of `fault` in one run of `scenario`: unique per scenario, run and fault."""
    return engine_name(fault, f"{scenario.name}-{run}")


# ── Scenarios as data (YAML) ──────────────────────────────────────────────────────────────────────────


def parse_scenarios(data: Any) -> list[Scenario]:
    """Scenarios from YAML-loaded data, `{"scenarios": [...]}` (see chaos/scenarios.yaml), validated."""
    if not isinstance(data, dict) or not isinstance(data.get("scenarios"), list):
        raise ExperimentError("top level: must be a mapping with a 'scenarios' list")
    _keys(data, "top level", required=("scenarios",), optional=())
    scenarios: list[Scenario] = []
    first_index: dict[str, int] = {}
    for index, entry in enumerate(data["scenarios"]):
        where = f"scenarios[{index}]"
        scenario = _scenario(entry, where)
        if problem := scenario.problem():
            raise ExperimentError(f"{where}.{problem}")
        if scenario.name in first_index:
            earlier = first_index[scenario.name]
            raise ExperimentError(f"{where}.name: {scenario.name!r} is already scenarios[{earlier}]'s name")
        first_index[scenario.name] = index
        scenarios.append(scenario)
    return scenarios


def load_scenarios(path: str | Path, placeholders: Mapping[str, str] | None = None) -> list[Scenario]:
    """Scenarios from a YAML file (or YAML text), `{{name}}` placeholders filled as load_experiments does."""
    return load_definitions(path, parse_scenarios, placeholders)


def scenario_to_data(scenario: Scenario) -> dict[str, Any]:
    """One entry of a `scenarios` list, as parse_scenarios reads it back."""
    return {
        "name": scenario.name,
        "steps": [[_fault_to_data(fault) for fault in step] for step in scenario.steps],
        "hypothesis": hypothesis_to_data(scenario.hypothesis),
        "recover_within_s": scenario.recover_within_s,
    }


def _fault_to_data(fault: Experiment) -> dict[str, Any]:
    data = experiment_to_data(fault)
    del data["hypothesis"], data["recover_within_s"]
    return data


def _scenario(entry: Any, where: str) -> Scenario:
    _keys(entry, where, required=("name", "steps"), optional=("hypothesis", "recover_within_s"))
    steps = entry["steps"]
    if not isinstance(steps, list) or not all(isinstance(step, list) for step in steps):
        raise ExperimentError(f"{where}.steps: must be a list of steps, each a list of faults")
    if len(steps) > MAX_STEPS or sum(len(step) for step in steps) > MAX_FAULTS:
        raise ExperimentError(f"{where}.steps: at most {MAX_STEPS} steps and {MAX_FAULTS} faults in all")
    parsed: list[tuple[Experiment, ...]] = []
    for index, step in enumerate(steps):
        faults: list[Experiment] = []
        for position, fault in enumerate(step):
            at = f"{where}.steps[{index}][{position}]"
            _keys(fault, at, required=("name", "target", "fault"), optional=("weight",))
            faults.append(_experiment(fault, at))
        parsed.append(tuple(faults))
    return Scenario(
        name=_text(entry, "name", where),
        steps=tuple(parsed),
        hypothesis=_hypothesis(entry.get("hypothesis"), f"{where}.hypothesis"),
        recover_within_s=_number(entry, "recover_within_s", where, 60.0),
    )
