"""API errors as answers: every 4xx/5xx body says what was wrong and how to fix it."""

import logging
import unicodedata
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from policies.errors import LcpError

log = logging.getLogger(__name__)

# ApplicationError types raised by workflows (update validators and handlers) -> HTTP status.
WORKFLOW_ERROR_STATUS = {
    "InvalidMessage": 422,
    "VersionConflict": 409,
    "ConversationClosed": 409,
    "MessageNotEditable": 409,
    "MessageNotFound": 404,
    "InferenceFailed": 502,
    "ReadModelUnavailable": 503,
    # rollouts
    "RolloutFinished": 409,
    "RolloutStarting": 409,
    "AlreadyDone": 409,
    "NothingToResume": 409,
    # predictive scaling, chaos
    "NotRunning": 409,
    "InvalidSpec": 422,
    # assistants
    "NothingChanged": 409,
    "ExperimentRunning": 409,
    "NoExperiment": 409,
    "NothingToRollBack": 409,
    "NeverPublished": 409,
    "NotPublished": 409,
    "AssistantArchived": 409,
    "AssistantMismatch": 409,
    "InvalidArms": 422,
    "VersionNotFound": 404,
}


class ApiError(LcpError):
    def __init__(
        self, status: int, type_: str, message: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.extra = status, type_, message, extra
        self.headers = headers


# The OpenAI-compatible routes answer errors in OpenAI's shape, which its SDKs parse.
OPENAI_PATHS = ("/v1/chat/completions", "/v1/models", "/v1/embeddings")
OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(type_: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message, **extra}}


def openai_error_body(status: int, type_: str, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object: `type` is its category, `code` says exactly what happened."""
    category = OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": category, "param": param, "code": type_}}


def _is_openai(request: Request) -> bool:
    return request.url.path.startswith(OPENAI_PATHS)


def error_body_for(path: str, status: int, type_: str, message: str, **extra: Any) -> dict[str, Any]:
    """The error body in the shape the route at `path` answers: OpenAI's on its routes, lcp's elsewhere."""
    if path.startswith(OPENAI_PATHS):
        return openai_error_body(status, type_, message, extra.get("param"))
    return error_body(type_, message, **extra)


def _respond(
    request: Request,
    status: int,
    type_: str,
    message: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = error_body_for(request.url.path, status, type_, _cut(message, MAX_MESSAGE_CHARS), **extra)
    return JSONResponse(body, status_code=status, headers=headers)


def from_update_failure(err: WorkflowUpdateFailedError) -> ApiError:
    """Turn a rejected or failed workflow update into the HTTP error it stands for."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type in WORKFLOW_ERROR_STATUS:
        extra: dict[str, Any] = {}
        if cause.details and isinstance(cause.details[0], dict):
            extra = dict(cause.details[0])
        return ApiError(WORKFLOW_ERROR_STATUS[cause.type], cause.type, cause.message, **extra)
    return ApiError(500, "UpdateFailed", f"the workflow could not apply the change: {cause}")


def start_refused(err: WorkflowUpdateFailedError, fallback_type: str) -> ApiError:
    """A workflow that refused to start (its `accepted` update failed): a missing target is 404, a spec
    it refuses 422, a safety refusal 409, anything else 502 under `fallback_type`."""
    cause = err.cause
    kind = cause.type if isinstance(cause, ApplicationError) else None
    message = cause.message if isinstance(cause, ApplicationError) else str(cause)
    status = {"TargetNotFound": 404, "InvalidSpec": 422, "ChaosRefused": 409}.get(kind or "", 502)
    return ApiError(status, kind or fallback_type, message)


# A request can break thousands of rules at once (200,000 unknown keys): the answer names the first few,
# each cut short, and counts the rest, so it stays a few kilobytes whatever was sent.
MAX_PROBLEMS_SHOWN = 20
MAX_FIELD_CHARS = 200
MAX_PROBLEM_CHARS = 300
# Any message, which may quote what the caller sent (an id of 60,000 characters, say).
MAX_MESSAGE_CHARS = 2_000
KEPT_CONTROLS = frozenset("\n\t")


def _cut(text: str, limit: int) -> str:
    """`text` as a reader sees it whatever the caller sent: cut to `limit` characters, a lone surrogate or a
    control or format character (a bidi override, say) written as its escape."""
    text = text[: limit + 1]
    text = "".join(
        f"\\u{ord(c):04x}" if unicodedata.category(c) in ("Cc", "Cf", "Cs") and c not in KEPT_CONTROLS else c
        for c in text
    )
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(error: dict[str, Any]) -> tuple[str, str]:
    if error.get("type") == "json_invalid":  # FastAPI's: its loc is the byte offset, not a field
        reason = (error.get("ctx") or {}).get("error", "not JSON")
        where = error.get("loc", ("body", "?"))[-1]
        return "body", _cut(f"not valid JSON: {reason} (at character {where})", MAX_PROBLEM_CHARS)
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
    return _cut(where, MAX_FIELD_CHARS), _cut(str(error.get("msg", "invalid")), MAX_PROBLEM_CHARS)


def _unreadable_body(cause: BaseException | None) -> str:
    """Why FastAPI could not read a body it calls unparseable ("There was an error parsing the body")."""
    if isinstance(cause, UnicodeDecodeError):
        return "the body is not UTF-8 text"
    if isinstance(cause, RecursionError):
        return "the body nests too deeply to read"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "a number in the body has too many digits (at most 4,300)"
    return "the body could not be read as JSON"


def error_response(request: Request, exc: ApiError) -> JSONResponse:
    return _respond(request, exc.status, exc.type, exc.message, exc.headers, **exc.extra)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, error_response)  # type: ignore[arg-type]

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        shown = [_describe(error) for error in errors[:MAX_PROBLEMS_SHOWN]]
        message = "the request is invalid: " + "; ".join(f"{field}: {problem}" for field, problem in shown)
        extra: dict[str, Any] = {}
        if more := len(errors) - len(shown):
            message += f"; and {more:,} more problem(s) not listed: fix these and send it again"
            extra["more_problems"] = more
        return _respond(
            request,
            400 if _is_openai(request) else 422,  # OpenAI answers malformed requests with 400
            "InvalidRequest",
            message,
            details=[{"field": field, "problem": problem} for field, problem in shown],
            param=shown[0][0] if shown else None,
            **extra,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _respond(
            request,
            500,
            "InternalError",
            "lcp failed unexpectedly on this request (it is logged); retry, and report it if it persists",
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = "no such route: see /docs for the API"
        if exc.status_code == 405:
            message = "method not allowed on this route: see /docs for the API"
        if exc.status_code == 400 and message == "There was an error parsing the body":
            message = _unreadable_body(exc.__cause__)
        return _respond(request, exc.status_code, "HTTPError", message)
