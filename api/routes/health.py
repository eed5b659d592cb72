"""Liveness, readiness (Temporal and the database answer) and Prometheus metrics."""

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from api.deps import StateDep
from api.metrics import metrics_response

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(3):  # not wait_for: on 3.11 it can swallow a cancellation
            await state.temporal.workflow_service.get_system_info(GetSystemInfoRequest())
        checks["temporal"] = "ok"
    except Exception as err:  # noqa: BLE001 - any failure means "not ready", reported in the body
        checks["temporal"] = f"unavailable: {err}"
    try:
        async with asyncio.timeout(3), state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as err:  # noqa: BLE001
        checks["database"] = f"unavailable: {err}"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, state: StateDep) -> Response:
    """Prometheus metrics. With `metrics.token` set, only a scraper sending it as a bearer token reads
    them, every series included; without it, anyone does, less the series labelled by tenant."""
    token = state.settings.metrics.token
    if token is None or not token.get_secret_value():
        return metrics_response(tenant_labelled=False)
    client = request.client.host if request.client else None
    state.auth.check_token(request.headers.get("authorization"), token.get_secret_value(), client)
    return metrics_response(tenant_labelled=True)
