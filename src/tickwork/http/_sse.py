"""``/api/events``: the node's transition events as server-sent events.

Each event is ``data: <json>`` (see :func:`tickwork.http._json.event_doc`). Every client
has its own bounded subscription: a slow or vanished browser loses events (the node never
waits for it), and is then sent ``event: lost`` with ``data: {"count": n}`` so the page
reloads what it shows. A comment line every ``keepalive`` seconds keeps proxies from
closing an idle stream. About ``max_clients`` streams at most (503 beyond).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final

import trio
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tickwork.events import EventsLost
from tickwork.http._api_instances import scheduler_of
from tickwork.http._errors import error_response
from tickwork.http._json import event_doc

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["routes"]

#: events buffered per client before the oldest are dropped
CLIENT_BUFFER: Final = 1000
KEEPALIVE: Final = 15.0


async def _stream(request: Request) -> AsyncIterator[bytes]:
    # Subscribed on the first step, not in the endpoint: a response that is never sent
    # (the client went away first) then holds no subscription.
    state = request.app.state
    state.sse_clients += 1
    try:
        with scheduler_of(request).subscribe(buffer=CLIENT_BUFFER) as sub:
            yield b"retry: 2000\n: connected\n\n"
            while True:
                with trio.move_on_after(state.sse_keepalive) as idle:
                    try:
                        item = await sub.receive()
                    except trio.EndOfChannel:
                        return  # the scheduler stopped
                if idle.cancelled_caught:
                    yield b": keepalive\n\n"
                elif isinstance(item, EventsLost):
                    yield b"event: lost\ndata: " + _dumps({"count": item.count}) + b"\n\n"
                else:
                    yield b"data: " + _dumps(event_doc(item)) + b"\n\n"
    finally:
        state.sse_clients -= 1


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


async def events(request: Request) -> Response:
    state = request.app.state
    if state.sse_clients >= state.sse_max_clients:
        return error_response(
            503, f"too many event streams open ({state.sse_max_clients}); try again later"
        )
    scheduler_of(request).subscribe(buffer=1).close()  # 503 now if the scheduler stopped
    return StreamingResponse(
        _stream(request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def routes() -> list[Any]:
    return [Route("/api/events", events, methods=["GET"])]
