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

import functools
import math
import re
import select
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, NamedTuple, Self
from urllib.parse import urljoin, urlsplit

import attrs
import h11
import trio

__all__ = [
    "ConnectError", "HttpClient", "HttpError", "Response", "TimeoutError", "TooManyRedirects",
]  # fmt: skip

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_NO_BODY_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
_CHUNK: Final = 65536
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: a header value: visible ASCII, spaces and tabs (what h11 accepts, minus obs-text)
_VALUE: Final = re.compile(r"[\x20-\x7e\t]*")
#: a request target or a Host: visible ASCII
_VISIBLE: Final = re.compile(r"[\x21-\x7e]+")
_BTOKEN: Final = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_Origin = tuple[str, str, int]


class HttpError(Exception):
    """A call that got no complete answer (the connection, the protocol, the deadline)."""


class ConnectError(HttpError):
    """No connection could be made (refused, unreachable, name unknown, TLS failed)."""


class TimeoutError(HttpError):  # noqa: A001 - ours, raised only from this module
    """No complete answer before the call's deadline."""


class TooManyRedirects(HttpError):
    """More redirects than ``max_redirects`` (when following them)."""


@attrs.frozen
class Response:
    """The status and the last ``tail_bytes`` of the body."""

    status: int
    tail: bytes


class _StaleConnection(HttpError):
    """A reused connection failed before any byte of the answer: try a new one."""


class _DeadlinePassed(Exception):
    """The call's deadline passed (request turns it into TimeoutError)."""


class _Conn:
    """One keep-alive connection over a plain TCP socket, driven directly (non-blocking,
    with trio's readiness waits). ``answered``: it has carried a complete answer (so a
    failure before the next answer's first byte may be the server's close of an idle
    connection)."""

    __slots__ = ("answered", "deadline", "expired", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.answered = False
        #: when the exchange in progress must end, and whether it passed (see _Deadlines)
        self.deadline = math.inf
        self.expired = False

    async def _wait(self, wait: Callable[[socket.socket], Awaitable[None]]) -> None:
        """``wait`` for the socket unless the exchange's deadline passed (then, or when it
        passes during the wait, _DeadlinePassed)."""
        if self.expired:
            raise _DeadlinePassed
        try:
            await wait(self.sock)
        except trio.ClosedResourceError:
            if self.expired:
                raise _DeadlinePassed from None
            raise

    async def send_all(self, data: bytes) -> None:
        sock = self.sock
        try:
            sent = sock.send(data)  # a request fits the socket's buffer: one call
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        while view:
            try:
                sent = sock.send(view)
            except BlockingIOError:
                await self._wait(trio.lowlevel.wait_writable)
            else:
                view = view[sent:]

    async def receive(self) -> bytes:
        """The next bytes from the server (b"" at its end of stream)."""
        sock = self.sock
        while True:
            # wait first: right after a request the answer is not there yet, and a recv
            # that fails costs a system call and an exception
            await self._wait(trio.lowlevel.wait_readable)
            try:
                return sock.recv(_CHUNK)
            except BlockingIOError:
                continue

    def still_open(self) -> bool:
        """An idle connection is reusable when nothing is waiting to be read on it (an EOF
        or stray bytes both mean the server is done with it)."""
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False

    def close_now(self) -> None:
        """Close at once (nothing is waiting on it)."""
        self.sock.close()

    async def aclose(self) -> None:
        self.sock.close()


class _TlsConn(_Conn):
    """The same over a ``trio.SSLStream``."""

    __slots__ = ("stream",)

    def __init__(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        # no plain socket to drive: every method that uses one is replaced
        self.stream = stream
        self.answered = False
        self.deadline = math.inf  # its exchanges end by a trio.CancelScope instead
        self.expired = False

    async def send_all(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def receive(self) -> bytes:
        return bytes(await self.stream.receive_some(_CHUNK))

    def still_open(self) -> bool:
        fd = self.stream.transport_stream.socket.fileno()
        if fd < 0:
            return False
        readable, _, _ = select.select([fd], [], [], 0)
        return not readable

    def close_now(self) -> None:
        self.stream.transport_stream.socket.close()

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


class _Deadlines:
    """The deadlines of the exchanges on plain connections, kept by one trio system task.

    At an exchange's deadline the task marks its connection expired and wakes the socket
    wait in progress (``trio.lowlevel.notify_closing``); the exchange then raises
    _DeadlinePassed and closes the connection. A ``trio.CancelScope`` per call did the
    same for about a fifth of the client's CPU per call (benchmarks/PROFILE_NOTES.md,
    session 9); connects and TLS exchanges still use one. The task sleeps until the
    soonest deadline in flight, so with calls that end in time it wakes about once per
    timeout, and it ends with the client (or with the trio run).
    """

    def __init__(self) -> None:
        self._flying: set[_Conn] = set()
        self._sleep: trio.CancelScope | None = None
        self._token: trio.lowlevel.TrioToken | None = None  # the trio run of the task
        self._task: object = None  # the task's own mark: an old one ends when it sees another

    def add(self, conn: _Conn, deadline: float) -> None:
        conn.deadline = deadline
        self._flying.add(conn)
        token = trio.lowlevel.current_trio_token()
        if self._token is not token:  # the first exchange (of this trio run, or since close)
            self._token, self._sleep, self._task = token, None, object()
            trio.lowlevel.spawn_system_task(self._watch, self._task, name="tickwork http deadlines")
        elif self._sleep is not None and deadline < self._sleep.deadline:
            self._sleep.deadline = deadline

    def discard(self, conn: _Conn) -> None:
        self._flying.discard(conn)

    def close(self) -> None:
        """End the task (a later exchange starts another)."""
        self._token = self._task = None
        if self._sleep is not None:
            self._sleep.cancel()

    async def _watch(self, mark: object) -> None:
        while self._task is mark:
            now, soonest = trio.current_time(), math.inf
            for conn in self._flying:
                if conn.deadline <= now:
                    if not conn.expired:
                        conn.expired = True
                        trio.lowlevel.notify_closing(conn.sock)
                elif conn.deadline < soonest:
                    soonest = conn.deadline
            with trio.CancelScope(deadline=soonest) as self._sleep:
                await trio.sleep_forever()


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
        self._idle: dict[_Origin, deque[_Conn]] = {}
        self._ssl = ssl_context
        self._deadlines = _Deadlines()
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
        call = _Call(method, url, headers, content)
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
        except _DeadlinePassed:
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
        self, call: _Call, tail_bytes: int, deadline: float
    ) -> tuple[Response, str | None]:
        origin, netloc, target = _where(call.url)
        wire = _Wire(call.method, _request_bytes(call, target, netloc), tail_bytes, deadline)
        conn = self._take_idle(origin)
        if conn is not None:
            try:
                return await self._exchange(origin, conn, wire)
            except _StaleConnection:
                pass  # the server closed it before our call reached it: a new one
        fresh = None
        with trio.CancelScope(deadline=deadline):
            fresh = await self._connect(origin)
        if fresh is None:
            raise _DeadlinePassed  # cancelled by its deadline while connecting
        # a new connection never raises _StaleConnection (it has had no answer yet)
        return await self._exchange(origin, fresh, wire)

    def _take_idle(self, origin: _Origin) -> _Conn | None:
        conns = self._idle.get(origin)
        while conns:
            conn = conns.pop()  # the most recently used: the least likely to be closed
            if conn.still_open():
                return conn
            conn.close_now()
        return None

    async def _connect(self, origin: _Origin) -> _Conn:
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
                conn: _Conn = _TlsConn(tls)
            else:
                stream = await trio.open_tcp_stream(host, port)  # TCP_NODELAY set
                sock = socket.socket(fileno=stream.socket.detach())
                sock.setblocking(False)  # noqa: FBT003 - the stdlib's signature
                conn = _Conn(sock)
        except (OSError, trio.BrokenResourceError) as exc:
            raise ConnectError(f"{host}:{port}: {exc}") from None
        self.connections_made += 1
        return conn

    async def _exchange(
        self, origin: _Origin, conn: _Conn, wire: _Wire
    ) -> tuple[Response, str | None]:
        try:
            response, location, reusable = await self._within(conn, wire)
        except BaseException as exc:
            # cancelled or failed halfway: what is left on the connection is unknown
            await conn.aclose()
            if isinstance(exc, (_StaleConnection, _DeadlinePassed)):
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

    async def _within(self, conn: _Conn, wire: _Wire) -> tuple[Response, str | None, bool]:
        """The exchange, ended by _DeadlinePassed at ``wire.deadline``."""
        if isinstance(conn, _TlsConn):
            with trio.CancelScope(deadline=wire.deadline):
                return await _send_and_receive(conn, wire.method, wire.data, wire.tail_bytes)
            raise _DeadlinePassed  # the block returns or raises unless its deadline passed
        self._deadlines.add(conn, wire.deadline)
        try:
            return await _send_and_receive(conn, wire.method, wire.data, wire.tail_bytes)
        finally:
            self._deadlines.discard(conn)


class _Wire(NamedTuple):
    """A request as sent, and what its exchange needs."""

    method: str
    data: bytes
    tail_bytes: int
    deadline: float


@functools.lru_cache(maxsize=1024)
def _where(url: str) -> tuple[_Origin, str, str]:
    """``((scheme, host, port), host header, request target)`` of a URL (remembered: the
    runs of a webhook call the same URL).

    Raises:
        ValueError: a URL whose host or path cannot be sent as they are (not visible
            ASCII: percent-encode it).
    """
    parts = urlsplit(url)
    scheme, host = parts.scheme, parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    netloc = parts.netloc.rpartition("@")[2]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not _VISIBLE.fullmatch(netloc) or not _VISIBLE.fullmatch(target):
        raise ValueError(f"{url!r}: the host and path must be visible ASCII (percent-encoded)")
    return (scheme, host, port), netloc, target


def _request_bytes(call: _Call, target: str, netloc: str) -> bytes:
    """The request's head and body as sent.

    Raises:
        ValueError: a header name that is not a token or a value with a control
            character or a non-ASCII one.
    """
    headers = call.headers
    head = [call.method, " ", target, " HTTP/1.1\r\nhost: ", netloc, "\r\n"]
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
            raise ValueError(f"header {name!r}: {value!r} cannot be sent as HTTP/1.1")
        head += (name, ": ", value, "\r\n")
    if "user-agent" not in headers:
        head.append("user-agent: tickwork\r\n")
    if call.content or call.method not in _NO_BODY_METHODS:
        head += ("content-length: ", str(len(call.content)), "\r\n")
    head.append("\r\n")
    return "".join(head).encode("ascii") + call.content


async def _send_and_receive(
    conn: _Conn, method: str, wire: bytes, tail_bytes: int
) -> tuple[Response, str | None, bool]:
    """Send a request, read its answer: ``(response, location, reusable)``."""
    try:
        await conn.send_all(wire)
        data = await conn.receive()
    except (OSError, trio.BrokenResourceError) as exc:
        if conn.answered:
            raise _StaleConnection(repr(exc)) from None
        raise
    if not data:
        if conn.answered:
            raise _StaleConnection("end of stream")
        raise HttpError("the server closed the connection without an answer")
    head = _parse_head(data, method)
    if head is None:
        return await _read_with_h11(conn, method, data, tail_bytes)
    status, length, location, keep_alive, start = head
    end = start + length
    if len(data) >= end:  # the whole answer in one read: the common case
        # bytes after the answer: the server is out of step with us; do not reuse
        reusable = keep_alive and len(data) == end
        return _response(status, data[start:end], tail_bytes), location, reusable
    tail, clean = await _rest_of_body(conn, data[start:], length, tail_bytes)
    return _response(status, tail, tail_bytes), location, keep_alive and clean


async def _rest_of_body(
    conn: _Conn, first: bytes, length: int, tail_bytes: int
) -> tuple[bytes, bool]:
    """Read a ``length``-byte body that began with ``first``: ``(its last bytes, no byte
    came after it)``."""
    tail = bytearray(first)
    missing = length - len(first)
    while missing > 0:
        more = await conn.receive()
        if not more:
            raise HttpError("the server closed the connection before its answer ended")
        tail += more[:missing]
        if len(tail) > 2 * tail_bytes:
            del tail[: len(tail) - tail_bytes]
        if len(more) > missing:
            return bytes(tail), False
        missing -= len(more)
    return bytes(tail), True


def _response(status: int, body: bytes, tail_bytes: int) -> Response:
    if len(body) <= tail_bytes:
        return Response(status, body)
    return Response(status, body[-tail_bytes:] if tail_bytes else b"")


def _parse_head(data: bytes, method: str) -> tuple[int, int, str | None, bool, int] | None:
    """``(status, content-length, location, keep-alive, body start)`` of the common
    answer whose head is all in ``data``: ``HTTP/1.1``, a final status that has a body,
    one ``content-length`` and no ``transfer-encoding``. None for anything else (h11 reads
    those)."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or method == "HEAD" or not data.startswith(b"HTTP/1.1 "):
        return None
    first, _, fields = data[:end].partition(b"\r\n")
    code = first[9:12]
    if not (code.isdigit() and first[12:13] in (b"", b" ")):
        return None
    status = int(code)
    framing = None if status < 200 or status in (204, 304) else _framing(fields)
    if framing is None:
        return None
    return (status, *framing, end + 4)


def _framing(fields: bytes) -> tuple[int, str | None, bool] | None:
    """``(content-length, location, keep-alive)`` from the header lines of an answer, or
    None when h11 should read it (no single content-length, a transfer-encoding, a line
    that is not a plain ``name: value``)."""
    length, location, keep_alive = -1, None, True
    for line in fields.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon or not _BTOKEN.fullmatch(name):
            return None
        name = name.lower()
        if name == b"content-length":
            value = value.strip(b" \t")
            if length >= 0 or not value.isdigit():
                return None
            length = int(value)
        elif name == b"transfer-encoding":
            return None
        elif name == b"connection":
            keep_alive = keep_alive and b"close" not in _tokens(value)
        elif name == b"location":
            location = value.strip(b" \t").decode("latin-1")
    return None if length < 0 else (length, location, keep_alive)


def _tokens(value: bytes) -> list[bytes]:
    return [t.strip(b" \t") for t in value.lower().split(b",")]


async def _read_with_h11(
    conn: _Conn, method: str, data: bytes, tail_bytes: int
) -> tuple[Response, str | None, bool]:
    """Read the answer that begins with ``data`` with h11 (any framing HTTP/1.1 allows)."""
    h = h11.Connection(h11.CLIENT)
    # h11 frames the answer by the request's method; the request itself was sent already
    h.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
    h.send(h11.EndOfMessage())
    h.receive_data(data)
    status, location, tail = 0, None, bytearray()
    while True:
        event = h.next_event()
        if event is h11.NEED_DATA:
            h.receive_data(await conn.receive())
        elif isinstance(event, h11.Response):
            status = event.status_code
            location = next(
                (v.decode("latin-1") for k, v in event.headers if k == b"location"), None
            )
        elif isinstance(event, h11.Data):
            tail += event.data
            if len(tail) > 2 * tail_bytes:
                del tail[: len(tail) - tail_bytes]
        elif isinstance(event, h11.EndOfMessage):
            reusable = h.their_state is h11.DONE and not h.trailing_data[0]
            return _response(status, bytes(tail), tail_bytes), location, reusable
        elif isinstance(event, h11.ConnectionClosed):
            raise HttpError("the server closed the connection before its answer ended")
        # an InformationalResponse (100 Continue) is skipped


@attrs.frozen
class _Call:
    method: str
    url: str
    headers: Mapping[str, str]
    content: bytes

    def redirected(self, status: int, location: str) -> _Call:
        """The call a redirect asks for (as browsers and httpx make it)."""
        new = urljoin(self.url, location)
        if urlsplit(new).scheme not in ("http", "https"):
            raise HttpError(f"redirect to {new!r}, not an http(s) URL")
        method, headers, content = self.method, dict(self.headers), self.content
        if status == 303 or (status in (301, 302) and method == "POST"):
            method = "HEAD" if method == "HEAD" else "GET"
            content = b""
            headers.pop("content-type", None)
        if urlsplit(new).netloc != urlsplit(self.url).netloc:
            headers.pop("authorization", None)
        return _Call(method, new, headers, content)
