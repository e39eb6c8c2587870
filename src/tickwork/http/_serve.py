"""``serve``: the app on hypercorn's trio worker, started with ``nursery.start``."""

from __future__ import annotations

import ipaddress
import logging
import socket
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from tickwork.errors import InvalidArgument
from tickwork.http._app import create_app

if TYPE_CHECKING:
    from tickwork.node.scheduler import Scheduler

__all__ = ["is_loopback", "serve"]

log = logging.getLogger("tickwork.http")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only loopback addresses (``127.0.0.1``, ``::1``, localhost)."""
    name = host.strip("[]")
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


async def serve(
    scheduler: Scheduler,
    host: str = "127.0.0.1",
    port: int = 8377,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    **app_options: Any,
) -> None:
    """Serve :func:`tickwork.http.create_app` on ``host:port`` until cancelled.

    ``await nursery.start(serve, scheduler, host, port)`` returns the bound address
    (``port=0`` picks a free port). Serving a non-loopback address needs at least one
    API token in the store: an open API is only ever served on loopback.

    Raises:
        InvalidArgument: a non-loopback address without a token, or a bad port.
    """
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidArgument(f"port must be in 0..65535, got {port!r}")
    loopback = await trio.to_thread.run_sync(is_loopback, host)  # may resolve a name
    tokens = await scheduler.tokens()
    if not loopback and not tokens:
        raise InvalidArgument(
            f"refusing to serve the HTTP API on {host} without a token: make one with "
            "`tickwork token add --scope admin`, or serve on 127.0.0.1"
        )
    app = create_app(scheduler, **app_options)
    config = Config()
    bind = f"[{host.strip('[]')}]:{port}" if ":" in host.strip("[]") else f"{host}:{port}"
    config.bind = [bind]
    config.accesslog = None
    config.errorlog = logging.getLogger("tickwork.http.server")
    config.graceful_timeout = 2.0

    async with trio.open_nursery() as nursery:
        served = partial(hypercorn_serve, app, config)  # type: ignore[arg-type] # ASGI types
        binds: list[str] = await nursery.start(served)
        address = _address(binds[0])
        if not tokens:
            log.warning(
                "HTTP API on http://%s:%d is open to loopback clients: no token is "
                "configured (`tickwork token add --scope admin` closes it)",
                *address,
            )
        else:
            log.info("HTTP API on http://%s:%d (tokens required)", *address)
        task_status.started(address)


def _address(url: str) -> tuple[str, int]:
    """``http://127.0.0.1:8377`` -> ("127.0.0.1", 8377)."""
    rest = url.split("://", 1)[-1]
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)
