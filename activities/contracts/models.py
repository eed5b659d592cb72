"""What the canary workflow shares with the model-canary activities (activities/models.py): their inputs,
results and names, without the read model's database code."""

from dataclasses import dataclass

from temporalio import activity


@dataclass
class ModelCanaryInput:
    model: str
    version: str  # the canary version the rollout expects (must match the policy's canary.version)
    rollout_id: str = ""


@dataclass
class ModelWeightInput:
    model: str
    version: str
    percent: int
    rollout_id: str = ""


@dataclass
class ModelSplit:
    model: str
    stable_version: str
    canary_version: str
    canary_percent: int
    promoted: bool = False


class ModelActivities:
    """The activities' contract: what workflows call. The implementation, activities/models.py's
    ModelActivities, subclasses this and overrides every method under the same activity name."""

    @activity.defn(name="models.prepare")
    async def prepare(self, request: ModelCanaryInput) -> ModelSplit:
        """Check that the policy has this canary version and record it at weight 0 (unless it is already
        recorded)."""
        raise NotImplementedError

    @activity.defn(name="models.set_weight")
    async def set_weight(self, request: ModelWeightInput) -> ModelSplit:
        """Send `percent` (0..100) of the model's requests to the canary version (not promoted)."""
        raise NotImplementedError

    @activity.defn(name="models.rollback")
    async def rollback(self, request: ModelCanaryInput) -> ModelSplit:
        """Send the canary nothing (weight 0, not promoted)."""
        raise NotImplementedError

    @activity.defn(name="models.promote")
    async def promote(self, request: ModelCanaryInput) -> ModelSplit:
        """Send the canary every request (weight 100, promoted)."""
        raise NotImplementedError
