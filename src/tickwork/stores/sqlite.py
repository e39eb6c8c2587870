"""The embedded default store: one SQLite file, used by one node (and any number of clients).

Durability: WAL journal with ``synchronous=NORMAL``. A commit survives the process being
killed at any moment; after a power loss or an OS crash the database is intact but the
last commits before it may be missing (``synchronous=FULL`` would fsync every commit, at a
large cost in throughput for group commits of small batches).

Every call runs on one thread of the store's own, one call at a time, as one transaction
(``BEGIN IMMEDIATE`` for writes); a started call completes even if its caller is cancelled.
A node (``open(node_id=...)``) holds an exclusive ``flock`` on ``<path>.lock`` for as long
as it has the store open, so two nodes never run on one file; the lock dies with the
process. Clients (the CLI) take no lock and share the file with the running node.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import trio

from tickwork.errors import StoreError, StoreLocked, StoreUnavailable, TickworkError
from tickwork.stores._sqlite_ops import Ops
from tickwork.stores._sqlite_reads import ClaimedRows, to_instance
from tickwork.stores._sqlite_schedules import SQLiteScheduleMethods
from tickwork.stores._sqlite_schema import prepare
from tickwork.stores._sqlite_worker import Worker

if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable, Sequence

    from tickwork.model import AbortResult, Attempt, Finish, Instance, InstanceFilter, NewRow
    from tickwork.state import State
    from tickwork.stores.tokens import Token

__all__ = ["SQLiteStore"]

T = TypeVar("T")

#: Claimed rows made Instances per slice, between checkpoints (see ``claim``): ~2 ms.
_ROWS_PER_SLICE: Final = 500


def _due_order(row: tuple[Any, ...]) -> tuple[int, int]:
    """(run_at, id) of a claimed row: the order ``claim`` returns instances in."""
    return row[2], row[0]


#: How long a statement waits for another connection's write lock before failing.
BUSY_TIMEOUT_MS: Final = 10_000
#: Pages the WAL may grow to before a checkpoint copies them back (4 KiB each): batches that
#: touch pages all over the file (claims and finishes in due order, not id order) coalesce
#: in the WAL instead of being checkpointed after every commit (about +25% claim+finish).
WAL_AUTOCHECKPOINT_PAGES: Final = 10_000
#: Page cache per connection (KiB, as a negative cache_size): keeps the hot part of the
#: pending index in memory when millions of rows are stored. Claims read that index from
#: its front only, so 16 MiB serves them; 64 MiB drained 1,000,000 due instances no faster
#: and was most of the node's RSS growth (benchmarks/PROFILE_NOTES.md, S6).
CACHE_KIB: Final = 16 * 1024


#: SQLite result codes of failures that may pass (the node retries them with backoff):
#: another connection holds the lock too long, I/O errors, a full disk, no memory.
_TRANSIENT: Final = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_IOERR",
    "SQLITE_FULL",
    "SQLITE_CANTOPEN",
    "SQLITE_PROTOCOL",
    "SQLITE_NOMEM",
)


def _store_error(path: str, exc: sqlite3.Error, what: str = "SQLite error on") -> StoreError:
    """The library's exception for a sqlite3 one: StoreUnavailable when it may pass."""
    name = getattr(exc, "sqlite_errorname", "")
    kind = StoreUnavailable if name.startswith(_TRANSIENT) else StoreError
    return kind(f"{what} {path}: {exc} ({name or type(exc).__name__})")


class SQLiteStore(SQLiteScheduleMethods):
    """The Store protocol on a SQLite file (``tickwork.db`` by default).

    Args:
        path: the database file; created with its schema if it does not exist. Its
            directory must exist.
    """

    def __init__(self, path: str | os.PathLike[str] = "tickwork.db") -> None:
        self._path = os.fspath(path)
        self._worker: Worker | None = None
        self._conn: sqlite3.Connection | None = None
        self._ops: Ops | None = None
        self._lock_fd: int | None = None

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

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
        try:
            self._connect(node_id)
        except BaseException:
            self._close_sync()
            raise

    def _connect(self, node_id: str | None) -> None:
        memory = self._path == ":memory:"
        if not memory:
            parent = Path(self._path).resolve().parent
            if not parent.is_dir():
                raise StoreError(
                    f"cannot open SQLite database {self._path}: directory {parent} does not "
                    "exist; create it first or choose another --db path"
                )
        if node_id is not None and not memory:
            self._lock(node_id)
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1e3)
        except sqlite3.Error as exc:
            raise _store_error(self._path, exc, "cannot open SQLite database") from exc
        self._conn = conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            prepare(conn, self._path)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
            conn.execute("PRAGMA temp_store = MEMORY")
        except TickworkError:
            raise
        except sqlite3.Error as exc:
            raise _store_error(self._path, exc, "cannot open SQLite database") from exc
        self._ops = Ops(conn)

    def _lock(self, node_id: str) -> None:
        """Take the node lock on ``<path>.lock``, or raise StoreLocked naming the holder."""
        lock_path = self._path + ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create the node lock file {lock_path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if not isinstance(exc, BlockingIOError):  # e.g. no flock on this file system
                os.close(fd)
                raise StoreError(f"cannot lock {lock_path}: {exc}") from exc
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            os.close(fd)
            pid = holder[0] if holder else "unknown"
            node = f", node {holder[1]}" if len(holder) > 1 else ""
            raise StoreLocked(
                f"database {self._path} is already used by a running tickwork node "
                f"(pid {pid}{node}); stop it or use another --db"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {node_id}\n".encode(), 0)
        self._lock_fd = fd

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._ops = None
        if self._lock_fd is not None:
            # Closing the descriptor drops the flock; the file stays (deleting it would
            # race with a node that is opening it right now).
            os.close(self._lock_fd)
            self._lock_fd = None

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

    async def _call(self, fn: Callable[[Ops], T]) -> T:
        worker, ops = self._worker, self._ops
        if worker is None or ops is None:
            raise StoreError(f"{self!r} is not open; call `await store.open()` first")

        def run() -> T:
            try:
                return fn(ops)
            except sqlite3.Error as exc:
                raise _store_error(self._path, exc) from exc

        return await worker.call(run)

    # -- the protocol -------------------------------------------------------------------

    async def insert(self, rows: Sequence[NewRow], now_us: int) -> list[int]:
        """Store new instances; see :meth:`tickwork.stores.base.Store.insert`."""
        return await self._call(lambda o: o.insert(rows, now_us))

    async def claim(
        self, owner: str, due_before_us: int, limit: int, now_us: int, lease_us: int
    ) -> list[Instance]:
        """Claim due instances; see :meth:`tickwork.stores.base.Store.claim`."""
        got = await self._call(lambda o: o.claim(owner, due_before_us, limit, now_us, lease_us))
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
        return await self._call(lambda o: o.next_pending_at())

    async def start(self, owner: str, items: Sequence[tuple[int, int]], now_us: int) -> list[bool]:
        """Make RUNNING durable, fenced; see :meth:`tickwork.stores.base.Store.start`."""
        return await self._call(lambda o: o.start(owner, items, now_us))

    async def finish(self, owner: str, finishes: Sequence[Finish], now_us: int) -> list[bool]:
        """Write outcomes, fenced; see :meth:`tickwork.stores.base.Store.finish`."""
        return await self._call(lambda o: o.finish(owner, finishes, now_us))

    async def release(self, owner: str, now_us: int, ids: Sequence[int] | None = None) -> int:
        """Give back held rows; see :meth:`tickwork.stores.base.Store.release`."""
        return await self._call(lambda o: o.release(owner, now_us, ids))

    async def renew(self, owner: str, now_us: int, lease_us: int) -> int:
        """Extend the leases of ``owner``; returns how many rows it holds."""
        return await self._call(lambda o: o.renew(owner, now_us, lease_us))

    async def recover(self, now_us: int) -> int:
        """Release every claim left in the file (the node lock proves their node is gone).

        Raises:
            StoreError: the store was opened without ``node_id``: without the node lock a
                running node's claims would be taken from under it.
        """
        if self._worker is not None and self._lock_fd is None and self._path != ":memory:":
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
        return await self._call(lambda o: o.abort_requests(owner))

    async def get(self, instance_id: int) -> Instance | None:
        """One instance, or None."""
        return await self._call(lambda o: o.get(instance_id))

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
        return await self._call(lambda o: o.page(state, task, limit, before_id, where))

    async def count(self, *, state: State | None = None, task: str | None = None) -> int:
        """How many stored instances match (from maintained counts: no row scan)."""
        return await self._call(lambda o: o.count(state, task))

    async def count_by_state(self) -> dict[State, int]:
        """Stored instances per state, every state present."""
        return await self._call(lambda o: o.count_by_state())

    async def history(self, instance_id: int) -> builtins.list[Attempt]:
        """Recorded attempts of one instance, oldest first."""
        return await self._call(lambda o: o.history(instance_id))

    async def change_token(self) -> int:
        """``PRAGMA data_version``: changes when another connection commits."""
        return await self._call(lambda o: o.change_token())

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
