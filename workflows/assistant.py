"""AssistantWorkflow: one assistant's immutable versions, publishing, rollback and A/B experiments."""

import asyncio
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

    @property
    def latest(self) -> VersionView:
        return self.versions[-1]

    def find(self, version: str) -> VersionView | None:
        return next((v for v in self.versions if v.version == version), None)


@dataclass
class AssistantInput:
    tenant: str
    assistant_id: str
    spec: AssistantSpec
    created_by: str
    note: str = ""
    carried: AssistantView | None = None  # the state, across continue-as-new


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


def _refuse(type_: str, message: str) -> ApplicationError:
    return ApplicationError(message, type=type_, non_retryable=True)


@workflow.defn(name="Assistant")
class AssistantWorkflow:
    @workflow.init
    def __init__(self, request: AssistantInput) -> None:
        self._in = request
        self._view = request.carried or AssistantView(
            tenant=request.tenant,
            assistant_id=request.assistant_id,
            created_by=request.created_by,
            created_at=workflow.now(),
        )
        self._projecting = asyncio.Lock()
        self._stored = request.carried is not None  # the first version is in the read model

    @workflow.run
    async def run(self, request: AssistantInput) -> AssistantView:
        if not self._view.versions:
            try:
                validate_spec(request.spec)
            except InvalidAssistant as err:
                raise _refuse("InvalidSpec", str(err)) from None
            self._add_version(request.spec, request.created_by, request.note)
            await self._project()
        self._stored = True
        await workflow.wait_condition(
            lambda: self._view.state == ARCHIVED or workflow.info().is_continue_as_new_suggested()
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._view.state != ARCHIVED:
            workflow.continue_as_new(replace(self._in, carried=self._view))
        return self._view

    @workflow.query
    def state(self) -> AssistantView:
        return self._view

    # ---- updates -------------------------------------------------------------------------------------

    @workflow.update
    async def accepted(self) -> AssistantView:
        """Answers once the first version is stored (for the API's update-with-start)."""
        await workflow.wait_condition(lambda: self._stored)
        return self._view

    @workflow.update
    async def edit(self, request: Edit) -> AssistantView:
        """A new immutable version from `spec`; the live version does not change until it is published."""
        version = self._add_version(request.spec, request.by, request.note)
        self._record("edited", f"{version.version} changes {', '.join(version.changed)}", request.by)
        await self._project()
        return self._view

    @edit.validator
    def _check_edit(self, request: Edit) -> None:
        self._check_open()
        latest = self._view.latest.version if self._view.versions else None
        if request.expected_version and request.expected_version != latest:
            raise _refuse(
                "VersionConflict",
                f"the latest version is {latest}, not {request.expected_version}: read it and edit again",
            )
        try:
            validate_spec(request.spec)
        except InvalidAssistant as err:
            raise _refuse("InvalidSpec", str(err)) from None
        if self._view.versions and not changed_fields(self._view.latest.spec, request.spec):
            raise _refuse("NothingChanged", f"the spec is the same as {latest}: no version was made")

    @workflow.update
    async def publish(self, request: Publish) -> AssistantView:
        """Make a version live for everyone."""
        self._go_live(request.version)
        self._record("published", f"{request.version} is live", request.by, request.reason)
        await self._project()
        return self._view

    @publish.validator
    def _check_publish(self, request: Publish) -> None:
        self._check_open()
        self._check_exists(request.version)
        if self._view.experiment is not None:
            raise _refuse(
                "ExperimentRunning",
                f"experiment {self._view.experiment.id} is running: stop it (promoting a winner or not) "
                "before publishing, or roll back, which ends it",
            )
        if request.version == self._view.live_version:
            raise _refuse("AlreadyDone", f"{request.version} is already live")

    @workflow.update
    async def rollback(self, request: Rollback) -> AssistantView:
        """Back to an earlier published version in one step; a running experiment is aborted."""
        target = request.to_version or self._previous_live()
        assert target is not None  # the validator made sure
        if self._view.experiment is not None:
            self._end_experiment("aborted", None, request.by, f"rolled back to {target}")
        self._go_live(target)
        self._record("rolled-back", f"{target} is live again", request.by, request.reason)
        await self._project()
        return self._view

    @rollback.validator
    def _check_rollback(self, request: Rollback) -> None:
        self._check_open()
        if request.to_version is None:
            if self._previous_live() is None:
                raise _refuse("NothingToRollBack", "no earlier version was ever live: name a version")
            return
        self._check_exists(request.to_version)
        if request.to_version not in self._view.published:
            raise _refuse(
                "NeverPublished",
                f"{request.to_version} was never published; roll back to one that was "
                f"({', '.join(self._view.published) or 'none yet'}) or publish it",
            )
        if request.to_version == self._view.live_version and self._view.experiment is None:
            raise _refuse("AlreadyDone", f"{request.to_version} is already live")

    @workflow.update
    async def start_experiment(self, request: StartExperiment) -> AssistantView:
        """Split users between versions, sticky per user, until a winner is promoted or it is aborted."""
        self._view.experiment = ExperimentView(request.id, list(request.arms), request.by, workflow.now())
        self._set_state(EXPERIMENTING)
        self._record(
            "experiment-started", f"{request.id}: {_arms_text(request.arms)}", request.by, request.reason
        )
        await self._project()
        return self._view

    @start_experiment.validator
    def _check_start_experiment(self, request: StartExperiment) -> None:
        self._check_open()
        if self._view.live_version is None:
            raise _refuse(
                "NotPublished", "publish a version first: an experiment compares against users' version"
            )
        if self._view.experiment is not None:
            raise _refuse("ExperimentRunning", f"experiment {self._view.experiment.id} is already running")
        if any(past.id == request.id for past in self._view.past_experiments):
            raise _refuse("AlreadyDone", f"experiment {request.id} already ran; give the new one another id")
        if len(request.arms) < 2:
            raise _refuse("InvalidArms", "an experiment needs two arms or more")
        self._check_arms(request.arms)

    @workflow.update
    async def adjust_experiment(self, request: AdjustExperiment) -> AssistantView:
        """New shares for the running experiment's arms; users move only as the new shares require."""
        experiment = self._view.experiment
        assert experiment is not None
        before = _arms_text(experiment.arms)
        experiment.arms = list(request.arms)
        self._record(
            "experiment-adjusted", f"{before} → {_arms_text(request.arms)}", request.by, request.reason
        )
        await self._project()
        return self._view

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
        if winner and winner != self._view.live_version:
            self._go_live(winner)
        self._set_state(PUBLISHED)
        await self._project()
        return self._view

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
        if self._view.experiment is not None:
            self._end_experiment("aborted", None, request.by, "archived")
        self._set_state(ARCHIVED)
        self._record("archived", "no new conversations", request.by, request.reason)
        await self._project()
        return self._view

    @archive.validator
    def _check_archive(self, request: Actor) -> None:
        self._check_open()

    # ---- state changes -------------------------------------------------------------------------------

    def _add_version(self, spec: AssistantSpec, by: str, note: str) -> VersionView:
        previous = self._view.latest.spec if self._view.versions else None
        number = len(self._view.versions) + 1
        version = VersionView(
            version_name(number), number, spec, changed_fields(previous, spec), by, workflow.now(), note
        )
        self._view.versions.append(version)
        if number == 1:
            self._record("created", f"{version.version} drafted", by)
        return version

    def _go_live(self, version: str) -> None:
        found = self._view.find(version)
        assert found is not None
        found.published_at = found.published_at or workflow.now()
        self._view.live_version = version
        self._view.published.append(version)
        if self._view.experiment is None:
            self._set_state(PUBLISHED)

    def _end_experiment(self, outcome: str, winner: str | None, by: str, reason: str) -> None:
        experiment = self._view.experiment
        assert experiment is not None
        experiment.state, experiment.winner, experiment.ended_at = outcome, winner, workflow.now()
        self._view.past_experiments.append(experiment)
        self._view.experiment = None
        result = f"{winner} promoted" if winner else "aborted"
        self._record(f"experiment-{outcome}", f"{experiment.id}: {result}", by, reason)

    def _previous_live(self) -> str | None:
        """The version live before the current one (skipping republishing of the same version)."""
        for version in reversed(self._view.published):
            if version != self._view.live_version:
                return version
        return None

    def _set_state(self, state: str) -> None:
        if state != self._view.state:
            self._view.state = state
            workflow.upsert_search_attributes([PHASE.value_set(state)])

    def _record(self, kind: str, message: str, by: str = "", reason: str = "") -> None:
        text = f"{message} ({reason})" if reason else message
        self._view.history.append(HistoryEvent(workflow.now(), kind, text, by))

    async def _project(self) -> None:
        """Store the assistant as it stands now in the read model (conversations read it from there)."""
        async with self._projecting:
            view = self._view
            await workflow.execute_activity_method(
                StoreActivities.project_assistant,
                AssistantProjection(
                    workflow_id=workflow.info().workflow_id,
                    tenant=view.tenant,
                    assistant_id=view.assistant_id,
                    name=view.latest.spec.name,
                    state=view.state,
                    live_version=view.live_version,
                    latest_version=view.latest.version,
                    experiment=_experiment_data(view.experiment) if view.experiment else None,
                    created_by=view.created_by,
                    created_at=view.created_at,
                    updated_at=workflow.now(),
                    versions=[_version_record(v) for v in view.versions],
                    experiments=[
                        _experiment_record(e) for e in [*view.past_experiments, view.experiment] if e
                    ],
                ),
                **_options.PROJECTION,
            )

    # ---- checks --------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._view.state == ARCHIVED:
            raise _refuse(
                "AssistantArchived", f"{self._view.assistant_id} is archived: create a new assistant"
            )

    def _check_exists(self, version: str) -> None:
        if self._view.find(version) is None:
            known = ", ".join(v.version for v in self._view.versions)
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
        experiment = self._view.experiment
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
