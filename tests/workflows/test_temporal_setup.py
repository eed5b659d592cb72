"""`lcp temporal setup` registers lcp's search attributes on a cluster that lacks them, once."""

from temporalio.testing import WorkflowEnvironment

from temporal.constants import SEARCH_ATTRIBUTES
from temporal.devserver import temporal_binary
from temporal.setup import ensure_search_attributes


async def test_search_attributes_are_added_once() -> None:
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=temporal_binary())
    try:
        assert await ensure_search_attributes(env.client) == sorted(SEARCH_ATTRIBUTES)
        assert await ensure_search_attributes(env.client) == []
    finally:
        await env.shutdown()
