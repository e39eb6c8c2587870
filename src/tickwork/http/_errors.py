"""The one error shape of the HTTP API: ``{"error": {"code": "...", "message": "..."}}``.

Handlers raise :class:`ApiError` (or let a tickwork exception through); the handlers
below turn each into a JSON response with the right status. Every 4xx the app sends
has this shape, the router's own 404 and 405 included.
"""

from __future__ import annotations

import logging
from typing import Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tickwork.errors import (
    InvalidArgument,
    InvalidState,
    NotFound,
    SchedulerClosed,
    StoreError,
    UnknownTask,
)

__all__ = ["ApiError", "error_response", "exception_handlers"]

log = logging.getLogger("tickwork.http")

_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    503: "unavailable",
}


class ApiError(Exception):
    """A refusal with an HTTP status, a machine-readable code and a message for people."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message


def error_response(
    status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON error document for ``status``."""
    body = {"error": {"code": code or _CODES.get(status, "error"), "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)  # noqa: S101 - registered for ApiError only
    return error_response(exc.status, exc.message, exc.code)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, str(exc.detail), headers=headers)


async def _tickwork_error(_request: Request, exc: Exception) -> Response:
    if isinstance(exc, NotFound):
        return error_response(404, str(exc))
    if isinstance(exc, InvalidState):
        return error_response(409, str(exc))
    if isinstance(exc, UnknownTask):
        return error_response(422, str(exc), "unknown_task")
    if isinstance(exc, InvalidArgument):
        return error_response(422, str(exc))
    if isinstance(exc, SchedulerClosed | StoreError):
        log.warning("HTTP request failed: %s", exc)
        return error_response(503, str(exc))
    raise exc


#: For ``Starlette(exception_handlers=...)``.
exception_handlers: Final = {
    ApiError: _api_error,
    HTTPException: _http_error,
    NotFound: _tickwork_error,
    InvalidArgument: _tickwork_error,
    SchedulerClosed: _tickwork_error,
    StoreError: _tickwork_error,
}
