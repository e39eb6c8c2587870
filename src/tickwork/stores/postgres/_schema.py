"""What the PostgreSQL store says to the server: its statements (the schema and its
migrations are :mod:`tickwork.stores.postgres._migrations`).

Statements
    :class:`Queries` holds every statement for one schema and the functions that run them
    on a :class:`Session` (one call of the store, on a worker thread, inside the
    transaction the store opened). The claim life cycle's statements (the store rules of
    :mod:`tickwork.stores._rules` written as SQL) are
    :class:`~tickwork.stores.postgres._claims.ClaimQueries`', a base of :class:`Queries`;
    the columns of an instance row are :mod:`tickwork.stores.postgres._rows`'.

Templates name the schema as ``{s}``; :func:`~tickwork.stores.postgres._migrations.render`
substitutes the quoted identifier.
"""

from __future__ import annotations

import os
import socket
from functools import partial
from importlib import metadata
from typing import TYPE_CHECKING, Any, Final, LiteralString, cast, final

from tickwork.errors import StoreError
from tickwork.model import Attempt, Instance, InstanceFilter, NewRow
from tickwork.state import State
from tickwork.stores.postgres import _cluster as _pg_cluster
from tickwork.stores.postgres._claims import ClaimQueries
from tickwork.stores.postgres._counts import CountQueries
from tickwork.stores.postgres._migrations import migrate, render
from tickwork.stores.postgres._rows import COLS, READ_COLS, Session, int_array, to_instance

if TYPE_CHECKING:
    import builtins
    from collections.abc import Sequence


# ---------------------------------------------------------------------- statements

#: The NOTIFY channel of every change; the payload starts with the schema name (see
#: :mod:`tickwork.stores.postgres._cluster`).
CHANNEL: Final = "tickwork_changes"


# Ids are drawn in input order before the rows are written, so the rows ON CONFLICT
# skipped (a dedup key or schedule occurrence that exists) are known by position.
_INSERT: Final = """
    WITH input AS MATERIALIZED (
        SELECT nextval('{s}.instance_ids') AS id, t.*
        FROM unnest(
            %(tasks)s::text[], %(run_ats)s::bigint[], %(params)s::bytea[],
            %(states)s::smallint[], %(errors)s::text[], %(dedup_keys)s::text[],
            %(max_attempts)s::integer[], %(timeouts)s::bigint[],
            %(schedule_ids)s::text[], %(fire_ats)s::bigint[]
        ) WITH ORDINALITY AS t(task, run_at_us, params, state, error, dedup_key,
                               max_attempts, timeout_us, schedule_id, fire_at_us, ord)
    ),
    ins AS (
        INSERT INTO {s}.instances (id, task, run_at_us, params, state, error, dedup_key,
                                   max_attempts, timeout_us, schedule_id, fire_at_us,
                                   created_us, updated_us)
        SELECT id, task, run_at_us, params, state, error, dedup_key, max_attempts,
               timeout_us, schedule_id, fire_at_us, %(now)s, %(now)s
        FROM input ORDER BY ord
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    SELECT input.id, ins.id IS NOT NULL FROM input LEFT JOIN ins ON ins.id = input.id
    ORDER BY input.ord
"""

_EXISTING: Final = """
    SELECT id, dedup_key, schedule_id, fire_at_us FROM {s}.instances
    WHERE dedup_key = ANY(%(dedup_keys)s::text[])
       OR (schedule_id, fire_at_us) IN (
            SELECT * FROM unnest(%(schedule_ids)s::text[], %(fire_ats)s::bigint[]))
"""

_REGISTER: Final = """
    INSERT INTO {s}.nodes (node_id, started, last_heartbeat, host, pid, version)
    VALUES (%(node)s, now(), now(), %(host)s, %(pid)s, %(version)s)
    ON CONFLICT (node_id) DO UPDATE SET
        started = now(), last_heartbeat = now(), stopped = NULL,
        host = EXCLUDED.host, pid = EXCLUDED.pid, version = EXCLUDED.version
"""


# Retention: a bounded batch of the oldest ended instances and history rows. SKIP LOCKED:
# a row another transaction holds is left for the next batch instead of waited for.
_PRUNE: Final = """
    WITH gone AS (
        DELETE FROM {s}.instances WHERE id IN (
            SELECT id FROM {s}.instances
            WHERE state >= {SUCCEEDED} AND updated_us < %(before)s
            ORDER BY updated_us LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        )
        RETURNING 1
    ),
    old AS (
        DELETE FROM {s}.history WHERE id IN (
            SELECT id FROM {s}.history
            WHERE finished_us < %(before)s
            ORDER BY finished_us LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        )
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM old)
"""


@final
class Queries(ClaimQueries):
    """Every statement of the store for one schema, and the calls that run them.

    Each method taking a ``session`` runs on a worker thread as (part of) one store call.
    """

    def __init__(self, schema: str) -> None:
        self.schema = schema
        r = partial(render, schema=schema)
        self.listen: LiteralString = "LISTEN " + CHANNEL
        self.notify: LiteralString = "SELECT pg_notify('" + CHANNEL + "', %(payload)s)"
        self.cluster = _pg_cluster.ClusterQueries(r)
        super().__init__(r)
        self.insert_sql = r(_INSERT)
        self.existing_sql = r(_EXISTING)
        self.register_sql = r(_REGISTER)
        self.unregister_sql = r("UPDATE {s}.nodes SET stopped = now() WHERE node_id = %(node)s")
        self.next_pending_sql = r(
            "SELECT run_at_us FROM {s}.instances WHERE state = {PENDING} "
            "ORDER BY run_at_us, id LIMIT 1"
        )
        self.get_sql = r(
            "SELECT " + COLS + ", NULL, started_us FROM {s}.instances WHERE id = %(id)s"
        )
        self.list_sql = r("SELECT " + READ_COLS + " FROM {s}.instances")
        self.count_sql = r("SELECT count(*) FROM {s}.instances")
        self.counts = CountQueries(r)
        self.history_sql = r(
            "SELECT instance_id, attempt, node, started_us, finished_us, state, error_type, "
            "error, result, output FROM {s}.history WHERE instance_id = %(id)s ORDER BY id"
        )
        self.prune_sql = r(_PRUNE)

    def migrate(self, session: Session) -> None:
        migrate(session.conn, self.schema)

    def register(self, node_id: str, session: Session) -> None:
        params = {
            "node": node_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": _version(),
        }
        session.execute(self.register_sql, params)

    def unregister(self, node_id: str, session: Session) -> None:
        session.execute(self.unregister_sql, {"node": node_id})

    def insert(self, rows: Sequence[NewRow], now_us: int, session: Session) -> list[int]:
        cur = session.execute(
            self.insert_sql,
            {
                "tasks": [r.task for r in rows],
                "run_ats": int_array(r.run_at_us for r in rows),
                "params": [bytes(r.params) for r in rows],
                "states": int_array(int(r.state) for r in rows),
                "errors": [r.error for r in rows],
                "dedup_keys": [r.dedup_key for r in rows],
                "max_attempts": int_array(r.max_attempts for r in rows),
                "timeouts": int_array(r.timeout_us for r in rows),
                "schedule_ids": [r.schedule_id for r in rows],
                "fire_ats": int_array(r.fire_at_us for r in rows),
                "now": now_us,
            },
        )
        placed = cur.fetchall()
        ids: list[int] = [p[0] for p in placed]
        skipped = [i for i, p in enumerate(placed) if not p[1]]
        if skipped:
            self._point_at_existing(rows, ids, skipped, session)
        new_work = [
            r.run_at_us
            for p, r in zip(placed, rows, strict=True)
            if p[1] and r.state is State.PENDING
        ]
        if new_work:
            self.announce(session, _pg_cluster.PENDING_WORK, str(min(new_work)))
        return ids

    def announce(self, session: Session, kind: str, arg: str = "") -> None:
        """NOTIFY the other nodes of a change (delivered when the transaction commits)."""
        session.execute(self.notify, {"payload": _pg_cluster.payload(self.schema, kind, arg)})

    def _point_at_existing(
        self, rows: Sequence[NewRow], ids: list[int], skipped: list[int], session: Session
    ) -> None:
        """Give each row ON CONFLICT skipped the id of the instance holding its key.

        Same transaction, fresh snapshot (READ COMMITTED): a conflicting row that another
        node committed meanwhile is visible here.
        """
        wanted = [rows[i] for i in skipped]
        occurrences = [r for r in wanted if r.schedule_id is not None]
        cur = session.execute(
            self.existing_sql,
            {
                "dedup_keys": [r.dedup_key for r in wanted if r.dedup_key is not None],
                "schedule_ids": [r.schedule_id for r in occurrences],
                "fire_ats": [r.fire_at_us for r in occurrences],
            },
        )
        by_key: dict[str, int] = {}
        by_occurrence: dict[tuple[str, int], int] = {}
        for iid, dedup_key, schedule_id, fire_at_us in cur:
            if dedup_key is not None:
                by_key[dedup_key] = iid
            if schedule_id is not None:
                by_occurrence[schedule_id, fire_at_us] = iid
        for i in skipped:
            row = rows[i]
            found = None if row.dedup_key is None else by_key.get(row.dedup_key)
            if found is None and row.schedule_id is not None and row.fire_at_us is not None:
                found = by_occurrence.get((row.schedule_id, row.fire_at_us))
            if found is None:
                raise StoreError(
                    f"insert of row {i} ({row.task!r}) conflicted, but no instance holds its "
                    "dedup key or schedule occurrence"
                )
            ids[i] = found

    def next_pending_at(self, session: Session) -> int | None:
        row = session.execute(self.next_pending_sql).fetchone()
        return None if row is None else int(row[0])

    def get(self, instance_id: int, session: Session) -> Instance | None:
        row = session.execute(self.get_sql, {"id": instance_id}).fetchone()
        return None if row is None else to_instance(row)

    def list_page(  # noqa: PLR0917 - called through functools.partial, in order
        self,
        state: State | None,
        task: str | None,
        limit: int,
        before_id: int | None,
        where: InstanceFilter | None,
        session: Session,
    ) -> list[Instance]:
        query, params = _filtered(self.list_sql, state, task)
        if where is not None:
            terms, values = where.sql(("run_at_us", "updated_us"), "%(f{n})s")
            for term in terms:
                query += " AND " + term
            params.update({f"f{n}": v for n, v in enumerate(values)})
        if before_id is not None:
            query += " AND id < %(before)s"
            params["before"] = before_id
        query += " ORDER BY id DESC LIMIT %(limit)s"
        params["limit"] = limit
        return [to_instance(row) for row in session.execute(query, params)]

    def count(self, state: State | None, task: str | None, session: Session) -> int:
        query, params = _filtered(self.count_sql, state, task)
        row = session.execute(query, params).fetchone()
        return 0 if row is None else int(row[0])

    def count_by_state(self, session: Session) -> dict[State, int]:
        """Exact up to :data:`~tickwork.stores.postgres._counts.EXACT_UP_TO` per state,
        estimated beyond (see :mod:`tickwork.stores.postgres._counts`): no full scan."""
        return self.counts.count_by_state(session)

    def history(self, instance_id: int, session: Session) -> builtins.list[Attempt]:
        return [
            Attempt(
                instance_id=r[0],
                attempt=r[1],
                node=r[2],
                started_us=r[3],
                finished_us=r[4],
                state=State(r[5]),
                error_type=r[6],
                error=r[7],
                result=r[8],
                output=r[9],
            )
            for r in session.execute(self.history_sql, {"id": instance_id})
        ]

    def prune(self, before_us: int, limit: int, session: Session) -> int:
        row = session.execute(self.prune_sql, {"before": before_us, "limit": limit}).fetchone()
        return 0 if row is None else int(row[0])

    def xact_status(self, xid: int, session: Session) -> str | None:
        """``pg_xact_status`` of ``xid``: committed, aborted, in progress (None: unknown)."""
        row = session.execute("SELECT pg_xact_status(%(xid)s::text::xid8)", {"xid": xid}).fetchone()
        return None if row is None else cast("str | None", row[0])


def _filtered(
    base: LiteralString, state: State | None, task: str | None
) -> tuple[LiteralString, dict[str, Any]]:
    query = base + " WHERE true"
    params: dict[str, Any] = {}
    if state is not None:
        query += " AND state = %(state)s"
        params["state"] = int(state)
    if task is not None:
        query += " AND task = %(task)s"
        params["task"] = task
    return query, params


def _version() -> str:
    try:
        return metadata.version("tickwork")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "unknown"
