"""PredictiveScalingWorkflow: a Deployment scaled ahead of demand (measure, forecast, decide, act)."""

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from policies.scaling import (
    Decision,
    DecisionInput,
    Recommendation,
    ScalingBounds,
    decide,
    remember,
    settings_problem,
)
from temporal.constants import FORECASTING_QUEUE, PHASE
from workflows import _options
from workflows._failures import cause, cause_type
from workflows._records import Actor, HistoryEvent

with workflow.unsafe.imports_passed_through():
    from activities.contracts.forecasting import ForecastingActivities, ForecastInput, ForecastResult
    from activities.contracts.kubernetes import (
        DeploymentRef,
        DeploymentState,
        KubernetesActivities,
        ScaleDeploymentInput,
    )
    from activities.contracts.prometheus import MeasureInput, MeasureResult, PrometheusActivities
    from activities.contracts.store import ScalingDecisionRecord, StoreActivities

Mode = Literal["forecast-only", "active"]
MODES = ("forecast-only", "active")
# Patches (workflow.patched): runs recorded before one take the old path on replay.
FORECAST_HEADROOM_NOT_HELD = "scaling-forecast-headroom-not-held"  # stabilisation holds the reactive need
# Requests per second to the target's Service, as the lab workload (and most HTTP exporters) count them.
DEFAULT_QUERY = 'sum(rate(http_requests_total{namespace="{{namespace}}",service="{{deployment}}"}[1m]))'
RECENT_SHOWN = 20  # decisions the query shows; all of them are in the read model
DECISIONS_PER_RUN = 500  # continue-as-new after this many decisions (well inside Temporal's history limits)

# Phases, as the search attribute LcpPhase and the state show them.
FORECAST_ONLY = "ForecastOnly"
ACTIVE = "Active"
STOPPED = "Stopped"
FAILED = "Failed"
MODE_PHASE = {"forecast-only": FORECAST_ONLY, "active": ACTIVE}


def workflow_id(namespace: str, deployment: str) -> str:
    return f"scaling/{namespace}/{deployment}"


@dataclass
class DecisionView:
    """One decision: what was read, forecast and done. `status` is scaled | unchanged (active mode),
    recorded (forecast-only: nothing scaled) or, with no action at all, no-data | target-missing."""

    seq: int
    at: datetime
    mode: str
    status: str
    data_status: str  # ok, or why there was no usable reading: prometheus-down, no-data, nan, bad-query ...
    detail: str = ""  # what the data or forecaster problem was, in words
    observed_rps: float | None = None
    forecast_peak_rps: float | None = None
    confidence: float | None = None
    forecast_status: str = ""  # the forecaster's: ok, short-history, unavailable, ...
    current_replicas: int | None = None
    ready_replicas: int | None = None
    reactive_need: int | None = None
    forecast_need: int | None = None
    target: int | None = None
    basis: str = ""
    limited_by: str | None = None
    reason: str = ""


@dataclass
class ForecastView:
    """The latest forecast: requests/s per step from `start`, with the ensemble's spread."""

    start: float
    step_s: float
    mean: list[float]
    low: list[float]
    high: list[float]


@dataclass
class ScalingCarry:
    """What a run hands to the next on continue-as-new: a compact state, not the decisions themselves."""

    seq: int
    recent: list[Recommendation]
    history: list[HistoryEvent]
    decisions: list[DecisionView]
    model: dict[str, Any] | None = None
    started_at: datetime | None = None


@dataclass
class ScalingInput:
    """A scaling target, complete (the starter fills in defaults): the workflow reads nothing else."""

    namespace: str
    deployment: str
    bounds: ScalingBounds = field(default_factory=ScalingBounds)
    mode: Mode = "forecast-only"
    query: str = DEFAULT_QUERY  # PromQL giving requests/s; {{namespace}} and {{deployment}} are filled in
    interval_s: float = 60.0  # between decisions
    startup_s: float = (
        120.0  # a new pod's start-up time: capacity is planned this far (plus one interval) ahead
    )
    horizon_s: float = 1800.0  # how far the forecast looks (at least the start-up time)
    step_s: float = 60.0  # resolution of the history the forecaster learns from
    lookback_s: float = 14 * 86400.0  # history it learns from
    season_s: list[float] = field(default_factory=lambda: [86400.0, 604800.0])
    refresh_s: float = 3600.0  # retrain the model when it is older than this
    max_age_s: float = 300.0  # newer data than this is required
    planning_quantile: float = 0.8  # plan capacity on this quantile of the ensemble's forecast
    forecast_queue: str = FORECASTING_QUEUE
    requested_by: str = ""
    carry: ScalingCarry | None = None

    @property
    def lead_s(self) -> float:
        return self.startup_s + self.interval_s

    @property
    def rendered_query(self) -> str:
        return self.query.replace("{{namespace}}", self.namespace).replace("{{deployment}}", self.deployment)


def input_problem(request: ScalingInput) -> str | None:
    """Why scaling can't start with these settings, said so that the caller can fix it; None when it can."""
    if not request.namespace or not request.deployment:
        return "namespace and deployment must not be empty"
    if request.mode not in MODES:
        return f"mode must be one of {', '.join(MODES)}, not {request.mode!r}"
    if problem := request.bounds.problem():
        return problem
    if not request.query.strip():
        return "query must be a PromQL expression giving requests per second"
    if problem := settings_problem(vars(request)):
        return problem
    if request.horizon_s < request.lead_s:
        return (
            f"horizon_s ({request.horizon_s:g}) must cover the pod start-up time plus one interval "
            f"({request.lead_s:g} s)"
        )
    if request.lookback_s < 2 * request.horizon_s:
        return f"lookback_s ({request.lookback_s:g}) must be at least twice horizon_s ({request.horizon_s:g})"
    return None


@dataclass
class ScalingView:
    id: str
    namespace: str
    deployment: str
    mode: str
    phase: str
    health: str  # ok, or the latest decision's problem (prometheus-down, target-missing, ...)
    message: str
    settings: ScalingInput
    started_at: datetime
    decisions: int = 0
    last: DecisionView | None = None
    recent: list[DecisionView] = field(default_factory=list)  # newest last
    forecast: ForecastView | None = None
    model: dict[str, Any] | None = None  # the forecaster's provenance
    history: list[HistoryEvent] = field(default_factory=list)
    stopped_at: datetime | None = None


@dataclass
class ModeChange:
    mode: Mode
    by: str = ""
    reason: str = ""


@dataclass
class ScalingState:
    """Everything scaling changes as it runs; the query's ScalingView and the next run's carry are read
    from it and the input."""

    mode: Mode  # the input's, until set_mode changes it
    phase: str
    started_at: datetime
    seq: int = 0  # decisions made and stored (the one under way is seq + 1)
    recent: tuple[Recommendation, ...] = ()  # what `decide` remembers of the latest decisions
    decisions: list[DecisionView] = field(default_factory=list)  # the latest RECENT_SHOWN, newest last
    health: str = "starting"
    message: str = "waiting for the first decision"
    forecast: ForecastView | None = None
    model: dict[str, Any] | None = None  # the forecaster's provenance
    history: list[HistoryEvent] = field(default_factory=list)
    stopped_at: datetime | None = None
    decided: bool = False  # the first decision is made (or the settings were refused)
    refusal: ApplicationError | None = None
    stop: Actor | None = None
    wake: int = 0  # bumped on a mode change, so that the wait between decisions notices it


@workflow.defn(name="PredictiveScaling")
class PredictiveScalingWorkflow:
    @workflow.init
    def __init__(self, request: ScalingInput) -> None:
        self._in = request
        carry = request.carry or ScalingCarry(seq=0, recent=[], history=[], decisions=[])
        self._state = ScalingState(
            mode=request.mode,
            phase=MODE_PHASE.get(request.mode, FAILED),
            started_at=carry.started_at or workflow.now(),
            seq=carry.seq,
            recent=tuple(carry.recent),
            decisions=list(carry.decisions),
            model=carry.model,
            history=list(carry.history),
            decided=request.carry is not None,
        )
        if request.carry is None:
            self._record("started", f"{request.mode} scaling of {request.namespace}/{request.deployment}")

    @workflow.run
    async def run(self, request: ScalingInput) -> ScalingView:
        state = self._state
        if problem := input_problem(request):
            state.refusal = ApplicationError(f"scaling is invalid: {problem}", type="InvalidSpec")
        while state.refusal is None and state.stop is None:
            await self._decide()
            state.decided = True
            if state.refusal is not None:
                break
            if workflow.info().is_continue_as_new_suggested() or state.seq % DECISIONS_PER_RUN == 0:
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(replace(self._in, mode=state.mode, carry=self._carry()))
            await self._wait(self._in.interval_s)
        state.decided = True
        if state.refusal is not None:
            self._set_phase(FAILED)
            state.message = str(state.refusal.message)
            self._record("failed", state.message)
        else:
            stop = state.stop or Actor()
            self._set_phase(STOPPED)
            state.message = stop.reason or "stopped; the Deployment keeps its replicas"
            self._record("stopped", state.message, stop.by)
        state.stopped_at = workflow.now()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._view()

    # ---- one decision ------------------------------------------------------------------------------------

    async def _decide(self) -> None:
        view = DecisionView(
            seq=self._state.seq + 1, at=workflow.now(), mode=self._state.mode, status="", data_status="ok"
        )
        deployment = await self._read_deployment(view)
        if deployment is not None:
            observed = await self._observe(view)
            if observed is not None:
                forecast = await self._forecast(view)
                await self._act(view, deployment, observed, forecast)
        await self._store(view)

    async def _read_deployment(self, view: DecisionView) -> DeploymentState | None:
        request = self._in
        try:
            state: DeploymentState = await workflow.execute_activity_method(
                KubernetesActivities.read_deployment,
                DeploymentRef(request.namespace, request.deployment),
                **_options.KUBERNETES_READ,
            )
        except ActivityError as err:
            view.status = "target-missing" if cause_type(err) == "TargetNotFound" else "cluster-error"
            view.detail = f"cannot read Deployment {request.namespace}/{request.deployment}: {cause(err)}"
            view.reason = "no action: " + view.detail
            if not self._state.decided and view.status == "target-missing":
                self._state.refusal = ApplicationError(view.detail, type="TargetNotFound")
            return None
        view.current_replicas, view.ready_replicas = state.desired, state.ready
        return state

    async def _observe(self, view: DecisionView) -> float | None:
        """Demand now (requests/s); None, with the reason on `view`, when there is no trustworthy reading."""
        try:
            result: MeasureResult = await workflow.execute_activity_method(
                PrometheusActivities.measure,
                MeasureInput(self._in.rendered_query),
                **_options.prometheus_within(self._in.interval_s),
            )
        except ActivityError as err:
            view.data_status, view.detail = "prometheus-down", f"Prometheus did not answer: {cause(err)}"
        else:
            if result.value is not None and result.value >= 0:
                view.observed_rps = result.value
                return result.value
            view.data_status = _DATA_STATUS.get(result.error_type or "", "no-data")
            view.detail = result.error or f"the query answered {result.value}, not a request rate"
        view.status = "no-data"
        view.reason = f"no action: {view.detail}"
        return None

    async def _forecast(self, view: DecisionView) -> ForecastResult | None:
        """The forecaster's answer, or None when it has none (its worker busy or down): the decision is
        then the reactive one alone."""
        request = self._in
        forecast_input = ForecastInput(
            key=workflow.info().workflow_id,
            query=request.rendered_query,
            step_s=request.step_s,
            lookback_s=request.lookback_s,
            horizon_s=request.horizon_s,
            lead_s=request.lead_s,
            season_s=list(request.season_s),
            refresh_s=request.refresh_s,
            max_age_s=request.max_age_s,
            planning_quantile=request.planning_quantile,
        )
        try:
            result: ForecastResult = await workflow.execute_activity_method(
                ForecastingActivities.forecast,
                forecast_input,
                task_queue=request.forecast_queue,
                **_options.forecast_within(request.interval_s),
            )
        except ActivityError as err:
            view.forecast_status = "unavailable"
            view.detail = f"no forecast ({cause(err)}): reactive need only"
            return None
        view.forecast_status = result.status
        if result.status != "ok":
            view.detail = f"no forecast ({result.detail}): reactive need only"
            return None
        self._state.forecast = ForecastView(
            result.observed_at or workflow.now().timestamp(),
            result.step_s,
            result.forecast,
            result.low,
            result.high,
        )
        self._state.model = result.provenance
        return result

    async def _act(
        self,
        view: DecisionView,
        deployment: DeploymentState,
        observed_rps: float,
        forecast: ForecastResult | None,
    ) -> None:
        request = self._in
        now = workflow.now().timestamp()
        decision: Decision = decide(
            DecisionInput(
                now=now,
                current_replicas=deployment.desired,
                observed_rps=observed_rps,
                forecast_peak_rps=forecast.peak_rps if forecast is not None else None,
                confidence=forecast.confidence if forecast is not None else 0.0,
                recent=self._state.recent,
            ),
            request.bounds,
        )
        self._state.recent = remember(
            self._state.recent,
            decision,
            now,
            request.bounds,
            hold_forecast=not workflow.patched(FORECAST_HEADROOM_NOT_HELD),
        )
        if forecast is not None:
            view.forecast_peak_rps, view.confidence = forecast.peak_rps, forecast.confidence
        view.reactive_need, view.forecast_need = decision.reactive_need, decision.forecast_need
        view.target, view.basis, view.limited_by = decision.target, decision.basis, decision.limited_by
        view.reason = decision.reason
        if self._state.mode != "active":
            view.status = "recorded"
            return
        if decision.target == deployment.desired:
            view.status = "unchanged"
            return
        try:
            await workflow.execute_activity_method(
                KubernetesActivities.scale_deployment,
                ScaleDeploymentInput(request.namespace, request.deployment, decision.target),
                **_options.KUBERNETES_READ,
            )
        except ActivityError as err:
            view.status = "target-missing" if cause_type(err) == "TargetNotFound" else "cluster-error"
            view.detail = f"could not scale to {decision.target}: {cause(err)}"
            return
        view.status = "scaled"

    async def _store(self, view: DecisionView) -> None:
        request, state = self._in, self._state
        state.seq = view.seq
        state.decisions = [*state.decisions, view][-RECENT_SHOWN:]
        state.health = view.data_status if view.data_status != "ok" else view.status
        if state.health in ("scaled", "unchanged", "recorded"):
            state.health = "ok"
        state.message = view.reason or view.detail
        forecast = state.forecast
        await workflow.execute_activity_method(
            StoreActivities.record_scaling_decision,
            ScalingDecisionRecord(
                **asdict(view),  # the record is the view, and what says whose decision it is
                workflow_id=workflow.info().workflow_id,
                namespace=request.namespace,
                deployment=request.deployment,
                forecast=(
                    {"start": forecast.start, "step_s": forecast.step_s, "mean": forecast.mean}
                    if forecast is not None and view.forecast_status == "ok"
                    else {}
                ),
                model=(state.model or {}) if view.forecast_status == "ok" else {},
            ),
            **_options.PROJECTION,
        )

    # ---- waiting, queries and updates --------------------------------------------------------------------

    async def _wait(self, seconds: float) -> None:
        wake = self._state.wake
        try:
            await workflow.wait_condition(
                lambda: self._state.stop is not None or self._state.wake != wake,
                timeout=timedelta(seconds=seconds),
            )
        except TimeoutError:
            pass

    def _carry(self) -> ScalingCarry:
        state = self._state
        return ScalingCarry(
            seq=state.seq,
            recent=list(state.recent),
            history=state.history[-50:],
            decisions=state.decisions,
            model=state.model,
            started_at=state.started_at,
        )

    @workflow.query
    def state(self) -> ScalingView:
        return self._view()

    @workflow.update
    async def accepted(self) -> ScalingView:
        """Answers after the first decision (for the API's update-with-start): invalid settings or a
        Deployment that does not exist are refused there, not left to a workflow that fails later."""
        await workflow.wait_condition(lambda: self._state.decided)
        if self._state.refusal is not None:
            raise self._state.refusal
        return self._view()

    @workflow.update
    def set_mode(self, request: ModeChange) -> ScalingView:
        """forecast-only (decide and record, scale nothing) or active (scale)."""
        self._state.mode = request.mode
        self._set_phase(MODE_PHASE[request.mode])
        self._record("mode", request.reason or f"mode set to {request.mode}", request.by)
        self._state.wake += 1  # decide at once in the new mode
        return self._view()

    @set_mode.validator
    def _check_mode(self, request: ModeChange) -> None:
        self._check_running()
        if request.mode not in MODES:
            raise ApplicationError(
                f"mode must be one of {', '.join(MODES)}, not {request.mode!r}", type="InvalidSpec"
            )

    @workflow.update
    async def stop(self, request: Actor) -> ScalingView:
        """Stop deciding (after the decision under way); the Deployment keeps the replicas it has."""
        self._state.stop = request
        await workflow.wait_condition(lambda: self._state.phase == STOPPED)
        return self._view()

    @stop.validator
    def _check_stop(self, request: Actor) -> None:
        self._check_running()

    def _check_running(self) -> None:
        if self._state.phase in (STOPPED, FAILED) or self._state.stop is not None:
            raise ApplicationError(
                f"scaling {workflow.info().workflow_id} has ended ({self._state.phase})", type="NotRunning"
            )

    def _view(self) -> ScalingView:
        """Scaling as the query shows it: the input's settings (in the mode now), the state's decisions."""
        request, state = self._in, self._state
        return ScalingView(
            id=workflow.info().workflow_id,
            namespace=request.namespace,
            deployment=request.deployment,
            mode=state.mode,
            phase=state.phase,
            health=state.health,
            message=state.message,
            settings=replace(request, mode=state.mode, carry=None),
            started_at=state.started_at,
            decisions=state.seq,
            last=state.decisions[-1] if state.decisions else None,
            recent=list(state.decisions),
            forecast=state.forecast,
            model=state.model,
            history=list(state.history),
            stopped_at=state.stopped_at,
        )

    def _record(self, kind: str, message: str, by: str = "") -> None:
        self._state.history.append(HistoryEvent(workflow.now(), kind, message, by))

    def _set_phase(self, phase: str) -> None:
        if phase != self._state.phase:
            self._state.phase = phase
            workflow.upsert_search_attributes([PHASE.value_set(phase)])


# The PromQL client's error classes, as a decision's data_status says them.
_DATA_STATUS = {
    "NoData": "no-data",
    "NotANumber": "nan",
    "StaleData": "stale",
    "BadQuery": "bad-query",
    "PrometheusUnavailable": "prometheus-down",
}
