"""Request bodies read within a limit, and the parsing of JSON values at the boundary.

A body over the limit is refused (413) as soon as its declared length or the bytes
received so far pass the limit: it is never read whole.
"""

from __future__ import annotations

import json
from contextlib import aclosing
from datetime import datetime
from typing import Any, Final

from starlette.requests import Request

from tickwork.http._errors import ApiError

__all__ = [
    "DEFAULT_BODY_LIMIT",
    "json_body",
    "read_body",
]

#: The default body limit: a batch of 10,000 small instances fits.
DEFAULT_BODY_LIMIT: Final = 8 * 1024 * 1024


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise ApiError(400, f"Content-Length is not a number: {declared!r}")
        if int(declared) > limit:
            raise ApiError(413, f"the body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async with aclosing(request.stream()) as stream:  # closed when we stop early
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the body is over the limit of {limit} bytes")
            chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request) -> Any:
    """The request's JSON document (``application/json``), within the app's body limit."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, f"send the body as application/json, not {ctype or 'nothing'!r}")
    raw = await read_body(request, request.app.state.body_limit)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"the body is not valid JSON ({exc})") from None


def parse_time(value: object, what: str) -> datetime:
    """An RFC 3339 time with an offset (``2030-01-01T09:00:00Z``)."""
    if not isinstance(value, str):
        raise ApiError(422, f"{what} must be an RFC 3339 time string, got {value!r}")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(
            422, f"{what} must be an RFC 3339 time such as 2030-01-01T09:00:00Z, got {value!r}"
        ) from None
    if dt.tzinfo is None:
        raise ApiError(422, f"{what} needs a UTC offset (Z or +01:00), got {value!r}")
    return dt


def query_time(request: Request, name: str) -> datetime | None:
    """An optional RFC 3339 query parameter (400 if malformed)."""
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        return parse_time(value, name)
    except ApiError as exc:
        raise ApiError(400, exc.message) from None


def query_int(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    """An optional integer query parameter within ``[low, high]`` (400 otherwise)."""
    value = request.query_params.get(name)
    if value is None:
        return default
    try:
        n = int(value)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer, got {value!r}") from None
    if not low <= n <= high:
        raise ApiError(400, f"{name} must be in {low}..{high}, got {n}")
    return n


def field(
    doc: dict[str, Any], name: str, kinds: type | tuple[type, ...], *, required: bool = False
) -> Any:
    """``doc[name]`` checked against ``kinds`` (422 otherwise); None when absent."""
    if name not in doc or doc[name] is None:
        if required:
            raise ApiError(422, f"{name} is required")
        return None
    value = doc[name]
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise ApiError(422, f"{name} has the wrong type: {value!r}")
    if not isinstance(value, kinds):
        raise ApiError(422, f"{name} has the wrong type: {value!r}")
    return value


def check_keys(doc: object, allowed: frozenset[str], what: str) -> dict[str, Any]:
    """``doc`` as a JSON object with no keys beyond ``allowed`` (422 otherwise)."""
    if not isinstance(doc, dict):
        raise ApiError(422, f"{what} must be a JSON object")
    extra = sorted(set(doc) - allowed)
    if extra:
        raise ApiError(422, f"{what} has unknown fields: {', '.join(extra)}")
    return doc
