"""What the PostgreSQL store says to the server: its statements (the schema and its
migrations are :mod:`tickwork.stores.postgres._migrations`).

Statements
    :class:`Queries` holds every statement for one schema and the functions that run them
    on a :class:`Session` (one call of the store, on a worker thread, inside the
    transaction the store opened). The store rules of :mod:`tickwork.stores._rules`
    (fencing, which finish may apply, where a released row goes, which state history
    records) are written here as SQL; each statement's comment names the rule it mirrors.

Templates name the schema as ``{s}``; :func:`~tickwork.stores.postgres._migrations.render`
substitutes the quoted identifier.
"""

from __future__ import annotations

import os
import socket
from functools import partial
from importlib import metadata
from typing import TYPE_CHECKING, Any, Final, LiteralString, Protocol, cast, final

from tickwork.errors import InvalidArgument, StoreError
from tickwork.model import AbortResult, Attempt, Finish, Instance, InstanceFilter, NewRow
from tickwork.state import NEW_STATES, Event, State, apply
from tickwork.stores.base import INTERRUPTED
from tickwork.stores.postgres import _cluster as _pg_cluster
from tickwork.stores.postgres import _schedules as _pg_schedules
from tickwork.stores.postgres._migrations import migrate, render

if TYPE_CHECKING:
    import builtins
    from collections.abc import Iterable, Sequence
    from datetime import timedelta

    import psycopg

# ---------------------------------------------------------------------- statements

#: The NOTIFY channel of every change; the payload starts with the schema name (see
#: :mod:`tickwork.stores.postgres._cluster`).
CHANNEL: Final = "tickwork_changes"

# The columns _instance reads, in order; {p} is a table alias prefix, {lease} the lease
# (a held row's is its claim's: see _pg_cluster).
_COLUMNS: Final = (
    "{p}id, {p}task, {p}run_at_us, {p}params, {p}state, {p}attempts, {p}error, {p}owner, "
    "{p}claim_token, {lease}, {p}schedule_id, "
    "{p}fire_at_us, {p}dedup_key, {p}max_attempts, {p}timeout_us, {p}created_us, {p}updated_us"
).replace("{lease}", _pg_cluster.LEASE_OF_ROW)
_COLS: Final = _COLUMNS.replace("{p}", "")
_ICOLS: Final = _COLUMNS.replace("{p}", "i.")
# A listing's columns: params larger than LIST_PARAMS_BYTES are left out (their size last).
# octet_length of a TOASTed value reads its size, not the value: big params never load.
_LIST_COLS: Final = (
    _COLS.replace(
        "params",
        "CASE WHEN octet_length(params) <= 4096 THEN params ELSE ''::bytea END",
        1,
    )
    + ", CASE WHEN octet_length(params) > 4096 THEN octet_length(params) END"
)
#: What a read (not a claim) returns: the listing's columns and the run's start.
_READ_COLS: Final = _LIST_COLS + ", started_us"
_CLAIMED: Final = int(State.CLAIMED)


def check_new_rows(rows: Sequence[NewRow]) -> None:
    """Refuse rows no instance may start in, before any transaction begins.

    Raises:
        InvalidArgument: a row is CLAIMED or RUNNING.
    """
    for row in rows:
        if row.state not in NEW_STATES:
            raise InvalidArgument(
                f"a new instance starts PENDING or terminal, not {row.state.name}"
            )


#: Run with the claim: with no sort allowed, the pending branch can only be the ordered
#: scan of ``instances_due`` that stops after ``limit`` rows. Left to its statistics (stale
#: after a bulk insert, or never gathered), the planner may instead fetch *every* due row
#: with a bitmap scan and sort them: O(backlog) per claim, on disk for a large backlog.
#: The penalty this puts on the few unavoidable small sorts inflates the plan's cost past
#: the JIT thresholds, and compiling it would take longer than the claim: no JIT (the
#: store also turns JIT off for its whole session).
CLAIM_SETTINGS: Final[tuple[LiteralString, ...]] = (
    "SET LOCAL enable_sort = off",
    "SET LOCAL jit = off",
)

# claim: see _pg_cluster.CLAIM. Its RETURNING gives the lease it granted (its own claim
# row is not visible to it).
_CLAIM: Final = _pg_cluster.CLAIM + _ICOLS.replace(
    _pg_cluster.LEASE_OF_ROW.replace("{p}", "i."), _pg_cluster.LEASE_GRANTED
)

# Fenced: only rows held by owner with the pair's token. Starting a RUNNING row again
# is accepted and changes nothing. (An at-most-once start: not ``repeatable``.)
# ``state + 0`` (here and in _FINISH) hides the state test from the planner, which would
# otherwise scan *all* the rows this owner holds through instances_held (its predicate
# matches) instead of looking up the batch's ids by primary key: O(held) per batch. The
# test itself is unchanged, and a concurrent takeover is still re-checked on the row.
_START: Final = """
    UPDATE {s}.instances AS i SET
        state = {START},
        started_us = CASE WHEN i.state = {CLAIMED} THEN %(now)s ELSE i.started_us END,
        updated_us = CASE WHEN i.state = {CLAIMED} THEN %(now)s ELSE i.updated_us END
    FROM unnest(%(ids)s::bigint[], %(tokens)s::bigint[]) AS f(id, token)
    WHERE i.id = f.id AND i.owner = %(owner)s AND i.claim_token = f.token
      AND i.state + 0 IN ({HELD})
    RETURNING i.id
"""

# RUN, an at-least-once run started (a finish to RUNNING, see _rules): fenced as _START,
# the claim kept, ``repeatable`` (given back, it runs again). A RUNNING row stays as it is.
_FINISH_RUNNING: Final = """
    UPDATE {s}.instances AS i SET
        state = {RUN},
        started_us = CASE WHEN i.state = {CLAIMED} THEN f.started_us ELSE i.started_us END,
        repeatable = i.state = {CLAIMED} OR i.repeatable,
        updated_us = CASE WHEN i.state = {CLAIMED} THEN %(now)s ELSE i.updated_us END
    FROM unnest(%(ids)s::bigint[], %(tokens)s::bigint[], %(started)s::bigint[])
        AS f(id, token, started_us)
    WHERE i.id = f.id AND i.owner = %(owner)s AND i.claim_token = f.token
      AND i.state + 0 IN ({HELD})
    RETURNING i.id
"""

# Fenced as _START, and _rules.finish_allowed: a RUNNING row cannot become MISSED.
# A PENDING finish (retry or give-back) of a row with an abort requested aborts it, as
# release does; history records FAILED for it (_rules.history_state). One statement
# writes the outcomes and the history rows of the finishes that applied.
_FINISH: Final = """
    WITH f AS (
        SELECT * FROM unnest(
            %(ids)s::bigint[], %(tokens)s::bigint[], %(states)s::smallint[],
            %(attempts)s::integer[], %(errors)s::text[], %(run_ats)s::bigint[],
            %(started)s::bigint[], %(finished)s::bigint[], %(error_types)s::text[],
            %(results)s::text[], %(outputs)s::text[]
        ) AS f(id, token, state, attempts, error, run_at_us, started_us, finished_us,
               error_type, result, output)
    ),
    u AS (
        UPDATE {s}.instances AS i SET
            state = CASE WHEN f.state = {PENDING} AND i.abort_requested THEN {CANCEL}
                    ELSE f.state END,
            attempts = f.attempts,
            error = f.error,
            run_at_us = CASE WHEN f.state = {PENDING} THEN coalesce(f.run_at_us, i.run_at_us)
                        ELSE i.run_at_us END,
            owner = CASE WHEN f.state = {PENDING} AND NOT i.abort_requested THEN NULL
                    ELSE i.owner END,
            claim_token = NULL,
            started_us = NULL,
            repeatable = false,
            updated_us = %(now)s
        FROM f
        WHERE i.id = f.id AND i.owner = %(owner)s AND i.claim_token = f.token
          AND i.state + 0 IN ({HELD}) AND NOT (i.state = {RUNNING} AND f.state = {SKIP})
        RETURNING i.id
    ),
    h AS (
        INSERT INTO {s}.history (instance_id, attempt, node, started_us, finished_us, state,
                                 error_type, error, result, output)
        SELECT f.id, f.attempts, %(owner)s, f.started_us, coalesce(f.finished_us, %(now)s),
               CASE WHEN f.state = {PENDING} THEN {FAILED} ELSE f.state END, f.error_type, f.error,
               f.result,
               f.output
        FROM f JOIN u ON u.id = f.id
        WHERE f.started_us IS NOT NULL
    )
    SELECT id FROM u
"""

# release and renew: see _pg_cluster (leases live on claims).

_RENEW: Final = _pg_cluster.RENEW

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


class Session(Protocol):
    """One store call on a worker thread: statements inside the call's transaction."""

    @property
    def conn(self) -> psycopg.Connection[tuple[Any, ...]]: ...

    def execute(
        self, query: LiteralString, params: dict[str, Any] | None = None
    ) -> psycopg.Cursor[tuple[Any, ...]]: ...


def int_array(values: Iterable[int | None]) -> str:
    """The PostgreSQL array literal of ``values`` (None as NULL), for a ``%(x)s::bigint[]``
    parameter: psycopg dumps a list element by element in Python, a third of the node's
    time in a burst; ``str.join`` builds the same array in a fraction of it."""
    return "{" + ",".join("NULL" if v is None else str(int(v)) for v in values) + "}"


@final
class Queries:
    """Every statement of the store for one schema, and the calls that run them.

    Each method taking a ``session`` runs on a worker thread as (part of) one store call.
    """

    def __init__(self, schema: str) -> None:
        self.schema = schema
        r = partial(render, schema=schema)
        self.listen: LiteralString = "LISTEN " + CHANNEL
        self.notify: LiteralString = "SELECT pg_notify('" + CHANNEL + "', %(payload)s)"
        self.cluster = _pg_cluster.ClusterQueries(r)
        self.claim_sql = r(_CLAIM)
        self.start_sql = r(_START)
        self.finish_sql = r(_FINISH)
        self.finish_running_sql = r(_FINISH_RUNNING)
        self.release_sql = r(_pg_cluster.release(Event.GIVE_BACK))
        self.evict_sql = r(_pg_cluster.release(Event.EVICT))
        self.renew_sql = r(_RENEW)
        self.insert_sql = r(_INSERT)
        self.existing_sql = r(_EXISTING)
        self.register_sql = r(_REGISTER)
        self.unregister_sql = r("UPDATE {s}.nodes SET stopped = now() WHERE node_id = %(node)s")
        self.lock_one_sql = r(
            "SELECT state, owner, schedule_id, fire_at_us FROM {s}.instances "
            "WHERE id = %(id)s FOR UPDATE"
        )
        self.abort_pending_sql = r(
            "UPDATE {s}.instances SET state = {ABORT}, updated_us = %(now)s WHERE id = %(id)s"
        )
        self.abort_held_sql = r(
            "UPDATE {s}.instances SET abort_requested = true, updated_us = %(now)s "
            "WHERE id = %(id)s"
        )
        self.next_pending_sql = r(
            "SELECT run_at_us FROM {s}.instances WHERE state = {PENDING} "
            "ORDER BY run_at_us, id LIMIT 1"
        )
        self.abort_requests_sql = r(
            "SELECT id FROM {s}.instances "
            "WHERE owner = %(owner)s AND state IN ({HELD}) AND abort_requested ORDER BY id"
        )
        self.get_sql = r(
            "SELECT " + _COLS + ", NULL, started_us FROM {s}.instances WHERE id = %(id)s"
        )
        self.list_sql = r("SELECT " + _READ_COLS + " FROM {s}.instances")
        self.count_sql = r("SELECT count(*) FROM {s}.instances")
        self.count_by_state_sql = r("SELECT state, count(*) FROM {s}.instances GROUP BY state")
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

    def claim(  # noqa: PLR0917 - the protocol's arguments, then the session
        self,
        owner: str,
        due_before_us: int,
        limit: int,
        now_us: int,
        lease: timedelta,
        session: Session,
    ) -> list[Instance]:
        cur = session.execute(
            self.claim_sql,
            {
                "owner": owner,
                "due": due_before_us,
                "limit": limit,
                "now": now_us,
                "lease": lease,
                "interrupted": INTERRUPTED,
            },
        )
        # RETURNING has no order; rows an abort request made ABORTED are not handed out.
        claimed = [_instance(row) for row in cur if row[4] == _CLAIMED]
        claimed.sort(key=lambda inst: (inst.run_at_us, inst.id))
        # A claimed schedule occurrence: its next one, in this transaction.
        return _pg_schedules.after_claim(self, session, claimed, now_us)

    def start(
        self, owner: str, items: Sequence[tuple[int, int]], now_us: int, session: Session
    ) -> list[bool]:
        params = {
            "ids": int_array(iid for iid, _ in items),
            "tokens": int_array(token for _, token in items),
            "owner": owner,
            "now": now_us,
        }
        applied = {row[0] for row in session.execute(self.start_sql, params)}
        return [iid in applied for iid, _ in items]

    def finish(
        self, owner: str, finishes: Sequence[Finish], now_us: int, session: Session
    ) -> list[bool]:
        if any(f.state is State.RUNNING for f in finishes):
            return self._finish_with_starts(owner, finishes, now_us, session)
        return self._finish(owner, finishes, now_us, session)

    def _finish_with_starts(
        self, owner: str, finishes: Sequence[Finish], now_us: int, session: Session
    ) -> list[bool]:
        """Starts of at-least-once runs (finishes to RUNNING) first, then the outcomes:
        one transaction."""
        starts = [f for f in finishes if f.state is State.RUNNING]
        cur = session.execute(
            self.finish_running_sql,
            {
                "ids": int_array(f.id for f in starts),
                "tokens": int_array(f.claim_token for f in starts),
                "started": int_array(f.started_us for f in starts),
                "owner": owner,
                "now": now_us,
            },
        )
        started = {row[0] for row in cur}
        rest = [f for f in finishes if f.state is not State.RUNNING]
        ended = iter(self._finish(owner, rest, now_us, session) if rest else [])
        return [f.id in started if f.state is State.RUNNING else next(ended) for f in finishes]

    def _finish(
        self, owner: str, finishes: Sequence[Finish], now_us: int, session: Session
    ) -> list[bool]:
        # A row matches one update per statement, so only an id's first finish may apply.
        first: dict[int, int] = {}
        for n, f in enumerate(finishes):
            first.setdefault(f.id, n)
        batch = sorted((finishes[n] for n in first.values()), key=lambda f: f.id)
        cur = session.execute(
            self.finish_sql,
            {
                "ids": int_array(f.id for f in batch),
                "tokens": int_array(f.claim_token for f in batch),
                "states": int_array(int(f.state) for f in batch),
                "attempts": int_array(f.attempts for f in batch),
                "errors": [f.error for f in batch],
                "run_ats": int_array(f.run_at_us for f in batch),
                "started": int_array(f.started_us for f in batch),
                "finished": int_array(f.finished_us for f in batch),
                "error_types": [f.error_type for f in batch],
                "results": [f.result for f in batch],
                "outputs": [f.output for f in batch],
                "owner": owner,
                "now": now_us,
            },
        )
        applied = {row[0] for row in cur}
        # A retry or a give-back is new work for any node's Puller.
        again = [
            f.run_at_us or now_us for f in batch if f.state is State.PENDING and f.id in applied
        ]
        if again:
            self.announce(session, _pg_cluster.PENDING_WORK, str(min(again)))
        return [f.id in applied and first[f.id] == n for n, f in enumerate(finishes)]

    def release(self, owner: str, now_us: int, ids: Sequence[int] | None, session: Session) -> int:
        params: dict[str, Any] = {"owner": owner, "now": now_us, "interrupted": INTERRUPTED}
        query = self.release_sql
        if ids is not None:
            query = self.evict_sql
            params["ids"] = list(ids)
        back = [row[0] for row in session.execute(query, params)]
        if ids is None:
            self.cluster.forget_empty_claims(owner, session)
        pending = [due for due in back if due is not None]
        if pending:  # rows given back are new work for the other nodes' Pullers
            self.announce(session, _pg_cluster.PENDING_WORK, str(min(pending)))
        return len(back)

    def renew(self, owner: str, lease: timedelta, session: Session) -> int:
        row = session.execute(self.renew_sql, {"owner": owner, "lease": lease}).fetchone()
        return 0 if row is None else int(row[0])

    def request_abort(self, instance_id: int, now_us: int, session: Session) -> AbortResult:
        row = session.execute(self.lock_one_sql, {"id": instance_id}).fetchone()
        if row is None:
            return AbortResult(found=False)
        state, owner = State(row[0]), row[1]
        params = {"id": instance_id, "now": now_us}
        if state is State.PENDING:
            session.execute(self.abort_pending_sql, params)
            if row[2] is not None and row[3] is not None:  # its schedule goes on
                _pg_schedules.after_abort(self, session, row[2], row[3], now_us)
            self.announce(session, _pg_cluster.ABORT)
            return AbortResult(found=True, state=apply(state, Event.ABORT), previous=state)
        if state in (State.CLAIMED, State.RUNNING):
            session.execute(self.abort_held_sql, params)
            self.announce(session, _pg_cluster.ABORT, owner or "")
            return AbortResult(found=True, state=state, owner=owner, requested=True, previous=state)
        return AbortResult(found=True, state=state, owner=owner, previous=state)

    def next_pending_at(self, session: Session) -> int | None:
        row = session.execute(self.next_pending_sql).fetchone()
        return None if row is None else int(row[0])

    def abort_requests(self, owner: str, session: Session) -> list[int]:
        return [row[0] for row in session.execute(self.abort_requests_sql, {"owner": owner})]

    def get(self, instance_id: int, session: Session) -> Instance | None:
        row = session.execute(self.get_sql, {"id": instance_id}).fetchone()
        return None if row is None else _instance(row)

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
        return [_instance(row) for row in session.execute(query, params)]

    def count(self, state: State | None, task: str | None, session: Session) -> int:
        query, params = _filtered(self.count_sql, state, task)
        row = session.execute(query, params).fetchone()
        return 0 if row is None else int(row[0])

    def count_by_state(self, session: Session) -> dict[State, int]:
        counts = dict.fromkeys(State, 0)
        for state, n in session.execute(self.count_by_state_sql):
            counts[State(state)] = int(n)
        return counts

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


def _instance(row: tuple[Any, ...]) -> Instance:
    """An Instance from a row of ``_COLUMNS`` (or ``_LIST_COLS``: the params size last)."""
    return Instance(
        id=row[0],
        task=row[1],
        run_at_us=row[2],
        params=bytes(row[3]),
        state=State(row[4]),
        attempts=row[5],
        error=row[6],
        owner=row[7],
        claim_token=row[8],
        lease_until_us=row[9],
        schedule_id=row[10],
        fire_at_us=row[11],
        dedup_key=row[12],
        max_attempts=row[13],
        timeout_us=row[14],
        created_us=row[15],
        updated_us=row[16],
        params_size=row[17] if len(row) > 17 else None,  # listed: _LIST_COLS
        started_us=row[18] if len(row) > 18 else None,  # read: _READ_COLS
    )


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
