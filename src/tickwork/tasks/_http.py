"""A lean HTTP/1.1 client on trio: what the webhook task needs, no more.

Keep-alive connections pooled per origin (at most ``max_connections`` in use at once; a
call waiting for one does not spend its deadline there), one deadline per call (connect,
send and the whole response), redirects only when asked, TLS through ``trio.SSLStream``
with the system's certificate store. Why not httpx: on the reference machine it spent
about 0.4 ms of CPU per call on trio (anyio, httpcore, its models), which caps one node's
core near 2,500 calls a second; this client spends a fraction of that (benchmarks/handoff.py).

Where the CPU goes per call is what shaped it (benchmarks/PROFILE_NOTES.md, session 9):

- the request is written as bytes directly (its fields checked here), not through h11's
  event objects, whose validation and state machine cost more than the rest of the call;
- the answer is read by a short parser for the common case (an ``HTTP/1.1`` status line,
  headers with one ``content-length``, no ``transfer-encoding``); anything else (chunked,
  close-delimited, 1xx, HEAD, 204/304, HTTP/1.0, a head split over reads) is handed with
  the bytes read so far to h11, which reads the rest;
- a plain ``http://`` connection is a non-blocking socket driven with
  ``trio.lowlevel.wait_readable``/``wait_writable`` (one wait per answer), not a
  ``trio.SocketStream`` (two scheduler passes and a failed ``recv`` more per call).

No pipelining: one request at a time per connection, so any HTTP/1.1 server works.

A connection that was idle is checked before reuse; if the server closed it anyway and the
call got no byte of an answer on it, the call is made once more on a new connection (the
``webhook-id`` lets a receiver drop the rare duplicate this can make).
"""

from __future__ import annotations

import socket
import ssl
from collections import deque
from collections.abc import Mapping
from typing import Final, NamedTuple, Self

import h11
import trio

from tickwork.tasks._http_conn import (
    Conn,
    DeadlinePassed,
    Deadlines,
    HttpError,
    StaleConnection,
    TlsConn,
)
from tickwork.tasks._http_wire import Call, Origin, Response, request_bytes, send_and_receive, where

__all__ = [
    "ConnectError", "HttpClient", "HttpError", "Response", "TimeoutError", "TooManyRedirects",
]  # fmt: skip

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


class ConnectError(HttpError):
    """No connection could be made (refused, unreachable, name unknown, TLS failed)."""


class TimeoutError(HttpError):  # noqa: A001 - ours, raised only from this module
    """No complete answer before the call's deadline."""


class TooManyRedirects(HttpError):
    """More redirects than ``max_redirects`` (when following them)."""


class HttpClient:
    """Calls over pooled keep-alive connections; :meth:`aclose` closes the idle ones.

    Args:
        max_connections: connections in use at once (calls beyond wait for one); as many
            idle ones are kept per origin.
        ssl_context: for ``https://`` (default: the system's certificate store).
    """

    def __init__(
        self, max_connections: int = 256, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._max = max_connections
        self._busy = 0
        self._room = trio.lowlevel.ParkingLot()
        self._idle: dict[Origin, deque[Conn]] = {}
        self._ssl = ssl_context
        self._deadlines = Deadlines()
        self.connections_made = 0

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes = b"",
        timeout: float,  # noqa: ASYNC109 - the call's own deadline, after the pool wait
        follow_redirects: bool = False,
        max_redirects: int = 20,
        tail_bytes: int = 4096,
    ) -> Response:
        """Make one call (and its redirects when ``follow_redirects``).

        Raises:
            ConnectError, TimeoutError, TooManyRedirects, HttpError: no complete answer.
            ValueError: a header or URL that cannot be sent as HTTP/1.1.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        call = Call(method, url, headers, content)
        if self._busy < self._max:
            self._busy += 1
        else:
            await self._room.park()  # woken by a call that hands its place over
        try:
            deadline = trio.current_time() + timeout
            for _ in range(max_redirects + 1):
                response, location = await self._once(call, tail_bytes, deadline)
                if not (follow_redirects and location and response.status in _REDIRECTS):
                    return response
                call = call.redirected(response.status, location)
            raise TooManyRedirects(f"more than {max_redirects} redirects")
        except DeadlinePassed:
            raise TimeoutError(f"no complete answer within {timeout:g} s") from None
        finally:
            if self._room:
                self._room.unpark()  # the first waiting call takes this one's place
            else:
                self._busy -= 1

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the idle connections (calls in flight close theirs when they end)."""
        self._deadlines.close()
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                await conn.aclose()

    async def _once(
        self, call: Call, tail_bytes: int, deadline: float
    ) -> tuple[Response, str | None]:
        origin, netloc, target = where(call.url)
        wire = _Wire(call.method, request_bytes(call, target, netloc), tail_bytes, deadline)
        conn = self._take_idle(origin)
        if conn is not None:
            try:
                return await self._exchange(origin, conn, wire)
            except StaleConnection:
                pass  # the server closed it before our call reached it: a new one
        fresh = None
        with trio.CancelScope(deadline=deadline):
            fresh = await self._connect(origin)
        if fresh is None:
            raise DeadlinePassed  # cancelled by its deadline while connecting
        # a new connection never raises StaleConnection (it has had no answer yet)
        return await self._exchange(origin, fresh, wire)

    def _take_idle(self, origin: Origin) -> Conn | None:
        conns = self._idle.get(origin)
        while conns:
            conn = conns.pop()  # the most recently used: the least likely to be closed
            if conn.still_open():
                return conn
            conn.close_now()
        return None

    async def _connect(self, origin: Origin) -> Conn:
        scheme, host, port = origin
        try:
            if scheme == "https":
                if self._ssl is None:
                    self._ssl = ssl.create_default_context()
                tls = await trio.open_ssl_over_tcp_stream(
                    host, port, ssl_context=self._ssl, https_compatible=True
                )
                try:
                    await tls.do_handshake()
                except BaseException:
                    await trio.aclose_forcefully(tls)
                    raise
                conn: Conn = TlsConn(tls)
            else:
                stream = await trio.open_tcp_stream(host, port)  # TCP_NODELAY set
                sock = socket.socket(fileno=stream.socket.detach())
                sock.setblocking(False)  # noqa: FBT003 - the stdlib's signature
                conn = Conn(sock)
        except (OSError, trio.BrokenResourceError) as exc:
            raise ConnectError(f"{host}:{port}: {exc}") from None
        self.connections_made += 1
        return conn

    async def _exchange(
        self, origin: Origin, conn: Conn, wire: _Wire
    ) -> tuple[Response, str | None]:
        try:
            response, location, reusable = await self._within(conn, wire)
        except BaseException as exc:
            # cancelled or failed halfway: what is left on the connection is unknown
            await conn.aclose()
            if isinstance(exc, (StaleConnection, DeadlinePassed)):
                raise
            if isinstance(exc, (OSError, trio.BrokenResourceError, trio.ClosedResourceError)):
                raise HttpError(f"the connection failed: {exc!r}") from None
            if isinstance(exc, h11.ProtocolError):
                raise HttpError(f"not an HTTP/1.1 answer: {exc}") from None
            raise
        if reusable and not conn.expired:
            conns = self._idle.get(origin)
            if conns is None:
                conns = self._idle[origin] = deque()
            if len(conns) < self._max:
                conn.answered = True
                conns.append(conn)
                return response, location
        await conn.aclose()
        return response, location

    async def _within(self, conn: Conn, wire: _Wire) -> tuple[Response, str | None, bool]:
        """The exchange, ended by DeadlinePassed at ``wire.deadline``."""
        if isinstance(conn, TlsConn):
            with trio.CancelScope(deadline=wire.deadline):
                return await send_and_receive(conn, wire.method, wire.data, wire.tail_bytes)
            raise DeadlinePassed  # the block returns or raises unless its deadline passed
        self._deadlines.add(conn, wire.deadline)
        try:
            return await send_and_receive(conn, wire.method, wire.data, wire.tail_bytes)
        finally:
            self._deadlines.discard(conn)


class _Wire(NamedTuple):
    """A request as sent, and what its exchange needs."""

    method: str
    data: bytes
    tail_bytes: int
    deadline: float
