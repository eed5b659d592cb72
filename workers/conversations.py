"""The conversation worker: conversation and assistant workflows with the inference, projection and
tool activities, on the conversations task queue. Run by `lcp worker --queue conversations` and, with
LCP_API__WITH_WORKER, inside the API process (so it loads no ops client: no kubernetes, no numpy)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.egress import EgressRules, fenced_client
from activities.inference import InferenceActivities
from activities.store import StoreActivities
from activities.tools import ToolActivities
from inference.discovery import start_discovery
from inference.gateway import Gateway, ModelWeights, load_routes, make_http_client
from inference.token_relay import TokenRelay
from settings import Settings
from store.db import make_engine, make_sessionmaker
from workflows.assistant import AssistantWorkflow
from workflows.conversation import ConversationWorkflow


def tool_egress_rules(settings: Settings) -> EgressRules:
    """Where assistants' tools (URLs a tenant chose, any method) may connect: LCP_EGRESS__ALLOW only."""
    return EgressRules(settings.egress.allow)


@asynccontextmanager
async def conversation_worker(
    client: Client, settings: Settings, relay: TokenRelay | None = None
) -> AsyncIterator[Worker]:
    """A worker for conversation workflows and their activities, with clients built once;
    `relay` carries streamed replies' tokens to the API."""
    engine = make_engine(settings.resolved_database_url())
    http = make_http_client()
    sessions = make_sessionmaker(engine)
    routes = load_routes(settings.models_file, llm_url=settings.llm_url)
    gateway = Gateway(http, routes, ModelWeights(sessions))
    discovery = start_discovery(
        gateway.fleet, routes.values(), settings.resolved_kubeconfig(), settings.rollout.kube_context
    )
    inference = InferenceActivities(gateway, relay)
    store = StoreActivities(sessions, single_writer=engine.dialect.name == "sqlite")
    # Assistants' tools are URLs a tenant chose: a fenced client of their own (no internal addresses, no
    # redirects, no cookies, no retries here).
    tool_http = fenced_client(tool_egress_rules(settings))
    tools = ToolActivities(
        tool_http,
        settings.resolved_secrets_dir(),
        settings.tools.max_result_chars,
        settings.tools.allowed_hosts,
    )
    worker = Worker(
        client,
        task_queue=settings.conversation.task_queue,
        workflows=[ConversationWorkflow, AssistantWorkflow],
        activities=[
            inference.chat_completion,
            store.project_conversation,
            store.project_assistant,
            tools.call,
        ],
        graceful_shutdown_timeout=timedelta(seconds=10),
        max_concurrent_activities=256,
        max_concurrent_workflow_tasks=64,
        max_cached_workflows=settings.conversation.cached_workflows,
    )
    try:
        yield worker
    finally:
        discovery.stop()
        await gateway.aclose()
        await tool_http.aclose()
        await http.aclose()
        await engine.dispose()
