"""The connections of the webhook task's HTTP client (:mod:`._http`): a plain TCP socket
driven directly with trio's readiness waits, the same over TLS, and the one system task
that keeps the deadlines of the exchanges on plain connections."""

from __future__ import annotations

import math
import select
import socket
from collections.abc import Awaitable, Callable
from typing import Final

import trio

__all__ = [
    "CHUNK",
    "Conn",
    "DeadlinePassed",
    "Deadlines",
    "HttpError",
    "StaleConnection",
    "TlsConn",
]

CHUNK: Final = 65536


class HttpError(Exception):
    """A call that got no complete answer (the connection, the protocol, the deadline)."""


class StaleConnection(HttpError):
    """A reused connection failed before any byte of the answer: try a new one."""


class DeadlinePassed(Exception):
    """The call's deadline passed (request turns it into TimeoutError)."""


class Conn:
    """One keep-alive connection over a plain TCP socket, driven directly (non-blocking,
    with trio's readiness waits). ``answered``: it has carried a complete answer (so a
    failure before the next answer's first byte may be the server's close of an idle
    connection)."""

    __slots__ = ("answered", "deadline", "expired", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.answered = False
        #: when the exchange in progress must end, and whether it passed (see Deadlines)
        self.deadline = math.inf
        self.expired = False

    async def _wait(self, wait: Callable[[socket.socket], Awaitable[None]]) -> None:
        """``wait`` for the socket unless the exchange's deadline passed (then, or when it
        passes during the wait, DeadlinePassed)."""
        if self.expired:
            raise DeadlinePassed
        try:
            await wait(self.sock)
        except trio.ClosedResourceError:
            if self.expired:
                raise DeadlinePassed from None
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
                return sock.recv(CHUNK)
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


class TlsConn(Conn):
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
        return bytes(await self.stream.receive_some(CHUNK))

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


class Deadlines:
    """The deadlines of the exchanges on plain connections, kept by one trio system task.

    At an exchange's deadline the task marks its connection expired and wakes the socket
    wait in progress (``trio.lowlevel.notify_closing``); the exchange then raises
    DeadlinePassed and closes the connection. A ``trio.CancelScope`` per call did the
    same for about a fifth of the client's CPU per call (benchmarks/PROFILE_NOTES.md,
    session 9); connects and TLS exchanges still use one. The task sleeps until the
    soonest deadline in flight, so with calls that end in time it wakes about once per
    timeout, and it ends with the client (or with the trio run).
    """

    def __init__(self) -> None:
        self._flying: set[Conn] = set()
        self._sleep: trio.CancelScope | None = None
        self._token: trio.lowlevel.TrioToken | None = None  # the trio run of the task
        self._task: object = None  # the task's own mark: an old one ends when it sees another

    def add(self, conn: Conn, deadline: float) -> None:
        conn.deadline = deadline
        self._flying.add(conn)
        token = trio.lowlevel.current_trio_token()
        if self._token is not token:  # the first exchange (of this trio run, or since close)
            self._token, self._sleep, self._task = token, None, object()
            trio.lowlevel.spawn_system_task(self._watch, self._task, name="tickwork http deadlines")
        elif self._sleep is not None and deadline < self._sleep.deadline:
            self._sleep.deadline = deadline

    def discard(self, conn: Conn) -> None:
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
