"""Shared clients built in the app's lifespan, exposed to routes as Annotated dependencies."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.auth import Authenticator
from api.limits import RateLimiter
from inference.gateway import Gateway
from inference.token_relay import TokenRelay
from settings import Settings


@dataclass
class AppState:
    settings: Settings
    temporal: Client
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    auth: Authenticator
    limiter: RateLimiter
    gateway: Gateway
    relay: TokenRelay


def _state(request: Request) -> AppState:
    return request.app.state.lcp  # type: ignore[no-any-return]


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _state(request).sessions() as session:
        yield session


StateDep = Annotated[AppState, Depends(_state)]
SessionDep = Annotated[AsyncSession, Depends(_session)]
