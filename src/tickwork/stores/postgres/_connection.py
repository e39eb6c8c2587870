"""How the PostgresStore talks to the server: its two connections, one call at a time.

The worker-thread side of a call is :mod:`tickwork.stores.postgres._thread`;
:class:`PgConnection` is the trio side, a base of
:class:`~tickwork.stores.postgres.PostgresStore`.

Threads
    psycopg 3's synchronous API (its async API needs asyncio) on worker threads. A store
    has one connection for its node's calls, used by one call at a time (a
    ``trio.CapacityLimiter(1)``), and, for a node from its ``open`` (for a client once
    :meth:`PostgresStore.change_token` is first polled), a second connection that LISTENs
    for other connections' changes. A write call is one explicit transaction; a read is
    one autocommit statement.

Cancellation
    A call whose trio task is cancelled asks the server to stop the running statement
    (``Connection.cancel_safe()``), stops before its next statement or its COMMIT, and
    waits for its worker thread to finish, so the connection is never left mid-call. A
    cancelled write is all-or-nothing: if it was stopped, its transaction rolled back and
    the caller gets ``trio.Cancelled``; if it had already committed, the call *returns its
    result* (trio delivers the cancellation at the caller's next checkpoint). A caller that
    sees ``Cancelled`` therefore knows nothing was written.

Connection loss
    The connection is reopened with exponential backoff for a bounded number of tries;
    then the call raises :class:`~tickwork.errors.StoreError`, and the next call tries
    again. A call cut off before its COMMIT certainly did not commit and is retried. If
    the connection died during COMMIT itself, the store asks the server whether that
    transaction committed (``pg_xact_status`` of the xid it noted at BEGIN) and returns the
    result or retries accordingly: no write is lost or applied twice.
"""

from __future__ import annotations

import contextlib
import logging
from functools import partial
from typing import TYPE_CHECKING, Any, Final, LiteralString, TypeVar, cast

import psycopg
import psycopg.errors
import trio
from psycopg import conninfo as pg_conninfo

from tickwork.errors import StoreError, StoreUnavailable
from tickwork.stores.postgres import _listen as _pg_listen
from tickwork.stores.postgres._schema import CHANNEL
from tickwork.stores.postgres._thread import (
    Conn,
    Counters,
    Handoff,
    Lost,
    Retry,
    ThreadSession,
    in_thread,
    run_call,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from tickwork.stores.cluster import Changes
    from tickwork.stores.postgres._schema import Queries

__all__ = ["CLOSE_TIMEOUT", "PgConnection"]

T = TypeVar("T")

_log = logging.getLogger("tickwork.stores.postgres._store")

#: Tries of one call (each after a reconnect, a deadlock or a stray cancel).
_CALL_ATTEMPTS: Final = 3
_FIRST_BACKOFF: Final = 0.1
_MAX_BACKOFF: Final = 2.0
#: How long to wait for a transaction cut off during COMMIT to be decided.
_COMMIT_CHECK_SECONDS: Final = 5.0
#: How long aclose waits for the goodbye and for a running call.
CLOSE_TIMEOUT: Final = 10.0
_LISTEN_RETRY_SECONDS: Final = 1.0
# Unless the DSN says otherwise: a dead server or network must not hang a call forever.
_CONNECT_DEFAULTS: Final[dict[str, Any]] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


class PgConnection:
    """The node connection and the LISTEN connection of a PostgresStore (a base class;
    the store's ``__init__`` sets every attribute declared here)."""

    _dsn: str
    _dsn_params: dict[str, Any]
    _schema: str
    _connect_attempts: int
    _application_name: str | None
    _q: Queries
    _limiter: trio.CapacityLimiter
    _listen_limiter: trio.CapacityLimiter
    _conn: Conn | None
    _conn_pid: int | None
    _listener: Conn | None
    _listen_retry_at: float
    _changes: int
    _heard: _pg_listen.Heard
    _node_id: str | None
    _open: bool
    _connected_before: bool
    _stats: Counters

    async def _close_connections(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT) as scope:
            async with self._limiter:
                conn, self._conn = self._conn, None
                if conn is not None:
                    await trio.to_thread.run_sync(conn.close)
            async with self._listen_limiter:
                listener, self._listener = self._listener, None
                if listener is not None:
                    await _close_listener(listener)
        if scope.cancelled_caught:
            # A worker thread still uses the connection; closing it under that thread
            # would free libpq state in use. The thread's call ends, the GC closes it.
            _log.warning("PostgresStore.aclose gave up waiting for a running call")

    # -- changes made elsewhere (LISTEN) ---------------------------------------------------

    async def change_token(self) -> int:
        """A counter bumped by each NOTIFY that another connection sent on :data:`CHANNEL`.

        ``insert``, ``release`` and ``request_abort`` notify inside their transaction, so the
        notification arrives when their rows are visible; this store's own are ignored.
        A node listens from ``open``; a client from its first poll. A lost listening
        connection bumps the counter (a change may have been missed) and is reopened by a
        later poll. Cheap: a non-blocking read of the listening socket.
        """
        self._check_open()
        async with self._listen_limiter:
            await self._hear()
            return self._changes

    async def wait_changed(self) -> Changes:
        """Wait until another connection announces a change; return what it announced.

        See :meth:`tickwork.stores.cluster.ClusterStore.wait_changed`. Waits for the
        listening socket to become readable (no thread, no polling); a lost listening
        connection is reopened (at most once per second) and reported as ``lost``.
        """
        self._check_open()
        while True:
            async with self._listen_limiter:
                await self._hear()
                if self._heard.any:
                    return self._heard.take()
                listener = self._listener
            if listener is None:
                await trio.sleep_until(self._listen_retry_at)
                continue
            # Closed meanwhile: _hear finds out and reopens it.
            with contextlib.suppress(trio.ClosedResourceError, psycopg.Error):
                await trio.lowlevel.wait_readable(listener.pgconn.socket)

    async def _hear(self) -> None:
        """Take in what the listening connection heard, opening it first if need be.

        Call with ``_listen_limiter`` held. A listening connection that is lost, or cannot
        be opened, counts as a change (one may have gone unheard).
        """
        if self._listener is not None and self._listener.closed:
            self._listener = None
            self._missed()
        if self._listener is None:
            if trio.current_time() < self._listen_retry_at:
                return
            try:
                self._listener = await self._connect("listen", listen=True)
            except psycopg.Error as exc:
                _log.warning("cannot open the LISTEN connection: %s", exc)
                self._listen_retry_at = trio.current_time() + _LISTEN_RETRY_SECONDS
                self._missed()
                return
        try:
            seen = _pg_listen.drain(
                self._listener,
                channel=CHANNEL,
                schema=self._schema,
                own_pid=self._conn_pid,
                node_id=self._node_id,
                heard=self._heard,
            )
        except psycopg.Error as exc:
            _log.warning("lost the LISTEN connection: %s", exc)
            listener, self._listener = self._listener, None
            await _close_listener(listener)
            self._missed()
            return
        self._stats.notifications += seen
        self._changes += seen

    def _missed(self) -> None:
        self._changes += 1
        self._heard.lost = True

    # -- machinery ----------------------------------------------------------------------

    async def _nothing(self, value: T) -> T:
        """Return ``value`` for a call with nothing to do, checked and checkpointed alike."""
        self._check_open()
        await trio.lowlevel.checkpoint()
        return value

    def _check_open(self) -> None:
        if not self._open:
            raise StoreError("this PostgresStore is not open; call `await store.open()` first")

    async def _call(
        self,
        op: Callable[[ThreadSession], T],
        *,
        write: bool,
        opening: bool = False,
        settings: tuple[LiteralString, ...] = (),
    ) -> T:
        """Run ``op`` as one call on the node connection, retrying what is safe to retry.

        ``settings`` (``SET LOCAL`` statements) go with a write's BEGIN, in its round trip.
        """
        if not opening:
            self._check_open()
        async with self._limiter:
            self._stats.calls += 1
            last: BaseException | None = None
            for _ in range(_CALL_ATTEMPTS):
                conn = await self._connected()
                try:
                    run = partial(
                        run_call, conn, op, write=write, stats=self._stats, settings=settings
                    )
                    return await in_thread(conn, run, self._stats)
                except Lost as lost:
                    last = lost.__cause__
                    _log.warning("lost the PostgreSQL connection during a call: %s", last)
                    if lost.committing and await self._committed(lost.xid):
                        return cast("T", lost.result)
                except Retry as retry:
                    last = retry.__cause__
                self._stats.retries += 1
            raise StoreUnavailable(
                f"PostgreSQL call failed {_CALL_ATTEMPTS} times: {last}"
            ) from last

    async def _committed(self, xid: int | None) -> bool:
        """After the connection died during COMMIT: did that transaction commit?

        Raises:
            StoreError: the server cannot say within a bounded time.
        """
        if xid is None:  # pragma: no cover - run_call reads the xid before any write
            raise StoreError("lost the connection during COMMIT of an unknown transaction")
        deadline = trio.current_time() + _COMMIT_CHECK_SECONDS
        while True:
            conn = await self._connected()
            status_of = partial(self._q.xact_status, xid)
            check = partial(run_call, conn, status_of, write=False, stats=self._stats)
            try:
                status = await in_thread(conn, check, self._stats)
            except (Lost, Retry) as exc:
                raise StoreError(
                    "lost the connection during COMMIT and again while asking whether it "
                    f"committed: {exc.__cause__}"
                ) from exc
            if status in {"committed", "aborted"}:
                return status == "committed"
            if trio.current_time() >= deadline:  # the old backend is still committing
                raise StoreError(
                    f"lost the connection during COMMIT; transaction {xid} is still "
                    f"{status!r} after {_COMMIT_CHECK_SECONDS}s, its outcome is unknown"
                )
            await trio.sleep(0.1)

    async def _connected(self) -> Conn:
        """The node connection, reopened with bounded exponential backoff if lost.

        Raises:
            StoreError: no connection after ``connect_attempts`` tries.
        """
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        self._conn = None
        delay = _FIRST_BACKOFF
        attempt = 1
        while True:
            try:
                conn = await self._connect("node")
            except psycopg.OperationalError as exc:
                # Bad credentials or a missing database do not heal: fail at once.
                fatal = exc.sqlstate is not None and exc.sqlstate[:2] in {"28", "3D"}
                if fatal or attempt >= self._connect_attempts:
                    # A server that is down may come back: the node retries that.
                    error = StoreError if fatal else StoreUnavailable
                    raise error(
                        f"cannot connect to PostgreSQL ({attempt} of "
                        f"{self._connect_attempts} attempts): {exc}"
                    ) from exc
                _log.warning("cannot connect to PostgreSQL (%s); retrying in %.1fs", exc, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
                attempt += 1
                continue
            if self._connected_before:
                self._stats.reconnects += 1
            self._connected_before = True
            self._conn, self._conn_pid = conn, conn.info.backend_pid
            return conn

    async def _connect(self, use: str, *, listen: bool = False) -> Conn:
        """Open one autocommit connection on a worker thread; abandoned if cancelled."""
        given = self._dsn_params
        extra = {k: v for k, v in _CONNECT_DEFAULTS.items() if k not in given}
        if "application_name" not in given:
            extra["application_name"] = (
                self._application_name or f"tickwork:{self._node_id or 'client'}:{use}"
            )
        dsn = pg_conninfo.make_conninfo(self._dsn, **extra)
        listen_sql = self._q.listen if listen else None
        handoff = Handoff()

        def connect() -> Conn:
            conn = psycopg.Connection.connect(dsn, autocommit=True)
            # Every statement here is short OLTP work that JIT compilation only slows
            # down (the claim's forced plan would otherwise be compiled: see CLAIM_SETTINGS).
            conn.execute("SET jit = off")
            if listen_sql is not None:
                conn.execute(listen_sql)
            handoff.deliver(conn)
            return conn

        try:
            return await trio.to_thread.run_sync(connect, abandon_on_cancel=True)
        except trio.Cancelled:
            handoff.abandon()
            raise


async def _close_listener(listener: Conn) -> None:
    """Close the listening connection, waking whoever waits for its socket first."""
    with contextlib.suppress(psycopg.Error):  # already closed: nobody can wait on it
        trio.lowlevel.notify_closing(listener.pgconn.socket)
    await trio.to_thread.run_sync(listener.close)
