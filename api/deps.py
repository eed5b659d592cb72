"""Shared clients built in the app's lifespan, exposed to routes as Annotated dependencies."""

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.auth import Authenticator
from api.db_deadline import LOST
from api.limits import RateLimiter
from api.turn_gate import TurnGate
from inference.gateway import Gateway
from inference.token_relay import TokenRelay
from settings import Settings

log = logging.getLogger(__name__)


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
    turns: TurnGate


def _state(request: Request) -> AppState:
    return request.app.state.lcp  # type: ignore[no-any-return]


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    session = _state(request).sessions()
    try:
        yield session
    finally:
        await close_request_session(session)


async def close_request_session(session: AsyncSession) -> None:
    """Closes a request's session after its answer has been sent. A database lost meanwhile makes the
    rollback fail (or time out); that must not break the answer already on its way (a 503 saying so),
    so the connection is dropped from the pool instead."""
    try:
        await session.close()
    except LOST as err:
        log.warning("a request's database session could not be closed, its connection is dropped: %r", err)
        await session.invalidate()


StateDep = Annotated[AppState, Depends(_state)]
SessionDep = Annotated[AsyncSession, Depends(_session)]
