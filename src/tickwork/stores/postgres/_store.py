"""PostgresStore: the cluster store. Many nodes share one PostgreSQL schema.

This module is the Store protocol's methods; *how* the store talks to the server (threads,
cancellation, reconnects, LISTEN) is :mod:`tickwork.stores.postgres._connection`; *what*
it says (schema, migrations, every statement) is :mod:`tickwork.stores.postgres._schema`.

Leases
    Lease times come from the database clock (``now()``), never from a node's: the
    ``now_us`` arguments are the scheduler clock's and only stamp ``created_us`` and
    ``updated_us``. A dead node's CLAIMED rows are taken over by any node's ``claim`` once
    their lease lapses; its durable RUNNING rows (at-most-once tasks) are ended FAILED with
    :data:`~tickwork.stores.base.INTERRUPTED` by the same statement, as a single-node
    store's ``recover`` would. ``recover`` itself does nothing here (see its docstring).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, TypeVar, final

import attrs
import psycopg
import psycopg.errors
import trio
from psycopg import conninfo as pg_conninfo

from tickwork._time import td_us
from tickwork.errors import InvalidArgument, StoreError
from tickwork.model import DEFAULT_MAX_PARAMS_BYTES, check_max_params_bytes
from tickwork.stores._rules import finish_event
from tickwork.stores.postgres import _listen as _pg_listen
from tickwork.stores.postgres import _schema as _pg_schema
from tickwork.stores.postgres._claims import CLAIM_SETTINGS
from tickwork.stores.postgres._connection import CLOSE_TIMEOUT, PgConnection
from tickwork.stores.postgres._migrations import check_schema_name
from tickwork.stores.postgres._rows import check_new_rows
from tickwork.stores.postgres._schedules import PgScheduleMethods
from tickwork.stores.postgres._schema import CHANNEL
from tickwork.stores.postgres._thread import (
    Conn,
    Counters,
)
from tickwork.stores.postgres._tokens import TokenQueries

if TYPE_CHECKING:
    import builtins
    from collections.abc import Sequence

    from tickwork.model import AbortResult, Attempt, Finish, Instance, InstanceFilter, NewRow
    from tickwork.state import State
    from tickwork.stores.cluster import Heartbeat, NodeInfo
    from tickwork.stores.tokens import Token

__all__ = ["CHANNEL", "PostgresStore", "PostgresStoreStatistics"]

T = TypeVar("T")

_log = logging.getLogger(__name__)


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
class PostgresStore(PgScheduleMethods, PgConnection):
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
        if node_id is not None:
            # A node listens from the moment it is open, before its first look at the
            # rows: a change committed after that look is then always heard. (Listening
            # from the first wait, a node started while another inserted slept through
            # the notice, and ran nothing of it until some later change.)
            async with self._listen_limiter:
                await self._hear()

    async def aclose(self) -> None:
        """Mark the node stopped and close both connections. Idempotent, and it completes
        even in a cancelled scope (within a bounded time)."""
        was_open, self._open = self._open, False
        with trio.CancelScope(shield=True):
            # Only on a live connection: reconnecting just to say goodbye is not worth it.
            if was_open and self._node_id is not None and self._conn and not self._conn.closed:
                with trio.move_on_after(CLOSE_TIMEOUT):
                    try:
                        unregister = partial(self._q.unregister, self._node_id)
                        await self._call(unregister, write=True, opening=True)
                    except StoreError as exc:  # best effort: the nodes table only informs
                        _log.debug("could not mark node %s stopped: %s", self._node_id, exc)
            await self._close_connections()

    # -- writes -------------------------------------------------------------------------

    async def insert(self, rows: Sequence[NewRow], now_us: int) -> list[int]:
        """Store new instances in one transaction (one INSERT) and return their ids in order.

        Notifies :data:`CHANNEL` when a PENDING row was added.
        """
        if not rows:
            return await self._nothing([])
        check_new_rows(rows)
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
        return await self._call(claim, write=True, settings=CLAIM_SETTINGS)

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
