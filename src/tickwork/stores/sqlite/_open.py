"""Opening a SQLite database file as a node, a client, or a read-only reader.

* A **node** takes the node lock on the file (:mod:`tickwork.stores.sqlite._lock`),
  creates or migrates the schema and records itself in the nodes table.
* A **client** (``add``, ``abort``) shares the file with the running node; it may create
  a new database or migrate an old one.
* A **reader** (``ls``, ``show``, ``stats``) opens the file read-only and never writes:
  a missing, empty or foreign file, or one of an older schema, is refused, not created
  or converted. A database on a read-only file system is read as it is (``immutable``
  when it has no WAL left to read, which is when SQLite cannot open it otherwise).

Writers (a node, a client) refuse a read-only file or directory with a clear error
instead of SQLite's "unable to open database file".
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Final
from urllib.parse import quote

import attrs

from tickwork.errors import (
    NotATickworkDatabase,
    StoreError,
    StoreLocked,
    StoreUnavailable,
    TickworkError,
)
from tickwork.stores.sqlite import _lock as _sqlite_lock
from tickwork.stores.sqlite import _nodes as _sqlite_nodes
from tickwork.stores.sqlite._lock import FileKey, Held, NodeLock
from tickwork.stores.sqlite._schema import check_readable, prepare

__all__ = [
    "BUSY_TIMEOUT_MS",
    "CACHE_KIB",
    "WAL_AUTOCHECKPOINT_PAGES",
    "Opened",
    "connect",
    "store_error",
]

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


@attrs.define
class Opened:
    """An open connection, the file it is counted on, and the node lock if a node."""

    conn: sqlite3.Connection
    key: FileKey | None = None
    lock: NodeLock | None = None

    def close(self) -> None:
        """Close the connection, then drop the lock and the connection's count."""
        self.conn.close()
        if self.lock is not None:
            self.lock.release()
        if self.key is not None:
            _sqlite_lock.connection_closed(self.key)
            self.key = None


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


def store_error(path: str, exc: sqlite3.Error, what: str = "SQLite error on") -> StoreError:
    """The library's exception for a sqlite3 one: StoreUnavailable when it may pass."""
    name = getattr(exc, "sqlite_errorname", "")
    kind = StoreUnavailable if name.startswith(_TRANSIENT) else StoreError
    return kind(f"{what} {path}: {exc} ({name or type(exc).__name__})")


def _error(path: str, exc: sqlite3.Error) -> StoreError:
    return store_error(path, exc, "cannot open SQLite database")


def connect(path: str, *, node_id: str | None, read_only: bool) -> Opened:
    """Open ``path`` as a node (``node_id``), a reader (``read_only``) or a client.

    Raises:
        StoreLocked, NotATickworkDatabase, SchemaTooNew, StoreError: see the module doc.
    """
    if path == ":memory:":
        if read_only:
            raise StoreError("an in-memory SQLite database cannot be opened read-only")
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        _set_up(conn, path, writable=True)
        return Opened(conn)
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise StoreError(
            f"cannot open SQLite database {path}: directory {parent} does not "
            "exist; create it first or choose another --db path"
        )
    if read_only:
        return _open_reader(path, parent)
    _check_writable(path, parent, node=node_id is not None)
    lock = _lock(path) if node_id is not None else None
    try:
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1e3
        )
    except sqlite3.Error as exc:
        if lock is not None:
            lock.release()
        raise _error(path, exc) from exc
    opened = Opened(conn, lock=lock)
    try:
        opened.key = _count(path)
        _set_up(conn, path, writable=True)
        if node_id is not None:
            _sqlite_nodes.register(conn, node_id)
    except BaseException:
        opened.close()
        raise
    return opened


def _count(path: str) -> FileKey:
    st = Path(path).stat()
    key = st.st_dev, st.st_ino
    _sqlite_lock.connection_opened(key)
    return key


def _set_up(conn: sqlite3.Connection, path: str, *, writable: bool) -> None:
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not writable:
            check_readable(conn, path)
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            return
        prepare(conn, path)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute("PRAGMA temp_store = MEMORY")
    except TickworkError:
        raise
    except sqlite3.Error as exc:
        raise _error(path, exc) from exc


def _check_writable(path: str, parent: Path, *, node: bool) -> None:
    """Refuse a read-only file or directory before SQLite reports it obscurely."""
    who = "a node" if node else "this command"
    exists = Path(path).exists()
    if exists and not os.access(path, os.W_OK):
        raise StoreError(
            f"database {path} is read-only (a read-only file or file system): {who} "
            "writes to it. Reading commands (ls, show, stats) work on it as it is."
        )
    if not os.access(parent, os.W_OK):
        what = "its directory" if exists else "the directory to create it in"
        raise StoreError(
            f"database {path}: {what}, {parent}, is read-only: {who} writes to the "
            "database and its -wal and -shm files next to it."
        )


def _lock(path: str) -> NodeLock:
    try:
        return NodeLock.acquire(path)
    except Held:
        pid, node = _holder(path)
        named = f", node {node}" if node else ""
        raise StoreLocked(
            f"database {path} is already used by a running tickwork node "
            f"(pid {pid or 'unknown'}{named}); stop it or use another --db"
        ) from None
    except OSError as exc:  # e.g. no flock on this file system
        raise StoreError(f"cannot take the node lock on {path}: {exc}") from exc


def _holder(path: str) -> tuple[int | None, str | None]:
    """Best effort: who holds the file (read from the nodes table, read-only)."""
    try:
        opened = _open_reader(path, Path(path).resolve().parent)
    except TickworkError:
        return None, None
    try:
        return _sqlite_nodes.holder(opened.conn)
    except sqlite3.Error:
        return None, None  # a node of an older tickwork: no nodes table
    finally:
        opened.close()


def _open_reader(path: str, parent: Path) -> Opened:
    if not Path(path).exists():
        raise StoreError(f"no tickwork database at {path}")
    if Path(path).stat().st_size == 0:
        raise NotATickworkDatabase(
            f"{path} is an empty file, not a tickwork database; reading commands do not "
            "create one (`tickwork run` or `tickwork add` does)"
        )
    uri = "file:" + quote(str(Path(path).absolute()))
    conn = sqlite3.connect(
        f"{uri}?mode=ro",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
        timeout=BUSY_TIMEOUT_MS / 1e3,
    )
    try:
        conn.execute("PRAGMA schema_version").fetchone()  # SQLite opens the file lazily
    except sqlite3.OperationalError as exc:
        conn.close()
        wal = Path(f"{path}-wal")
        unread_wal = wal.exists() and wal.stat().st_size > 0
        if exc.sqlite_errorname != "SQLITE_CANTOPEN" or unread_wal or os.access(parent, os.W_OK):
            raise _error(path, exc) from exc
        # Read-only media with no WAL to read (SQLite cannot create the -shm file a WAL
        # reader needs): the file alone is the whole database, and nothing can change it.
        conn = sqlite3.connect(
            f"{uri}?immutable=1", uri=True, isolation_level=None, check_same_thread=False
        )
    except sqlite3.DatabaseError:
        pass  # not a database at all: check_readable says so, in tickwork's words
    opened = Opened(conn)
    try:
        opened.key = _count(path)
        _set_up(conn, path, writable=False)
    except BaseException:
        opened.close()
        raise
    return opened
