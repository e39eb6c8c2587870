"""The SQLite store's node lock: an exclusive ``flock`` on the database file itself.

Why the file and not a name of it
    A lock on ``<path>.lock`` is a lock on one *name*: a symlink, a hard link or a bind
    mount of the database is another name, and a second node started through it ran every
    job a second time (through a hard link or a bind mount, SQLite also names the WAL
    after the path, so the two nodes wrote two WAL files for one database and corrupted
    it). ``flock`` locks the open file, that is the inode, whatever path reached it, and
    the kernel drops it when the process dies (kill -9 included). Clients take no lock.

    ``flock`` locks are separate from the POSIX (``fcntl``) byte-range locks SQLite takes
    on the same file, so the two never interfere (on a local file system; SQLite's WAL
    mode needs one anyway).

Why descriptors are parked, not closed
    Closing *any* descriptor of a file drops every POSIX lock the process holds on it,
    whichever descriptor took them. A SQLite connection in WAL mode holds a shared POSIX
    lock on the database file for as long as it is open; losing it lets another process
    believe it is the last user, checkpoint and delete the WAL under this one, and this
    process's next commits go to the deleted file. So a descriptor this module opened is
    closed only when no connection of this process (that tickwork knows of) is open on
    the file; until then it is kept, unlocked, for the next lock or probe of that file.
    At most a few descriptors per database file that is in use, none once all its
    connections are closed.

The state here is per process, as POSIX locks are.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from typing import Final

__all__ = ["FileKey", "Held", "NodeLock", "connection_closed", "connection_opened", "probe"]

#: (st_dev, st_ino): one file, whatever its names.
FileKey = tuple[int, int]

#: A node start retries a refused lock for this long: a client's probe (:func:`probe`)
#: holds a shared lock for microseconds, and must not make a starting node give up.
_RETRY_FOR_S: Final = 0.25
_RETRY_EVERY_S: Final = 0.01

_mutex = threading.Lock()
_connections: dict[FileKey, int] = {}  # open tickwork connections per file
_parked: dict[FileKey, list[int]] = {}  # unlocked descriptors kept while connections live


class Held(Exception):
    """Another open file (a running node, maybe in this process) holds the lock."""


def _key(fd: int) -> FileKey:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _take(path: str, *, create: bool) -> tuple[int, FileKey]:
    """A descriptor of ``path`` no one in this process has locked: parked, or new."""
    try:
        st = os.stat(path)  # noqa: PTH116 - paths are str here, as SQLite takes them
    except FileNotFoundError:
        if not create:
            raise
    else:
        key = st.st_dev, st.st_ino
        with _mutex:
            spare = _parked.get(key)
            if spare:
                fd = spare.pop()
                if not spare:
                    del _parked[key]
                return fd, key
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o644)
    return fd, _key(fd)


def _give_back(fd: int, key: FileKey) -> None:
    """Unlock ``fd`` and close it, or park it while a connection to its file is open."""
    fcntl.flock(fd, fcntl.LOCK_UN)
    with _mutex:
        if _connections.get(key):
            _parked.setdefault(key, []).append(fd)
            return
        spare = _parked.pop(key, [])
    for other in [fd, *spare]:
        os.close(other)


class NodeLock:
    """The exclusive lock of a node on one database file."""

    def __init__(self, fd: int, key: FileKey) -> None:
        self._fd: int | None = fd
        self.key: Final = key

    @classmethod
    def acquire(cls, path: str) -> NodeLock:
        """Lock the file at ``path`` (created empty if missing) for this node.

        Raises:
            Held: another node holds it (retried briefly first).
            OSError: the file cannot be opened or locked (permissions, a read-only file
                system when it is missing, a file system without flock).
        """
        fd, key = _take(path, create=True)
        deadline = time.monotonic() + _RETRY_FOR_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(_RETRY_EVERY_S)
                    continue
                _give_back(fd, key)
                raise Held(path) from None
            except OSError:
                _give_back(fd, key)
                raise
            return cls(fd, key)

    def release(self) -> None:
        """Drop the lock (after the node's connection is closed). Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            _give_back(fd, self.key)


def probe(path: str) -> bool:
    """Whether a node holds the lock of the file at ``path`` now (False if it is missing).

    Takes a shared lock for an instant, which a starting node waits out.
    """
    try:
        fd, key = _take(path, create=False)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        _give_back(fd, key)
    return False


def connection_opened(key: FileKey) -> None:
    """Count a connection of this process to the file ``key``."""
    with _mutex:
        _connections[key] = _connections.get(key, 0) + 1


def connection_closed(key: FileKey) -> None:
    """Forget a connection (after closing it); close parked descriptors if it was the last."""
    with _mutex:
        left = _connections.get(key, 0) - 1
        if left > 0:
            _connections[key] = left
            return
        _connections.pop(key, None)
        spare = _parked.pop(key, [])
    for fd in spare:
        os.close(fd)
