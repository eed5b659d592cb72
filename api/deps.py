"""Shared clients built in the app's lifespan, exposed to routes as Annotated dependencies."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from policies.models import ModelRoute
from settings import Settings

DEFAULT_TENANT = "default"


@dataclass
class AppState:
    settings: Settings
    temporal: Client
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    routes: dict[str, ModelRoute]


def _state(request: Request) -> AppState:
    return request.app.state.lcp  # type: ignore[no-any-return]


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _state(request).sessions() as session:
        yield session


def _tenant() -> str:
    # A single tenant until identity lands; every route already carries it.
    return DEFAULT_TENANT


StateDep = Annotated[AppState, Depends(_state)]
SessionDep = Annotated[AsyncSession, Depends(_session)]
TenantDep = Annotated[str, Depends(_tenant)]
