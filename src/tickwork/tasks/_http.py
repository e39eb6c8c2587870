"""A lean HTTP/1.1 client on trio streams and h11: what the webhook task needs, no more.

Keep-alive connections pooled per origin (at most ``max_connections`` in use at once; a
call waiting for one does not spend its deadline there), one deadline per call (connect,
send and the whole response), redirects only when asked, TLS through ``trio.SSLStream``
with the system's certificate store. Why not httpx: on the reference machine it spent
about 0.4 ms of CPU per call on trio (anyio, httpcore, its models), which caps one node's
core near 2,500 calls a second; this client spends a fraction of that (benchmarks/handoff.py).

A connection that was idle is checked before reuse; if the server closed it anyway and the
call got no byte of an answer on it, the call is made once more on a new connection (the
``webhook-id`` lets a receiver drop the rare duplicate this can make).
"""

from __future__ import annotations

import functools
import select
import ssl
from collections import deque
from collections.abc import Mapping
from typing import Final, Self
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


class _Conn:
    __slots__ = ("got_answer", "h11", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.got_answer = False

    def still_open(self) -> bool:
        """An idle connection is reusable when nothing is waiting to be read on it (an EOF
        or stray bytes both mean the server is done with it)."""
        stream = self.stream
        if isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        if not isinstance(stream, trio.SocketStream):
            return True
        fd = stream.socket.fileno()
        if fd < 0:
            return False
        readable, _, _ = select.select([fd], [], [], 0)
        return not readable


class _StaleConnection(HttpError):
    """A reused connection failed before any byte of the answer: try a new one."""


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
        self._in_use = trio.CapacityLimiter(max_connections)
        self._max_idle = max_connections
        self._idle: dict[_Origin, deque[_Conn]] = {}
        self._ssl = ssl_context
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
        """
        call = _Call(method, url, headers, content)
        async with self._in_use:
            try:
                with trio.fail_after(timeout):
                    for _ in range(max_redirects + 1):
                        response, location = await self._once(call, tail_bytes)
                        if not (follow_redirects and location and response.status in _REDIRECTS):
                            return response
                        call = call.redirected(response.status, location)
            except trio.TooSlowError:
                raise TimeoutError(f"no complete answer within {timeout:g} s") from None
        raise TooManyRedirects(f"more than {max_redirects} redirects")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the idle connections (calls in flight close theirs when they end)."""
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                await trio.aclose_forcefully(conn.stream)

    async def _once(self, call: _Call, tail_bytes: int) -> tuple[Response, str | None]:
        origin, netloc, target = _where(call.url)
        request = _request_events(call, target, netloc)
        conn = self._take_idle(origin)
        if conn is not None:
            try:
                return await self._exchange(origin, conn, request, tail_bytes)
            except _StaleConnection:
                pass  # the server closed it before our call reached it: a new one
        # a new connection never raises _StaleConnection (it has had no answer yet)
        return await self._exchange(origin, await self._connect(origin), request, tail_bytes)

    def _take_idle(self, origin: _Origin) -> _Conn | None:
        conns = self._idle.get(origin)
        while conns:
            conn = conns.pop()  # the most recently used: the least likely to be closed
            if conn.still_open():
                return conn
            _close_now(conn)
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
                await tls.do_handshake()
                stream: trio.abc.Stream = tls
            else:
                stream = await trio.open_tcp_stream(host, port)
        except (OSError, trio.BrokenResourceError) as exc:
            raise ConnectError(f"{host}:{port}: {exc}") from None
        self.connections_made += 1
        return _Conn(stream)

    async def _exchange(
        self, origin: _Origin, conn: _Conn, request: list[h11.Event], tail_bytes: int
    ) -> tuple[Response, str | None]:
        try:
            answer = await _send_and_receive(conn, request, tail_bytes)
        except BaseException as exc:
            # cancelled or failed halfway: what is left on the connection is unknown
            await trio.aclose_forcefully(conn.stream)
            if isinstance(exc, (OSError, trio.BrokenResourceError, trio.ClosedResourceError)):
                raise HttpError(f"the connection failed: {exc!r}") from None
            if isinstance(exc, h11.ProtocolError):
                raise HttpError(f"not an HTTP/1.1 answer: {exc}") from None
            raise
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            conns = self._idle.setdefault(origin, deque())
            if len(conns) < self._max_idle:
                conns.append(conn)
                return answer
        await trio.aclose_forcefully(conn.stream)
        return answer


@functools.lru_cache(maxsize=1024)
def _where(url: str) -> tuple[_Origin, str, str]:
    """``((scheme, host, port), host header, request target)`` of a URL (remembered: the
    runs of a webhook call the same URL)."""
    parts = urlsplit(url)
    scheme, host = parts.scheme, parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    netloc = parts.netloc.rpartition("@")[2]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (scheme, host, port), netloc, target


def _close_now(conn: _Conn) -> None:
    """Close a dead idle connection without waiting (nothing is left to say on it)."""
    stream = conn.stream
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        stream.socket.close()


def _request_events(call: _Call, target: str, netloc: str) -> list[h11.Event]:
    fields = [("host", netloc), *call.headers.items()]
    if "user-agent" not in call.headers:
        fields.append(("user-agent", "tickwork"))
    if call.content or call.method not in _NO_BODY_METHODS:
        fields.append(("content-length", str(len(call.content))))
    events: list[h11.Event] = [h11.Request(method=call.method, target=target, headers=fields)]
    if call.content:
        events.append(h11.Data(data=call.content))
    events.append(h11.EndOfMessage())
    return events


async def _send_and_receive(
    conn: _Conn, request: list[h11.Event], tail_bytes: int
) -> tuple[Response, str | None]:
    wire = b"".join(conn.h11.send(event) or b"" for event in request)
    reused = conn.got_answer
    try:
        await conn.stream.send_all(wire)
        data = await conn.stream.receive_some(_CHUNK)
    except (OSError, trio.BrokenResourceError) as exc:
        if reused:
            raise _StaleConnection(repr(exc)) from None
        raise
    if not data and reused:
        raise _StaleConnection("end of stream")
    conn.h11.receive_data(bytes(data))
    answer = await _read_answer(conn, tail_bytes)
    conn.got_answer = True
    return answer


async def _read_answer(conn: _Conn, tail_bytes: int) -> tuple[Response, str | None]:
    h = conn.h11
    status, location, tail = 0, None, bytearray()
    while True:
        event = h.next_event()
        if event is h11.NEED_DATA:
            h.receive_data(bytes(await conn.stream.receive_some(_CHUNK)))
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
            return Response(status, bytes(tail[-tail_bytes:]) if tail_bytes else b""), location
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
