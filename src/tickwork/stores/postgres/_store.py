"""PostgresStore: the cluster store. Many nodes share one PostgreSQL schema.

This module is *how* the store talks to the server (threads, cancellation, reconnects;
the worker-thread side of a call is :mod:`tickwork.stores.postgres._thread`);
*what* it says (schema, migrations, every statement) is :mod:`tickwork.stores.postgres._schema`.

Threads
    psycopg 3's synchronous API (its async API needs asyncio) on worker threads. A store
    has one connection for its node's calls, used by one call at a time (a
    ``trio.CapacityLimiter(1)``), and, once :meth:`PostgresStore.change_token` is first
    polled, a second connection that LISTENs for other connections' changes. A write call
    is one explicit transaction; a read is one autocommit statement.

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

Leases
    Lease times come from the database clock (``now()``), never from a node's: the
    ``now_us`` arguments are the scheduler clock's and only stamp ``created_us`` and
    ``updated_us``. A dead node's CLAIMED rows are taken over by any node's ``claim`` once
    their lease lapses; its durable RUNNING rows (at-most-once tasks) are ended FAILED with
    :data:`~tickwork.stores.base.INTERRUPTED` by the same statement, as a single-node
    store's ``recover`` would. ``recover`` itself does nothing here (see its docstring).
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Final, LiteralString, TypeVar, cast, final

import attrs
import psycopg
import psycopg.errors
import trio
from psycopg import conninfo as pg_conninfo

from tickwork._time import td_us
from tickwork.errors import InvalidArgument, StoreError, StoreUnavailable
from tickwork.model import DEFAULT_MAX_PARAMS_BYTES, check_max_params_bytes
from tickwork.stores._rules import finish_event
from tickwork.stores.postgres import _listen as _pg_listen
from tickwork.stores.postgres import _schema as _pg_schema
from tickwork.stores.postgres._migrations import check_schema_name
from tickwork.stores.postgres._schedules import PgScheduleMethods
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
from tickwork.stores.postgres._tokens import TokenQueries

if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable, Sequence

    from tickwork.model import AbortResult, Attempt, Finish, Instance, InstanceFilter, NewRow
    from tickwork.state import State
    from tickwork.stores.cluster import Changes, Heartbeat, NodeInfo
    from tickwork.stores.tokens import Token

__all__ = ["CHANNEL", "PostgresStore", "PostgresStoreStatistics"]

T = TypeVar("T")

_log = logging.getLogger(__name__)

#: Tries of one call (each after a reconnect, a deadlock or a stray cancel).
_CALL_ATTEMPTS: Final = 3
_FIRST_BACKOFF: Final = 0.1
_MAX_BACKOFF: Final = 2.0
#: How long to wait for a transaction cut off during COMMIT to be decided.
_COMMIT_CHECK_SECONDS: Final = 5.0
_CLOSE_TIMEOUT: Final = 10.0
_LISTEN_RETRY_SECONDS: Final = 1.0
# Unless the DSN says otherwise: a dead server or network must not hang a call forever.
_CONNECT_DEFAULTS: Final[dict[str, Any]] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


@attrs.frozen
class PostgresStoreStatistics:
    """Counters of one :class:`PostgresStore` since it was created."""

    #: Store calls made (a write is one transaction, a read one statement).
    calls: int
    #: SQL statements sent, BEGIN and COMMIT included.
    statements: int
    #: Write transactions committed.
    commits: int
    #: Call attempts repeated after a lost connection, a deadlock or a stray cancel.
    retries: int
    #: Node connections reopened after a loss.
    reconnects: int
    #: Calls whose caller was cancelled while they ran.
    cancels: int
    #: Notifications from other connections seen by change_token.
    notifications: int


@final
class PostgresStore(PgScheduleMethods):
    """A :class:`~tickwork.stores.base.Store` in a PostgreSQL schema shared by many nodes.

    Args:
        dsn: a libpq connection string or URI. ``connect_timeout`` and TCP keepalives get
            defaults unless the DSN sets them.
        schema: the schema holding tickwork's tables; created (and migrated) on open.
        lease: when given, the lease every claim and renew grants, in place of the
            scheduler's ``lease_us`` (an operator's knob; also how tests get short leases).
        connect_attempts: tries per reconnection before a call raises ``StoreError``.
        application_name: shown in ``pg_stat_activity``; ``tickwork:<node>:<use>`` if None.
        max_params_bytes: the largest params ``insert`` and ``add_schedule`` accept
            (default 1 MiB; a node's ``open_scheduler(max_params_bytes=...)`` sets it).
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "tickwork",
        lease: timedelta | None = None,
        connect_attempts: int = 5,
        application_name: str | None = None,
        max_params_bytes: int = DEFAULT_MAX_PARAMS_BYTES,
    ) -> None:
        self.max_params_bytes = check_max_params_bytes(max_params_bytes)
        if lease is not None and (not isinstance(lease, timedelta) or lease <= timedelta(0)):
            raise InvalidArgument(f"lease must be a positive timedelta, got {lease!r}")
        if connect_attempts < 1:
            raise InvalidArgument(f"connect_attempts must be >= 1, got {connect_attempts!r}")
        try:
            self._dsn_params = pg_conninfo.conninfo_to_dict(dsn)
        except psycopg.Error as exc:
            raise InvalidArgument(f"dsn is not a valid libpq connection string: {exc}") from exc
        self._dsn = dsn
        self._schema = check_schema_name(schema)
        self._lease_us = None if lease is None else td_us(lease)
        self._connect_attempts = connect_attempts
        self._application_name = application_name
        self._q = _pg_schema.Queries(self._schema)
        self._tq = TokenQueries(self._schema)
        self._limiter = trio.CapacityLimiter(1)
        self._listen_limiter = trio.CapacityLimiter(1)
        self._conn: Conn | None = None
        self._conn_pid: int | None = None
        self._listener: Conn | None = None
        self._listen_retry_at = float("-inf")
        self._changes = 0
        self._heard = _pg_listen.Heard()
        self._node_id: str | None = None
        self._open = False
        self._connected_before = False
        self._stats = Counters()

    @property
    def schema(self) -> str:
        """The PostgreSQL schema this store uses."""
        return self._schema

    def statistics(self) -> PostgresStoreStatistics:
        """A snapshot of this store's counters."""
        return PostgresStoreStatistics(**attrs.asdict(self._stats))

    # -- life ---------------------------------------------------------------------------

    async def open(self, *, node_id: str | None = None) -> None:
        """Connect, create or migrate the schema, and register ``node_id`` if given.

        Nothing is exclusive: many nodes and clients share one schema. Concurrent openers
        of a new or old schema queue on an advisory lock while one of them migrates it.

        Raises:
            NotATickworkDatabase: the schema holds tables tickwork did not create.
            SchemaTooNew: a newer tickwork wrote the schema.
            StoreError: the server cannot be reached, or the store is already open.
        """
        if self._open:
            raise StoreError("this PostgresStore is already open")
        self._node_id = node_id
        self._connected_before = False
        self._listen_retry_at = float("-inf")
        try:
            await self._call(self._q.migrate, write=True, opening=True)
            if node_id is not None:
                await self._call(partial(self._q.register, node_id), write=True, opening=True)
        except BaseException:
            await self._close_connections()
            raise
        self._open = True

    async def aclose(self) -> None:
        """Mark the node stopped and close both connections. Idempotent, and it completes
        even in a cancelled scope (within a bounded time)."""
        was_open, self._open = self._open, False
        with trio.CancelScope(shield=True):
            # Only on a live connection: reconnecting just to say goodbye is not worth it.
            if was_open and self._node_id is not None and self._conn and not self._conn.closed:
                with trio.move_on_after(_CLOSE_TIMEOUT):
                    try:
                        unregister = partial(self._q.unregister, self._node_id)
                        await self._call(unregister, write=True, opening=True)
                    except StoreError as exc:  # best effort: the nodes table only informs
                        _log.debug("could not mark node %s stopped: %s", self._node_id, exc)
            await self._close_connections()

    async def _close_connections(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT) as scope:
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

    # -- writes -------------------------------------------------------------------------

    async def insert(self, rows: Sequence[NewRow], now_us: int) -> list[int]:
        """Store new instances in one transaction (one INSERT) and return their ids in order.

        Notifies :data:`CHANNEL` when a PENDING row was added.
        """
        if not rows:
            return await self._nothing([])
        _pg_schema.check_new_rows(rows)
        self._check_params(rows)
        return await self._call(partial(self._q.insert, rows, now_us), write=True)

    async def claim(
        self, owner: str, due_before_us: int, limit: int, now_us: int, lease_us: int
    ) -> list[Instance]:
        """Claim due rows in one statement; the lease runs on the database clock."""
        if limit <= 0:
            return await self._nothing([])
        lease = timedelta(microseconds=self._lease_us or lease_us)
        claim = partial(self._q.claim, owner, due_before_us, limit, now_us, lease)
        return await self._call(claim, write=True, settings=_pg_schema.CLAIM_SETTINGS)

    async def start(
        self, owner: str, items: Sequence[tuple[int, int]], now_us: int
    ) -> builtins.list[bool]:
        if not items:
            return await self._nothing([])
        return await self._call(partial(self._q.start, owner, items, now_us), write=True)

    async def finish(
        self, owner: str, finishes: Sequence[Finish], now_us: int
    ) -> builtins.list[bool]:
        """Write outcomes and their history rows in one statement. Fenced per row."""
        for f in finishes:
            finish_event(f.state, abort_requested=False)  # a target no finish may write
        if not finishes:
            return await self._nothing([])
        return await self._call(partial(self._q.finish, owner, finishes, now_us), write=True)

    async def release(self, owner: str, now_us: int, ids: Sequence[int] | None = None) -> int:
        """Give back what ``owner`` holds; notifies :data:`CHANNEL` so other nodes take it."""
        if ids is not None and not ids:
            return await self._nothing(0)
        return await self._call(partial(self._q.release, owner, now_us, ids), write=True)

    async def renew(self, owner: str, now_us: int, lease_us: int) -> int:  # noqa: ARG002
        """Extend every lease ``owner`` holds to the database's ``now()`` + lease."""
        lease = timedelta(microseconds=self._lease_us or lease_us)
        return await self._call(partial(self._q.renew, owner, lease), write=True)

    def granted_lease_us(self, requested_us: int) -> int:
        """The lease this store grants when ``requested_us`` is asked for: the store's own
        ``lease`` if it was given one, else the request."""
        return self._lease_us or requested_us

    async def heartbeat(self, owner: str, lease_us: int, *, held: int, running: int) -> Heartbeat:
        """Renew ``owner``'s live claims and record the node's heartbeat, in one
        transaction; see :meth:`tickwork.stores.cluster.ClusterStore.heartbeat`."""
        lease = timedelta(microseconds=self.granted_lease_us(lease_us))
        beat = partial(self._q.cluster.heartbeat, owner, lease, held, running)
        return await self._call(beat, write=True)

    async def record_node(
        self, node_id: str, *, tasks: Sequence[str], max_params_bytes: int
    ) -> None:
        """Record the tasks and params limit of ``node_id`` in the nodes table."""
        record = partial(self._q.cluster.record_node, node_id, tasks, max_params_bytes)
        await self._call(record, write=True)

    async def nodes(self) -> builtins.list[NodeInfo]:
        """Every node that opened this schema, most recently started first."""
        return await self._call(self._q.cluster.nodes, write=False)

    async def recover(self, now_us: int) -> int:
        """Give back the claims of this store's own ``node_id`` left by a previous run of
        the node (claim never takes over the claimer's own rows, and renew would keep their
        leases alive). Other nodes' claims are taken over by lease expiry in :meth:`claim`:
        in a cluster, no node can prove another dead."""
        if self._node_id is None:
            return await self._nothing(0)
        release = partial(self._q.release, self._node_id, now_us, None)
        return await self._call(release, write=True)

    async def request_abort(self, instance_id: int, now_us: int) -> AbortResult:
        """Abort or request an abort; notifies :data:`CHANNEL` so the owner hears of it."""
        return await self._call(partial(self._q.request_abort, instance_id, now_us), write=True)

    # -- reads --------------------------------------------------------------------------

    async def next_pending_at(self) -> int | None:
        return await self._call(self._q.next_pending_at, write=False)

    async def abort_requests(self, owner: str) -> builtins.list[int]:
        return await self._call(partial(self._q.abort_requests, owner), write=False)

    async def get(self, instance_id: int) -> Instance | None:
        return await self._call(partial(self._q.get, instance_id), write=False)

    async def list(
        self,
        *,
        state: State | None = None,
        task: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
        where: InstanceFilter | None = None,
    ) -> builtins.list[Instance]:
        if limit <= 0:
            return await self._nothing([])
        page = partial(self._q.list_page, state, task, limit, before_id, where)
        return await self._call(page, write=False)

    async def count(self, *, state: State | None = None, task: str | None = None) -> int:
        return await self._call(partial(self._q.count, state, task), write=False)

    async def count_by_state(self) -> dict[State, int]:
        return await self._call(self._q.count_by_state, write=False)

    async def history(self, instance_id: int) -> builtins.list[Attempt]:
        return await self._call(partial(self._q.history, instance_id), write=False)

    async def change_token(self) -> int:
        """A counter bumped by each NOTIFY that another connection sent on :data:`CHANNEL`.

        ``insert``, ``release`` and ``request_abort`` notify inside their transaction, so the
        notification arrives when their rows are visible; this store's own are ignored.
        The first poll starts listening. A lost listening connection bumps the counter (a
        change may have been missed) and is reopened by a later poll. Cheap: a
        non-blocking read of the listening socket.
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

    # -- API tokens (tickwork.stores.tokens.TokenStore) --------------------------------------

    async def add_token(self, token: Token, token_digest: str) -> None:
        await self._call(partial(self._tq.add, token, token_digest), write=True)

    async def tokens(self) -> builtins.list[Token]:
        return await self._call(self._tq.all, write=False)

    async def token_by_digest(self, token_digest: str) -> Token | None:
        return await self._call(partial(self._tq.one, token_digest), write=False)

    async def remove_token(self, token_id: str) -> bool:
        return await self._call(partial(self._tq.remove, token_id), write=True)

    async def prune(self, before_us: int, limit: int) -> int:
        """Retention: delete a bounded batch of old rows in one statement; see
        :meth:`tickwork.stores.base.Store.prune`."""
        if limit <= 0:
            return await self._nothing(0)
        return await self._call(partial(self._q.prune, before_us, limit), write=True)

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
