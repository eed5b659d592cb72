"""API errors as answers: every 4xx/5xx body says what was wrong and how to fix it."""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

# ApplicationError types raised by workflows (update validators and handlers) -> HTTP status.
WORKFLOW_ERROR_STATUS = {
    "InvalidMessage": 422,
    "VersionConflict": 409,
    "ConversationClosed": 409,
    "MessageNotEditable": 409,
    "MessageNotFound": 404,
    "InferenceFailed": 502,
    "ReadModelUnavailable": 503,
}


class ApiError(Exception):
    def __init__(self, status: int, type_: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.extra = status, type_, message, extra


def error_body(type_: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message, **extra}}


def from_update_failure(err: WorkflowUpdateFailedError) -> ApiError:
    """Turn a rejected or failed workflow update into the HTTP error it stands for."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type in WORKFLOW_ERROR_STATUS:
        extra: dict[str, Any] = {}
        if cause.details and isinstance(cause.details[0], dict):
            extra = dict(cause.details[0])
        return ApiError(WORKFLOW_ERROR_STATUS[cause.type], cause.type, cause.message, **extra)
    return ApiError(500, "UpdateFailed", f"the conversation could not apply the change: {cause}")


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
    return f"{where}: {error.get('msg', 'invalid')}"


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.type, exc.message, **exc.extra), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [_describe(error) for error in exc.errors()]
        return JSONResponse(
            error_body(
                "InvalidRequest",
                "the request is invalid: " + "; ".join(problems),
                details=[{"field": p.split(":")[0], "problem": p.split(": ", 1)[1]} for p in problems],
            ),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = "no such route: see /docs for the API"
        if exc.status_code == 405:
            message = "method not allowed on this route: see /docs for the API"
        return JSONResponse(error_body("HTTPError", message), status_code=exc.status_code)
