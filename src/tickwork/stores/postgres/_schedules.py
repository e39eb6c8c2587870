"""Schedules in the PostgreSQL store: schema, :class:`ScheduleTx` and the protocol's methods.

The rules are :mod:`tickwork.stores._schedule_ops`'; this module is their SQL. Writes
run in the store's transaction (READ COMMITTED). ``load`` locks the schedule rows
``FOR UPDATE`` in id order, so nodes that claim occurrences of one schedule at the same
time take turns on it (and never deadlock); the occurrence insert is ``ON CONFLICT DO
NOTHING`` on the ``(schedule_id, fire_at_us)`` unique index, so no fire time is written
twice, whichever node gets there first.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Final, LiteralString, TypeVar, cast, final

from psycopg import sql

from tickwork.model import Instance, NewRow
from tickwork.schedules.plan import InFlight, OccurrenceInfo, Slot
from tickwork.state import Event, State, sources, target
from tickwork.stores import _schedule_ops as ops
from tickwork.stores._schedule_methods import ScheduleMethods
from tickwork.stores._schedule_ops import LiveRow, ScheduleTx
from tickwork.stores._schedule_rows import (
    SCHEDULE_COLUMNS,
    schedule_from_row,
    schedule_row,
    slots_from_rows,
)
from tickwork.stores._sql import states
from tickwork.stores.postgres import _cluster as _pg_cluster

if TYPE_CHECKING:
    from tickwork.schedules.schedule import Schedule
    from tickwork.stores.postgres import PostgresStore
    from tickwork.stores.postgres._rows import Session
    from tickwork.stores.postgres._schema import Queries

__all__ = [
    "V4_SCHEDULES",
    "V5_ADMITTED",
    "V9_SCHEDULE_NOTIFY",
    "PgScheduleMethods",
    "after_abort",
    "after_claim",
]

T = TypeVar("T")

#: Schema version 4: recurring schedules. One row per schedule; occurrences are instances.
#: The partial index finds a schedule's unfinished occurrences (pause, remove, catch-up)
#: without walking its history.
V4_SCHEDULES: Final[tuple[str, ...]] = (
    """CREATE TABLE {s}.schedules (
        id text PRIMARY KEY,
        task text NOT NULL,
        trigger_kind text NOT NULL,
        cron_expr text,
        cron_tz text,
        every_us bigint,
        interval_start_us bigint,
        params bytea NOT NULL,
        start_at_us bigint,
        end_at_us bigint,
        jitter_us bigint NOT NULL,
        misfire text NOT NULL,
        grace_us bigint NOT NULL,
        catchup_limit integer NOT NULL,
        overlap text NOT NULL,
        paused boolean NOT NULL,
        last_fire_us bigint,
        ended boolean NOT NULL,
        created_us bigint NOT NULL,
        updated_us bigint NOT NULL
    )""",
    """CREATE INDEX instances_schedule_live ON {s}.instances (schedule_id, fire_at_us)
        WHERE state IN ({LIVE}) AND schedule_id IS NOT NULL""",
)

#: Schema version 5: overlap policies across nodes (tickwork.actors.overlap). Each schedule's
#: admitted occurrence: the instance a node last started under a policy other than
#: "allow", and the claim token it held then (see tickwork.schedules.plan.Slot). Nothing
#: writes them when the occurrence ends: the next admission reads that row's state.
V5_ADMITTED: Final[tuple[str, ...]] = (
    "ALTER TABLE {s}.schedules ADD COLUMN active_id bigint, ADD COLUMN active_token bigint",
)

# A schedule's own failure notifications (tickwork.Notify as JSON text, NULL: none; #14).
V9_SCHEDULE_NOTIFY: Final[tuple[str, ...]] = ("ALTER TABLE {s}.schedules ADD COLUMN notify text",)

_COLS: Final = SCHEDULE_COLUMNS
_NAMES: Final = [c.strip() for c in SCHEDULE_COLUMNS.split(",")]
#: The SQL type of each column of SCHEDULE_COLUMNS (save sends one array per column).
_TYPES: Final = (
    "text", "text", "text", "text", "text", "bigint", "bigint", "bytea", "bigint", "bigint",
    "bigint", "text", "bigint", "integer", "text", "boolean", "bigint", "boolean", "bigint",
    "bigint", "text",
)  # fmt: skip


def _render(template: str, schema: str) -> LiteralString:
    # As _pg_migrations.render: constant fragments and a quoted identifier only.
    return states(template).replace("{s}", sql.Identifier(schema).as_string())


@final
class _Statements:
    def __init__(self, schema: str) -> None:
        r = partial(_render, schema=schema)
        self.load = r(f"SELECT {_COLS} FROM {{s}}.schedules WHERE id = ANY(%(ids)s) ORDER BY id")
        self.load_lock = self.load + " FOR UPDATE"
        self.page = r(
            f"SELECT {_COLS} FROM {{s}}.schedules WHERE id > %(after)s ORDER BY id LIMIT %(limit)s"
        )
        arrays = ", ".join(f"%({n})s::{t}[]" for n, t in zip(_NAMES, _TYPES, strict=True))
        updates = ", ".join(f"{n} = EXCLUDED.{n}" for n in _NAMES[1:])
        self.save = r(
            f"INSERT INTO {{s}}.schedules ({_COLS}) SELECT * FROM unnest({arrays}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates}"
        )
        self.delete = r("DELETE FROM {s}.schedules WHERE id = %(id)s")
        self.insert = r(
            """INSERT INTO {s}.instances (task, run_at_us, params, state, error, schedule_id,
                                          fire_at_us, created_us, updated_us)
            SELECT t.task, t.run_at_us, t.params, t.state, t.error, t.schedule_id,
                   t.fire_at_us, %(now)s, %(now)s
            FROM unnest(%(tasks)s::text[], %(run_ats)s::bigint[], %(params)s::bytea[],
                        %(states)s::smallint[], %(errors)s::text[], %(sids)s::text[],
                        %(fires)s::bigint[])
                 AS t(task, run_at_us, params, state, error, schedule_id, fire_at_us)
            ORDER BY t.fire_at_us
            ON CONFLICT DO NOTHING
            RETURNING run_at_us, state"""
        )
        self.live = r(
            "SELECT id, state, fire_at_us, run_at_us FROM {s}.instances "
            "WHERE schedule_id = %(sid)s AND state IN ({LIVE}) AND fire_at_us IS NOT NULL"
        )
        self.end = r(
            """UPDATE {s}.instances AS i SET
                state = %(state)s, error = f.error, claim_token = NULL,
                abort_requested = false, updated_us = %(now)s,
                fire_at_us = CASE WHEN %(detach)s THEN NULL ELSE i.fire_at_us END
            FROM unnest(%(ids)s::bigint[], %(errors)s::text[]) AS f(id, error)
            WHERE i.id = f.id AND i.state = ANY(%(sources)s::smallint[])"""
        )
        self.detach = r(
            "UPDATE {s}.instances SET fire_at_us = NULL, error = %(error)s, "
            "updated_us = %(now)s WHERE id = ANY(%(ids)s) AND state IN ({HELD})"
        )
        self.info = r(
            "SELECT id, schedule_id, fire_at_us, run_at_us, error, "
            "CASE WHEN state IN ({HELD}) THEN owner END, "
            "CASE WHEN state IN ({HELD}) THEN claim_token END FROM {s}.instances "
            "WHERE id = ANY(%(ids)s) AND schedule_id IS NOT NULL"
        )
        # Admission (ScheduleTx.slots): lock the schedule rows first, in id order as every
        # other locker of schedule rows does; the rows they name are read by a *second*
        # statement, whose snapshot (READ COMMITTED: one per statement) is taken once the
        # locks are granted, so it sees whatever the previous holder of a lock committed.
        self.slots_lock = r(
            "SELECT id, active_id, active_token FROM {s}.schedules "
            "WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE"
        )
        self.holders = r(
            "SELECT id, state, owner, claim_token, fire_at_us FROM {s}.instances "
            "WHERE id = ANY(%(ids)s)"
        )
        # The oldest held occurrence due before each asker (the partial index on
        # (schedule_id, fire_at_us) of unfinished rows, one range scan per schedule).
        self.older = r(
            """SELECT w.sid, h.id, h.owner, h.fire_at_us
            FROM unnest(%(sids)s::text[], %(fires)s::bigint[], %(owners)s::text[])
                 AS w(sid, fire, owner)
            CROSS JOIN LATERAL (
                SELECT i.id, i.owner, i.fire_at_us FROM {s}.instances i
                WHERE i.schedule_id = w.sid AND i.state IN ({HELD})
                  AND i.fire_at_us < w.fire AND i.run_at_us <= %(now)s
                  AND i.owner IS DISTINCT FROM w.owner
                ORDER BY i.fire_at_us LIMIT 1) AS h"""
        )
        self.take = r(
            """UPDATE {s}.schedules AS s SET active_id = t.iid, active_token = t.token
            FROM unnest(%(sids)s::text[], %(iids)s::bigint[], %(tokens)s::bigint[])
                 AS t(sid, iid, token)
            WHERE s.id = t.sid"""
        )


@functools.lru_cache(maxsize=64)
def _statements(schema: str) -> _Statements:
    return _Statements(schema)


class _Tx:
    """:class:`tickwork.stores._schedule_ops.ScheduleTx` in one PostgreSQL transaction.

    ``announce``: NOTIFY other nodes of new PENDING work and of schedule changes (not
    for a claim's own next occurrence: the claiming node finds it itself).
    """

    def __init__(self, q: Queries, session: Session, now_us: int, *, announce: bool) -> None:
        self._q = q
        self._st = _statements(q.schema)
        self._session = session
        self._now = now_us
        self._announce = announce

    def _exec(self, query: LiteralString, params: dict[str, Any]) -> Any:
        return self._session.execute(query, params)

    def load(self, ids: Sequence[str], *, lock: bool = True) -> dict[str, Schedule]:
        query = self._st.load_lock if lock else self._st.load
        rows = self._exec(query, {"ids": list(ids)}).fetchall()
        return {r[0]: schedule_from_row(r) for r in rows}

    def page(self, limit: int, after_id: str | None) -> builtins.list[Schedule]:
        rows = self._exec(self._st.page, {"after": after_id or "", "limit": limit})
        return [schedule_from_row(r) for r in rows]

    def save(self, schedules: Sequence[Schedule]) -> None:
        columns = list(zip(*(schedule_row(s) for s in schedules), strict=True))
        self._exec(self._st.save, {n: list(c) for n, c in zip(_NAMES, columns, strict=True)})
        if self._announce:
            self._q.announce(self._session, _pg_cluster.SCHEDULES)

    def delete(self, schedule_id: str) -> None:
        self._exec(self._st.delete, {"id": schedule_id})
        self._q.announce(self._session, _pg_cluster.SCHEDULES)

    def insert(self, rows: Sequence[NewRow]) -> None:
        params = {
            "tasks": [r.task for r in rows],
            "run_ats": [r.run_at_us for r in rows],
            "params": [bytes(r.params) for r in rows],
            "states": [int(r.state) for r in rows],
            "errors": [r.error for r in rows],
            "sids": [r.schedule_id for r in rows],
            "fires": [r.fire_at_us for r in rows],
            "now": self._now,
        }
        placed = self._exec(self._st.insert, params).fetchall()
        due = [run_at for run_at, state in placed if state == State.PENDING]
        if due and self._announce:
            self._q.announce(self._session, _pg_cluster.PENDING_WORK, str(min(due)))

    def live(self, schedule_id: str) -> builtins.list[LiveRow]:
        rows = self._exec(self._st.live, {"sid": schedule_id}).fetchall()
        out = [LiveRow(r[0], State(r[1]), r[2], r[3]) for r in rows]
        return sorted(out, key=lambda r: (r.fire_us, r.id))

    def end(self, items: Sequence[tuple[int, str]], event: Event, *, detach: bool) -> None:
        self._exec(
            self._st.end,
            {
                "ids": [iid for iid, _ in items],
                "errors": [reason for _, reason in items],
                "state": int(target(event)),
                "sources": sorted(int(s) for s in sources(event)),
                "detach": detach,
                "now": self._now,
            },
        )

    def detach(self, ids: Sequence[int], error: str) -> None:
        self._exec(self._st.detach, {"ids": list(ids), "error": error, "now": self._now})

    def info(self, ids: Sequence[int]) -> dict[int, OccurrenceInfo]:
        rows = self._exec(self._st.info, {"ids": list(ids)}).fetchall()
        return {r[0]: OccurrenceInfo(*r) for r in rows}

    def slots(self, schedule_ids: Sequence[str]) -> dict[str, Slot]:
        found = self._exec(self._st.slots_lock, {"ids": list(schedule_ids)}).fetchall()
        return slots_from_rows(found, lambda ids: self._exec(self._st.holders, {"ids": ids}))

    def older(
        self, items: Sequence[tuple[str, int, str | None]], now_us: int
    ) -> dict[str, InFlight]:
        params = {
            "sids": [sid for sid, _, _ in items],
            "fires": [fire for _, fire, _ in items],
            "owners": [owner for _, _, owner in items],
            "now": now_us,
        }
        rows = self._exec(self._st.older, params).fetchall()
        return {r[0]: InFlight(r[1], r[2], r[3], waiting=True) for r in rows}

    def take(self, items: Sequence[tuple[str, int, int | None]]) -> None:
        params = {
            "sids": [sid for sid, _, _ in items],
            "iids": [iid for _, iid, _ in items],
            "tokens": [token for _, _, token in items],
        }
        self._exec(self._st.take, params)


def after_claim(
    q: Queries, session: Session, claimed: list[Instance], now_us: int
) -> list[Instance]:
    """``Queries.claim``'s schedule work, inside its transaction (see ``_schedule_ops``)."""
    if not any(i.schedule_id is not None for i in claimed):
        return claimed
    return ops.after_claim(_Tx(q, session, now_us, announce=False), claimed, now_us)


def after_abort(q: Queries, session: Session, schedule_id: str, fire_us: int, now_us: int) -> None:
    """``Queries.request_abort`` aborted a PENDING occurrence: its schedule goes on."""
    ops.after_abort(_Tx(q, session, now_us, announce=True), schedule_id, fire_us, now_us)


def _op(now_us: int, fn: Callable[[ScheduleTx], T], q: Queries, session: Session) -> T:
    return fn(_Tx(q, session, now_us, announce=True))


class PgScheduleMethods(ScheduleMethods):
    """The Store protocol's schedule methods for :class:`PostgresStore` (a mixin)."""

    async def _run(self, now_us: int, fn: Callable[[ScheduleTx], T], *, write: bool = True) -> T:
        store = cast("PostgresStore", self)
        q = store._q  # noqa: SLF001 - the mixin is part of the store
        return await store._call(partial(_op, now_us, fn, q), write=write)  # noqa: SLF001
