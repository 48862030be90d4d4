"""The one error shape of the API, ``{"ok": false, "error": {"code", "message"}}``,
for every failure: our own refusals, FastAPI's 404/405/422 and anything unexpected.
Scripts in the runbook (docs/runbook.md) pipe every answer into jq, so no path may
answer with HTML or a traceback."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from capataz.errors import CapatazError, TaskError, UnknownAgentError
from capataz.intake.errors import (
    DependencyCycleError,
    InvalidTask,
    NoSuchTaskError,
    TaskExistsError,
    UnknownDependencyError,
)
from capataz.planner.errors import (
    PlannerCredentialWaiting,
    PlannerError,
    PlannerNotConfigured,
    PlannerRateLimited,
    PlannerTimeout,
    PlannerUnreachable,
    PlannerUpstreamError,
)
from capataz.redaction import redact
from capataz.store.errors import (
    ArgumentRefusedError,
    ClaimConflictError,
    NotFoundError,
    StoreUnavailable,
    ValueRefusedError,
)

__all__ = ["STATUS_OF_ERROR", "ApiError", "error_response", "install_handlers", "status_of"]

log = logging.getLogger("capataz.api")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    422: "invalid",
    429: "rate_limited",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}


# The HTTP status of each deliberate error a route lets through, most specific first:
# the one place that decides it, by the error's type, never by the input. 422: the
# request itself is wrong and would be wrong whatever the queue holds (or names what
# does not exist as a reference); 404: the path names nothing; 409: the request is fine
# but the current state refuses it. The planner's model API failing is a 5xx of its own
# (docs/planner.md): 502 it answered wrongly (a refused key, JSON that is not the plan),
# 503 it is busy or away (429 through every retry, unreachable), 504 it did not answer
# in time; a planner that is not configured, or whose credential is still WAITING, is
# a 409 like any other state that refuses the request until an operator acts.
STATUS_OF_ERROR: tuple[tuple[type[CapatazError], int], ...] = (
    (PlannerNotConfigured, 409),
    (PlannerCredentialWaiting, 409),
    (PlannerUpstreamError, 502),
    (PlannerRateLimited, 503),
    (PlannerUnreachable, 503),
    (PlannerTimeout, 504),
    (NoSuchTaskError, 404),
    (NotFoundError, 404),
    (InvalidTask, 422),
    (UnknownAgentError, 422),
    (UnknownDependencyError, 422),
    (DependencyCycleError, 422),
    (ArgumentRefusedError, 422),
    (ClaimConflictError, 409),
    (TaskExistsError, 409),
    (TaskError, 409),
    (CapatazError, 409),
)


def status_of(exc: CapatazError) -> int:
    """The status of ``exc`` from :data:`STATUS_OF_ERROR` (409 when nothing closer)."""
    return next((status for kind, status in STATUS_OF_ERROR if isinstance(exc, kind)), 409)


class ApiError(Exception):
    """A deliberate refusal: its status, a stable code and a message for people."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"ok": False, "error": {"code": code, "message": redact(message)}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _field(loc: Any) -> str:
    return ".".join(str(part) for part in loc)


def validation_message(errors: Any) -> str:
    """``body.backoff_seconds: Input should be a valid number``: where, then what."""
    return "; ".join(f"{_field(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors)


def install_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        message = str(exc.detail) if exc.detail else _CODES.get(status, "error")
        if status == 404:
            message = f"no route {request.method} {request.url.path}"
        elif status == 405:
            message = f"method {request.method} not allowed on {request.url.path}"
        elif status == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI answers a body that is not even text with a bare 400; malformed
            # JSON is a 422 naming the body, and so is this (the schema declares 422).
            return error_response(422, "invalid", "body: JSON decode error (not UTF-8 text)")
        return error_response(status, _CODES.get(status, "error"), message, exc.headers)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, "invalid", validation_message(exc.errors()))

    async def on_capataz(request: Request, exc: Exception) -> JSONResponse:
        # A refusal a route let through: its status comes from STATUS_OF_ERROR.
        assert isinstance(exc, CapatazError)
        status = status_of(exc)
        code = exc.code if isinstance(exc, PlannerError) else _CODES.get(status, "error")
        return error_response(status, code, str(exc))

    async def on_database(request: Request, exc: Exception) -> JSONResponse:
        # Only a database that is away (the store's StoreUnavailable): any other database
        # error is a bug and answers 500 like any other.
        log.error("database error on %s %s: %s", request.method, request.url.path, exc)
        return error_response(503, "unavailable", "the database is unavailable; retry later")

    async def on_unfit_value(request: Request, exc: Exception) -> JSONResponse:
        # A value the route let through but the database cannot hold: a number beyond
        # its column (the store's ValueRefusedError, SQLite's OverflowError at bind time),
        # a NUL in PostgreSQL text, a time past year 9999. The input is wrong, not the
        # server; routes validate what they know, and this keeps the rest from a 5xx.
        text = exc.message if isinstance(exc, ValueRefusedError) else str(exc)
        reason = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        log.info("value refused on %s %s: %s", request.method, request.url.path, reason)
        return error_response(422, "invalid", f"a value in the request does not fit: {reason}")

    async def on_anything(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal error; the server log has the details")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(CapatazError, on_capataz)
    app.add_exception_handler(StoreUnavailable, on_database)
    app.add_exception_handler(ValueRefusedError, on_unfit_value)
    app.add_exception_handler(OverflowError, on_unfit_value)
    app.add_exception_handler(Exception, on_anything)
