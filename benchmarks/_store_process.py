"""A prototype, for measurement only: the SQLite store's fire path in a process of its own.

``ProcessSQLiteStore`` is a :class:`tickwork.SQLiteStore` whose five fire-path calls
(``insert``, ``claim``, ``start``, ``finish``, ``next_pending_at``) and ``recover`` run in
a child process (``python benchmarks/_store_process.py FD PATH NODE_ID``) that holds the
node lock and its own connection; the trio side talks to it over a socketpair with
length-prefixed msgpack frames, rows as plain tuples both ways. Every other call runs as
before, on the store thread, on a second connection opened as a client (a client shares
the file with a running node; each call is one transaction either way).

No GIL is shared between the trio thread and the SQL: the question this answers is
whether the two sides then run in parallel enough to pay for the (de)serialisation and
the socket round trips (``store_process_ab.py``). They did not (issue 15, session 9 in
``benchmarks/PROFILE_NOTES.md``): so it is not in ``src/``, and its failure handling is
only what the measurement needs (a dead child fails the calls with StoreUnavailable; the
child exits at EOF).

Frames: 4-byte big-endian length, then msgpack ``[op, args]``; the reply ``[0, result]``
or ``[1, transient, message]``. The child answers in order, one call at a time.
"""

from __future__ import annotations

import collections
import os
import socket
import struct
import subprocess
import sys
import time
from typing import Any

import msgpack
import trio

from tickwork._runs import Finish
from tickwork.errors import StoreError, StoreUnavailable
from tickwork.model import NewRow
from tickwork.stores.sqlite._reads import STATES, ClaimedRows, to_instance
from tickwork.stores.sqlite._store import _ROWS_PER_SLICE, SQLiteStore, _due_order

_HEAD = struct.Struct(">I")

#: What the child hands to ``Ops``: named tuples with the attributes ``Ops`` reads, a
#: fraction of the cost of the frozen attrs classes (``Finish``, ``NewRow``) per row.
_Finish = collections.namedtuple(  # noqa: PYI024 - the fields are Finish's, whatever they are
    "_Finish", [a.name for a in Finish.__attrs_attrs__]
)
_NewRow = collections.namedtuple(  # noqa: PYI024 - the fields are NewRow's
    "_NewRow", [a.name for a in NewRow.__attrs_attrs__]
)


def _instance_row(i: Any) -> tuple[Any, ...]:
    """An Instance (a claimed schedule occurrence) back as a claimed row (``COLS``)."""
    return (
        i.id, i.task, i.run_at_us, i.params, int(i.state), i.attempts, i.error, i.owner,
        i.claim_token, i.lease_until_us, i.schedule_id, i.fire_at_us, i.dedup_key,
        i.max_attempts, i.timeout_us, i.created_us, i.updated_us,
    )  # fmt: skip


# -- the child ----------------------------------------------------------------------------


def _serve(fd: int, path: str, node_id: str) -> None:
    import sqlite3

    from tickwork.stores.sqlite._open import connect, store_error
    from tickwork.stores.sqlite._ops import Ops

    sock = socket.socket(fileno=fd)
    rfile = sock.makefile("rb", buffering=1 << 20)

    def send(obj: Any) -> None:
        body = msgpack.packb(obj)
        sock.sendall(_HEAD.pack(len(body)) + body)

    try:
        opened = connect(path, node_id=node_id, read_only=False)
    except Exception as exc:
        send([1, isinstance(exc, StoreUnavailable), f"{type(exc).__name__}: {exc}"])
        return
    ops = Ops(opened.conn)
    send([0, None])
    busy = [0.0, 0.0]  # seconds inside calls: wall, CPU

    def claim(owner: str, due: int, limit: int, now: int, lease: int) -> Any:
        got = ops.claim(owner, due, limit, now, lease)
        return got if isinstance(got, ClaimedRows) else [_instance_row(i) for i in got]

    def finish(owner: str, rows: list[Any], now: int) -> Any:
        fins = [_Finish(r[0], r[1], STATES[r[2]], *r[3:]) for r in rows]
        return ops.finish(owner, fins, now)  # type: ignore[arg-type]

    def insert(rows: list[Any], now: int) -> Any:
        news = [_NewRow(r[0], r[1], r[2], *r[3:8], STATES[r[8]], r[9]) for r in rows]
        return ops.insert(news, now)  # type: ignore[arg-type]

    handlers: dict[str, Any] = {
        "claim": claim,
        "finish": finish,
        "insert": insert,
        "start": lambda owner, items, now: ops.start(owner, [tuple(x) for x in items], now),
        "next_pending_at": ops.next_pending_at,
        "recover": ops.recover,
        # for the benchmark: CPU so far, and wall and CPU inside calls
        "cpu": lambda: (time.process_time(), *busy),
    }

    try:
        while True:
            head = rfile.read(4)
            if len(head) < 4:
                return  # EOF: the parent closed the socket or died
            (size,) = _HEAD.unpack(head)
            op, args = msgpack.unpackb(rfile.read(size), use_list=True)
            if op == "close":
                send([0, None])
                return
            w0, c0 = time.perf_counter(), time.process_time()
            try:
                result = handlers[op](*args)
                busy[0] += time.perf_counter() - w0
                busy[1] += time.process_time() - c0
                send([0, result])
            except sqlite3.Error as exc:
                err = store_error(path, exc)
                send([1, isinstance(err, StoreUnavailable), str(err)])
            except Exception as exc:
                send([1, False, f"{type(exc).__name__}: {exc}"])
    finally:
        opened.close()


# -- the trio side ------------------------------------------------------------------------


class ProcessSQLiteStore(SQLiteStore):
    """SQLiteStore with the fire path in a child process (see the module doc)."""

    def __init__(self, path: str | os.PathLike[str], **kw: Any) -> None:
        super().__init__(path, **kw)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stream: trio.SocketStream | None = None
        self._send_lock = trio.Lock()
        self._waiters: collections.deque[list[Any]] = collections.deque()
        self._buf = bytearray()
        self._reader: trio.lowlevel.Task | None = None
        self._dead: str | None = None
        self.rpc_calls = 0

    async def open(self, *, node_id: str | None = None) -> None:
        if node_id is None:
            raise StoreError("the process prototype is for a node only")
        parent_sock, child_sock = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, __file__, str(child_sock.fileno()), self._path, node_id],
            pass_fds=(child_sock.fileno(),),
        )
        child_sock.close()
        self._stream = trio.SocketStream(trio.socket.from_stdlib_socket(parent_sock))
        trio.lowlevel.spawn_system_task(self._read_loop, name="tickwork-storeproc-reader")
        await self._rpc(None, None)  # the child's hello: opened (or why not)
        await super().open(node_id=None)  # the client connection for everything else

    async def aclose(self) -> None:
        await super().aclose()
        if self._stream is not None and self._dead is None:
            with trio.CancelScope(shield=True):
                await self._rpc("close", [])
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None
        if self._proc is not None:
            await trio.to_thread.run_sync(self._proc.wait)
            self._proc = None

    async def _read_loop(self) -> None:
        assert self._stream is not None
        stream, buf = self._stream, self._buf
        try:
            while True:
                while len(buf) >= 4:
                    (size,) = _HEAD.unpack_from(buf)
                    if len(buf) < 4 + size:
                        break
                    reply = msgpack.unpackb(
                        memoryview(buf)[4 : 4 + size], use_list=False, strict_map_key=False
                    )
                    del buf[: 4 + size]
                    self._deliver(reply)
                try:
                    data = await stream.receive_some(1 << 20)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    break
                buf += data
        finally:
            self._dead = "the store process ended"
            while self._waiters:
                self._deliver((1, True, self._dead))

    def _deliver(self, reply: Any) -> None:
        slot = self._waiters.popleft()
        slot[1] = reply
        if slot[2]:  # parked in _rpc
            trio.lowlevel.reschedule(slot[0])

    async def _rpc(self, op: str | None, args: Any) -> Any:
        """Send one call and wait for its reply; a sent call is never abandoned."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._dead is not None or self._stream is None:
            raise StoreUnavailable(self._dead or "the store process is not running")
        # [task, reply, parked]: the reader fills the reply, and wakes the task if parked
        slot: list[Any] = [trio.lowlevel.current_task(), None, False]
        self.rpc_calls += 1
        if op is None:
            self._waiters.append(slot)
        else:
            body = msgpack.packb([op, args])
            with trio.CancelScope(shield=True):
                async with self._send_lock:
                    self._waiters.append(slot)  # in the order of the frames sent
                    await self._stream.send_all(_HEAD.pack(len(body)) + body)
        if slot[1] is None:
            slot[2] = True
            await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        reply = slot[1]
        if reply[0]:
            raise (StoreUnavailable if reply[1] else StoreError)(reply[2])
        return reply[1]

    # -- the fire path --------------------------------------------------------------------

    async def insert(self, rows: Any, now_us: int) -> list[int]:
        self._check_params(rows)
        packed = [
            (r.task, r.run_at_us, r.params, r.dedup_key, r.max_attempts, r.timeout_us,
             r.schedule_id, r.fire_at_us, int(r.state), r.error)
            for r in rows
        ]  # fmt: skip
        return list(await self._rpc("insert", (packed, now_us)))

    async def claim(
        self, owner: str, due_before_us: int, limit: int, now_us: int, lease_us: int
    ) -> list[Any]:
        got = list(await self._rpc("claim", (owner, due_before_us, limit, now_us, lease_us)))
        got.sort(key=_due_order)
        out: list[Any] = []
        for start in range(0, len(got), _ROWS_PER_SLICE):
            if start:
                await trio.lowlevel.checkpoint()
            out.extend(map(to_instance, got[start : start + _ROWS_PER_SLICE]))
        return out

    async def start(self, owner: str, items: Any, now_us: int) -> list[bool]:
        return list(await self._rpc("start", (owner, items, now_us)))

    async def finish(self, owner: str, finishes: Any, now_us: int) -> list[bool]:
        packed = [
            (f.id, f.claim_token, int(f.state), f.attempts, f.error, f.run_at_us,
             f.started_us, f.finished_us, f.error_type, f.result, f.output)
            for f in finishes
        ]  # fmt: skip
        return list(await self._rpc("finish", (owner, packed, now_us)))

    async def next_pending_at(self) -> int | None:
        return await self._rpc("next_pending_at", ())  # type: ignore[no-any-return]

    async def recover(self, now_us: int) -> int:
        return await self._rpc("recover", (now_us,))  # type: ignore[no-any-return]

    async def child_cpu(self) -> tuple[float, float, float]:
        """The child's process CPU time, and the wall and CPU time inside its calls (s)."""
        return tuple(await self._rpc("cpu", ()))  # type: ignore[return-value]


if __name__ == "__main__":
    _serve(int(sys.argv[1]), sys.argv[2], sys.argv[3])
