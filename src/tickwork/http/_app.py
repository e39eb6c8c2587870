"""``create_app``: the ASGI app of a node (JSON API, events, metrics, sign-in, web UI)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tickwork.http import _api_instances, _api_node, _api_schedules, _login, _metrics, _sse
from tickwork.http._auth import AuthConfig, Guard, Sessions
from tickwork.http._body import DEFAULT_BODY_LIMIT
from tickwork.http._counts import CachedCounts
from tickwork.http._errors import exception_handlers
from tickwork.http._openapi import openapi_document

if TYPE_CHECKING:
    from starlette.requests import Request

    from tickwork.node.scheduler import Scheduler

__all__ = ["create_app"]

log = logging.getLogger("tickwork.http")


def _ui_routes() -> list[BaseRoute]:
    """The web UI's pages, when the UI is installed with this package."""
    try:
        ui = importlib.import_module("tickwork.http.ui")
    except ModuleNotFoundError as exc:
        if exc.name != "tickwork.http.ui":
            raise  # the UI is there but broken: say so
        return []
    routes: list[BaseRoute] = list(ui.ui_routes())
    return routes


async def _openapi(_request: Request) -> Response:
    return JSONResponse(openapi_document())


def create_app(
    scheduler: Scheduler,
    *,
    open_loopback: bool = True,
    metrics_need_token: bool = True,
    secure_cookie: bool = False,
    body_limit: int = DEFAULT_BODY_LIMIT,
    max_event_streams: int = 100,
    event_buffer: int = 10_000,
    counts_max_age: float = 10.0,
    ui: bool = True,
) -> Starlette:
    """The HTTP API, event stream, metrics and web UI of ``scheduler``, as an ASGI app.

    Mount it in your own ASGI server (it runs on trio through anyio), or serve it with
    :func:`tickwork.http.serve`. Everything it does goes through the public
    :class:`~tickwork.Scheduler` API.

    Args:
        open_loopback: when no token is stored, requests from loopback act as admin
            (refuse this when the app is reachable through a proxy on the same host).
        metrics_need_token: ``/metrics`` needs a token like the API (read scope).
        secure_cookie: mark the session cookie ``Secure`` (when served over HTTPS).
        body_limit: request bodies over this many bytes are refused with 413.
        max_event_streams: about this many ``/api/events`` streams at once (503 beyond).
        event_buffer: events buffered per stream; a client that falls further behind
            loses the oldest and is sent ``event: lost``.
        counts_max_age: seconds the stored counts per state (stats, metrics) are reused
            before the store is asked again.
        ui: mount the web UI's pages.
    """
    events = _metrics.EventCounters()
    counts = CachedCounts(scheduler, max_age=counts_max_age)
    config = AuthConfig(
        open_loopback=open_loopback,
        metrics_need_token=metrics_need_token,
        secure_cookie=secure_cookie,
    )
    sessions = Sessions()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The event counters of /metrics start with the first scrape (in this nursery):
        # until someone scrapes, the node publishes no events for them (that costs a
        # few microseconds per transition).
        async with trio.open_nursery() as nursery:
            app.state.background = nursery
            yield
            nursery.cancel_scope.cancel()

    routes: list[BaseRoute] = [
        Route("/api/openapi.json", _openapi, methods=["GET"]),
        *_api_instances.routes(),
        *_api_schedules.routes(),
        *_api_node.routes(),
        *_sse.routes(),
        *_metrics.routes(),
        *_login.routes(),
    ]
    if ui:
        routes += _ui_routes()
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, scheduler=scheduler, config=config, sessions=sessions)],
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    )
    registry, collector = _metrics.make_registry(scheduler, events)
    st: Any = app.state
    st.scheduler = scheduler
    st.auth = config
    st.sessions = sessions
    st.body_limit = body_limit
    st.counts = counts
    st.sse_clients = 0
    st.sse_max_clients = max_event_streams
    st.sse_keepalive = _sse.KEEPALIVE
    st.sse_buffer = event_buffer
    st.metrics_registry = registry
    st.metrics_collector = collector
    st.metrics_refresh = _metrics.refresher(counts)
    st.events = events
    st.events_started = False
    st.background = None
    return app
