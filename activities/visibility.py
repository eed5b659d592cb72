"""Temporal's visibility: which lcp workflows of a kind run now on a service (rollouts for chaos, and
chaos for rollouts — the two never touch one service at once)."""

from dataclasses import dataclass

from temporalio import activity
from temporalio.client import Client

from temporal.visibility import running_workflows


@dataclass
class RunningQuery:
    kind: str  # the LcpKind search attribute: rollout, chaos, scaling
    service: str  # namespace/service, the LcpService search attribute


class VisibilityActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name="visibility.running")
    async def running(self, query: RunningQuery) -> list[str]:
        """Ids of the running workflows of `kind` on `service`."""
        return await running_workflows(self._client, query.kind, query.service)
