"""What the chaos workflow shares with the Litmus activities (activities/litmus.py): their inputs,
results and names, without the kubernetes client."""

from dataclasses import dataclass, field
from typing import Any

from temporalio import activity


@dataclass
class EngineRef:
    namespace: str
    name: str


@dataclass
class CreateEngineInput:
    manifest: dict[str, Any]  # a rendered ChaosEngine (chaos.experiments.render_engine)


@dataclass
class ResultRef:
    namespace: str
    name: str  # <engine>-<experiment>


@dataclass
class ResultState:
    """A ChaosResult's experimentStatus; `found` is False until the operator has written it."""

    found: bool
    phase: str = ""
    verdict: str = "Awaited"
    probe_success_percentage: str = "Awaited"  # a string in Litmus' schema: "Awaited" while running
    fail_step: str = ""
    pods_hit: list[str] = field(default_factory=list)  # status.history.targets: the pods the fault hit so far

    @property
    def finished(self) -> bool:
        return self.found and self.verdict not in ("", "Awaited")


@dataclass
class TargetRef:
    namespace: str
    app_label: str  # key=value


@dataclass
class TargetState:
    """The pods an experiment targets: how many there are and how many are ready, and from Kubernetes'
    timestamps (to the second) when the newest pod was created and when a pod last became ready."""

    pods: int
    ready: int
    newest_created_ts: float | None = None  # unix seconds; None: no pods
    last_ready_ts: float | None = None  # the newest Ready=True transition; None: no ready pod

    @property
    def steady(self) -> bool:
        return self.pods > 0 and self.ready == self.pods


class LitmusActivities:
    """The activities' contract: what workflows call. The implementation, activities/litmus.py's
    LitmusActivities, subclasses this and overrides every method under the same activity name."""

    @activity.defn(name="litmus.create_engine")
    def create_engine(self, request: CreateEngineInput) -> EngineRef:
        raise NotImplementedError

    @activity.defn(name="litmus.read_result")
    def read_result(self, ref: ResultRef) -> ResultState:
        raise NotImplementedError

    @activity.defn(name="litmus.stop_engine")
    def stop_engine(self, ref: EngineRef) -> bool:
        """Patch `spec.engineState: stop` (Litmus' abort); False when the engine is already gone."""
        raise NotImplementedError

    @activity.defn(name="litmus.delete_engine")
    def delete_engine(self, ref: EngineRef) -> bool:
        """Delete the engine; False when it was already gone."""
        raise NotImplementedError

    @activity.defn(name="litmus.target_state")
    def target_state(self, ref: TargetRef) -> TargetState:
        raise NotImplementedError
