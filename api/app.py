"""The FastAPI application: clients built once in the lifespan, routers, error handlers."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from activities.inference import load_routes
from api import errors
from api.deps import AppState
from api.metrics import MetricsMiddleware
from api.routes import conversations, health
from settings import Settings
from store.db import make_engine, make_sessionmaker
from store.migrate import upgrade
from temporal.client import connect

DESCRIPTION = """lcp: the control plane behind an AI chat platform. Conversations are durable
Temporal workflows; reads come from the SQL read model. Errors always carry
`{"error": {"type", "message"}}` saying what was wrong and how to fix it."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.resolved_database_url())
        await upgrade(engine)
        temporal = await connect(settings.temporal)
        app.state.lcp = AppState(
            settings=settings,
            temporal=temporal,
            engine=engine,
            sessions=make_sessionmaker(engine),
            routes=load_routes(settings.models_file, llm_url=settings.llm_url),
        )
        try:
            yield
        finally:
            await engine.dispose()

    # /docs and /redoc serve their assets from the package, not a CDN: they work offline.
    app = FastAPIOffline(title="lcp", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.add_middleware(MetricsMiddleware)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(conversations.router)
    return app
