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
from itertools import chain, repeat
from operator import add, floordiv, itemgetter, mod
from typing import TYPE_CHECKING, Any, Final

import trio
from starlette.responses import Response
from starlette.routing import Route

from tickwork._time import from_us
from tickwork.events import EventsLost
from tickwork.http._api_instances import scheduler_of
from tickwork.http._errors import error_response
from tickwork.state import State

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import Receive, Scope, Send

    from tickwork.events import EventRun, Subscription
    from tickwork.node.scheduler import Scheduler

__all__ = ["routes"]

KEEPALIVE: Final = 15.0
#: at most this many waiting events go out in one body chunk
_BURST: Final = 5000
#: after a chunk, the stream waits this long for the next one to gather: at most ~20
#: writes a second per client however busy the node (each write costs the same whether
#: it carries one event or a thousand), events at most this much later on the page
GATHER: Final = 0.05


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
    """Send what the subscription yields. The events waiting are taken together and go
    out framed as one body chunk (one socket write for a burst, not one per event)."""

    async def chunk(data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    await chunk(b"retry: 2000\n: connected\n\n")
    while True:
        with trio.move_on_after(keepalive) as idle:
            try:
                batch = await sub.receive_runs(_BURST)
            except trio.EndOfChannel:  # the scheduler stopped: end the response
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
        if idle.cancelled_caught:
            await chunk(b": keepalive\n\n")
        elif isinstance(batch, EventsLost):
            await chunk(b"event: lost\ndata: " + _dumps({"count": batch.count}) + b"\n\n")
        else:
            await chunk(_frames(batch))
            await trio.sleep(GATHER)


def _frames(runs: list[EventRun]) -> bytes:
    """Runs of events as SSE frames, encoded together: the same document as event_doc()
    for each, formatted directly.

    A run's events share their move and node, so a frame differs from the one before only
    in its id when they share their task and time too (a claim's batch, a recorded batch:
    the frames are the ids joined by the text between them), and in its id and
    microseconds when each has its own time (runs started one by one). Those columns are
    formatted by C loops (``map``, ``str.join``), not a Python statement per event.
    """
    parts: list[str] = []
    for run in runs:
        ids = run.instance_ids()
        tasks = run.tasks()
        times = None if run.at_us is not None else run.times_us()
        if tasks.count(tasks[0]) == len(tasks):
            _group(parts, run, tasks[0], ids, times)
            continue
        first = 0  # several tasks: a group per task in a row
        for k in range(1, len(tasks) + 1):
            if k == len(tasks) or tasks[k] != tasks[first]:
                some = None if times is None else times[first:k]
                _group(parts, run, tasks[first], ids[first:k], some)
                first = k
    return "".join(parts).encode()


_MICRO: Final = 1_000_000
_MICROS = repeat(_MICRO)  # endless: map() stops with the column beside it
_AFTER_FIRST = itemgetter(slice(1, None))


def _group(
    parts: list[str], run: EventRun, task: str, ids: list[int], times: list[int] | None
) -> None:
    """Frames for events of one run and task: at ``run.at_us``, or each at ``times[k]``."""
    around = _MIDDLES.get((task, run.from_state, run.to_state, run.node))
    if around is None:
        around = _middle(task, run.from_state, run.to_state, run.node)
    head, middle, tail = around
    if times is None:  # one time: the frames differ in their ids alone
        after = f"{middle}{_time(run.at_us or 0)}{tail[1:]}"
        parts += (head, (after + head).join(map(str, ids)), after)
        return
    seconds = list(map(floordiv, times, _MICROS))
    if seconds.count(seconds[0]) != len(seconds):  # across a second's edge: split there
        first = 0
        for k in range(1, len(seconds) + 1):
            if k == len(seconds) or seconds[k] != seconds[first]:
                _group(parts, run, task, ids[first:k], times[first:k])
                first = k
        return
    micros = list(map(mod, times, _MICROS))
    if 0 in micros:  # a time on the second, written without a fraction: one by one
        for i, t in zip(ids, times, strict=True):
            parts.append(f"{head}{i}{middle}{_time(t)}{tail[1:]}")
        return
    # the microseconds as six digits: str(1_000_000 + micro) less its first digit
    digits = map(_AFTER_FIRST, map(str, map(add, micros, _MICROS)))
    parts += chain.from_iterable(
        zip(repeat(head), map(str, ids), repeat(f"{middle}{_second(seconds[0])}."), digits,
            repeat(tail))
    )  # fmt: skip


#: (task, from, to, node) -> the frame's text before the id, between the id and the time,
#: and after the time
_MIDDLES: dict[tuple[str, State, State, str], tuple[str, str, str]] = {}
_MAX_MIDDLES: Final = 4096


def _middle(task: str, before: State, after: State, node: str) -> tuple[str, str, str]:
    found = (
        'data: {"instance_id":',
        f',"task":{_quoted(task)},"from":"{before.name}","to":"{after.name}","time":"',
        f'Z","node":{_quoted(node)}}}\n\n',
    )
    if len(_MIDDLES) >= _MAX_MIDDLES:
        _MIDDLES.clear()  # many task names: start over (bounded memory)
    _MIDDLES[task, before, after, node] = found
    return found


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
