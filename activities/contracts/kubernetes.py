"""What workflows and the API share with the Kubernetes activities (activities/kubernetes.py): their
inputs, results and names, without the kubernetes client."""

from dataclasses import dataclass
from typing import Literal

from temporalio import activity

CANARY_SUFFIX = "-canary"


Router = Literal["replicas", "istio", "gateway-api"]


ROUTERS: tuple[str, ...] = ("replicas", "istio", "gateway-api")


@dataclass
class EnsureCanaryInput:
    namespace: str
    service: str
    stable_deployment: str
    canary_version: str
    image: str
    replicas: int = 0  # the canary's replicas when it is created (or re-created for a new version)
    container: str | None = None  # the container that gets `image`; None: the first one


@dataclass
class DeploymentRef:
    namespace: str
    name: str


@dataclass
class ScaleDeploymentInput:
    namespace: str
    name: str
    replicas: int


@dataclass
class DeploymentState:
    """A Deployment as its status reports it. Counts missing from the status read as 0."""

    namespace: str
    name: str
    desired: int  # spec.replicas
    current: int  # status.replicas: pods of any template, old ones included
    updated: int  # pods of the current template
    ready: int
    available: int
    image: str  # the first container's
    version: str | None  # the pod template's lcp.dev/version label
    generation: int
    observed_generation: int
    resource_version: str = ""

    @property
    def serving(self) -> int:
        """Ready pods of the current template, as far as the status can tell (0 until it is observed)."""
        if self.observed_generation < self.generation:
            return 0
        return min(self.ready, self.updated)

    @property
    def rolled_out(self) -> bool:
        """The current template runs on all desired replicas, all ready, and no old pod is left."""
        return self.serving >= self.desired and self.current == self.desired


@dataclass
class SetWeightInput:
    namespace: str
    service: str
    stable_deployment: str
    canary_deployment: str
    canary_percent: int
    router: Router = "replicas"
    # None: the total recorded on the canary (see set_weight); a value here is recorded for later steps.
    total_replicas: int | None = None
    stable_version: str | None = None  # None: the stable pod template's lcp.dev/version label
    canary_version: str | None = None  # None: the canary pod template's lcp.dev/version label


@dataclass
class RollbackInput:
    namespace: str
    service: str
    stable_deployment: str
    canary_deployment: str
    router: Router = "replicas"
    total_replicas: int | None = None
    freeze: bool = False  # keep the canary's pods (for a look at them); traffic still goes to stable
    stable_version: str | None = None
    canary_version: str | None = None


@dataclass
class PromoteInput:
    namespace: str
    service: str
    stable_deployment: str
    canary_deployment: str
    image: str
    version: str  # the canary's lcp.dev/version: the stable's after promotion
    container: str | None = None  # the container that gets `image`; None: the first one
    router: Router = "replicas"
    total_replicas: int | None = None  # None: as set_weight resolves it (recorded on the canary, ...)


@dataclass
class WeightState:
    """The split as it now stands. With the replica router the percents are the ratio of desired
    replicas, which is the traffic split once the pods are ready; with a router they are its weights."""

    router: str
    stable_percent: float
    canary_percent: float
    total_replicas: int
    stable_replicas: int
    canary_replicas: int
    stable_ready: int
    canary_ready: int


def canary_name(stable_deployment: str) -> str:
    return stable_deployment + CANARY_SUFFIX


class KubernetesActivities:
    """The activities' contract: what workflows call. The implementation, activities/kubernetes.py's
    KubernetesActivities, subclasses this and overrides every method under the same activity name."""

    @activity.defn(name="kubernetes.read_deployment")
    def read_deployment(self, ref: DeploymentRef) -> DeploymentState:
        raise NotImplementedError

    @activity.defn(name="kubernetes.scale_deployment")
    def scale_deployment(self, request: ScaleDeploymentInput) -> DeploymentState:
        raise NotImplementedError

    @activity.defn(name="kubernetes.ensure_canary")
    def ensure_canary(self, request: EnsureCanaryInput) -> DeploymentState:
        """Create the canary `<stable>-canary` from the stable Deployment's spec with `image` and the
        version label on its template and selector, or bring an existing one to them. A new version
        re-creates it (a Deployment's selector cannot change); the same version updates it in place and
        keeps its replicas, so that a retry after set_weight does not undo the split."""
        raise NotImplementedError

    @activity.defn(name="kubernetes.set_weight")
    def set_weight(self, request: SetWeightInput) -> WeightState:
        """Send `canary_percent` of the service's traffic to the canary, make before break: whatever
        grows is scaled up first, and nothing shrinks (nor does a router give the canary more traffic)
        until the grown side is ready — until then the call fails with a retryable, benign NotReady.

        - "replicas": no router; the service's endpoints split traffic by ready pods, so the total is
          divided by `replica_split` (stable + canary = total).
        - "istio": a VirtualService named after the service, first http route weighted to the stable and
          canary subsets (their version labels); "gateway-api": an HTTPRoute named after the service, its
          first rule's backendRefs weighted to the stable and canary (named like their Deployments). The
          stable keeps `total` replicas; the canary gets `router_canary_replicas` (rounded up), scaled up
          before its weight rises and down after it falls.

        The total: `total_replicas` when given, else the one recorded on the canary (annotation
        lcp.dev/total-replicas, written by ensure_canary from the stable's replicas when it creates the
        canary, and by set_weight whenever it uses another), else the stable's replicas (plus the canary's
        with the replica router). Every step thus divides the same total, however earlier steps left it.
        """
        raise NotImplementedError

    @activity.defn(name="kubernetes.rollback")
    def rollback(self, request: RollbackInput) -> WeightState:
        """All traffic to the stable at once: the router's weights to 100/0 (kept as a route, so that a
        frozen canary gets nothing), the stable back to the total, the canary to 0 replicas — or kept with
        `freeze`; with the replica router a frozen canary still takes its pods' share. Nothing waits for
        readiness here. A missing canary is fine: there is less to undo."""
        raise NotImplementedError

    @activity.defn(name="kubernetes.promote")
    def promote(self, request: PromoteInput) -> WeightState:
        """The last step, once the canary carries all the traffic: the stable takes the canary's image and
        version, and the canary goes. Make before break: the stable gets `total` ready replicas of the new
        template before the router moves traffic back to it and before the canary is deleted; until then
        the call fails with a retryable, benign NotReady and the canary keeps serving.

        A stable whose selector leaves the version out (or already has this one) is updated in place and
        rolled by its controller. One whose selector holds the old version cannot be (a Deployment's
        selector is immutable): it is deleted and re-created from the canary's spec under its own name,
        labels and annotations (lcp's canary markers left out). A stable found missing is a retry after a
        crash between that delete and create: it is created from the canary, with the canary's labels.

        The total resolves as set_weight's does, before anything changes (and is recorded on the canary,
        so that a retry divides the same one); with the canary gone the stable's replicas. Each retry
        converges: a canary found gone, with the stable at `version`, is a promotion already done."""
        raise NotImplementedError
