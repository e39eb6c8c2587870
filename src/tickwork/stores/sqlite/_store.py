"""The embedded default store: one SQLite file, used by one node (and any number of clients).

Durability: WAL journal with ``synchronous=NORMAL``. A commit survives the process being
killed at any moment; after a power loss or an OS crash the database is intact but the
last commits before it may be missing (``synchronous=FULL`` would fsync every commit, at a
large cost in throughput for group commits of small batches).

Every call runs on one thread of the store's own, one call at a time, as one transaction
(``BEGIN IMMEDIATE`` for writes); a started call completes even if its caller is cancelled.
A node (``open(node_id=...)``) holds an exclusive ``flock`` on the database file itself for
as long as it has the store open, so two nodes never run on one file, whatever path,
symlink, hard link or bind mount each was given; the lock dies with the process. Clients
(the CLI) take no lock and share the file with the running node; readers
(``read_only=True``) never write. See ``_sqlite_lock`` and ``_sqlite_open``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import trio

from tickwork.errors import StoreError
from tickwork.model import DEFAULT_MAX_PARAMS_BYTES, check_max_params_bytes
from tickwork.stores.sqlite import _lock as _sqlite_lock
from tickwork.stores.sqlite import _nodes as _sqlite_nodes
from tickwork.stores.sqlite._open import BUSY_TIMEOUT_MS, Opened, connect, store_error
from tickwork.stores.sqlite._ops import Ops
from tickwork.stores.sqlite._reads import ClaimedRows, to_instance
from tickwork.stores.sqlite._schedules import SQLiteScheduleMethods
from tickwork.stores.sqlite._worker import Worker

if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable, Sequence

    from tickwork.model import AbortResult, Attempt, Finish, Instance, InstanceFilter, NewRow
    from tickwork.state import State
    from tickwork.stores.cluster import NodeInfo
    from tickwork.stores.tokens import Token

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_log = logging.getLogger("tickwork.store")

#: Store calls touching at most this many rows run on the trio thread when the store's
#: thread is idle, instead of being handed to it (0: never, the default). A hand-off costs
#: two thread wake-ups and the GIL going back and forth at every SQLite step, fixed costs
#: in wall time that a busy or slow machine pays in full; but on the loaded machine it was
#: measured on, 256 did not raise the burst rate, lowered the drain's ratio to the trio
#: no-op rate (0.31x vs 0.37x) and raised lateness p50 at 2,000/s, and on an idle machine
#: the thread runs SQLite's C code beside the trio thread. So it stays off until a quiet
#: machine shows a gain (``benchmarks/store_thread_ab.py --variants thread,rows=256``;
#: benchmarks/PROFILE_NOTES.md, session 7).
INLINE_ROWS = 0

#: Claimed rows made Instances per slice, between checkpoints (see ``claim``): ~0.3 ms on
#: a slow machine, so a due run waits at most that long behind a big claim.
_ROWS_PER_SLICE: Final = 100


def _due_order(row: tuple[Any, ...]) -> tuple[int, int]:
    """(run_at, id) of a claimed row: the order ``claim`` returns instances in."""
    return row[2], row[0]


class SQLiteStore(SQLiteScheduleMethods):
    """The Store protocol on a SQLite file (``tickwork.db`` by default).

    Args:
        path: the database file; created with its schema if it does not exist. Its
            directory must exist.
        read_only: open the file read-only, for reading only (the CLI's ``ls``, ``show``,
            ``stats``): nothing is created, migrated or written, a missing or empty file
            is refused, and a database on read-only media can be read. Writes fail.
        max_params_bytes: the largest params ``insert`` and ``add_schedule`` accept
            (default 1 MiB; a node's ``open_scheduler(max_params_bytes=...)`` sets it).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "tickwork.db",
        *,
        read_only: bool = False,
        max_params_bytes: int = DEFAULT_MAX_PARAMS_BYTES,
    ) -> None:
        self.max_params_bytes = check_max_params_bytes(max_params_bytes)
        self._path = os.fspath(path)
        self._read_only = read_only
        self._worker: Worker | None = None
        self._opened: Opened | None = None
        self._node_id: str | None = None
        self._ops: Ops | None = None

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    @property
    def _conn(self) -> sqlite3.Connection | None:
        """The open connection (for tests and tools that inspect it), or None."""
        return None if self._opened is None else self._opened.conn

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    # -- life ---------------------------------------------------------------------------

    async def open(self, *, node_id: str | None = None) -> None:
        """Open (creating or migrating) the database; as a node with ``node_id``.

        Raises:
            NotATickworkDatabase: the file is not a tickwork database.
            SchemaTooNew: it was written by a newer tickwork.
            StoreLocked: ``node_id`` given and another running node uses the file.
            StoreError: the file cannot be opened (missing directory, permissions...).
        """
        if self._worker is not None:
            raise StoreError(f"{self!r} is already open")
        # Taken at once, so a concurrent open() sees the store as open.
        worker = self._worker = Worker(name=f"tickwork-sqlite:{Path(self._path).name}")
        try:
            await worker.call(lambda: self._open_sync(node_id))
        finally:
            if self._ops is None:  # failed (it closed what it opened): end the thread
                self._worker = None
                worker.stop()

    def _open_sync(self, node_id: str | None) -> None:
        opened = connect(self._path, node_id=node_id, read_only=self._read_only)
        self._opened, self._node_id = opened, node_id
        self._ops = Ops(opened.conn)

    def _close_sync(self) -> None:
        opened, self._opened = self._opened, None
        self._ops = None
        if opened is None:
            return
        if self._node_id is not None and self._path != ":memory:":
            try:
                _sqlite_nodes.unregister(opened.conn, self._node_id)
            except sqlite3.Error as exc:  # best effort: the nodes table only informs
                _log.debug("could not mark node %s stopped: %s", self._node_id, exc)
        # The connection first, then the node lock: the lock guards the file until no
        # write of this node can follow.
        opened.close()

    async def aclose(self) -> None:
        """Stop the store's thread, close the connection and drop the node lock. Idempotent."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        try:
            with trio.CancelScope(shield=True):  # a cancelled close still closes
                await worker.call(self._close_sync)
        finally:
            worker.stop()

    async def _call(self, fn: Callable[[Ops], T], rows: int | None = None) -> T:
        """Run ``fn`` on the connection: on the store's thread, or on the trio thread
        when it touches at most :data:`INLINE_ROWS` rows (``rows``) and the thread is
        idle. A call on the trio thread never waits for another connection's lock: if
        the database is busy it goes to the thread, which waits (``busy_timeout``)."""
        worker, ops = self._worker, self._ops
        if worker is None or ops is None:
            raise StoreError(f"{self!r} is not open; call `await store.open()` first")

        def run() -> T:
            try:
                return fn(ops)
            except sqlite3.Error as exc:
                raise store_error(self._path, exc) from exc

        if rows is not None and INLINE_ROWS > 0 and rows <= INLINE_ROWS and worker.idle:
            busy = False

            def here() -> T | None:
                nonlocal busy
                conn = ops.conn
                conn.execute("PRAGMA busy_timeout = 0")
                try:
                    return fn(ops)
                except sqlite3.OperationalError as exc:
                    if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                        raise store_error(self._path, exc) from exc
                    busy = True  # nothing was written: a transaction is all or nothing
                    return None
                except sqlite3.Error as exc:
                    raise store_error(self._path, exc) from exc
                finally:
                    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

            got = await worker.run_here(here)
            if not busy:
                return got  # type: ignore[return-value]  # None only when busy
        return await worker.call(run)

    # -- the protocol -------------------------------------------------------------------

    async def insert(self, rows: Sequence[NewRow], now_us: int) -> list[int]:
        """Store new instances; see :meth:`tickwork.stores.base.Store.insert`."""
        self._check_params(rows)
        return await self._call(lambda o: o.insert(rows, now_us), len(rows))

    async def claim(
        self, owner: str, due_before_us: int, limit: int, now_us: int, lease_us: int
    ) -> list[Instance]:
        """Claim due instances; see :meth:`tickwork.stores.base.Store.claim`."""
        got = await self._call(
            lambda o: o.claim(owner, due_before_us, limit, now_us, lease_us), limit
        )
        if not isinstance(got, ClaimedRows):
            return got
        got.sort(key=_due_order)
        out: list[Instance] = []
        for start in range(0, len(got), _ROWS_PER_SLICE):
            if start:
                await trio.lowlevel.checkpoint()  # due instances are not kept waiting
            out.extend(map(to_instance, got[start : start + _ROWS_PER_SLICE]))
        return out

    async def next_pending_at(self) -> int | None:
        """The earliest ``run_at_us`` of a PENDING row, or None."""
        return await self._call(lambda o: o.next_pending_at(), 1)

    async def start(self, owner: str, items: Sequence[tuple[int, int]], now_us: int) -> list[bool]:
        """Make RUNNING durable, fenced; see :meth:`tickwork.stores.base.Store.start`."""
        return await self._call(lambda o: o.start(owner, items, now_us), len(items))

    async def finish(self, owner: str, finishes: Sequence[Finish], now_us: int) -> list[bool]:
        """Write outcomes, fenced; see :meth:`tickwork.stores.base.Store.finish`."""
        return await self._call(lambda o: o.finish(owner, finishes, now_us), len(finishes))

    async def release(self, owner: str, now_us: int, ids: Sequence[int] | None = None) -> int:
        """Give back held rows; see :meth:`tickwork.stores.base.Store.release`."""
        return await self._call(
            lambda o: o.release(owner, now_us, ids), None if ids is None else len(ids)
        )

    async def renew(self, owner: str, now_us: int, lease_us: int) -> int:
        """Extend the leases of ``owner``; returns how many rows it holds."""
        return await self._call(lambda o: o.renew(owner, now_us, lease_us))

    async def recover(self, now_us: int) -> int:
        """Release every claim left in the file (the node lock proves their node is gone).

        Raises:
            StoreError: the store was opened without ``node_id``: without the node lock a
                running node's claims would be taken from under it.
        """
        no_lock = self._opened is None or self._opened.lock is None
        if self._worker is not None and no_lock and self._path != ":memory:":
            raise StoreError(
                f"recover() needs the node lock on {self._path}: open the store with "
                "open(node_id=...); a client must not release a running node's claims"
            )
        return await self._call(lambda o: o.recover(now_us))

    async def request_abort(self, instance_id: int, now_us: int) -> AbortResult:
        """Abort an instance; see :meth:`tickwork.stores.base.Store.request_abort`."""
        return await self._call(lambda o: o.request_abort(instance_id, now_us))

    async def abort_requests(self, owner: str) -> builtins.list[int]:
        """Ids held by ``owner`` with an abort requested."""
        return await self._call(lambda o: o.abort_requests(owner), 1)

    async def get(self, instance_id: int) -> Instance | None:
        """One instance, or None."""
        return await self._call(lambda o: o.get(instance_id), 1)

    async def list(
        self,
        *,
        state: State | None = None,
        task: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
        where: InstanceFilter | None = None,
    ) -> builtins.list[Instance]:
        """Instances newest first (id descending), filtered; ``before_id`` pages."""
        # on the thread: a filter may scan many rows whatever the limit
        return await self._call(lambda o: o.page(state, task, limit, before_id, where))

    async def count(self, *, state: State | None = None, task: str | None = None) -> int:
        """How many stored instances match (from maintained counts: no row scan)."""
        return await self._call(lambda o: o.count(state, task), 1)

    async def count_by_state(self) -> dict[State, int]:
        """Stored instances per state, every state present."""
        return await self._call(lambda o: o.count_by_state(), 1)

    async def history(self, instance_id: int) -> builtins.list[Attempt]:
        """Recorded attempts of one instance, oldest first."""
        return await self._call(lambda o: o.history(instance_id), 1)

    async def change_token(self) -> int:
        """``PRAGMA data_version``: changes when another connection commits."""
        return await self._call(lambda o: o.change_token(), 1)

    async def record_node(
        self, node_id: str, *, tasks: Sequence[str], max_params_bytes: int
    ) -> None:
        """Record what ``node_id`` runs (see :class:`~tickwork.stores.cluster.NodeRegistry`)."""
        await self._call(lambda o: _sqlite_nodes.record(o.conn, node_id, tasks, max_params_bytes))

    async def nodes(self) -> builtins.list[NodeInfo]:
        """The nodes that ran on the file, newest first; alive: holds the node lock now."""
        opened = self._opened
        me = opened is not None and (opened.lock is not None or self._path == ":memory:")

        def read(o: Ops) -> builtins.list[NodeInfo]:
            locked = me or _sqlite_lock.probe(self._path)
            return _sqlite_nodes.nodes(o.conn, locked=locked, held=o.held())

        return await self._call(read)

    # -- API tokens (tickwork.stores.tokens.TokenStore) --------------------------------------

    async def add_token(self, token: Token, token_digest: str) -> None:
        await self._call(lambda o: o.add_token(token, token_digest))

    async def tokens(self) -> builtins.list[Token]:
        return await self._call(lambda o: o.tokens())

    async def token_by_digest(self, token_digest: str) -> Token | None:
        return await self._call(lambda o: o.token_by_digest(token_digest))

    async def remove_token(self, token_id: str) -> bool:
        return await self._call(lambda o: o.remove_token(token_id))

    async def prune(self, before_us: int, limit: int) -> int:
        """Retention: delete a bounded batch of old rows; see
        :meth:`tickwork.stores.base.Store.prune`."""
        return await self._call(lambda o: o.prune(before_us, limit))
