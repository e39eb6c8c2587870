"""Stats, nodes, ``/healthz`` (the process answers) and ``/readyz`` (the store answers and
the node runs)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import attrs
import trio
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tickwork.errors import NotFound
from tickwork.http._api_instances import scheduler_of
from tickwork.http._counts import recent_missed
from tickwork.http._json import node_doc

if TYPE_CHECKING:
    from starlette.requests import Request

    from tickwork.node.scheduler import Scheduler

__all__ = ["routes"]


async def stats(request: Request) -> Response:
    scheduler = scheduler_of(request)
    st = scheduler.statistics()
    counts = await request.app.state.counts.get()
    hour_ago = int(scheduler.now().timestamp() * 1_000_000) - 3_600_000_000
    missed, missed_more = await recent_missed(scheduler, hour_ago)
    return JSONResponse(
        {
            "node_id": st.node_id,
            "stored": {s.name: n for s, n in counts.items()},
            "counted_at": request.app.state.counts.counted_at,
            "in_memory": st.in_memory,
            "max_in_memory": st.max_in_memory,
            "waiting": st.waiting,
            "ready": st.ready,
            "running": st.running,
            "max_concurrency": st.max_concurrency,
            "recorded": dict(st.counts),
            "lag_seconds": st.lag,
            "mean_lag_seconds": st.mean_lag,
            "rates": dict(st.rates),
            "uptime_seconds": st.uptime,
            "store": attrs.asdict(st.store),
            "gauges": attrs.asdict(st.gauges),
            "counters": attrs.asdict(st.counters),
            "missed_last_hour": missed,
            "missed_last_hour_more": missed_more,
        }
    )


async def nodes(request: Request) -> Response:
    found = await scheduler_of(request).nodes()
    return JSONResponse({"items": [node_doc(n) for n in found]})


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    scheduler = scheduler_of(request)
    problems: list[str] = []
    if scheduler.closed:
        problems.append("the scheduler is stopped")
    else:
        health = scheduler.statistics().store
        if not health.healthy:
            problems.append(f"store calls are failing: {health.last_error}")
        elif not await _store_answers(scheduler):
            problems.append(f"the store did not answer within {_READY_TIMEOUT:g} s")
    if problems:
        return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
    return JSONResponse({"status": "ready", "problems": []})


_READY_TIMEOUT = 2.0


async def _store_answers(scheduler: Scheduler) -> bool:
    """One cheap read (a lookup by primary key) within the timeout."""
    with trio.move_on_after(_READY_TIMEOUT) as scope, contextlib.suppress(NotFound):
        await scheduler.get(2**63 - 1)
    return not scope.cancelled_caught


def routes() -> list[Any]:
    return [
        Route("/api/stats", stats, methods=["GET"]),
        Route("/api/nodes", nodes, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
