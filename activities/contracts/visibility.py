"""What the chaos workflow shares with the visibility activity (activities/visibility.py): its input and
name, without the Temporal client."""

from dataclasses import dataclass

from temporalio import activity


@dataclass
class RunningQuery:
    kind: str  # the LcpKind search attribute: rollout, chaos, scaling
    service: str  # namespace/service, the LcpService search attribute


class VisibilityActivities:
    """The activity's contract: what workflows call. The implementation, activities/visibility.py's
    VisibilityActivities, subclasses this and overrides it under the same activity name."""

    @activity.defn(name="visibility.running")
    async def running(self, query: RunningQuery) -> list[str]:
        """Ids of the running workflows of `kind` on `service`."""
        raise NotImplementedError
