"""The HTTP app of a node, for tests: in process (httpx.ASGITransport, the virtual clock
works) or served by hypercorn on a loopback port (real sockets, the real clock)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import trio

import tickwork
from tickwork.http import create_app, serve


class Quiet(tickwork.Task):
    name = "quiet"

    async def run(self, params: bytes) -> Any:
        return None


class Boom(tickwork.Task):
    name = "boom"

    async def run(self, params: bytes) -> Any:
        raise RuntimeError("boom")


@asynccontextmanager
async def in_process(
    scheduler: tickwork.Scheduler, *, client: str = "127.0.0.1", **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app, run in this trio run with its lifespan."""
    app = create_app(scheduler, **options)
    transport = httpx.ASGITransport(app=app, client=(client, 50000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c,
    ):
        yield c


@asynccontextmanager
async def served(scheduler: tickwork.Scheduler, **options: Any) -> AsyncIterator[str]:
    """The base URL of the app served by hypercorn on a free loopback port."""
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(partial(serve, scheduler, "127.0.0.1", 0, **options))
        yield f"http://{host}:{port}"
        nursery.cancel_scope.cancel()
