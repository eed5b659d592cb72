"""The lab's simulated Litmus operator: ChaosEngines run pod-delete, pod-network-loss or pod-cpu-hog."""

from __future__ import annotations

import datetime
import json
import logging
import math
import random
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import kmock

from lab.controllers import DEFAULT_INTERVAL, Controller, is_ready
from lab.kube import SIMULATED_LABEL, LabKubernetes, Obj, parse_label_selector
from lab.workload import VERSION_LABEL, Fault, UnknownService, Workload
from policies.errors import PermanentError

log = logging.getLogger(__name__)

# What the real Litmus (3.x) does, and so what this operator imitates:
# - chaos-operator, controllers/chaosengine_controller.go and api/litmuschaos/v1alpha1/chaosengine_types.go:
#   spec.engineState "active" (the default) or "stop"; status.engineStatus "initialized" while the engine
#   runs, "completed" when its runner is done (the operator then also sets spec.engineState "stop", so
#   that patching it back to "active" runs the engine again), "stopped" after an abort (stop while
#   initialized), when every experiment still Running becomes status "Forcefully Aborted", verdict "Stopped".
#   An engine that is deleted has its chaos pods removed; its ChaosResult, owned by nothing, stays.
# - chaos-runner, pkg/utils/status.go: status.experiments[] is {name, runner: "<engine>-runner",
#   experimentPod, status: "Running" then "Completed" (or "ChaosExperiment Not Found", verdict "Fail"),
#   verdict: "Awaited" then the ChaosResult's verdict, lastUpdateTime}.
# - litmus-go, pkg/result/chaosresult.go: the ChaosResult `<engine>-<experiment>` is labelled with the
#   experiment pod's labels and chaosUID (the engine's uid); spec {engine, experiment}; while running,
#   status.experimentStatus {phase "Running", verdict "Awaited", probeSuccessPercentage "Awaited"} (a
#   string); at the end phase "Completed" and verdict Pass (probeSuccessPercentage "100", passedRuns + 1),
#   Fail ("0" without probes, failedRuns + 1) or Stopped (an abort: also phase "Completed", "0",
#   stoppedRuns + 1, failureOutput {failedStep "Chaos injection stopped!", errorCode
#   "EXPERIMENT_ABORTED"}). history {passedRuns, failedRuns, stoppedRuns, targets [{name, kind,
#   chaosStatus}]} carries over between runs of the same engine. litmus-go before 3.x wrote
#   experimentStatus.failStep instead of failureOutput; this operator writes both.
# - litmus-go, pkg/generic/*/environment: TOTAL_CHAOS_DURATION 30 s (pod-delete) or 60 s, CHAOS_INTERVAL 10 s,
#   RAMP_TIME 0 (waited before and after the chaos), FORCE false, NETWORK_PACKET_LOSS_PERCENTAGE 100,
#   CPU_LOAD 100; CPU_CORES is chaos-charts' 1. PODS_AFFECTED_PERC picks max(1, perc × pods ÷ 100)
#   of the target's pods (pkg/utils/common/pods.go), TARGET_PODS names them instead.
# The lab runs no Litmus probes and no default application health checks: every run that is not stopped
# and finds its target passes. lcp checks the steady state itself.

ENGINES = "litmuschaos.io/v1alpha1/chaosengines"
RESULTS = "litmuschaos.io/v1alpha1/chaosresults"
EXPERIMENTS = ("pod-delete", "pod-network-loss", "pod-cpu-hog")
# What a run needs to survive a restart of the operator, kept on its engine.
RUN_ID = "lab.lcp.dev/chaos-run-id"
STARTED_AT = "lab.lcp.dev/chaos-started-at"  # when the run started (RAMP_TIME before the injection)
FAULTS = "lab.lcp.dev/chaos-faults"  # the workload faults injected: {"namespace", "service", "faults"}

_DEFAULTS: dict[str, dict[str, str]] = {
    "pod-delete": {"TOTAL_CHAOS_DURATION": "30", "CHAOS_INTERVAL": "10"},
    "pod-network-loss": {"TOTAL_CHAOS_DURATION": "60", "NETWORK_PACKET_LOSS_PERCENTAGE": "100"},
    "pod-cpu-hog": {"TOTAL_CHAOS_DURATION": "60", "CPU_CORES": "1", "CPU_LOAD": "100"},
}
_COMMON_DEFAULTS = {"RAMP_TIME": "0", "PODS_AFFECTED_PERC": "0", "FORCE": "false", "TARGET_PODS": ""}


@dataclass(frozen=True)
class Settings:
    """An experiment's tunables, from the engine's `spec.experiments[].spec.components.env`."""

    experiment: str
    duration_s: int
    interval_s: int = 10
    ramp_s: int = 0
    pods_affected_perc: int = 0
    target_pods: tuple[str, ...] = ()
    force: bool = False
    loss_perc: int = 100
    cpu_cores: int = 1
    cpu_load: int = 100

    @classmethod
    def from_env(cls, experiment: str, env: Mapping[str, str]) -> Settings:
        """Unset or empty means Litmus' default; so does a value out of range or not a whole number (logged:
        litmus-go would read 0)."""
        defaults = {**_COMMON_DEFAULTS, **_DEFAULTS[experiment]}

        def number(name: str, low: int, high: int | None = None) -> int:
            text = env.get(name) or defaults.get(name, "0")
            try:
                value = int(text)
            except ValueError:
                value = -1
            if value < low or (high is not None and value > high):
                log.warning(
                    "lab: simulated %s ignores %s=%r: using %s", experiment, name, text, defaults[name]
                )
                value = int(defaults[name])
            return value

        return cls(
            experiment=experiment,
            duration_s=number("TOTAL_CHAOS_DURATION", 1),
            interval_s=number("CHAOS_INTERVAL", 1) if experiment == "pod-delete" else 10,
            ramp_s=number("RAMP_TIME", 0),
            pods_affected_perc=number("PODS_AFFECTED_PERC", 0, 100),
            target_pods=tuple(name.strip() for name in env.get("TARGET_PODS", "").split(",") if name.strip()),
            force=(env.get("FORCE") or "false").lower() == "true",
            loss_perc=number("NETWORK_PACKET_LOSS_PERCENTAGE", 0, 100)
            if experiment == "pod-network-loss"
            else 0,
            cpu_cores=number("CPU_CORES", 0) if experiment == "pod-cpu-hog" else 0,
            cpu_load=number("CPU_LOAD", 0, 100) if experiment == "pod-cpu-hog" else 0,
        )


def pods_affected(perc: int, pods: int) -> int:
    """How many of `pods` an experiment hits: litmus-go's max(1, min(perc, 100) × pods ÷ 100)."""
    return max(1, min(perc, 100) * pods // 100) if pods else 0


# The traffic models. The workload spreads a version's requests evenly over its ready pods, so a share
# `affected` of its pods under chaos sees that share of its requests.


def network_loss_fault(loss_perc: float, affected: float) -> Fault:
    """Packet loss on a share of a version's pods: that share of its requests meets the loss, and a request
    that meets it fails (500). A simplification: real TCP retransmits through partial loss, so below 100 %
    much of it would show as latency rather than errors."""
    return Fault(error_share=min(1.0, loss_perc / 100 * affected))


def cpu_hog_fault(cores: int, load_perc: float, affected: float) -> Fault:
    """stress-ng burning `cores` cores at `load_perc` % next to the app, which has about one core: an
    affected pod gets 1 / (1 + cores × load) of its CPU, so its service time grows by s = 1 + cores × load
    (CPU_CORES 0, every core, counts as the app's one). Across the version, capacity is the sum over pods,
    (1 - affected) + affected / s of what it was: the saturation is the inverse of that."""
    hog = 1 + max(cores, 1) * load_perc / 100
    capacity = (1 - affected) + affected / hog
    return Fault(cpu_saturation=min(100.0, 1 / capacity) if capacity > 0 else 100.0)


class _Failed(PermanentError):
    """The experiment fails, as litmus-go's do: (failedStep, errorCode)."""

    def __init__(self, step: str, code: str) -> None:
        super().__init__(step)
        self.step, self.code = step, code


@dataclass
class _Run:
    """One run of an engine's experiment, in memory; rebuilt from the engine after a restart."""

    namespace: str
    engine: str
    uid: str
    run_id: str
    settings: Settings
    started: float  # the operator's clock
    target_namespace: str
    app_label: str
    faults: dict[str, Fault] = field(default_factory=dict)  # version → what this run injected
    service: str | None = None  # the workload service the faults are on
    injected: bool = False
    reverted: bool = False
    next_kill: float = 0.0
    targets: list[Obj] = field(default_factory=list)  # ChaosResult history.targets

    @property
    def experiment(self) -> str:
        return self.settings.experiment

    @property
    def result(self) -> str:
        return f"{self.engine}-{self.experiment}"

    @property
    def inject_at(self) -> float:
        return self.started + self.settings.ramp_s

    @property
    def revert_at(self) -> float:
        return self.inject_at + self.settings.duration_s

    @property
    def end(self) -> float:
        return self.revert_at + self.settings.ramp_s


class ChaosOperator(Controller):
    """The Litmus chaos operator, runner and experiments in one, all simulated: no runner or experiment pod
    is created. pod-delete deletes the target's pods (the DeploymentController replaces them, the Kubelet
    makes the new ones ready after its start-up delay); pod-network-loss and pod-cpu-hog set faults on the
    target's versions in the workload simulator (when it simulates the target) for the chaos duration.

    The target service is `appinfo.applabel`'s value (the `app.kubernetes.io/name` one if it names several)
    in `appinfo.appns`. Only an engine's first experiment runs. `clock` (unix seconds) paces the runs:
    their start is kept on the engine, so that a new operator finishes or cleans up what an old one began.
    """

    watches = (ENGINES,)

    def __init__(
        self,
        kube: LabKubernetes,
        workload: Workload | None = None,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        super().__init__(kube, interval=interval)
        self.workload = workload
        self.clock = clock
        self.rng = rng or random.Random()
        self._runs: dict[str, _Run] = {}  # engine uid → its run
        self._ignored: set[str] = set()  # engines already reported as unrunnable

    def reconcile(self) -> None:
        now = self.clock()
        engines = self.api.list_objects(ENGINES)
        live = {
            engine["metadata"]["uid"] for engine in engines if not engine["metadata"].get("deletionTimestamp")
        }
        for uid in [uid for uid in self._runs if uid not in live]:
            self._abandon(self._runs.pop(uid))
        for engine in engines:
            if engine["metadata"]["uid"] not in live:
                continue
            try:
                self._reconcile_engine(engine, now)
            except Exception:
                meta = engine["metadata"]
                log.exception(
                    "lab: the simulated Litmus operator failed on %s/%s", meta["namespace"], meta["name"]
                )

    # --- one engine -------------------------------------------------------------------------------------

    def _reconcile_engine(self, engine: Obj, now: float) -> None:
        uid = engine["metadata"]["uid"]
        state = (engine.get("spec") or {}).get("engineState") or "active"
        engine_status = (engine.get("status") or {}).get("engineStatus") or ""
        if state == "active" and engine_status in ("", "completed", "stopped"):
            self._start(engine, now)  # a new engine, or one set active again after it ended
        elif engine_status == "initialized":
            run = self._runs.get(uid) or self._resume(engine, now)
            if run is None:  # nothing survived of it (an operator stopped mid-start): begin again
                if state == "active":
                    self._start(engine, now)
                else:
                    self._write_engine_status(engine, "stopped", "Forcefully Aborted", "Stopped", now)
            elif state == "stop":
                self._finish(
                    engine, run, "Stopped", now, failure=("Chaos injection stopped!", "EXPERIMENT_ABORTED")
                )
            else:
                self._step(engine, run, now)

    def _start(self, engine: Obj, now: float) -> None:
        meta = engine["metadata"]
        experiments = (engine.get("spec") or {}).get("experiments") or []
        if not experiments:
            if meta["uid"] not in self._ignored:
                self._ignored.add(meta["uid"])
                log.warning(
                    "lab: simulated ChaosEngine %s/%s lists no experiment", meta["namespace"], meta["name"]
                )
            return
        name = str(experiments[0].get("name") or "")
        if len(experiments) > 1 and meta["uid"] not in self._ignored:
            self._ignored.add(meta["uid"])
            log.warning(
                "lab: the simulated Litmus operator runs only the first experiment of %s/%s (%s)",
                meta["namespace"],
                meta["name"],
                name,
            )
        if name not in EXPERIMENTS:
            log.warning(
                "lab: simulated ChaosEngine %s/%s: experiment %r is not one the lab simulates (%s)",
                meta["namespace"],
                meta["name"],
                name,
                ", ".join(EXPERIMENTS),
            )
            self._write_engine_status(
                engine, "completed", "ChaosExperiment Not Found", "Fail", now, pod="N/A"
            )
            self._patch_engine(engine, {"spec": {"engineState": "stop"}})
            return
        run = self._new_run(engine, name, now)
        self._runs[run.uid] = run
        self._patch_engine(
            engine,
            {
                "metadata": {
                    "labels": {SIMULATED_LABEL: "true"},
                    "annotations": {RUN_ID: run.run_id, STARTED_AT: _precise_time(now), FAULTS: None},
                }
            },
        )
        self._begin_result(engine, run)
        self._write_engine_status(engine, "initialized", "Running", "Awaited", now, run=run)
        log.warning(
            "lab: simulated Litmus %s started by ChaosEngine %s/%s on %s in %s (%d s, a simulation)",
            name,
            run.namespace,
            run.engine,
            run.app_label,
            run.target_namespace,
            run.settings.duration_s,
        )
        self._step(engine, run, now)

    def _new_run(self, engine: Obj, experiment: str, now: float, run_id: str = "") -> _Run:
        meta, spec = engine["metadata"], engine.get("spec") or {}
        appinfo = spec.get("appinfo") or {}
        first = (spec.get("experiments") or [{}])[0]
        env_list = ((first.get("spec") or {}).get("components") or {}).get("env") or []
        env = {
            str(item.get("name")): str(item.get("value") or "") for item in env_list if isinstance(item, dict)
        }
        return _Run(
            namespace=meta["namespace"],
            engine=meta["name"],
            uid=meta["uid"],
            run_id=run_id or "".join(self.rng.choices(string.ascii_lowercase, k=6)),
            settings=Settings.from_env(experiment, env),
            started=now,
            target_namespace=appinfo.get("appns") or meta["namespace"],
            app_label=appinfo.get("applabel") or "",
        )

    def _resume(self, engine: Obj, now: float) -> _Run | None:
        """The run an earlier operator began, from what it kept on the engine; None if it kept nothing."""
        annotations = engine["metadata"].get("annotations") or {}
        experiments = (engine.get("spec") or {}).get("experiments") or []
        name = str(experiments[0].get("name") or "") if experiments else ""
        started = _parse_time(annotations.get(STARTED_AT, ""))
        if name not in EXPERIMENTS or started is None:
            return None
        run = self._new_run(engine, name, started, run_id=annotations.get(RUN_ID, ""))
        try:
            injected = json.loads(annotations.get(FAULTS) or "null")
            if injected:
                run.faults = {v: Fault.model_validate(fault) for v, fault in injected["faults"].items()}
                run.service = str(injected["service"])
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning(
                "lab: ChaosEngine %s/%s: annotation %s is unreadable", run.namespace, run.engine, FAULTS
            )
        result = self.api.get_object(RESULTS, run.namespace, run.result)
        run.targets = list((((result or {}).get("status") or {}).get("history") or {}).get("targets") or [])
        if run.experiment == "pod-delete":
            run.injected = now >= run.inject_at
            periods = max(0, math.ceil((now - run.inject_at) / run.settings.interval_s))
            run.next_kill = run.inject_at + periods * run.settings.interval_s  # the kills missed stay missed
        elif run.faults and now < run.revert_at:
            run.injected = True
            self._set_faults(run)  # the workload may have lost them with the operator
        elif run.faults:
            run.injected = True  # due for reverting
        self._runs[run.uid] = run
        log.warning("lab: simulated Litmus %s of ChaosEngine %s/%s resumed", name, run.namespace, run.engine)
        return run

    def _step(self, engine: Obj, run: _Run, now: float) -> None:
        """Inject, kill or revert what is due now; finish the run at its end."""
        try:
            if run.experiment == "pod-delete":
                if run.inject_at <= now < run.revert_at and now >= run.next_kill:
                    self._delete_pods(engine, run, now)
            elif run.inject_at <= now < run.revert_at and not run.injected:
                self._inject(engine, run)
        except _Failed as failed:
            self._finish(engine, run, "Fail", now, failure=(failed.step, failed.code))
            return
        if now >= run.revert_at and run.injected and not run.reverted:
            self._revert(run)
            if run.experiment != "pod-delete":
                self._save_targets(run)
        if now >= run.end:
            self._finish(engine, run, "Pass", now)

    def _finish(
        self, engine: Obj, run: _Run, verdict: str, now: float, *, failure: tuple[str, str] | None = None
    ) -> None:
        self._revert(run)
        self._runs.pop(run.uid, None)
        counter = {"Pass": "passedRuns", "Fail": "failedRuns", "Stopped": "stoppedRuns"}[verdict]
        result = self.api.get_object(RESULTS, run.namespace, run.result)
        if result is not None:
            status = result.get("status") or {}
            history = {"passedRuns": 0, "failedRuns": 0, "stoppedRuns": 0, **(status.get("history") or {})}
            history[counter] += 1
            history["targets"] = run.targets
            experiment_status: Obj = {
                "phase": "Completed",
                "verdict": verdict,
                "probeSuccessPercentage": "100" if verdict == "Pass" else "0",
            }
            if failure is not None:
                step, code = failure
                experiment_status.update(failureOutput={"failedStep": step, "errorCode": code}, failStep=step)
            result["status"] = {**status, "experimentStatus": experiment_status, "history": history}
            self.api.replace_object(RESULTS, result, subresource="status")
        if verdict == "Stopped":
            self._write_engine_status(engine, "stopped", "Forcefully Aborted", "Stopped", now, run=run)
        else:
            self._write_engine_status(engine, "completed", "Completed", verdict, now, run=run)
        # As the real operator, a finished engine is set to stop: setting it active again runs it again.
        self._patch_engine(
            engine, {"metadata": {"annotations": {FAULTS: None}}, "spec": {"engineState": "stop"}}
        )
        log.warning(
            "lab: simulated Litmus %s of ChaosEngine %s/%s ended: %s%s",
            run.experiment,
            run.namespace,
            run.engine,
            verdict,
            f" ({failure[0]})" if failure else "",
        )

    def _abandon(self, run: _Run) -> None:
        """The engine is gone: nothing of its chaos may stay behind."""
        self._revert(run)
        log.warning(
            "lab: ChaosEngine %s/%s deleted: its simulated %s ended, faults cleared",
            run.namespace,
            run.engine,
            run.experiment,
        )

    # --- the experiments -----------------------------------------------------------------------------

    def _target_pods(self, run: _Run) -> list[Obj]:
        """The target's live pods: those matching appinfo.applabel in appinfo.appns."""
        if not run.app_label:
            raise _Failed("appinfo.applabel is empty: no target pods found", "TARGET_SELECTION_ERROR")
        try:
            pods = self.api.list_objects("v1/pods", run.target_namespace, label_selector=run.app_label)
        except kmock.KubernetesError as error:
            raise _Failed(
                f"invalid appinfo.applabel {run.app_label!r}: {error}", "TARGET_SELECTION_ERROR"
            ) from None
        return [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]

    def _chosen(self, run: _Run, pods: list[Obj]) -> list[Obj]:
        """The pods this round hits: TARGET_PODS, else PODS_AFFECTED_PERC of them from a random start."""
        if run.settings.target_pods:
            chosen = [pod for pod in pods if pod["metadata"]["name"] in run.settings.target_pods]
        elif pods:
            count = pods_affected(run.settings.pods_affected_perc, len(pods))
            start = self.rng.randrange(len(pods))
            chosen = [pods[(start + i) % len(pods)] for i in range(count)]
        else:
            chosen = []
        if not chosen:
            where = f"{run.app_label} in {run.target_namespace}"
            raise _Failed(f"no target pods found ({where})", "TARGET_SELECTION_ERROR")
        return chosen

    def _delete_pods(self, engine: Obj, run: _Run, now: float) -> None:
        pods = self._target_pods(run)
        if run.injected and not all(map(is_ready, pods)):
            return  # as litmus-go, the next round waits for the application to be running again
        victims = self._chosen(run, pods)
        for pod in victims:
            # The lab has no graceful termination: FORCE or not, a deleted pod is gone at once.
            self.api.delete_object("v1/pods", run.target_namespace, pod["metadata"]["name"])
            log.warning(
                "lab: simulated Litmus pod-delete (ChaosEngine %s/%s) deleted pod %s/%s",
                run.namespace,
                run.engine,
                run.target_namespace,
                pod["metadata"]["name"],
            )
            _set_target(run.targets, pod["metadata"]["name"], "targeted")
        run.injected = True
        interval = run.settings.interval_s
        run.next_kill = max(run.next_kill + interval, now + interval)
        self._save_targets(run)

    def _inject(self, engine: Obj, run: _Run) -> None:
        pods = self._target_pods(run)
        chosen = self._chosen(run, pods)
        run.injected = True
        for pod in chosen:
            _set_target(run.targets, pod["metadata"]["name"], "injected")
        self._save_targets(run)
        service = _service_name(run.app_label)
        if self.workload is None or service is None or not self._simulated(run.target_namespace, service):
            log.warning(
                "lab: simulated Litmus %s (ChaosEngine %s/%s): the workload does not simulate %s/%s, "
                "so its traffic is untouched",
                run.experiment,
                run.namespace,
                run.engine,
                run.target_namespace,
                service,
            )
            return
        totals: dict[str, int] = {}
        hit: dict[str, int] = {}
        chosen_names = {pod["metadata"]["name"] for pod in chosen}
        for pod in pods:
            version = self._version(pod)
            totals[version] = totals.get(version, 0) + 1
            hit[version] = hit.get(version, 0) + (pod["metadata"]["name"] in chosen_names)
        settings = run.settings
        run.service = service
        for version, count in hit.items():
            if not count:
                continue
            affected = count / totals[version]
            if run.experiment == "pod-network-loss":
                run.faults[version] = network_loss_fault(settings.loss_perc, affected)
            else:
                run.faults[version] = cpu_hog_fault(settings.cpu_cores, settings.cpu_load, affected)
        self._set_faults(run)
        injected = {
            "namespace": run.target_namespace,
            "service": service,
            "faults": {version: fault.model_dump() for version, fault in run.faults.items()},
        }
        self._patch_engine(
            engine, {"metadata": {"annotations": {FAULTS: json.dumps(injected, sort_keys=True)}}}
        )

    def _set_faults(self, run: _Run) -> None:
        assert self.workload is not None and run.service is not None  # there are faults only then
        for version, fault in run.faults.items():
            self.workload.set_fault(run.target_namespace, run.service, version, fault)
            log.warning(
                "lab: simulated Litmus %s (ChaosEngine %s/%s) set fault on %s/%s %s: %s",
                run.experiment,
                run.namespace,
                run.engine,
                run.target_namespace,
                run.service,
                version,
                fault.model_dump(exclude_defaults=True),
            )

    def _revert(self, run: _Run) -> None:
        """Clear the faults this run set, unless someone replaced one since (it is theirs then)."""
        if run.reverted:
            return
        run.reverted = True
        for target in run.targets:
            if target.get("chaosStatus") == "injected":
                target["chaosStatus"] = "reverted"
        if not run.faults or self.workload is None or run.service is None:
            return
        current = {
            fault["version"]: Fault.model_validate({key: fault[key] for key in Fault.model_fields})
            for fault in self.workload.faults()
            if fault["namespace"] == run.target_namespace and fault["service"] == run.service
        }
        for version, fault in run.faults.items():
            if current.get(version) == fault:
                try:
                    self.workload.clear_faults(run.target_namespace, run.service, version)
                except UnknownService:
                    pass  # no longer simulated: nothing to clear
        log.warning(
            "lab: simulated Litmus %s (ChaosEngine %s/%s) reverted: faults on %s/%s cleared",
            run.experiment,
            run.namespace,
            run.engine,
            run.target_namespace,
            run.service,
        )

    def _simulated(self, namespace: str, service: str) -> bool:
        assert self.workload is not None
        return any(
            spec.namespace == namespace and spec.service == service for spec in self.workload.services()
        )

    def _version(self, pod: Obj) -> str:
        """The workload's version of a pod: its `lcp.dev/version` label, else its Deployment's, else the
        Deployment's name (as lab.cluster_view names versions)."""
        labels = pod["metadata"].get("labels") or {}
        if VERSION_LABEL in labels:
            return str(labels[VERSION_LABEL])
        for owner in pod["metadata"].get("ownerReferences") or []:
            if owner.get("kind") == "Deployment":
                deployment = self.api.get_object(
                    "apps/v1/deployments", pod["metadata"]["namespace"], owner["name"]
                )
                own_labels = ((deployment or {}).get("metadata") or {}).get("labels") or {}
                return str(own_labels.get(VERSION_LABEL) or owner["name"])
        return str(pod["metadata"]["name"])

    # --- writing it down --------------------------------------------------------------------------------

    def _patch_engine(self, engine: Obj, patch: Obj) -> None:
        meta = engine["metadata"]
        self.api.patch_object(ENGINES, meta["namespace"], meta["name"], patch)

    def _write_engine_status(
        self,
        engine: Obj,
        engine_status: str,
        experiment_status: str,
        verdict: str,
        now: float,
        *,
        run: _Run | None = None,
        pod: str = "",
    ) -> None:
        meta = engine["metadata"]
        experiments = (engine.get("spec") or {}).get("experiments") or []
        fresh = self.api.get_object(ENGINES, meta["namespace"], meta["name"])
        if fresh is None:
            return
        fresh["status"] = {
            "engineStatus": engine_status,
            "experiments": [
                {
                    "name": run.experiment
                    if run
                    else str(experiments[0].get("name") or "")
                    if experiments
                    else "",
                    "runner": f"{meta['name']}-runner",
                    "experimentPod": pod or (f"{run.experiment}-{run.run_id}" if run else "N/A"),
                    "status": experiment_status,
                    "verdict": verdict,
                    "lastUpdateTime": _timestamp(now),
                }
            ],
        }
        self.api.replace_object(ENGINES, fresh, subresource="status")

    def _begin_result(self, engine: Obj, run: _Run) -> None:
        """Create the run's ChaosResult, or reset one from an earlier run of the engine (keeping history)."""
        meta = engine["metadata"]
        labels = {
            "name": run.experiment,
            "chaosUID": run.uid,
            "job-name": f"{run.experiment}-{run.run_id}",
            "app.kubernetes.io/component": "experiment-job",
            "app.kubernetes.io/part-of": "litmus",
            SIMULATED_LABEL: "true",
        }
        owner = {
            "apiVersion": engine.get("apiVersion", "litmuschaos.io/v1alpha1"),
            "kind": "ChaosEngine",
            "name": meta["name"],
            "uid": meta["uid"],
        }
        spec = {"engine": run.engine, "experiment": run.experiment}
        result = self.api.get_object(RESULTS, run.namespace, run.result)
        if result is None:
            body = {
                "metadata": {"name": run.result, "labels": labels, "ownerReferences": [owner]},
                "spec": spec,
            }
            result = self.api.create_object(RESULTS, body, run.namespace)
        else:
            patch = {"metadata": {"labels": labels, "ownerReferences": [owner]}, "spec": spec}
            result = self.api.patch_object(RESULTS, run.namespace, run.result, patch)
        history: Obj = {"passedRuns": 0, "failedRuns": 0, "stoppedRuns": 0}
        history.update(((result.get("status") or {}).get("history")) or {})
        history["targets"] = []
        result["status"] = {
            "experimentStatus": {
                "phase": "Running",
                "verdict": "Awaited",
                "probeSuccessPercentage": "Awaited",
            },
            "history": history,
        }
        self.api.replace_object(RESULTS, result, subresource="status")

    def _save_targets(self, run: _Run) -> None:
        result = self.api.get_object(RESULTS, run.namespace, run.result)
        if result is None:
            return
        status = result.get("status") or {}
        result["status"] = {**status, "history": {**(status.get("history") or {}), "targets": run.targets}}
        self.api.replace_object(RESULTS, result, subresource="status")


def _set_target(targets: list[Obj], name: str, chaos_status: str) -> None:
    for target in targets:
        if target.get("name") == name:
            target["chaosStatus"] = chaos_status
            return
    targets.append({"name": name, "kind": "pod", "chaosStatus": chaos_status})


def _service_name(app_label: str) -> str | None:
    """The service an applabel names: its `app.kubernetes.io/name` value, else its first `key=value`'s."""
    try:
        terms = [term for term in parse_label_selector(app_label) if term.op == "=" and len(term.values) == 1]
    except kmock.KubernetesError:
        return None
    named = [term for term in terms if term.key == "app.kubernetes.io/name"] or terms
    return next(iter(named[0].values)) if named else None


def _timestamp(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


def _precise_time(now: float) -> str:
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_time(text: str) -> float | None:
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
