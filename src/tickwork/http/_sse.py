"""``/api/events``: the node's transition events as server-sent events.

Each event is ``data: <json>`` (see :func:`tickwork.http._json.event_doc`). Every client
has its own bounded subscription: a slow or vanished browser loses events (the node never
waits for it), and is then sent ``event: lost`` with ``data: {"count": n}`` so the page
reloads what it shows. A comment line every ``keepalive`` seconds keeps proxies from
closing an idle stream. About ``max_clients`` streams at most (503 beyond).
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any, Final

import trio
from starlette.responses import Response
from starlette.routing import Route

from tickwork._time import from_us
from tickwork.events import EventsLost, TransitionEvent
from tickwork.http._api_instances import scheduler_of
from tickwork.http._errors import error_response

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import Receive, Scope, Send

    from tickwork.events import Subscription
    from tickwork.node.scheduler import Scheduler

__all__ = ["routes"]

KEEPALIVE: Final = 15.0
#: at most this many waiting events go out in one body chunk
_BURST: Final = 1000


class EventStream(Response):
    """A ``text/event-stream`` response fed by a subscription until the client leaves.

    Not an async generator behind a StreamingResponse: a generator cancelled while
    suspended is finalised later, out of order; here one task sends, one waits for the
    client's disconnect, and the subscription is closed in the same task that opened it.
    """

    def __init__(self, scheduler: Scheduler, state: Any) -> None:
        super().__init__()
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-store"),
            (b"x-accel-buffering", b"no"),
        ]
        self._scheduler = scheduler
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        del scope  # the request was read by the endpoint
        state = self._state
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        state.sse_clients += 1
        try:
            with self._scheduler.subscribe(buffer=state.sse_buffer) as sub:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_until_disconnect, receive, nursery.cancel_scope)
                    await _pump(sub, send, state.sse_keepalive)
                    nursery.cancel_scope.cancel()
        finally:
            state.sse_clients -= 1


async def _until_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _pump(sub: Subscription, send: Send, keepalive: float) -> None:
    """Send what the subscription yields. Events already waiting go out together, in one
    body chunk (one socket write for a burst, not one per event)."""

    async def chunk(data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    await chunk(b"retry: 2000\n: connected\n\n")
    while True:
        with trio.move_on_after(keepalive) as idle:
            try:
                item = await sub.receive()
            except trio.EndOfChannel:  # the scheduler stopped: end the response
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
        if idle.cancelled_caught:
            await chunk(b": keepalive\n\n")
            continue
        parts = [_frame(item)]
        while len(parts) < _BURST:  # and what is already there
            try:
                parts.append(_frame(sub.receive_nowait()))
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        await chunk(b"".join(parts))


def _frame(item: TransitionEvent | EventsLost) -> bytes:
    if isinstance(item, EventsLost):
        return b"event: lost\ndata: " + _dumps({"count": item.count}) + b"\n\n"
    # The same document as event_doc(), formatted directly: a burst of 30,000 events a
    # second is framed in a few microseconds each (task and node are JSON-quoted, once).
    return (
        f'data: {{"instance_id":{item.instance_id},"task":{_quoted(item.task)},'
        f'"from":"{item.from_state.name}","to":"{item.to_state.name}",'
        f'"time":"{_time(item.at_us)}","node":{_quoted(item.node)}}}\n\n'
    ).encode()


@functools.lru_cache(maxsize=1024)
def _quoted(text: str) -> str:
    return json.dumps(text)


@functools.lru_cache(maxsize=4)
def _second(second: int) -> str:
    return from_us(second * 1_000_000).isoformat().replace("+00:00", "")


def _time(us: int) -> str:
    """RFC 3339 with microseconds, as ``iso()`` writes it, the second part cached."""
    second, micro = divmod(us, 1_000_000)
    return f"{_second(second)}.{micro:06d}Z" if micro else f"{_second(second)}Z"


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


async def events(request: Request) -> Response:
    state = request.app.state
    if state.sse_clients >= state.sse_max_clients:
        return error_response(
            503, f"too many event streams open ({state.sse_max_clients}); try again later"
        )
    scheduler = scheduler_of(request)
    scheduler.subscribe(buffer=1).close()  # 503 now if the scheduler stopped
    return EventStream(scheduler, state)


def routes() -> list[Any]:
    return [Route("/api/events", events, methods=["GET"])]
