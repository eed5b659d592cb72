"""AssistantWorkflow: one assistant's immutable versions, publishing, rollback and A/B experiments."""

import asyncio
import copy
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from policies.assignment import Arm, InvalidArms, validate_arms
from policies.assistants import AssistantSpec, InvalidAssistant, changed_fields, validate_spec, version_name
from temporal.constants import PHASE
from workflows import _options
from workflows._records import Actor, HistoryEvent

with workflow.unsafe.imports_passed_through():
    from activities.contracts.store import (
        AssistantExperimentRecord,
        AssistantProjection,
        AssistantVersionRecord,
        StoreActivities,
    )

# States, as the search attribute LcpPhase and the view show them.
DRAFT = "Draft"  # no version published yet
PUBLISHED = "Published"
EXPERIMENTING = "Experimenting"
ARCHIVED = "Archived"


def workflow_id(tenant: str, assistant_id: str) -> str:
    return f"assistant/{tenant}/{assistant_id}"


@dataclass
class VersionView:
    version: str
    number: int
    spec: AssistantSpec
    changed: list[str]  # the spec fields this version changed from the one before
    created_by: str
    created_at: datetime
    note: str = ""
    published_at: datetime | None = None  # first published


@dataclass
class ExperimentView:
    id: str
    arms: list[Arm]
    started_by: str
    started_at: datetime
    state: str = "running"  # running | promoted | aborted
    winner: str | None = None  # the version promoted
    ended_at: datetime | None = None


@dataclass
class AssistantView:
    tenant: str
    assistant_id: str
    created_by: str
    created_at: datetime
    state: str = DRAFT
    versions: list[VersionView] = field(default_factory=list)
    live_version: str | None = None
    published: list[str] = field(default_factory=list)  # versions in the order they went live
    experiment: ExperimentView | None = None  # the running one
    past_experiments: list[ExperimentView] = field(default_factory=list)
    history: list[HistoryEvent] = field(default_factory=list)


@dataclass
class AssistantInput:
    tenant: str
    assistant_id: str
    spec: AssistantSpec
    created_by: str
    note: str = ""
    carried: AssistantView | None = None  # the state, as its view, across continue-as-new


@dataclass
class Edit:
    spec: AssistantSpec
    by: str = ""
    note: str = ""
    expected_version: str | None = None  # the latest version the editor saw: refused if another came since


@dataclass
class Publish:
    version: str
    by: str = ""
    reason: str = ""


@dataclass
class Rollback:
    to_version: str | None = None  # None: the version that was live before the current one
    by: str = ""
    reason: str = ""


@dataclass
class StartExperiment:
    id: str
    arms: list[Arm]
    by: str = ""
    reason: str = ""


@dataclass
class AdjustExperiment:
    arms: list[Arm]  # the same arms, in the same order, with new shares
    by: str = ""
    reason: str = ""
    experiment_id: str = ""  # when given, it must be the running one


@dataclass
class StopExperiment:
    promote: str | None = None  # an arm's name or version to make live; None: abort, the live version stays
    by: str = ""
    reason: str = ""
    experiment_id: str = ""  # when given, it must be the running one


@dataclass
class AssistantState:
    """Everything the assistant changes as it runs; the query's AssistantView is read from it and the input
    (and continue-as-new carries that view)."""

    created_at: datetime
    phase: str = DRAFT  # the view's `state`
    versions: list[VersionView] = field(default_factory=list)
    live_version: str | None = None
    published: list[str] = field(default_factory=list)  # versions in the order they went live
    experiment: ExperimentView | None = None  # the running one
    past_experiments: list[ExperimentView] = field(default_factory=list)
    history: list[HistoryEvent] = field(default_factory=list)
    stored: bool = False  # the first version is in the read model

    @property
    def latest(self) -> VersionView:
        return self.versions[-1]

    def find(self, version: str) -> VersionView | None:
        return next((v for v in self.versions if v.version == version), None)


def _carried_state(view: AssistantView) -> AssistantState:
    """The state a run hands to the next (as its view), copied so that the input stays as it came."""
    carried = copy.deepcopy(view)
    return AssistantState(
        created_at=carried.created_at,
        phase=carried.state,
        versions=carried.versions,
        live_version=carried.live_version,
        published=carried.published,
        experiment=carried.experiment,
        past_experiments=carried.past_experiments,
        history=carried.history,
        stored=True,
    )


def _refuse(type_: str, message: str) -> ApplicationError:
    return ApplicationError(message, type=type_, non_retryable=True)


@workflow.defn(name="Assistant")
class AssistantWorkflow:
    @workflow.init
    def __init__(self, request: AssistantInput) -> None:
        self._in = request
        self._state = (
            _carried_state(request.carried) if request.carried else AssistantState(created_at=workflow.now())
        )
        self._projecting = asyncio.Lock()

    @workflow.run
    async def run(self, request: AssistantInput) -> AssistantView:
        if not self._state.versions:
            try:
                validate_spec(request.spec)
            except InvalidAssistant as err:
                raise _refuse("InvalidSpec", str(err)) from None
            self._add_version(request.spec, request.created_by, request.note)
            await self._project()
        self._state.stored = True
        await workflow.wait_condition(
            lambda: self._state.phase == ARCHIVED or workflow.info().is_continue_as_new_suggested()
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._state.phase != ARCHIVED:
            workflow.continue_as_new(replace(self._in, carried=self._view()))
        return self._view()

    @workflow.query
    def state(self) -> AssistantView:
        return self._view()

    def _view(self) -> AssistantView:
        """The assistant as the query shows it: the input's names, the state's versions and experiments."""
        request, state = self._in, self._state
        return AssistantView(
            tenant=request.tenant,
            assistant_id=request.assistant_id,
            created_by=request.created_by,
            created_at=state.created_at,
            state=state.phase,
            versions=list(state.versions),
            live_version=state.live_version,
            published=list(state.published),
            experiment=state.experiment,
            past_experiments=list(state.past_experiments),
            history=list(state.history),
        )

    # ---- updates -------------------------------------------------------------------------------------

    @workflow.update
    async def accepted(self) -> AssistantView:
        """Answers once the first version is stored (for the API's update-with-start)."""
        await workflow.wait_condition(lambda: self._state.stored)
        return self._view()

    @workflow.update
    async def edit(self, request: Edit) -> AssistantView:
        """A new immutable version from `spec`; the live version does not change until it is published."""
        version = self._add_version(request.spec, request.by, request.note)
        self._record("edited", f"{version.version} changes {', '.join(version.changed)}", request.by)
        await self._project()
        return self._view()

    @edit.validator
    def _check_edit(self, request: Edit) -> None:
        self._check_open()
        latest = self._state.latest.version if self._state.versions else None
        if request.expected_version and request.expected_version != latest:
            raise _refuse(
                "VersionConflict",
                f"the latest version is {latest}, not {request.expected_version}: read it and edit again",
            )
        try:
            validate_spec(request.spec)
        except InvalidAssistant as err:
            raise _refuse("InvalidSpec", str(err)) from None
        if self._state.versions and not changed_fields(self._state.latest.spec, request.spec):
            raise _refuse("NothingChanged", f"the spec is the same as {latest}: no version was made")

    @workflow.update
    async def publish(self, request: Publish) -> AssistantView:
        """Make a version live for everyone."""
        self._go_live(request.version)
        self._record("published", f"{request.version} is live", request.by, request.reason)
        await self._project()
        return self._view()

    @publish.validator
    def _check_publish(self, request: Publish) -> None:
        self._check_open()
        self._check_exists(request.version)
        if self._state.experiment is not None:
            raise _refuse(
                "ExperimentRunning",
                f"experiment {self._state.experiment.id} is running: stop it (promoting a winner or not) "
                "before publishing, or roll back, which ends it",
            )
        if request.version == self._state.live_version:
            raise _refuse("AlreadyDone", f"{request.version} is already live")

    @workflow.update
    async def rollback(self, request: Rollback) -> AssistantView:
        """Back to an earlier published version in one step; a running experiment is aborted."""
        target = request.to_version or self._previous_live()
        assert target is not None  # the validator made sure
        if self._state.experiment is not None:
            self._end_experiment("aborted", None, request.by, f"rolled back to {target}")
        self._go_live(target)
        self._record("rolled-back", f"{target} is live again", request.by, request.reason)
        await self._project()
        return self._view()

    @rollback.validator
    def _check_rollback(self, request: Rollback) -> None:
        self._check_open()
        if request.to_version is None:
            if self._previous_live() is None:
                raise _refuse("NothingToRollBack", "no earlier version was ever live: name a version")
            return
        self._check_exists(request.to_version)
        if request.to_version not in self._state.published:
            raise _refuse(
                "NeverPublished",
                f"{request.to_version} was never published; roll back to one that was "
                f"({', '.join(self._state.published) or 'none yet'}) or publish it",
            )
        if request.to_version == self._state.live_version and self._state.experiment is None:
            raise _refuse("AlreadyDone", f"{request.to_version} is already live")

    @workflow.update
    async def start_experiment(self, request: StartExperiment) -> AssistantView:
        """Split users between versions, sticky per user, until a winner is promoted or it is aborted."""
        self._state.experiment = ExperimentView(request.id, list(request.arms), request.by, workflow.now())
        self._set_phase(EXPERIMENTING)
        self._record(
            "experiment-started", f"{request.id}: {_arms_text(request.arms)}", request.by, request.reason
        )
        await self._project()
        return self._view()

    @start_experiment.validator
    def _check_start_experiment(self, request: StartExperiment) -> None:
        self._check_open()
        if self._state.live_version is None:
            raise _refuse(
                "NotPublished", "publish a version first: an experiment compares against users' version"
            )
        if self._state.experiment is not None:
            raise _refuse("ExperimentRunning", f"experiment {self._state.experiment.id} is already running")
        if any(past.id == request.id for past in self._state.past_experiments):
            raise _refuse("AlreadyDone", f"experiment {request.id} already ran; give the new one another id")
        if len(request.arms) < 2:
            raise _refuse("InvalidArms", "an experiment needs two arms or more")
        self._check_arms(request.arms)

    @workflow.update
    async def adjust_experiment(self, request: AdjustExperiment) -> AssistantView:
        """New shares for the running experiment's arms; users move only as the new shares require."""
        experiment = self._state.experiment
        assert experiment is not None
        before = _arms_text(experiment.arms)
        experiment.arms = list(request.arms)
        self._record(
            "experiment-adjusted", f"{before} → {_arms_text(request.arms)}", request.by, request.reason
        )
        await self._project()
        return self._view()

    @adjust_experiment.validator
    def _check_adjust(self, request: AdjustExperiment) -> None:
        experiment = self._running(request.experiment_id)
        self._check_arms(request.arms)
        if [(a.name, a.version) for a in request.arms] != [(a.name, a.version) for a in experiment.arms]:
            raise _refuse(
                "InvalidArms",
                "change only the shares: the arms, their order and versions stay "
                f"({', '.join(f'{a.name}={a.version}' for a in experiment.arms)}); start a new experiment "
                "to compare other versions",
            )

    @workflow.update
    async def stop_experiment(self, request: StopExperiment) -> AssistantView:
        """End the experiment: promote a winner (it goes live) or abort (the live version stays)."""
        experiment = self._running()
        winner = _winner(experiment, request.promote) if request.promote else None
        self._end_experiment("promoted" if winner else "aborted", winner, request.by, request.reason)
        if winner and winner != self._state.live_version:
            self._go_live(winner)
        self._set_phase(PUBLISHED)
        await self._project()
        return self._view()

    @stop_experiment.validator
    def _check_stop_experiment(self, request: StopExperiment) -> None:
        experiment = self._running(request.experiment_id)
        if request.promote and _winner(experiment, request.promote) is None:
            raise _refuse(
                "InvalidArms",
                f"{request.promote} is neither an arm nor a version of experiment {experiment.id} "
                f"({_arms_text(experiment.arms)})",
            )

    @workflow.update
    async def archive(self, request: Actor) -> AssistantView:
        """Retire the assistant: no new conversations start with it; its history stays readable."""
        if self._state.experiment is not None:
            self._end_experiment("aborted", None, request.by, "archived")
        self._set_phase(ARCHIVED)
        self._record("archived", "no new conversations", request.by, request.reason)
        await self._project()
        return self._view()

    @archive.validator
    def _check_archive(self, request: Actor) -> None:
        self._check_open()

    # ---- state changes -------------------------------------------------------------------------------

    def _add_version(self, spec: AssistantSpec, by: str, note: str) -> VersionView:
        previous = self._state.latest.spec if self._state.versions else None
        number = len(self._state.versions) + 1
        version = VersionView(
            version_name(number), number, spec, changed_fields(previous, spec), by, workflow.now(), note
        )
        self._state.versions.append(version)
        if number == 1:
            self._record("created", f"{version.version} drafted", by)
        return version

    def _go_live(self, version: str) -> None:
        found = self._state.find(version)
        assert found is not None
        found.published_at = found.published_at or workflow.now()
        self._state.live_version = version
        self._state.published.append(version)
        if self._state.experiment is None:
            self._set_phase(PUBLISHED)

    def _end_experiment(self, outcome: str, winner: str | None, by: str, reason: str) -> None:
        experiment = self._state.experiment
        assert experiment is not None
        experiment.state, experiment.winner, experiment.ended_at = outcome, winner, workflow.now()
        self._state.past_experiments.append(experiment)
        self._state.experiment = None
        result = f"{winner} promoted" if winner else "aborted"
        self._record(f"experiment-{outcome}", f"{experiment.id}: {result}", by, reason)

    def _previous_live(self) -> str | None:
        """The version live before the current one (skipping republishing of the same version)."""
        for version in reversed(self._state.published):
            if version != self._state.live_version:
                return version
        return None

    def _set_phase(self, phase: str) -> None:
        if phase != self._state.phase:
            self._state.phase = phase
            workflow.upsert_search_attributes([PHASE.value_set(phase)])

    def _record(self, kind: str, message: str, by: str = "", reason: str = "") -> None:
        text = f"{message} ({reason})" if reason else message
        self._state.history.append(HistoryEvent(workflow.now(), kind, text, by))

    async def _project(self) -> None:
        """Store the assistant as it stands now in the read model (conversations read it from there)."""
        async with self._projecting:
            request, state = self._in, self._state
            await workflow.execute_activity_method(
                StoreActivities.project_assistant,
                AssistantProjection(
                    workflow_id=workflow.info().workflow_id,
                    tenant=request.tenant,
                    assistant_id=request.assistant_id,
                    name=state.latest.spec.name,
                    state=state.phase,
                    live_version=state.live_version,
                    latest_version=state.latest.version,
                    experiment=_experiment_data(state.experiment) if state.experiment else None,
                    created_by=request.created_by,
                    created_at=state.created_at,
                    updated_at=workflow.now(),
                    versions=[_version_record(v) for v in state.versions],
                    experiments=[
                        _experiment_record(e) for e in [*state.past_experiments, state.experiment] if e
                    ],
                ),
                **_options.PROJECTION,
            )

    # ---- checks --------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state.phase == ARCHIVED:
            raise _refuse("AssistantArchived", f"{self._in.assistant_id} is archived: create a new assistant")

    def _check_exists(self, version: str) -> None:
        if self._state.find(version) is None:
            known = ", ".join(v.version for v in self._state.versions)
            raise _refuse("VersionNotFound", f"no version {version}; versions: {known}")

    def _check_arms(self, arms: list[Arm]) -> None:
        try:
            validate_arms(arms)
        except InvalidArms as err:
            raise _refuse("InvalidArms", str(err)) from None
        for arm in arms:
            self._check_exists(arm.version)

    def _running(self, experiment_id: str = "") -> ExperimentView:
        self._check_open()
        experiment = self._state.experiment
        if experiment is None:
            raise _refuse("NoExperiment", "no experiment is running: start one first")
        if experiment_id not in ("", experiment.id):
            raise _refuse("NoExperiment", f"experiment {experiment_id} is not running; {experiment.id} is")
        return experiment


def _winner(experiment: ExperimentView, promote: str) -> str | None:
    """The version `promote` names: an arm's name or one of the arms' versions."""
    for arm in experiment.arms:
        if promote in (arm.name, arm.version):
            return arm.version
    return None


def _arms_text(arms: list[Arm]) -> str:
    return ", ".join(f"{arm.name}={arm.version} {arm.share}" for arm in arms)


def _experiment_data(experiment: ExperimentView) -> dict[str, Any]:
    return {"id": experiment.id, "arms": [asdict(arm) for arm in experiment.arms]}


def _version_record(version: VersionView) -> AssistantVersionRecord:
    return AssistantVersionRecord(
        version.version,
        version.number,
        asdict(version.spec),
        version.changed,
        version.note,
        version.created_by,
        version.created_at,
        version.published_at,
    )


def _experiment_record(experiment: ExperimentView) -> AssistantExperimentRecord:
    arms = [asdict(arm) for arm in experiment.arms]
    return AssistantExperimentRecord(
        experiment.id,
        arms,
        experiment.state,
        experiment.started_by,
        experiment.started_at,
        experiment.winner,
        experiment.ended_at,
    )
