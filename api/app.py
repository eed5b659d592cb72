"""The FastAPI application: clients built once in the lifespan, routers, error handlers."""

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from api import db_deadline, errors
from api.auth import Authenticator
from api.bodies import BodyGuard
from api.deps import AppState
from api.limits import RateLimiter
from api.metrics import MetricsMiddleware
from api.oidc import OidcVerifier
from api.routes import (
    assistants,
    chaos,
    chaos_scenarios,
    chat,
    conversations,
    embeddings,
    fleet,
    health,
    keys,
    rollouts,
    scaling,
)
from api.turn_gate import TurnGate
from inference.discovery import start_discovery
from inference.gateway import Gateway, ModelWeights, load_routes, make_http_client
from inference.token_relay import MemoryRelay, PostgresRelay, make_relay
from settings import Settings
from store.db import make_engine, make_sessionmaker
from store.migrate import upgrade_database
from temporal.client import connect

log = logging.getLogger(__name__)

DESCRIPTION = """lcp: the control plane behind an AI chat platform. Conversations are durable
Temporal workflows; reads come from the SQL read model. `/v1/chat/completions` and `/v1/models`
speak OpenAI's API. Every route but the health checks needs `Authorization: Bearer <API key or
OIDC token>`. Errors always carry `{"error": {"type", "message"}}` saying what was wrong and how
to fix it."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await upgrade_database(settings.resolved_database_url())  # no statement timeout for migrations
            # A request's statements wait for the database as long as its key lookup and limit check may.
            engine = make_engine(settings.resolved_database_url(), settings.api.database_timeout_s)
            stack.push_async_callback(engine.dispose)
            limiter = RateLimiter(
                settings.limits, settings.resolved_database_url(), settings.api.database_timeout_s
            )
            stack.push_async_callback(limiter.close)
            temporal = await connect(settings.temporal)
            http = await stack.enter_async_context(make_http_client())
            sessions = make_sessionmaker(engine)
            relay = make_relay(settings)
            if isinstance(relay, PostgresRelay):
                await relay.listen()
                stack.push_async_callback(relay.close)
            if settings.api.with_worker:
                # The worker's activities are implementations: loaded only when this process hosts one.
                from workers.conversations import conversation_worker

                worker = await stack.enter_async_context(conversation_worker(temporal, settings, relay))
                await stack.enter_async_context(worker)
            elif isinstance(relay, MemoryRelay):
                log.warning(
                    "streamed replies arrive whole at the end: no worker runs in this process and the "
                    "read model is not PostgreSQL (see LCP_API__WITH_WORKER, LCP_API__TOKEN_RELAY)"
                )
            oidc = OidcVerifier(settings.oidc, http) if settings.oidc.issuer else None
            routes = load_routes(settings.models_file, llm_url=settings.llm_url)
            gateway = Gateway(http, routes, ModelWeights(sessions))
            stack.push_async_callback(gateway.aclose)
            discovery = start_discovery(
                gateway.fleet, routes.values(), settings.resolved_kubeconfig(), settings.rollout.kube_context
            )
            stack.callback(discovery.stop)
            app.state.lcp = AppState(
                settings=settings,
                temporal=temporal,
                engine=engine,
                sessions=sessions,
                auth=Authenticator(sessions, oidc, settings.auth, settings.api.database_timeout_s),
                limiter=limiter,
                gateway=gateway,
                relay=relay,
                turns=TurnGate(settings.conversation.admission),
            )
            yield

    # /docs and /redoc serve their assets from the package, not a CDN: they work offline.
    app = FastAPIOffline(title="lcp", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    # Outermost last: metrics see the bodies BodyGuard refuses (413, 422) as well.
    app.add_middleware(BodyGuard, max_body_bytes=settings.api.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    errors.install(app)
    db_deadline.install(app)
    app.include_router(health.router)
    app.include_router(chat.router)
    app.include_router(embeddings.router)
    app.include_router(conversations.router)
    app.include_router(keys.router)
    app.include_router(rollouts.router)
    app.include_router(scaling.router)
    # Before chaos.router, whose /v1/chaos/{experiment}/{run} would take /v1/chaos/scenarios/catalogue.
    app.include_router(chaos_scenarios.router)
    app.include_router(chaos.router)
    app.include_router(fleet.router)
    app.include_router(assistants.router)
    return app
