"""Temporal's visibility: which lcp workflows of a kind run now on a service (rollouts for chaos, and
chaos for rollouts — the two never touch one service at once)."""

from temporalio import activity
from temporalio.client import Client

from activities.contracts import visibility as contract
from activities.contracts.visibility import RunningQuery
from temporal.visibility import running_workflows


class VisibilityActivities(contract.VisibilityActivities):
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name="visibility.running")
    async def running(self, query: RunningQuery) -> list[str]:
        """Ids of the running workflows of `kind` on `service`."""
        return await running_workflows(self._client, query.kind, query.service)
