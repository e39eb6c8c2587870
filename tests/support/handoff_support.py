"""Helpers for the hand-off task tests: a local webhook receiver, service gating, waits.

The servers (Redis, NATS, RabbitMQ) are the real ones on loopback; a test that needs one
skips with the reason when it does not answer, or fails under TICKWORK_REQUIRE_SERVICES=1
(the same rule as PostgreSQL: ``pg_support.unavailable``).
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import urlsplit

import attrs
import pytest
import trio

import tickwork
from tests.support.pg_support import unavailable


def require_service(name: str, url: str, default_port: int) -> str:
    """``url`` if something accepts TCP connections at its host and port, else skip/fail."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            pass
    except OSError as exc:
        unavailable(f"no {name} at {host}:{port} ({exc}); start it or set its TICKWORK_* URL")
    return url


@attrs.define
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP/1.1 server on 127.0.0.1 in a thread; answers each request with the next of
    ``statuses`` (then 200), after ``delays`` seconds if given; keeps what it received."""

    def __init__(self, statuses: list[int] | None = None, delays: list[float] | None = None):
        self.statuses = list(statuses or [])
        self.delays = list(delays or [])
        self.received: list[Received] = []
        self.connections: set[tuple[str, int]] = set()
        #: set by every request (a thread-side signal: wait with trio.to_thread)
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                receiver.connections.add(self.client_address)
                receiver.received.append(
                    Received(
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                    )
                )
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                delay = receiver.delays.pop(0) if receiver.delays else 0.0
                if delay:
                    time.sleep(delay)
                reply = f"answer {status}".encode()
                self.send_response(status)
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                receiver.arrived.set()

            do_POST = do_PUT = do_GET = do_DELETE = do_PATCH = _answer  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/hook"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


TERMINAL = frozenset(
    {tickwork.State.SUCCEEDED, tickwork.State.FAILED, tickwork.State.ABORTED, tickwork.State.MISSED}
)


async def wait_all(
    scheduler: tickwork.Scheduler, sub: tickwork.Subscription, ids: list[int], seconds: float = 30
) -> list[tickwork.Instance]:
    """The instances once ``sub`` (subscribed before they were scheduled) saw each end."""
    waiting = set(ids)
    with trio.fail_after(seconds):
        async for event in sub:
            if isinstance(event, tickwork.EventsLost):
                pytest.fail("the test's subscription lost events")
            if event.to_state in TERMINAL:
                waiting.discard(event.instance_id)
                if not waiting:
                    break
    return [await scheduler.get(iid) for iid in ids]


async def wait_ended(
    scheduler: tickwork.Scheduler, sub: tickwork.Subscription, iid: int, seconds: float = 30
) -> tickwork.Instance:
    """One instance once ``sub`` saw it end."""
    (inst,) = await wait_all(scheduler, sub, [iid], seconds)
    return inst
