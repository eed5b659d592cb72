"""CanaryRolloutWorkflow: a service's progressive release — traffic steps, analysis, promotion or rollback."""

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from policies.canary import (
    AnalysisPhase,
    Analyze,
    Decision,
    JudgeConfig,
    Judgment,
    Measurement,
    MetricTemplate,
    Samples,
    SetWeight,
    Step,
    StepAction,
    StepProgress,
    combine_runs,
    decide_step,
    guarded_measure,
    judge_canary,
    judge_config_problem,
    judge_run,
    judgment_measurement,
    plan_problem,
    render_query,
    replicas_for_exact_weights,
    template_problem,
    weight_line,
)
from policies.errors import LcpError
from policies.ranges import REPLICAS
from temporal.constants import PHASE
from workflows import _options
from workflows._failures import cause, cause_type
from workflows._records import Actor, HistoryEvent

with workflow.unsafe.imports_passed_through():
    from activities.contracts.kubernetes import (
        ROUTERS,
        DeploymentRef,
        DeploymentState,
        EnsureCanaryInput,
        KubernetesActivities,
        PromoteInput,
        RollbackInput,
        Router,
        SetWeightInput,
        WeightState,
        canary_name,
    )
    from activities.contracts.models import ModelActivities, ModelCanaryInput, ModelSplit, ModelWeightInput
    from activities.contracts.prometheus import (
        MeasureInput,
        MeasureResult,
        PrometheusActivities,
        SamplesInput,
        SamplesResult,
    )

T = TypeVar("T")
Judge = Literal["threshold", "statistical"]
JUDGES = ("threshold", "statistical")
Target = Literal["deployment", "model"]
MODELS_NAMESPACE = "models"  # the namespace of model rollouts' ids: rollout/models/{model}
BASELINE_PLACEHOLDER = "{{baseline_version}}"

# Phases, as the search attribute LcpPhase and the state show them.
PROGRESSING = "Progressing"
PAUSED = "Paused"
SUCCEEDED = "Succeeded"
ROLLED_BACK = "RolledBack"
FROZEN = "Frozen"
FAILED = "Failed"
FINISHED = (SUCCEEDED, ROLLED_BACK, FROZEN, FAILED)


def workflow_id(namespace: str, service: str) -> str:
    return f"rollout/{namespace}/{service}"


@dataclass
class JudgeSettings:
    """The statistical judge's settings (Kayenta's defaults); `samples_per_interval` is how finely each
    analysis interval is sampled for the Mann-Whitney test."""

    confidence: float = 0.98
    pass_threshold: float = 95.0
    marginal_threshold: float = 75.0
    min_samples: int = 5
    samples_per_interval: int = 6


@dataclass
class RolloutInput:
    """A rollout, complete: the starter fills in the default plan and the metric templates it names, so
    that the workflow reads nothing but its input."""

    namespace: str  # for a model: MODELS_NAMESPACE
    service: str  # for a model: its name in the models policy
    image: str  # for a model: "" (the policy names the canary's endpoint)
    version: str  # the canary's lcp.dev/version label (a model's: its canary version in the policy)
    steps: list[Step]
    templates: dict[str, MetricTemplate]
    target: Target = "deployment"  # a Kubernetes Deployment, or a model behind lcp's gateway
    deployment: str = ""  # the stable Deployment; "" means the service's name
    container: str | None = None
    router: Router = "replicas"
    judge: Judge = "threshold"
    judge_settings: JudgeSettings = field(default_factory=JudgeSettings)
    total_replicas: int | None = None
    on_failure: Literal["rollback", "freeze"] = "rollback"
    allow_decrease: bool = False
    min_window_s: float = 10.0
    requested_by: str = ""
    # With the replica router: raise the total (total_replicas, else the stable's replicas) to the fewest
    # replicas that split into every SetWeight exactly.
    exact_weights: bool = False

    @property
    def stable(self) -> str:
        return self.deployment or self.service


def input_problem(request: RolloutInput) -> str | None:
    """Why a rollout can't start, said so that the caller can fix it; None when it can."""
    if request.target not in ("deployment", "model"):
        return f"target must be deployment or model, not {request.target!r}"
    required = ("namespace", "service", "version") + (("image",) if request.target == "deployment" else ())
    for name in required:
        if not str(getattr(request, name) or "").strip():
            return f"{name} must not be empty"
    if request.target == "model" and request.namespace != MODELS_NAMESPACE:
        return f"a model's rollout lives in namespace {MODELS_NAMESPACE!r}, not {request.namespace!r}"
    if request.router not in ROUTERS:
        return f"router must be one of {', '.join(ROUTERS)}, not {request.router!r}"
    if request.judge not in JUDGES:
        return f"judge must be one of {', '.join(JUDGES)}, not {request.judge!r}"
    if request.total_replicas is not None and (
        problem := REPLICAS.problem("total_replicas", request.total_replicas)
    ):
        return problem
    if request.exact_weights and (request.target != "deployment" or request.router != "replicas"):
        return (
            "exact_weights is for a Deployment with the replica router: a traffic router's (or a model's) "
            "weights are exact already"
        )
    if not (math.isfinite(request.min_window_s) and request.min_window_s > 0):
        return f"min_window_s must be a positive number of seconds, got {request.min_window_s}"
    problem = plan_problem(
        request.steps, allow_decrease=request.allow_decrease, known_templates=request.templates.keys()
    )
    if problem:
        return problem
    for template in request.templates.values():
        if problem := template_problem(template):
            return problem
        if request.judge == "statistical" and BASELINE_PLACEHOLDER in template.query:
            return (
                f"template {template.name!r} compares with the baseline itself ({BASELINE_PLACEHOLDER}): "
                "the statistical judge needs a query per version"
            )
    if request.judge == "statistical":
        return judge_config_problem(_judge_config(request, tuple(request.templates)))
    return None


def _judge_config(request: RolloutInput, names: tuple[str, ...]) -> JudgeConfig:
    settings = request.judge_settings
    return JudgeConfig(
        metrics=tuple(request.templates[name].canary_metric() for name in names),
        confidence=settings.confidence,
        pass_threshold=settings.pass_threshold,
        marginal_threshold=settings.marginal_threshold,
        min_samples=settings.min_samples,
    )


# ---- what the API sends and what the query answers ---------------------------------------------------------


@dataclass
class PromoteRequest(Actor):
    full: bool = False  # skip every remaining step and analysis: straight to 100% and promotion


@dataclass
class MeasurementView:
    template: str
    phase: str
    value: float | None
    message: str
    at: datetime


@dataclass
class AnalysisView:
    """One Analyze step's run, with every number it took."""

    step: int
    templates: list[str]
    judge: str
    started_at: datetime
    phase: str = AnalysisPhase.RUNNING.value
    reason: str = ""
    finished_at: datetime | None = None
    measurements: list[MeasurementView] = field(default_factory=list)
    judgment: Judgment | None = None  # the statistical judge's latest, with each metric's numbers


@dataclass
class RolloutView:
    """The rollout as it stands: what the query, the REST API and the CLI show."""

    id: str
    namespace: str
    service: str
    stable_deployment: str
    canary_deployment: str
    image: str
    version: str
    target: str
    router: str  # a model's: "gateway"
    judge: str
    steps: list[Step]
    started_at: datetime
    phase: str = PROGRESSING
    message: str = "starting"
    step: int = 0  # a full promotion leaves it where it happened: the later steps were skipped
    desired_weight: int = 0
    weights: WeightState | None = None
    stable_version: str | None = None
    stable_image: str | None = None
    paused_by: str | None = None  # a human's pause (the rollout holds until resume)
    awaiting_decision: bool = False  # a step waits for promote (Pause(None), inconclusive analysis)
    analyses: list[AnalysisView] = field(default_factory=list)
    history: list[HistoryEvent] = field(default_factory=list)
    finished_at: datetime | None = None
    requested_by: str = ""


@dataclass
class CanaryState:
    """Everything the rollout changes as it runs; the query's RolloutView is read from it and the input."""

    started_at: datetime
    step_started: datetime  # when the step under way began (its clock stops while a human pause holds)
    phase: str = PROGRESSING
    message: str = "starting"
    step: int = 0  # the step under way; a full promotion leaves it where it happened
    weight_applied: bool = False  # the step's weight is routed
    analysis_done: AnalysisPhase | None = None  # the Analyze step's outcome
    decision: Decision | None = None  # a human's word on the step
    desired_weight: int = 0
    weights: WeightState | None = None
    stable_version: str | None = None
    stable_image: str | None = None
    paused_by: str | None = None  # a human's pause (the rollout holds until resume)
    awaiting_decision: bool = False  # a step waits for promote (Pause(None), inconclusive analysis)
    abort: Actor | None = None
    full: Actor | None = None  # a full promotion's requester
    prepared: bool = False  # the target was read and the canary made, or the rollout was refused
    total_replicas: int | None = None  # the total that makes every weight exact (exact_weights)
    refusal: ApplicationError | None = None  # why it did not start
    finishing: bool = False  # rolling back or promoting: no more human changes
    wake: int = 0  # bumped on every human action, so that waits notice it
    analyses: list[AnalysisView] = field(default_factory=list)
    history: list[HistoryEvent] = field(default_factory=list)
    finished_at: datetime | None = None

    @property
    def decided(self) -> bool:
        """A human's word (promote, abort, full promotion) ends the step under way."""
        return self.decision is not None or self.abort is not None or self.full is not None


class _Interrupted(LcpError):
    """A human's abort or full promotion cut an action short."""


def _reject(type_: str, message: str) -> ApplicationError:
    return ApplicationError(message, type=type_, non_retryable=True)


def _window(seconds: float, minimum: float) -> str:
    return f"{max(math.ceil(seconds), math.ceil(minimum))}s"


@workflow.defn(name="CanaryRollout")
class CanaryRolloutWorkflow:
    @workflow.init
    def __init__(self, request: RolloutInput) -> None:
        self._in = request
        self._state = CanaryState(started_at=workflow.now(), step_started=workflow.now())
        what = request.image or f"model {request.service}"
        self._record("started", f"rollout of {what} as {request.version}", request.requested_by)

    # ---- the rollout -----------------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: RolloutInput) -> RolloutView:
        state = self._state
        try:
            if problem := input_problem(request):
                raise _reject("InvalidSpec", f"the rollout is invalid: {problem}")
            await self._prepare()
        except ActivityError as err:
            state.refusal = _reject(cause_type(err), f"could not start: {cause(err)}")
        except ApplicationError as refusal:
            state.refusal = refusal
        state.prepared = True
        if state.refusal is not None:
            self._finish(FAILED, state.refusal.message)
            return self._view()
        try:
            await self._steps()
        except _Interrupted:
            pass
        if state.phase not in FINISHED:
            if state.full is not None and state.abort is None:
                await self._promote_fully()
            else:
                await self._rollback(self._abort_reason())
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._view()

    async def _prepare(self) -> None:
        """Read the stable Deployment and make the canary (at 0 replicas) from it; for a model, check
        the policy names this canary version and start it at 0%."""
        request, state = self._in, self._state
        if request.target == "model":
            split: ModelSplit = await self._kube(
                ModelActivities.prepare, ModelCanaryInput(request.service, request.version, self._id)
            )
            state.stable_version = split.stable_version
            self._record(
                "prepared", f"model {request.service}: {split.stable_version} → {split.canary_version}"
            )
            return
        stable: DeploymentState = await self._kube(
            KubernetesActivities.read_deployment, DeploymentRef(request.namespace, request.stable)
        )
        state.stable_version, state.stable_image = stable.version, stable.image
        if stable.version == request.version:
            raise _reject(
                "InvalidSpec",
                f"{request.namespace}/{request.stable} already runs version {stable.version}: "
                "give the new release another version",
            )
        if request.exact_weights:
            self._exact_total(request.total_replicas or stable.desired)
        await self._kube(
            KubernetesActivities.ensure_canary,
            EnsureCanaryInput(
                namespace=request.namespace,
                service=request.service,
                stable_deployment=request.stable,
                canary_version=request.version,
                image=request.image,
                container=request.container,
            ),
        )
        self._record("prepared", f"canary {canary_name(request.stable)} made from {request.stable}")

    def _exact_total(self, at_least: int) -> None:
        """The fewest replicas, at least `at_least`, that split into every weight of the plan exactly."""
        total = replicas_for_exact_weights(self._in.steps, at_least)
        if problem := REPLICAS.problem("total_replicas", total):
            raise _reject("InvalidSpec", f"exact weights need {total} replicas: {problem}")
        self._state.total_replicas = total
        weights = sorted({step.percent for step in self._in.steps if isinstance(step, SetWeight)})
        self._record(
            "prepared",
            f"{total} replicas in all split exactly into {', '.join(f'{w}%' for w in weights)} "
            f"(at least {at_least} asked)",
        )

    async def _steps(self) -> None:
        """Walk the plan with `decide_step` until it rolls back or completes."""
        steps, state = self._in.steps, self._state
        state.step_started = workflow.now()
        while True:
            if state.abort is not None or state.full is not None:
                raise _Interrupted
            if state.paused_by is not None:
                paused_at = workflow.now()
                await self._wait(lambda: state.paused_by is None)
                state.step_started += workflow.now() - paused_at  # a pause step's clock stops while paused
                continue
            index = state.step
            elapsed = (workflow.now() - state.step_started).total_seconds()
            progress = StepProgress(elapsed, state.weight_applied, state.analysis_done, state.decision)
            decision = decide_step(steps, index, progress)
            state.step, state.message = decision.index, decision.reason
            awaiting = decision.action is StepAction.WAIT and decision.wait_s is None
            state.awaiting_decision = awaiting
            self._set_phase(PAUSED if awaiting else PROGRESSING)
            if decision.action is StepAction.SET_WEIGHT:
                assert decision.weight is not None
                await self._set_weight(decision.weight, interruptible_by_full=True)
                state.weight_applied = True
            elif decision.action is StepAction.RUN_ANALYSIS:
                step = steps[index]
                assert isinstance(step, Analyze)
                state.analysis_done = await self._analyze(index, step)
            elif decision.action is StepAction.WAIT:
                await self._wait(lambda: False, decision.wait_s)
            elif decision.action is StepAction.ADVANCE:
                self._record("step", f"step {index} done: {decision.reason}")
                if not isinstance(steps[index], SetWeight):
                    state.decision = None  # a promote was for this step; one during a weight change waits
                state.weight_applied, state.analysis_done = False, None
                state.step_started = workflow.now()
            elif decision.action is StepAction.ROLLBACK:
                await self._rollback(decision.reason)
                return
            else:
                await self._promote()
                return

    def _abort_reason(self) -> str:
        actor = self._state.abort or Actor()
        return f"aborted by {actor.by or 'a human'}: {actor.reason or 'no reason given'}"

    async def _promote_fully(self) -> None:
        actor = self._state.full or Actor()
        self._record("promote", "full promotion: the remaining steps are skipped", actor.by)
        try:
            await self._set_weight(100, interruptible_by_full=False)
        except _Interrupted:
            if self._state.phase not in FINISHED:  # an abort came after the full promotion: it wins
                await self._rollback(self._abort_reason())
            return
        await self._promote()

    # ---- Kubernetes, or the gateway for a model --------------------------------------------------------

    async def _set_weight(self, percent: int, *, interruptible_by_full: bool) -> None:
        """Route `percent`% to the canary; an abort (or a full promotion, when asked) cuts it short. A
        refusal from Kubernetes rolls back."""
        request = self._in
        self._state.desired_weight = percent
        self._state.message = f"routing {percent}% to the canary"
        change = (
            self._model_weights(
                ModelActivities.set_weight,
                ModelWeightInput(request.service, request.version, percent, self._id),
            )
            if request.target == "model"
            else self._kube(
                KubernetesActivities.set_weight,
                SetWeightInput(
                    **self._deployments(),
                    canary_percent=percent,
                    stable_version=self._state.stable_version,
                    canary_version=request.version,
                ),
            )
        )
        try:
            self._state.weights = await self._interruptible(change, interruptible_by_full)
        except ActivityError as err:
            await self._rollback(f"could not route {percent}% to the canary: {cause(err)}")
            raise _Interrupted from err
        weights = self._state.weights
        if weights is not None and weights.router == "replicas":
            self._record("weight", weight_line(percent, weights.canary_replicas, weights.total_replicas))
        else:
            self._record("weight", weight_line(percent))

    async def _rollback(self, reason: str) -> None:
        request = self._in
        freeze = request.on_failure == "freeze" and request.target == "deployment"
        self._state.finishing = True
        self._state.message = f"rolling back: {reason}"
        self._state.desired_weight = 0
        try:
            if request.target == "model":
                self._state.weights = await self._model_weights(
                    ModelActivities.rollback,
                    ModelCanaryInput(request.service, request.version, self._id),
                    _options.KUBERNETES_ROLLBACK,
                )
            else:
                self._state.weights = await self._kube(
                    KubernetesActivities.rollback,
                    RollbackInput(
                        **self._deployments(),
                        freeze=freeze,
                        stable_version=self._state.stable_version,
                        canary_version=request.version,
                    ),
                    _options.KUBERNETES_ROLLBACK,
                )
        except ActivityError as err:
            self._finish(FAILED, f"{reason}; the rollback failed too, fix by hand: {cause(err)}")
            return
        self._finish(FROZEN if freeze else ROLLED_BACK, reason)

    async def _promote(self) -> None:
        request = self._in
        self._state.finishing = True
        self._state.message = f"promoting {request.version} to stable"
        try:
            if request.target == "model":
                self._state.weights = await self._model_weights(
                    ModelActivities.promote, ModelCanaryInput(request.service, request.version, self._id)
                )
                self._finish(
                    SUCCEEDED,
                    f"{request.version} of model {request.service} serves all traffic: make it the stable "
                    "version in the models policy",
                )
                return
            self._state.weights = await self._kube(
                KubernetesActivities.promote,
                PromoteInput(
                    **self._deployments(),
                    image=request.image,
                    version=request.version,
                    container=request.container,
                ),
            )
        except ActivityError as err:
            # The canary carries all the traffic: leave it so, and say what stopped the promotion.
            self._finish(FAILED, f"the canary serves 100% but promotion failed: {cause(err)}")
            return
        self._finish(SUCCEEDED, f"{request.version} is the stable version")

    def _deployments(self) -> dict[str, Any]:
        """What every Kubernetes change of this rollout names: the service, its two Deployments, the
        router and the replica total."""
        request = self._in
        return {
            "namespace": request.namespace,
            "service": request.service,
            "stable_deployment": request.stable,
            "canary_deployment": canary_name(request.stable),
            "router": request.router,
            "total_replicas": self._state.total_replicas or request.total_replicas,
        }

    async def _kube(
        self, method: Callable[[Any, Any], Any], arg: Any, options: dict[str, Any] | None = None
    ) -> Any:
        """An activity that changes the target (Kubernetes, or a model's weight), retried as they are."""
        return await workflow.execute_activity_method(method, arg, **(options or _options.KUBERNETES))

    async def _model_weights(
        self, method: Callable[[Any, Any], Any], arg: Any, options: dict[str, Any] | None = None
    ) -> WeightState:
        """A model's split (the gateway's weight), shown in the shape of a Deployment's."""
        split: ModelSplit = await self._kube(method, arg, options)
        return WeightState(
            router="gateway",
            stable_percent=100.0 - split.canary_percent,
            canary_percent=float(split.canary_percent),
            total_replicas=0,
            stable_replicas=0,
            canary_replicas=0,
            stable_ready=0,
            canary_ready=0,
        )

    # ---- analysis --------------------------------------------------------------------------------------

    async def _analyze(self, index: int, step: Analyze) -> AnalysisPhase | None:
        """Measure every `interval_s` until the run is decided; None when a human's word cut it short."""
        view = AnalysisView(index, list(step.templates), self._in.judge, workflow.now())
        self._state.analyses.append(view)
        self._record("analysis", f"analysing {step.label} every {step.interval_s:g} s")
        taken: dict[str, list[Measurement]] = {name: [] for name in step.templates}
        while True:
            if self._state.decided or not await self._sleep(step.interval_s):
                view.reason = "ended by a human"
                return None
            if self._in.judge == "statistical":
                await self._judge_statistically(step, view, taken)
            else:
                await self._measure_thresholds(step, view, taken)
            runs = {name: judge_run(ms, step.limits, step.count) for name, ms in taken.items()}
            phase, reason = combine_runs(runs) if all(taken.values()) else (AnalysisPhase.RUNNING, "")
            view.phase, view.reason = phase.value, reason
            if phase is not AnalysisPhase.RUNNING:
                view.finished_at = workflow.now()
                self._record("analysis", f"analysis of {step.label}: {phase.value}: {reason}")
                return phase

    async def _measure_thresholds(
        self, step: Analyze, view: AnalysisView, taken: dict[str, list[Measurement]]
    ) -> None:
        """One reading per metric whose run is still going (with its traffic guard's count, if it has
        one), judged against its template's threshold."""
        running = [n for n, ms in taken.items() if judge_run(ms, step.limits, step.count).phase == "Running"]
        window = _window(step.interval_s, self._in.min_window_s)
        templates = [self._in.templates[name] for name in running]
        measurements = await asyncio.gather(*(self._reading(t, window) for t in templates))
        for template, measurement in zip(templates, measurements, strict=True):
            taken[template.name].append(measurement)
            view.measurements.append(
                MeasurementView(
                    template.name,
                    measurement.phase.value,
                    measurement.value,
                    measurement.message,
                    workflow.now(),
                )
            )

    async def _reading(self, template: MetricTemplate, window: str) -> Measurement:
        """One reading of a template for the canary, with its traffic guard's count when it has one."""
        reading = self._read(self._query(template.query, self._in.version, window))
        if template.guard is None:
            result = await reading
            return guarded_measure(template, result.value, result.error)
        count = self._read(self._query(template.guard.query, self._in.version, window))
        result, traffic = await asyncio.gather(reading, count)
        return guarded_measure(template, result.value, result.error, traffic.value)

    async def _judge_statistically(
        self, step: Analyze, view: AnalysisView, taken: dict[str, list[Measurement]]
    ) -> None:
        """Samples of every metric for canary and stable since the analysis began, judged together
        (Kayenta's judge); the judgment counts as one measurement of each metric."""
        settings = self._in.judge_settings
        sample_s = step.interval_s / settings.samples_per_interval
        window = _window(sample_s, self._in.min_window_s)
        start, end = view.started_at.timestamp(), workflow.now().timestamp()
        names = step.templates
        baseline = self._state.stable_version or ""
        results: list[SamplesResult] = await asyncio.gather(
            *(
                self._samples(
                    SamplesInput(
                        canary_query=self._query(self._in.templates[name].query, self._in.version, window),
                        baseline_query=self._query(self._in.templates[name].query, baseline, window),
                        start=start,
                        end=end,
                        step_s=sample_s,
                    )
                )
                for name in names
            )
        )
        judgment = judge_canary(
            {name: Samples(r.canary, r.baseline) for name, r in zip(names, results, strict=True)},
            _judge_config(self._in, names),
        )
        view.judgment = judgment
        errors = [f"{name}: {r.error}" for name, r in zip(names, results, strict=True) if r.error]
        last_chance = all(len(ms) + 1 >= step.count for ms in taken.values())
        measured = judgment_measurement(judgment, errors, last_chance)
        if measured is None:
            view.reason = f"waiting for samples: {judgment.reason}"
            return
        for name in names:
            taken[name].append(measured)
        view.measurements.append(
            MeasurementView(
                ", ".join(names), measured.phase.value, measured.value, measured.message, workflow.now()
            )
        )

    def _query(self, query: str, version: str, window: str) -> str:
        request = self._in
        return render_query(
            query,
            namespace=request.namespace,
            service=request.service,
            version=version,
            baseline_version=self._state.stable_version or "",
            reference_version=self._state.stable_version or "",
            window=window,
        )

    async def _read(self, query: str) -> MeasureResult:
        try:
            result: MeasureResult = await workflow.execute_activity_method(
                PrometheusActivities.measure, MeasureInput(query), **_options.PROMETHEUS
            )
            return result
        except ActivityError as err:  # Prometheus down past the retries: an Error measurement
            return MeasureResult(None, cause(err))

    async def _samples(self, request: SamplesInput) -> SamplesResult:
        try:
            result: SamplesResult = await workflow.execute_activity_method(
                PrometheusActivities.samples, request, **_options.PROMETHEUS
            )
            return result
        except ActivityError as err:
            return SamplesResult([], [], cause(err))

    # ---- waiting ---------------------------------------------------------------------------------------

    async def _wait(self, until: Callable[[], bool], timeout_s: float | None = None) -> bool:
        """Wait until `until()` holds, a human acts, or `timeout_s` passes; True unless it timed out."""
        wake = self._state.wake
        try:
            await workflow.wait_condition(
                lambda: until() or self._state.wake != wake,
                timeout=timedelta(seconds=timeout_s) if timeout_s is not None else None,
            )
        except TimeoutError:
            return False
        return True

    async def _sleep(self, seconds: float) -> bool:
        """Sleep `seconds` unless a human decides meanwhile (False then). A human pause does not stop an
        analysis: its measurements go on, and a failure still rolls back."""
        deadline = workflow.now() + timedelta(seconds=seconds)
        while (left := (deadline - workflow.now()).total_seconds()) > 0:
            await self._wait(lambda: False, left)
            if self._state.decided:
                return False
        return True

    async def _interruptible(self, action: Awaitable[T], by_full: bool) -> T:
        """Run `action` unless an abort (or, `by_full`, a full promotion) arrives first: then cancel it."""
        task = asyncio.ensure_future(action)

        def stop() -> bool:
            return self._state.abort is not None or (by_full and self._state.full is not None)

        await workflow.wait_condition(lambda: task.done() or stop())
        if not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, ActivityError):
                pass
            raise _Interrupted
        return task.result()

    # ---- queries and updates ---------------------------------------------------------------------------

    @workflow.query
    def state(self) -> RolloutView:
        return self._view()

    @workflow.update
    async def accepted(self) -> RolloutView:
        """Answers once the rollout has read its target and made the canary, or failed to (for the API's
        update-with-start: a missing Deployment is a 404 there, not a rollout that fails later)."""
        await workflow.wait_condition(lambda: self._state.prepared)
        if self._state.refusal is not None:
            raise self._state.refusal
        return self._view()

    @workflow.update
    def promote(self, request: PromoteRequest) -> RolloutView:
        """Go on: end the current step (or, `full`, every step), lifting a human pause."""
        if request.full:
            self._state.full = request
        else:
            self._state.decision = Decision.PROMOTE
            self._record("promote", request.reason or f"step {self._state.step} promoted", request.by)
        self._lift_pause()
        self._human_acted()
        return self._view()

    @promote.validator
    def _check_promote(self, request: PromoteRequest) -> None:
        self._check_running("promote")
        if self._state.full is not None:
            raise _reject("AlreadyDone", "a full promotion is already under way")

    @workflow.update
    def pause(self, request: Actor) -> RolloutView:
        """Hold the rollout where it is (an analysis under way keeps measuring) until resume or promote."""
        self._state.paused_by = request.by or "someone"
        self._set_phase(PAUSED)
        self._record("pause", request.reason or "paused", request.by)
        self._human_acted()
        return self._view()

    @pause.validator
    def _check_pause(self, request: Actor) -> None:
        self._check_running("pause")
        if self._state.paused_by is not None:
            raise _reject("AlreadyDone", f"the rollout is already paused by {self._state.paused_by}")

    @workflow.update
    def resume(self, request: Actor) -> RolloutView:
        """Lift a human pause; at an inconclusive analysis, analyse again."""
        if self._state.paused_by is not None:
            self._lift_pause()
            self._record("resume", request.reason or "resumed", request.by)
        else:
            self._record("resume", request.reason or "analysing again", request.by)
            self._state.analysis_done = None
        self._human_acted()
        return self._view()

    @resume.validator
    def _check_resume(self, request: Actor) -> None:
        self._check_running("resume")
        if self._state.paused_by is None and not self._inconclusive():
            raise _reject(
                "NothingToResume",
                "the rollout is not paused (a step that waits for a human needs promote or abort)",
            )

    @workflow.update
    def abort(self, request: Actor) -> RolloutView:
        self._state.abort = request
        self._state.decision = Decision.ABORT
        self._state.message = f"rolling back: {self._abort_reason()}"
        self._record("abort", request.reason or "aborted", request.by)
        self._human_acted()
        return self._view()

    @abort.validator
    def _check_abort(self, request: Actor) -> None:
        self._check_running("abort")
        if self._state.abort is not None:
            raise _reject("AlreadyDone", "the rollout is already being aborted")

    # ---- bookkeeping -----------------------------------------------------------------------------------

    @property
    def _id(self) -> str:
        return workflow.info().workflow_id

    def _view(self) -> RolloutView:
        """The rollout as the query shows it: the input's names and plan, the state's progress."""
        request, state = self._in, self._state
        deployment = request.target == "deployment"
        return RolloutView(
            id=self._id,
            namespace=request.namespace,
            service=request.service,
            stable_deployment=request.stable if deployment else "",
            canary_deployment=canary_name(request.stable) if deployment else "",
            image=request.image,
            version=request.version,
            target=request.target,
            router=request.router if deployment else "gateway",
            judge=request.judge,
            steps=list(request.steps),
            started_at=state.started_at,
            phase=state.phase,
            message=state.message,
            step=state.step,
            desired_weight=state.desired_weight,
            weights=state.weights,
            stable_version=state.stable_version,
            stable_image=state.stable_image,
            paused_by=state.paused_by,
            awaiting_decision=state.awaiting_decision,
            analyses=list(state.analyses),
            history=list(state.history),
            finished_at=state.finished_at,
            requested_by=request.requested_by,
        )

    def _check_running(self, action: str) -> None:
        if self._state.phase in FINISHED:
            raise _reject(
                "RolloutFinished", f"cannot {action}: the rollout has finished ({self._state.phase})"
            )
        if self._state.finishing:
            raise _reject(
                "RolloutFinished", f"cannot {action}: the rollout is finishing ({self._state.message})"
            )
        if not self._state.prepared:
            raise _reject("RolloutStarting", f"cannot {action} yet: the rollout is still starting")

    def _lift_pause(self) -> None:
        if self._state.paused_by is not None:
            self._state.paused_by = None
            self._set_phase(PROGRESSING)

    def _inconclusive(self) -> bool:
        return self._state.analysis_done is AnalysisPhase.INCONCLUSIVE

    def _human_acted(self) -> None:
        self._state.wake += 1

    def _record(self, kind: str, message: str, by: str = "") -> None:
        self._state.history.append(HistoryEvent(workflow.now(), kind, message, by))

    def _finish(self, phase: str, reason: str) -> None:
        self._state.message = reason
        self._state.finished_at = workflow.now()
        self._state.awaiting_decision = False
        self._set_phase(phase)
        self._record(phase.lower(), reason)

    def _set_phase(self, phase: str) -> None:
        """The phase, also as the LcpPhase search attribute; a human pause shows until it is lifted."""
        if self._state.paused_by is not None and phase == PROGRESSING:
            phase = PAUSED
        if phase != self._state.phase:
            self._state.phase = phase
            workflow.upsert_search_attributes([PHASE.value_set(phase)])
