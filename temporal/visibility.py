"""Temporal's visibility, read by the API and by the visibility activity: the query for lcp's workflows of
a kind, and which of them run now on a service (rollouts for chaos, and chaos for rollouts — the two never
touch one service at once)."""

from temporalio.client import Client

from temporal.constants import KIND, PHASE, SCENARIO_KIND, SERVICE


def kind_query(kind: str, *, service: str | None = None, phase: str | None = None) -> str:
    """The visibility query for lcp's workflows of `kind` (LcpKind), narrowed to `service` (LcpService) and
    `phase` (LcpPhase) when given."""
    query = f"{KIND.name} = '{kind}'"
    if service is not None:
        query += f" AND {SERVICE.name} = '{service}'"
    if phase is not None:
        query += f" AND {PHASE.name} = '{phase}'"
    return query


async def running_workflows(client: Client, kind: str, service: str) -> list[str]:
    """Ids of the running workflows of `kind` (the LcpKind search attribute) on `service` (LcpService)."""
    found = client.list_workflows(kind_query(kind, service=service) + " AND ExecutionStatus = 'Running'")
    return [execution.id async for execution in found]


async def running_scenarios_on(client: Client, service: str) -> list[str]:
    """Ids of the running chaos scenarios that hit `service` (namespace/service): LcpService holds one
    service, so a scenario lists all of its targets in its memo's `services`."""
    found = client.list_workflows(kind_query(SCENARIO_KIND) + " AND ExecutionStatus = 'Running'")
    return [
        execution.id async for execution in found if service in await execution.memo_value("services", [])
    ]
