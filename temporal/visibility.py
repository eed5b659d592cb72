"""Temporal's visibility, read by the API and by the visibility activity: which lcp workflows of a kind
run now on a service (rollouts for chaos, and chaos for rollouts — the two never touch one service at
once)."""

from temporalio.client import Client


async def running_workflows(client: Client, kind: str, service: str) -> list[str]:
    """Ids of the running workflows of `kind` (the LcpKind search attribute) on `service` (LcpService)."""
    found = client.list_workflows(
        f"LcpKind = '{kind}' AND LcpService = '{service}' AND ExecutionStatus = 'Running'"
    )
    return [execution.id async for execution in found]
