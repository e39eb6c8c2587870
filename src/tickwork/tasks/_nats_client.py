"""A small trio client of the NATS protocol: publish with headers, wait for replies.

What the nats task needs and nothing more: CONNECT (with headers and no-responders), one
wildcard reply subscription, ``HPUB`` with a reply subject, and the ``MSG``/``HMSG``
replies matched to their publishers. Publishes are written by one writer task, which
sends everything queued since its last write in one ``send_all``: concurrent hand-offs
are pipelined on the connection, and their replies come back on the one subscription.
The protocol is text lines plus sized payloads
(https://docs.nats.io/reference/reference-protocols/nats-protocol).

A publisher costs its task one park: it queues its frame, registers itself under its
reply subject and sleeps until the reader task reschedules it with the reply (or the
connection's end). Its timeout is not a cancel scope of its own (entering and leaving one
per publish was about a fifth of the task's CPU under cProfile): publishers with the same
timeout are queued in the order they sent, so their deadlines are in order, and one
reaper task sleeps until the earliest and fails whoever is still waiting then.
"""

from __future__ import annotations

import json
import math
import secrets
from collections import deque
from collections.abc import Mapping
from typing import Final, NamedTuple
from urllib.parse import urlsplit

import outcome
import trio

__all__ = [
    "NatsClosed",
    "NatsConnection",
    "NatsTooLarge",
    "Reply",
    "connect",
    "header_block",
]

_CRLF: Final = b"\r\n"
_MAX_LINE: Final = 64 * 1024
_VERSION: Final = "1"
_NO_HEADERS: Final[Mapping[str, str]] = {}
#: the server's limit when its INFO does not say (the server's own default)
DEFAULT_MAX_PAYLOAD: Final = 1024 * 1024


class NatsClosed(Exception):
    """The connection ended (or could not be made); what was waiting for a reply failed."""


class NatsTooLarge(Exception):
    """A message over the server's ``max_payload``: the server would close the connection
    for it, failing every publish in flight, so it is refused before it is written."""


class Reply(NamedTuple):
    """A reply: its status (``"503"`` for no responders, else ``""``), headers, payload."""

    status: str
    headers: Mapping[str, str]
    payload: bytes


def header_block(headers: Mapping[str, str]) -> bytes:
    """``NATS/1.0`` and the headers, without the blank line that ends the block (callers
    add their last header and ``\\r\\n\\r\\n``)."""
    return ("NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())).encode()


class _Waiter:
    """A publisher waiting for its reply: ``task`` is None once it was answered."""

    __slots__ = ("deadline", "key", "task")

    def __init__(self, task: trio.lowlevel.Task, key: bytes, deadline: float) -> None:
        self.task: trio.lowlevel.Task | None = task
        self.key = key
        self.deadline = deadline


class NatsConnection:
    """One connection; build it with :func:`connect` inside a nursery."""

    def __init__(self, stream: trio.abc.Stream, info: Mapping[str, object]) -> None:
        self._stream = stream
        self.info = info
        size = info.get("max_payload")
        self.max_payload = size if isinstance(size, int) and size > 0 else DEFAULT_MAX_PAYLOAD
        self._prefix = f"_INBOX.tw{secrets.token_hex(8)}.".encode()
        self._next = 0
        self._waiters: dict[bytes, _Waiter] = {}
        #: per timeout: its publishers in the order they sent (so in deadline order)
        self._timeouts: dict[float, deque[_Waiter]] = {}
        self._reap_at = math.inf
        self._reap_scope: trio.CancelScope | None = None
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
        """Publish with a reply subject and wait for the reply (see :meth:`publish`)."""
        if headers:
            block = header_block(headers) + _CRLF
            return await self.publish(subject.encode(), block, payload, timeout)
        return await self.publish(subject.encode(), b"", payload, timeout)

    async def publish(
        self,
        subject: bytes,
        head: bytes,
        payload: bytes,
        timeout: float,  # noqa: ASYNC109
    ) -> Reply:
        """Publish ``payload`` to ``subject`` with a reply subject; return the reply.

        ``head`` is the complete header block (``NATS/1.0\\r\\n...\\r\\n\\r\\n``, see
        :func:`header_block`), or empty for a message without headers.

        Raises:
            NatsClosed: the connection ended before the reply.
            NatsTooLarge: the message is over the server's ``max_payload``; not sent.
            trio.TooSlowError: no reply within ``timeout`` seconds.
        """
        if self._closed is not None:
            raise NatsClosed(self._closed)
        size = len(head) + len(payload)
        if size > self.max_payload:
            raise NatsTooLarge(
                f"the message is {size:,} bytes, over the server's max_payload "
                f"({self.max_payload:,} bytes)"
            )
        self._next += 1
        key = b"%s%d" % (self._prefix, self._next)
        if head:
            self._out += b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
                subject, key, len(head), size, head, payload
            )  # fmt: skip
        else:
            self._out += b"PUB %s %s %d\r\n%s\r\n" % (subject, key, size, payload)
        self._wake.set()
        deadline = trio.current_time() + timeout
        waiter = self._waiters[key] = _Waiter(trio.lowlevel.current_task(), key, deadline)
        queue = self._timeouts.get(timeout)
        if queue is None:
            queue = self._timeouts[timeout] = deque()
        else:
            while queue and queue[0].task is None:
                queue.popleft()  # answered: keep the queue as short as what is in flight
        queue.append(waiter)
        if deadline < self._reap_at:
            self._reap_at = deadline
            if self._reap_scope is not None:
                self._reap_scope.deadline = deadline

        def abort(_: object) -> trio.lowlevel.Abort:
            # cancelled (the run was aborted or timed out): a late reply is dropped
            if self._waiters.get(key) is waiter:
                del self._waiters[key]
            waiter.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        reply: Reply = await trio.lowlevel.wait_task_rescheduled(abort)
        return reply

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read and write until the connection ends (then every waiter fails)."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop)
                nursery.start_soon(self._reap_loop)
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
        waiters, self._waiters = self._waiters, {}
        self._timeouts.clear()
        for waiter in waiters.values():
            self._answer(waiter, outcome.Error(NatsClosed(self._closed)))

    @staticmethod
    def _answer(waiter: _Waiter, result: outcome.Outcome[Reply]) -> None:
        task, waiter.task = waiter.task, None
        if task is not None:
            trio.lowlevel.reschedule(task, result)

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            if self._out:
                data, self._out = bytes(self._out), bytearray()
                await self._stream.send_all(data)

    async def _reap_loop(self) -> None:
        """Fail the publishers whose deadline passed (see the module docstring)."""
        while True:
            with trio.CancelScope(deadline=self._reap_at) as scope:
                self._reap_scope = scope
                await trio.sleep_forever()
            self._reap_scope = None
            now = trio.current_time()
            self._reap_at = math.inf
            for timeout, queue in list(self._timeouts.items()):
                while queue and (queue[0].task is None or queue[0].deadline <= now):
                    waiter = queue.popleft()
                    if waiter.task is not None:
                        del self._waiters[waiter.key]
                        self._answer(waiter, outcome.Error(trio.TooSlowError()))
                if queue:
                    self._reap_at = min(self._reap_at, queue[0].deadline)
                else:
                    del self._timeouts[timeout]

    def _send(self, data: bytes) -> None:
        self._out += data
        self._wake.set()

    async def _read_loop(self) -> None:
        buf = b""
        while True:
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                return
            buf = buf + chunk if buf else bytes(chunk)  # bytes(b) is b, not a copy
            pos = self._parse(buf)
            buf = buf[pos:]
            if len(buf) > _MAX_LINE and buf.find(_CRLF) < 0:
                raise ValueError("protocol line too long")

    def _parse(self, buf: bytes) -> int:
        """Handle every complete line (and message) in ``buf``; where the rest starts."""
        pos = 0
        while (end := buf.find(_CRLF, pos)) >= 0:
            op = buf[pos : pos + 4].upper()
            if op == b"MSG " or op == b"HMSG":  # noqa: PLR1714 - two bytes compares
                args = buf[pos:end].split()
                size = int(args[-1])
                stop = end + 2 + size
                if len(buf) < stop + 2:
                    break  # the payload is not all here yet
                self._deliver(args, buf[end + 2 : stop])
                pos = stop + 2
                continue
            if op == b"PING":
                self._send(b"PONG\r\n")
            elif op.startswith(b"-ERR"):
                raise ValueError(f"server error: {buf[pos:end].decode(errors='replace')}")
            pos = end + 2
        return pos

    def _deliver(self, args: list[bytes], body: bytes) -> None:
        waiter = self._waiters.pop(args[1], None)
        if waiter is None:
            return  # a late reply to a publisher that timed out or was cancelled
        if args[0].upper() == b"HMSG":
            hdr_len = int(args[-2])
            status, headers = _parse_headers(body[:hdr_len])
            reply = Reply(status, headers, body[hdr_len:])
        else:
            reply = Reply("", _NO_HEADERS, body)
        self._answer(waiter, outcome.Value(reply))


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
    conn._send(b"SUB %s* 1\r\n" % conn._prefix)  # noqa: SLF001 - set up here
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
