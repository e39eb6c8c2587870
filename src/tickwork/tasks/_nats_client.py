"""A small trio client of the NATS protocol: publish with headers, wait for replies.

What the nats task needs and nothing more: CONNECT (with headers and no-responders), one
wildcard reply subscription, ``HPUB`` with a reply subject, and the ``MSG``/``HMSG``
replies matched to their publishers. Publishes are written by one writer task, which
sends everything queued since its last write in one ``send_all``: concurrent hand-offs
are pipelined on the connection. The protocol is text lines plus sized payloads
(https://docs.nats.io/reference/reference-protocols/nats-protocol).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit

import attrs
import trio

__all__ = ["NatsClosed", "NatsConnection", "Reply", "connect"]

_CRLF = b"\r\n"
_MAX_LINE = 64 * 1024
_VERSION = "1"


class NatsClosed(Exception):
    """The connection ended (or could not be made); what was waiting for a reply failed."""


@attrs.frozen
class Reply:
    """A reply: its status (``"503"`` for no responders, else ``""``), headers, payload."""

    status: str
    headers: Mapping[str, str]
    payload: bytes


@attrs.define
class _Waiter:
    event: trio.Event = attrs.Factory(trio.Event)
    reply: Reply | None = None


class NatsConnection:
    """One connection; build it with :func:`connect` inside a nursery."""

    def __init__(self, stream: trio.abc.Stream, info: Mapping[str, object]) -> None:
        self._stream = stream
        self.info = info
        self._prefix = f"_INBOX.tw{secrets.token_hex(8)}."
        self._next = 0
        self._waiters: dict[str, _Waiter] = {}
        self._out = bytearray()
        self._wake = trio.Event()
        self._closed: str | None = None

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def request(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str],
        timeout: float,  # noqa: ASYNC109
    ) -> Reply:
        """Publish with a reply subject and wait for the reply.

        Raises:
            NatsClosed: the connection ended first.
            trio.TooSlowError: no reply within ``timeout`` seconds.
        """
        if self._closed is not None:
            raise NatsClosed(self._closed)
        self._next += 1
        reply_to = f"{self._prefix}{self._next}"
        waiter = self._waiters[reply_to] = _Waiter()
        head = "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        hdr = head.encode()
        self._out += b"HPUB %s %s %d %d\r\n" % (
            subject.encode(), reply_to.encode(), len(hdr), len(hdr) + len(payload)
        )  # fmt: skip
        self._out += hdr + payload + _CRLF
        self._wake.set()
        try:
            with trio.fail_after(timeout):
                await waiter.event.wait()
        finally:
            self._waiters.pop(reply_to, None)
        if waiter.reply is None:
            raise NatsClosed(self._closed or "closed")
        return waiter.reply

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read and write until the connection ends (then every waiter fails)."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop)
                task_status.started()
                await self._read_loop()
                nursery.cancel_scope.cancel()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ValueError) as exc:
            self._close(f"connection lost: {exc!r}")
        finally:
            self._close(self._closed or "connection closed by the server")
            with trio.CancelScope(shield=True):
                await self._stream.aclose()

    def _close(self, why: str) -> None:
        if self._closed is None:
            self._closed = why
        for waiter in self._waiters.values():
            waiter.event.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            if self._out:
                data, self._out = bytes(self._out), bytearray()
                await self._stream.send_all(data)

    def _send(self, data: bytes) -> None:
        self._out += data
        self._wake.set()

    async def _read_loop(self) -> None:
        buf = bytearray()
        while True:
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                return
            buf += chunk
            while True:
                end = buf.find(_CRLF)
                if end < 0:
                    if len(buf) > _MAX_LINE:
                        raise ValueError("protocol line too long")
                    break
                line = bytes(buf[:end])
                op = line[:4].upper()
                if op in (b"MSG ", b"HMSG"):
                    args = line.split()
                    size = int(args[-1])
                    if len(buf) < end + 2 + size + 2:
                        break  # the payload is not all here yet
                    body = bytes(buf[end + 2 : end + 2 + size])
                    del buf[: end + 2 + size + 2]
                    self._deliver(args, body)
                    continue
                del buf[: end + 2]
                if op == b"PING":
                    self._send(b"PONG\r\n")
                elif op.startswith(b"-ERR"):
                    raise ValueError(f"server error: {line.decode(errors='replace')}")

    def _deliver(self, args: list[bytes], body: bytes) -> None:
        subject = args[1].decode()
        waiter = self._waiters.get(subject)
        if waiter is None:
            return  # a late reply to a publisher that timed out
        status, payload = "", body
        headers: dict[str, str] = {}
        if args[0].upper() == b"HMSG":
            hdr_len = int(args[-2])
            status, headers = _parse_headers(body[:hdr_len])
            payload = body[hdr_len:]
        waiter.reply = Reply(status, headers, payload)
        waiter.event.set()


def _parse_headers(block: bytes) -> tuple[str, dict[str, str]]:
    lines = block.decode(errors="replace").split("\r\n")
    first = lines[0].split(None, 2)  # "NATS/1.0 503" or "NATS/1.0"
    status = first[1] if len(first) > 1 else ""
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip()] = value.strip()
    return status, headers


async def connect(url: str, nursery: trio.Nursery, *, timeout: float = 5.0) -> NatsConnection:  # noqa: ASYNC109
    """Connect to ``nats://[user:pass@]host:port`` and start serving in ``nursery``.

    Raises:
        NatsClosed: refused, timed out, or the server said no.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 4222
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(host, port)
            try:
                info = await _handshake(stream, f"{host}:{port}", parts.username, parts.password)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
    except trio.TooSlowError:
        raise NatsClosed(f"NATS at {host}:{port} did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise NatsClosed(f"cannot connect to NATS at {host}:{port}: {exc}") from None
    conn = NatsConnection(stream, info)
    conn._send(b"SUB %s* 1\r\n" % conn._prefix.encode())  # noqa: SLF001 - set up here
    await nursery.start(conn.serve)
    return conn


async def _handshake(
    stream: trio.abc.Stream, where: str, user: str | None, password: str | None
) -> dict[str, object]:
    """INFO, then CONNECT and PING; the server's INFO once it answered PONG."""
    first = await _read_line(stream)
    if not first.startswith(b"INFO "):
        raise NatsClosed(f"not a NATS server at {where}")
    info: dict[str, object] = json.loads(first[5:])
    options: dict[str, object] = {
        "verbose": False, "pedantic": False, "headers": True, "no_responders": True,
        "protocol": 1, "lang": "python-tickwork", "version": _VERSION,
    }  # fmt: skip
    if user:
        options["user"], options["pass"] = user, password or ""
    await stream.send_all(b"CONNECT %s\r\nPING\r\n" % json.dumps(options).encode())
    answer = await _read_line(stream)
    while answer.startswith((b"+OK", b"INFO")):
        answer = await _read_line(stream)
    if not answer.startswith(b"PONG"):
        raise NatsClosed(f"NATS at {where} refused: {answer.decode(errors='replace')[:200]}")
    return info


async def _read_line(stream: trio.abc.ReceiveStream) -> bytes:
    """One line of the handshake, read a byte at a time (it is a few lines, once)."""
    line = bytearray()
    while not line.endswith(_CRLF):
        byte = await stream.receive_some(1)
        if not byte:
            raise NatsClosed("the server closed the connection during the handshake")
        line += byte
        if len(line) > _MAX_LINE:
            raise NatsClosed("the server's handshake line is too long")
    return bytes(line[:-2])
