"""ChaosExperimentWorkflow: one Litmus fault injected under a steady-state hypothesis, always cleaned up."""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from chaos.experiments import (
    Experiment,
    HttpProbe,
    Hypothesis,
    Probe,
    PromProbe,
    Target,
    engine_name,
    render_engine,
    result_name,
)
from policies.chaos import (
    SafetyInput,
    SafetyPolicy,
    pods_affected,
    probe_passes,
    probe_success_percentage,
    resilience_score,
    safety_problem,
    time_to_recover,
)
from policies.errors import LcpError
from temporal.constants import PHASE
from workflows import _options
from workflows._failures import cause
from workflows._records import Actor

with workflow.unsafe.imports_passed_through():
    from activities.contracts.litmus import (
        CreateEngineInput,
        EngineRef,
        LitmusActivities,
        ResultRef,
        ResultState,
        TargetRef,
        TargetState,
    )
    from activities.contracts.probes import HttpProbeInput, HttpProbeResult, ProbeActivities
    from activities.contracts.prometheus import MeasureInput, MeasureResult, PrometheusActivities
    from activities.contracts.visibility import RunningQuery, VisibilityActivities

T = TypeVar("T")

# Phases, as the search attribute LcpPhase and the state show them.
CHECKING = "Checking"
INJECTING = "Injecting"
CLEANING_UP = "CleaningUp"
VERIFYING = "Verifying"
PASSED = "Passed"  # the hypothesis held before, during and after, and the target recovered in time
FAILED = "Failed"  # a probe breached (the fault was stopped at once) or the target did not recover
REFUSED = "Refused"  # the safety policy said no: nothing injected
NOT_STEADY = "NotSteady"  # the hypothesis did not hold before: nothing injected
ABORTED = "Aborted"  # an SRE stopped it
ERROR = "Error"  # Litmus or the cluster failed it
# Patches (workflow.patched): runs recorded before one take the old path on replay.
READINESS_DURING_FAULT = "chaos-readiness-during-fault"  # the target's pods read with each Litmus result
FINISHED = (PASSED, FAILED, REFUSED, NOT_STEADY, ABORTED, ERROR)


def workflow_id(experiment: str, run: str) -> str:
    return f"chaos/{experiment}/{run}"


@dataclass
class ChaosInput:
    experiment: Experiment
    run: str  # unique per run of the experiment, e.g. a timestamp; "" (a schedule's runs): the id's last part
    policy: SafetyPolicy = field(default_factory=SafetyPolicy)
    poll_s: float = 1.0  # how often the ChaosResult is read while the fault runs
    grace_s: float = 60.0  # past the fault's duration, the engine is stopped whatever it says
    requested_by: str = ""


@dataclass
class JournalEntry:
    """One step, chaostoolkit-style."""

    step: str  # safety | steady-state-before | inject | cleanup | steady-state-after | report
    started_at: datetime
    ended_at: datetime | None = None
    duration_s: float | None = None
    status: str = "running"  # running | succeeded | failed | skipped
    output: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class ProbeResult:
    probe: str
    when: str  # before | during | after
    at: datetime
    passed: bool
    value: float | None
    detail: str


@dataclass
class ChaosView:
    id: str
    experiment: str
    run: str
    target: str  # namespace/service
    fault: str
    engine: str
    phase: str
    message: str
    started_at: datetime
    requested_by: str
    verdict: str = ""  # Litmus' verdict on the engine (Pass, Fail, Stopped, Error), once it gave one
    probes: list[ProbeResult] = field(default_factory=list)
    journal: list[JournalEntry] = field(default_factory=list)
    probe_success_percentage: float | None = None
    resilience_score: float | None = None
    time_to_recover_s: float | None = None
    recovery_measured_from: str = ""  # policies/chaos.py FROM_LAST_REPLACED_POD or FROM_FAULT_END
    injected: bool = False
    cleaned_up: bool = False
    finished_at: datetime | None = None
    fault_duration_s: float = 0.0  # how long the fault lasts once injected (when the journal's inject starts)
    pods_hit: list[str] = field(default_factory=list)  # the pods the fault deleted or hit so far (Litmus')
    pods_ready: int | None = None  # the target's pods ready, and all of them, as last read during the fault
    pods_total: int | None = None


class _Stop(LcpError):
    """The experiment ends early: phase and why."""

    def __init__(self, phase: str, message: str) -> None:
        super().__init__(message)
        self.phase, self.message = phase, message


@dataclass
class ChaosState:
    """Everything the experiment changes as it runs; the query's ChaosView is read from it and the input."""

    started_at: datetime
    phase: str = CHECKING
    message: str = "checking the safety policy"
    verdict: str = ""
    probes: list[ProbeResult] = field(default_factory=list)
    journal: list[JournalEntry] = field(default_factory=list)
    probe_success_percentage: float | None = None
    resilience_score: float | None = None
    time_to_recover_s: float | None = None
    recovery_measured_from: str = ""
    injected: bool = False
    injected_at: datetime | None = None  # when the engine was created: the fault's start
    cleaned_up: bool = False
    finished_at: datetime | None = None
    pods_hit: list[str] = field(default_factory=list)
    pods_ready: int | None = None
    pods_total: int | None = None
    abort: Actor | None = None
    checked: bool = False  # the safety policy has been checked (or the experiment ended before)
    refusal: ApplicationError | None = None  # why the safety policy (or the spec) refused it


class ChaosRun:
    """What every chaos run does in the same way: the safety policy, the steady-state hypothesis before,
    during and after, the cleanup that always runs, the recovery check, the report, and the journal of each
    step. A subclass (one fault; a scenario of several) says what it injects, how it cleans up, and how the
    run looks in a query."""

    _state: ChaosState
    _noun = "experiment"  # what the run is called in its messages

    # ---- what a subclass says ----------------------------------------------------------------------------

    @property
    def _hypothesis_def(self) -> Hypothesis:
        raise NotImplementedError

    @property
    def _request(self) -> Any:  # the input: its policy, poll_s, grace_s and requested_by
        raise NotImplementedError

    @property
    def _recover_within_s(self) -> float:
        raise NotImplementedError

    def _targets(self) -> list[Target]:
        """The workloads hit, each once."""
        raise NotImplementedError

    def _weights(self) -> list[int]:
        """The faults' weights in the resilience score."""
        raise NotImplementedError

    def _leftovers(self) -> str:
        """What someone must check by hand when cleanup fails."""
        raise NotImplementedError

    async def _safety(self) -> dict[str, Any]:
        raise NotImplementedError

    async def _inject(self) -> dict[str, Any]:
        raise NotImplementedError

    async def _cleanup(self) -> dict[str, Any]:
        raise NotImplementedError

    # ---- the run -----------------------------------------------------------------------------------------

    async def _run_steps(self) -> None:
        try:
            await self._step("safety", self._safety)
            self._state.checked = True
            await self._step("steady-state-before", lambda: self._hypothesis("before"))
            self._stop_if_aborted()  # an abort while the steady state was checked: nothing is injected
            await self._step("inject", self._inject)
            self._set_phase(VERIFYING)
        except _Stop as stop:
            self._set_phase(stop.phase)
            self._state.message = stop.message
        finally:
            self._state.checked = True
            if self._state.injected:
                # Always, also when the workflow is cancelled or the fault was aborted.
                try:
                    await asyncio.shield(asyncio.ensure_future(self._step("cleanup", self._cleanup)))
                except _Stop as stop:  # Kubernetes refused it outright: say so, never fail the workflow task
                    self._set_phase(ERROR)
                    self._state.message = f"cleanup failed, check {self._leftovers()} by hand: {stop.message}"
        if self._state.injected and self._state.cleaned_up:
            try:
                await self._step("steady-state-after", self._recover)
            except _Stop as stop:
                self._set_phase(stop.phase)
                self._state.message = stop.message
        await self._step("report", self._report)
        await workflow.wait_condition(workflow.all_handlers_finished)

    # ---- steps -------------------------------------------------------------------------------------------

    async def _check_target(self, target: Target, pods_affected_perc: list[float]) -> dict[str, Any]:
        """The safety policy for one target, hit by faults at once with these PODS_AFFECTED_PERC: their pods
        together count against the blast-radius limit."""
        state: TargetState = await self._activity(
            LitmusActivities.target_state,
            TargetRef(target.namespace, target.app_label),
            _options.KUBERNETES_READ,
        )
        service = f"{target.namespace}/{target.service}"
        rollouts: list[str] = await self._activity(
            VisibilityActivities.running, RunningQuery("rollout", service), _options.PROJECTION
        )
        if len(pods_affected_perc) == 1:
            [perc] = pods_affected_perc
        else:  # the share of pods the faults hit together, which pods_affected() turns back into their sum
            hit = sum(pods_affected(each, state.pods) for each in pods_affected_perc)
            perc = 100.0 * hit / state.pods if state.pods else 0.0
        safety = SafetyInput(
            namespace=target.namespace,
            service=target.service,
            pods_affected_perc=perc,
            replicas=state.pods,
            now=workflow.now().timestamp(),
            running_rollouts=tuple(rollouts),
        )
        if state.pods == 0:
            raise _Stop(REFUSED, f"no pods match {target.app_label} in {target.namespace}: nothing to test")
        if problem := safety_problem(safety, self._request.policy):
            self._state.refusal = ApplicationError(problem, type="ChaosRefused")
            raise _Stop(REFUSED, f"refused: {problem}")
        return {"pods": state.pods, "ready": state.ready, "running_rollouts": rollouts}

    def _refuse_invalid(self, problem: str | None) -> None:
        """A run started without the API (a client, a Schedule made elsewhere) gets the API's checks, ranges
        included, before anything touches the cluster."""
        if problem:
            self._state.refusal = ApplicationError(
                f"the {self._noun} is invalid: {problem}", type="InvalidSpec"
            )
            raise _Stop(REFUSED, f"refused: {problem}")

    async def _hypothesis(self, when: str) -> dict[str, Any]:
        results = await self._round(when)
        failed = [r for r in results if not r.passed]
        if failed and when == "before":
            raise _Stop(
                NOT_STEADY, f"the steady state does not hold before: {failed[0].detail}; nothing injected"
            )
        return {"probes": len(results), "failed": [r.probe for r in failed]}

    async def _round(self, when: str, record: bool = True) -> list[ProbeResult]:
        """Every probe of `when`, once; `record` keeps the readings for the report."""
        results = [await self._probe(probe, when) for probe in self._hypothesis_def.probes_for(when)]
        if record:
            self._state.probes.extend(results)
        return results

    async def _watch(self, finished: Callable[[], Awaitable[bool]], within_s: float, late: str) -> None:
        """While the faults run: stop on an abort, run the "during" probes every interval (a breach stops
        the run), and poll `finished` every poll_s until it says so, for at most `within_s`."""
        deadline = workflow.now() + timedelta(seconds=within_s)
        interval = timedelta(seconds=self._hypothesis_def.interval_s)
        next_probe = workflow.now()  # continuous probes start with the fault
        while True:
            self._stop_if_aborted()
            if workflow.now() >= next_probe:
                for reading in await self._round("during"):
                    if not reading.passed:
                        raise _Stop(
                            FAILED, f"steady state breached during the fault, stopped it: {reading.detail}"
                        )
                next_probe = workflow.now() + interval
            if await finished():
                return
            if workflow.now() >= deadline:
                raise _Stop(ERROR, late)
            try:
                await workflow.wait_condition(
                    lambda: self._state.abort is not None, timeout=timedelta(seconds=self._request.poll_s)
                )
            except TimeoutError:
                pass

    def _stop_if_aborted(self) -> None:
        if (abort := self._state.abort) is not None:
            raise _Stop(ABORTED, f"aborted by {abort.by or 'an SRE'}: {abort.reason or 'no reason given'}")

    async def _recover(self) -> dict[str, Any]:
        """Wait for the targets to be back: every pod ready and the "after" probes passing, within the
        deadline."""
        targets = [TargetRef(target.namespace, target.app_label) for target in self._targets()]
        started = workflow.now()
        deadline = started + timedelta(seconds=self._recover_within_s)
        while True:
            states: list[TargetState] = [
                await self._activity(LitmusActivities.target_state, target, _options.KUBERNETES_READ)
                for target in targets
            ]
            steady = all(state.steady for state in states)
            # Only the last round of "after" probes counts in the report: the ones before it, while the
            # targets were still recovering, are what the deadline is for.
            last = await self._round("after", record=False) if steady else []
            if steady and all(r.passed for r in last):
                self._state.probes.extend(last)
                created = [state.newest_created_ts for state in states if state.newest_created_ts is not None]
                readied = [state.last_ready_ts for state in states if state.last_ready_ts is not None]
                recovery = time_to_recover(
                    injected_at=(self._state.injected_at or started).timestamp(),
                    fault_ended_at=started.timestamp(),
                    steady_at=workflow.now().timestamp(),
                    newest_created=max(created, default=None),
                    last_ready=max(readied, default=None),
                )
                self._state.time_to_recover_s = recovery.seconds
                self._state.recovery_measured_from = recovery.measured_from
                if self._state.phase in (VERIFYING, CLEANING_UP):
                    self._set_phase(PASSED)
                    self._state.message = f"the steady state held; {recovery.describe()}"
                return {"time_to_recover_s": recovery.seconds, "measured_from": recovery.measured_from}
            if workflow.now() >= deadline:
                self._state.probes.extend(last)
                ready, pods = sum(s.ready for s in states), sum(s.pods for s in states)
                within = f"{self._recover_within_s:g} s"
                raise _Stop(FAILED, f"not back to steady state within {within} ({ready}/{pods} pods ready)")
            await workflow.sleep(self._request.poll_s)

    async def _report(self) -> dict[str, Any]:
        probes = self._state.probes
        percentage = probe_success_percentage(sum(1 for p in probes if p.passed), len(probes))
        self._state.probe_success_percentage = percentage
        if self._state.injected:
            self._state.resilience_score = resilience_score([(w, percentage) for w in self._weights()])
        self._state.finished_at = workflow.now()
        return {
            "phase": self._state.phase,
            "verdict": self._state.verdict,
            "probe_success_percentage": percentage,
            "resilience_score": self._state.resilience_score,
            "time_to_recover_s": self._state.time_to_recover_s,
        }

    # ---- probes and activities ---------------------------------------------------------------------------

    async def _probe(self, probe: Probe, when: str) -> ProbeResult:
        if isinstance(probe, PromProbe):
            measured: MeasureResult = await self._activity(
                PrometheusActivities.measure, MeasureInput(probe.query), _options.PROMETHEUS
            )
            if measured.value is None:
                passed, detail = False, f"{probe.name}: no value ({measured.error})"
            else:
                passed = probe_passes(probe.comparator, measured.value, probe.value, probe.tolerance)
                verb = "holds" if passed else "fails"
                detail = f"{probe.name}: {measured.value:.4g} {probe.comparator} {probe.value:g} {verb}"
            reading = ProbeResult(probe.name, when, workflow.now(), passed, measured.value, detail)
        else:
            assert isinstance(probe, HttpProbe)
            answer: HttpProbeResult = await self._activity(
                ProbeActivities.http,
                HttpProbeInput(probe.url, probe.expected_status, probe.method, probe.timeout_s),
                _options.PROMETHEUS,
            )
            status = float(answer.status) if answer.status is not None else None
            reading = ProbeResult(
                probe.name, when, workflow.now(), answer.passed, status, f"{probe.name}: {answer.detail}"
            )
        return reading

    async def _activity(self, method: Callable[..., Any], argument: Any, options: dict[str, Any]) -> Any:
        return await workflow.execute_activity_method(method, argument, **options)

    async def _step(self, name: str, run: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        entry = JournalEntry(step=name, started_at=workflow.now())
        self._state.journal.append(entry)
        try:
            entry.output = await run()
            entry.status = "succeeded"
        except _Stop as stop:
            entry.status, entry.error = "failed", stop.message
            raise
        except ActivityError as err:
            entry.status, entry.error = "failed", cause(err)
            raise _Stop(ERROR, f"{name} failed: {cause(err)}") from err
        finally:
            entry.ended_at = workflow.now()
            entry.duration_s = (entry.ended_at - entry.started_at).total_seconds()

    def _check_abort_now(self) -> None:
        if self._state.phase in FINISHED or self._state.abort is not None:
            raise ApplicationError(
                f"{workflow.info().workflow_id} is not injecting ({self._state.phase})", type="NotRunning"
            )

    def _set_phase(self, phase: str) -> None:
        if phase != self._state.phase:
            self._state.phase = phase
            workflow.upsert_search_attributes([PHASE.value_set(phase)])


@workflow.defn(name="ChaosExperiment")
class ChaosExperimentWorkflow(ChaosRun):
    @workflow.init
    def __init__(self, request: ChaosInput) -> None:
        self._in = request
        self._state = ChaosState(started_at=workflow.now())

    @workflow.run
    async def run(self, request: ChaosInput) -> ChaosView:
        await self._run_steps()
        return self._view()

    # ---- steps -------------------------------------------------------------------------------------------

    async def _safety(self) -> dict[str, Any]:
        experiment = self._in.experiment
        self._refuse_invalid(experiment.problem())
        return await self._check_target(experiment.target, [experiment.fault.pods_affected_perc])

    async def _inject(self) -> dict[str, Any]:
        experiment = self._in.experiment
        self._set_phase(INJECTING)
        self._state.message = f"{experiment.fault.kind} on {self._target}"
        manifest = render_engine(experiment, self._run)
        self._state.injected_at = workflow.now()
        await self._activity(
            LitmusActivities.create_engine, CreateEngineInput(manifest), _options.KUBERNETES_READ
        )
        self._state.injected = True
        result_ref = ResultRef(self._engine.namespace, result_name(self._engine.name, experiment))
        target = TargetRef(experiment.target.namespace, experiment.target.app_label)
        result = ResultState(found=False)

        async def finished() -> bool:
            nonlocal result
            result = await self._activity(LitmusActivities.read_result, result_ref, _options.KUBERNETES_READ)
            self._state.pods_hit = list(result.pods_hit) or self._state.pods_hit
            if workflow.patched(READINESS_DURING_FAULT):  # the watch shows replacements coming up
                state = await self._activity(LitmusActivities.target_state, target, _options.KUBERNETES_READ)
                self._state.pods_ready, self._state.pods_total = state.ready, state.pods
            return bool(result.finished)

        await self._watch(
            finished,
            experiment.fault.duration_s + self._in.grace_s,
            f"Litmus gave no verdict within the fault's duration and {self._in.grace_s:g} s",
        )
        self._state.verdict = result.verdict
        if result.verdict not in ("Pass", "Stopped"):
            raise _Stop(
                ERROR,
                f"Litmus' verdict is {result.verdict}{': ' + result.fail_step if result.fail_step else ''}",
            )
        return {"verdict": result.verdict, "probe_success_percentage": result.probe_success_percentage}

    async def _cleanup(self) -> dict[str, Any]:
        if self._state.phase in (INJECTING, VERIFYING):
            self._set_phase(CLEANING_UP)
        stopped = await self._activity(
            LitmusActivities.stop_engine, self._engine, _options.KUBERNETES_ROLLBACK
        )
        deleted = await self._activity(
            LitmusActivities.delete_engine, self._engine, _options.KUBERNETES_ROLLBACK
        )
        self._state.cleaned_up = True
        return {"stopped": stopped, "deleted": deleted}

    # ---- what ChaosRun asks --------------------------------------------------------------------------------

    @property
    def _hypothesis_def(self) -> Hypothesis:
        return self._in.experiment.hypothesis

    @property
    def _request(self) -> ChaosInput:
        return self._in

    @property
    def _recover_within_s(self) -> float:
        return self._in.experiment.recover_within_s

    def _targets(self) -> list[Target]:
        return [self._in.experiment.target]

    def _weights(self) -> list[int]:
        return [self._in.experiment.weight]

    def _leftovers(self) -> str:
        return f"engine {self._engine.name}"

    # ---- queries and updates -----------------------------------------------------------------------------

    @workflow.query
    def state(self) -> ChaosView:
        return self._view()

    @workflow.update
    async def accepted(self) -> ChaosView:
        """Answers once the safety policy has been checked (for the API's update-with-start: a refused
        experiment is a 409 there)."""
        await workflow.wait_condition(lambda: self._state.checked)
        if self._state.refusal is not None:
            raise self._state.refusal
        return self._view()

    @workflow.update
    def abort(self, request: Actor) -> ChaosView:
        """Stop the fault now; cleanup and the recovery check still run."""
        self._state.abort = request
        return self._view()

    @abort.validator
    def _check_abort(self, request: Actor) -> None:
        self._check_abort_now()

    # ---- bookkeeping -------------------------------------------------------------------------------------

    @property
    def _run(self) -> str:
        # A Schedule starts each run with the same input and its own id (Temporal appends the time).
        return self._in.run or workflow.info().workflow_id.rsplit("/", 1)[-1]

    @property
    def _engine(self) -> EngineRef:
        return EngineRef(self._in.experiment.target.namespace, engine_name(self._in.experiment, self._run))

    @property
    def _target(self) -> str:
        target = self._in.experiment.target
        return f"{target.namespace}/{target.service}"

    def _view(self) -> ChaosView:
        """The experiment as the query shows it: the input's names, the state's progress."""
        experiment, state = self._in.experiment, self._state
        return ChaosView(
            id=workflow.info().workflow_id,
            experiment=experiment.name,
            run=self._run,
            target=self._target,
            fault=experiment.fault.kind,
            engine=self._engine.name,
            phase=state.phase,
            message=state.message,
            started_at=state.started_at,
            requested_by=self._in.requested_by,
            verdict=state.verdict,
            probes=list(state.probes),
            journal=list(state.journal),
            probe_success_percentage=state.probe_success_percentage,
            resilience_score=state.resilience_score,
            time_to_recover_s=state.time_to_recover_s,
            recovery_measured_from=state.recovery_measured_from,
            injected=state.injected,
            cleaned_up=state.cleaned_up,
            finished_at=state.finished_at,
            fault_duration_s=experiment.fault.duration_s,
            pods_hit=list(state.pods_hit),
            pods_ready=state.pods_ready,
            pods_total=state.pods_total,
        )
