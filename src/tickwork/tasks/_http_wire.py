"""HTTP/1.1 on the wire for the webhook task's client (:mod:`._http`): the request
written as bytes, and the answer read by a short parser for the common case (an
``HTTP/1.1`` status line, headers with one ``content-length``, no ``transfer-encoding``),
or by h11 for anything else (chunked, close-delimited, 1xx, HEAD, 204/304, HTTP/1.0, a
head split over reads)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import urljoin, urlsplit

import attrs
import h11
import trio

from tickwork.tasks._http_conn import Conn, HttpError, StaleConnection

__all__ = ["Call", "Origin", "Response", "request_bytes", "send_and_receive", "where"]

_NO_BODY_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: a header value: visible ASCII, spaces and tabs (what h11 accepts, minus obs-text)
_VALUE: Final = re.compile(r"[\x20-\x7e\t]*")
#: a request target or a Host: visible ASCII
_VISIBLE: Final = re.compile(r"[\x21-\x7e]+")
_BTOKEN: Final = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
Origin = tuple[str, str, int]


@attrs.frozen
class Response:
    """The status and the last ``tail_bytes`` of the body."""

    status: int
    tail: bytes


@functools.lru_cache(maxsize=1024)
def where(url: str) -> tuple[Origin, str, str]:
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


def request_bytes(call: Call, target: str, netloc: str) -> bytes:
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


async def send_and_receive(
    conn: Conn, method: str, wire: bytes, tail_bytes: int
) -> tuple[Response, str | None, bool]:
    """Send a request, read its answer: ``(response, location, reusable)``."""
    try:
        await conn.send_all(wire)
        data = await conn.receive()
    except (OSError, trio.BrokenResourceError) as exc:
        if conn.answered:
            raise StaleConnection(repr(exc)) from None
        raise
    if not data:
        if conn.answered:
            raise StaleConnection("end of stream")
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
    conn: Conn, first: bytes, length: int, tail_bytes: int
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
    conn: Conn, method: str, data: bytes, tail_bytes: int
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
class Call:
    method: str
    url: str
    headers: Mapping[str, str]
    content: bytes

    def redirected(self, status: int, location: str) -> Call:
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
        return Call(method, new, headers, content)
