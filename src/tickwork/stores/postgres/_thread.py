"""How a :class:`~tickwork.stores.postgres.PostgresStore` call runs on its worker thread.

psycopg's synchronous API on a thread per call (``trio.lowlevel.start_thread_soon``): a
write is one explicit transaction whose xid is noted at BEGIN; a cancelled caller sets an
event the call checks before each statement and its COMMIT, and sends the server a cancel
request; the outcome comes back to trio as a result, :class:`Lost` (the connection died,
perhaps during COMMIT), :class:`Retry` (worth another try) or ``trio.Cancelled``. The
store's own module decides what to do with each (see its docstring).
"""

from __future__ import annotations

import logging
import threading
from functools import partial
from typing import TYPE_CHECKING, Any, Final, LiteralString, TypeVar, final

import attrs
import outcome
import psycopg
import psycopg.errors
import trio
from psycopg.pq import TransactionStatus

from tickwork.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "CallerCancelled",
    "Conn",
    "Counters",
    "Handoff",
    "Lost",
    "Retry",
    "ThreadSession",
    "in_thread",
    "run_call",
]

T = TypeVar("T")
Conn = psycopg.Connection[tuple[Any, ...]]

_log = logging.getLogger("tickwork.stores.postgres")

#: How long a cancel request may take to reach the server.
CANCEL_TIMEOUT: Final = 5.0


@attrs.define
class Counters:
    """What a store's calls did (``PostgresStore.statistics()`` returns a snapshot)."""

    calls: int = 0
    statements: int = 0
    commits: int = 0
    retries: int = 0
    reconnects: int = 0
    cancels: int = 0
    notifications: int = 0


class Lost(Exception):
    """The connection died during a call; ``committing``: during its COMMIT."""

    def __init__(self, *, committing: bool, xid: int | None, result: object) -> None:
        super().__init__("connection lost")
        self.committing = committing
        self.xid = xid
        self.result = result


class Retry(Exception):
    """The call rolled back for a reason worth another try (deadlock, stray cancel)."""


class CallerCancelled(Exception):
    """The trio caller was cancelled and the call rolled back."""


@final
class ThreadSession:
    """One call on a worker thread: counted statements that stop once cancel is set."""

    __slots__ = ("_cancel", "_conn", "_stats")

    def __init__(self, conn: Conn, cancel: threading.Event, stats: Counters) -> None:
        self._conn = conn
        self._cancel = cancel
        self._stats = stats

    @property
    def conn(self) -> Conn:
        return self._conn

    def execute(
        self, query: LiteralString, params: dict[str, Any] | None = None
    ) -> psycopg.Cursor[tuple[Any, ...]]:
        if self._cancel.is_set():
            raise CallerCancelled
        self._stats.statements += 1
        return self._conn.execute(query, params)


def run_call(
    conn: Conn,
    op: Callable[[ThreadSession], T],
    cancel: threading.Event,
    *,
    write: bool,
    stats: Counters,
    settings: tuple[LiteralString, ...] = (),
) -> T:
    """Run one call on a worker thread: a write is one explicit transaction.

    A write notes its xid at BEGIN, so that a connection lost during COMMIT can be
    resolved by asking the server whether that transaction committed.
    """
    session = ThreadSession(conn, cancel, stats)
    xid: int | None = None
    result: object = None
    committing = False
    try:
        if not write:
            return op(session)
        with conn.pipeline():  # BEGIN, settings and the xid in one round trip
            conn.execute("BEGIN")
            for setting in settings:
                conn.execute(setting)
            cur = conn.execute("SELECT pg_current_xact_id()::text::bigint")
        stats.statements += 2 + len(settings)
        row = cur.fetchone()
        xid = None if row is None else int(row[0])
        result = op(session)
        if cancel.is_set():
            raise CallerCancelled  # noqa: TRY301 - the handlers below roll back
        committing = True
        stats.statements += 1
        conn.execute("COMMIT")
    except psycopg.Error as exc:
        if conn.closed:
            raise Lost(committing=committing, xid=xid, result=result) from exc
        rollback(conn)
        if isinstance(exc, psycopg.errors.QueryCanceled):
            if cancel.is_set():
                raise CallerCancelled from exc
            raise Retry from exc  # a cancel request that outlived its call, or a timeout
        if isinstance(exc, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure):
            raise Retry from exc
        raise StoreError(f"PostgreSQL refused a tickwork statement: {exc}") from exc
    except BaseException:
        rollback(conn)
        raise
    stats.commits += 1
    return result


def rollback(conn: Conn) -> None:
    if conn.closed or conn.info.transaction_status == TransactionStatus.IDLE:
        return
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error as exc:  # the connection died: the server rolls back for us
        _log.debug("ROLLBACK failed: %s", exc)


def send_cancel(conn: Conn) -> None:
    try:
        conn.cancel_safe(timeout=CANCEL_TIMEOUT)
    except (psycopg.Error, OSError) as exc:  # nothing running, or the server is gone
        _log.debug("cancel request failed: %s", exc)


async def in_thread(conn: Conn, fn: Callable[[threading.Event], T], stats: Counters) -> T:
    """Run ``fn(cancel)`` on a worker thread; cancelling the caller stops it on the server.

    Waits for the thread like ``trio.to_thread.run_sync(abandon_on_cancel=False)``. When
    the caller is cancelled meanwhile, it sets ``cancel`` (``fn`` stops before its next
    statement or its COMMIT) and sends a cancel request for the running statement, on a
    thread of its own. If ``fn`` then stopped, ``trio.Cancelled`` is raised; if it
    finished anyway, its result is returned. Returns only after the cancel request was
    delivered, so the request cannot hit the connection's next call.
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()
    cancel = threading.Event()
    waiting = 1  # the call, and then the cancel request
    result: outcome.Outcome[T] | None = None
    raise_cancel: trio.lowlevel.RaiseCancelT | None = None

    def arrived(value: outcome.Outcome[Any], *, is_result: bool) -> None:  # on trio's thread
        nonlocal waiting, result
        if is_result:
            result = value
        waiting -= 1
        if waiting == 0:
            trio.lowlevel.reschedule(task)

    def abort(inner: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        nonlocal raise_cancel, waiting
        raise_cancel = inner
        cancel.set()
        waiting += 1
        stats.cancels += 1
        trio.lowlevel.start_thread_soon(
            partial(send_cancel, conn),
            lambda o: token.run_sync_soon(partial(arrived, o, is_result=False)),
        )
        return trio.lowlevel.Abort.FAILED  # we still wait for the thread

    trio.lowlevel.start_thread_soon(
        partial(fn, cancel), lambda o: token.run_sync_soon(partial(arrived, o, is_result=True))
    )
    await trio.lowlevel.wait_task_rescheduled(abort)
    if result is None:  # pragma: no cover - arrived() sets it before rescheduling
        raise AssertionError("worker thread reported no result")
    if (
        raise_cancel is not None
        and isinstance(result, outcome.Error)
        and isinstance(result.error, CallerCancelled)
    ):
        raise_cancel()
    return result.unwrap()


@final
class Handoff:
    """Hands a connection opened on a thread to trio, or closes it if trio gave up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self._conn: Conn | None = None

    def deliver(self, conn: Conn) -> None:
        with self._lock:
            if not self._abandoned:
                self._conn = conn
                return
        conn.close()

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
