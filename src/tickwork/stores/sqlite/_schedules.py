"""Schedules in the SQLite store: its :class:`ScheduleTx` and the protocol's schedule methods.

The rules are :mod:`tickwork.stores._schedule_ops`'; this module is their SQL. Writes run
inside :meth:`Ops._write` (one ``BEGIN IMMEDIATE`` transaction, row counts kept), so the
claim's next occurrence commits with the claim itself.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, TypeVar, cast

from tickwork.model import Instance, NewRow
from tickwork.schedules.plan import InFlight, OccurrenceInfo, Slot
from tickwork.state import Event, State, lookup
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

if TYPE_CHECKING:
    from collections import Counter

    from tickwork.schedules.schedule import Schedule
    from tickwork.stores.sqlite import SQLiteStore
    from tickwork.stores.sqlite._ops import Ops

__all__ = ["SQLiteScheduleMethods", "after_abort", "after_claim"]

T = TypeVar("T")

_STATES: Final = tuple(sorted(State))
_LOAD: Final = (
    f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id IN (SELECT value FROM json_each(?))"
)
_PAGE: Final = f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id > ? ORDER BY id LIMIT ?"
_NAMES: Final = [c.strip() for c in SCHEDULE_COLUMNS.split(",")]
# An upsert, not INSERT OR REPLACE: the admitted occurrence (active_id, active_token) is
# not part of a Schedule and must survive a save.
_SAVE: Final = (
    f"INSERT INTO schedules ({SCHEDULE_COLUMNS}) VALUES ({', '.join('?' * len(_NAMES))}) "
    f"ON CONFLICT (id) DO UPDATE SET {', '.join(f'{n} = excluded.{n}' for n in _NAMES[1:])}"
)
_INSERT: Final = (
    "INSERT OR IGNORE INTO instances (id, task, run_at, params, state, error, schedule_id, "
    "fire_at, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_WRITTEN: Final = "SELECT id FROM instances WHERE id IN (SELECT value FROM json_each(?))"
_LIVE: Final = states(
    "SELECT id, state, fire_at, run_at FROM instances INDEXED BY ix_instances_schedule_live "
    "WHERE schedule_id = ? AND schedule_id IS NOT NULL AND state < {SUCCEEDED} "
    "AND fire_at IS NOT NULL"
)
#: The rows an end may touch (each then only if the table has its event from its state).
_ENDABLE: Final = states(
    "SELECT id, state, task FROM instances "
    "WHERE id IN (SELECT value FROM json_each(?)) AND state IN ({MISFIRE.from})"
)
_END: Final = (
    "UPDATE instances SET state = ?, error = ?, claim_token = NULL, lease_until = NULL, "
    "abort_requested = 0, fire_at = CASE WHEN ? THEN NULL ELSE fire_at END, updated = ? "
    "WHERE id = ?"
)
_DETACH: Final = states(
    "UPDATE instances SET fire_at = NULL, error = ?, updated = ? "
    "WHERE id IN (SELECT value FROM json_each(?)) AND state IN ({HELD})"
)
_INFO: Final = states(
    "SELECT id, schedule_id, fire_at, run_at, error, CASE WHEN state IN ({HELD}) THEN owner "
    "END, CASE WHEN state IN ({HELD}) THEN claim_token END "
    "FROM instances WHERE id IN (SELECT value FROM json_each(?)) AND schedule_id IS NOT NULL"
)
_SLOTS: Final = (
    "SELECT id, active_id, active_token FROM schedules WHERE id IN (SELECT value FROM json_each(?))"
)
_HOLDERS: Final = (
    "SELECT id, state, owner, claim_token, fire_at FROM instances "
    "WHERE id IN (SELECT value FROM json_each(?))"
)
_TAKE: Final = "UPDATE schedules SET active_id = ?, active_token = ? WHERE id = ?"
_OLDER: Final = states(
    "SELECT id, owner, fire_at FROM instances "
    "WHERE schedule_id = ? AND schedule_id IS NOT NULL AND state < {SUCCEEDED} "
    "AND state > {PENDING} "
    "AND fire_at < ? AND run_at <= ? AND owner IS NOT ? ORDER BY fire_at LIMIT 1"
)


class _Tx:
    """:class:`tickwork.stores._schedule_ops.ScheduleTx` on the store's connection.

    ``deltas`` is the open write transaction's row-count changes (None for a read).
    """

    def __init__(self, o: Ops, deltas: Counter[tuple[str, int]] | None, now_us: int) -> None:
        self._o = o
        self._c = o._c  # noqa: SLF001 - this module is part of the SQLite store
        self._deltas = deltas
        self._now = now_us

    def _count(self) -> Counter[tuple[str, int]]:
        if self._deltas is None:  # pragma: no cover - a write outside a write transaction
            raise RuntimeError("a schedule write ran outside a write transaction")
        return self._deltas

    def load(self, ids: Sequence[str], *, lock: bool = True) -> dict[str, Schedule]:
        del lock  # BEGIN IMMEDIATE already serialises writers
        rows = self._c.execute(_LOAD, (json.dumps(list(ids)),)).fetchall()
        return {r[0]: schedule_from_row(r) for r in rows}

    def page(self, limit: int, after_id: str | None) -> builtins.list[Schedule]:
        rows = self._c.execute(_PAGE, ("" if after_id is None else after_id, limit))
        return [schedule_from_row(r) for r in rows]

    def save(self, schedules: Sequence[Schedule]) -> None:
        self._c.executemany(_SAVE, [schedule_row(s) for s in schedules])

    def delete(self, schedule_id: str) -> None:
        self._c.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,))

    def insert(self, rows: Sequence[NewRow]) -> None:
        # Ids are drawn first; a row whose fire time exists is ignored (its id unused).
        # That is rare (a restart, a race with the CLI): then ask which ids were written.
        first = self._o._next("last_id", len(rows)) - len(rows) + 1  # noqa: SLF001
        now = self._now
        params = [
            (first + k, r.task, r.run_at_us, r.params, int(r.state), r.error,
             r.schedule_id, r.fire_at_us, now, now)
            for k, r in enumerate(rows)
        ]  # fmt: skip
        written = self._c.executemany(_INSERT, params).rowcount
        new = list(rows)
        if written != len(rows):
            ids = json.dumps([p[0] for p in params])
            found = {r[0] for r in self._c.execute(_WRITTEN, (ids,))}
            new = [r for p, r in zip(params, rows, strict=True) if p[0] in found]
        self._count().update((r.task, int(r.state)) for r in new)

    def live(self, schedule_id: str) -> builtins.list[LiveRow]:
        rows = self._c.execute(_LIVE, (schedule_id,)).fetchall()
        out = [LiveRow(r[0], _STATES[r[1]], r[2], r[3]) for r in rows]
        return sorted(out, key=lambda r: (r.fire_us, r.id))

    def end(self, items: Sequence[tuple[int, str]], event: Event, *, detach: bool) -> None:
        reasons = dict(items)
        rows = self._c.execute(_ENDABLE, (json.dumps(list(reasons)),)).fetchall()
        deltas = self._count()
        params = []
        for iid, old, task in rows:
            state = lookup(_STATES[old], event)
            if state is None:
                continue
            params.append((int(state), reasons[iid], detach, self._now, iid))
            deltas[(task, old)] -= 1
            deltas[(task, int(state))] += 1
        self._c.executemany(_END, params)

    def detach(self, ids: Sequence[int], error: str) -> None:
        self._c.execute(_DETACH, (error, self._now, json.dumps(list(ids))))

    def info(self, ids: Sequence[int]) -> dict[int, OccurrenceInfo]:
        rows = self._c.execute(_INFO, (json.dumps(list(ids)),)).fetchall()
        return {r[0]: OccurrenceInfo(*r) for r in rows}

    def slots(self, schedule_ids: Sequence[str]) -> dict[str, Slot]:
        # Inside BEGIN IMMEDIATE (check_occurrences with admit is a write): no other writer.
        found = self._c.execute(_SLOTS, (json.dumps(list(schedule_ids)),)).fetchall()
        return slots_from_rows(found, lambda ids: self._c.execute(_HOLDERS, (json.dumps(ids),)))

    def older(
        self, items: Sequence[tuple[str, int, str | None]], now_us: int
    ) -> dict[str, InFlight]:
        out = {}
        for sid, fire_us, owner in items:
            row = self._c.execute(_OLDER, (sid, fire_us, now_us, owner)).fetchone()
            if row is not None:
                out[sid] = InFlight(row[0], row[1], row[2], waiting=True)
        return out

    def take(self, items: Sequence[tuple[str, int, int | None]]) -> None:
        self._count()  # a write: only inside a write transaction
        self._c.executemany(_TAKE, [(iid, token, sid) for sid, iid, token in items])


def after_claim(
    o: Ops, deltas: Counter[tuple[str, int]], claimed: list[Instance], now_us: int
) -> list[Instance]:
    """``Ops.claim``'s schedule work, inside its transaction (see ``_schedule_ops``)."""
    if not any(i.schedule_id is not None for i in claimed):
        return claimed
    return ops.after_claim(_Tx(o, deltas, now_us), claimed, now_us)


def after_abort(
    o: Ops, deltas: Counter[tuple[str, int]], schedule_id: str, fire_us: int, now_us: int
) -> None:
    """``Ops.request_abort`` aborted a PENDING occurrence: its schedule goes on."""
    ops.after_abort(_Tx(o, deltas, now_us), schedule_id, fire_us, now_us)


def _write(o: Ops, now_us: int, fn: Callable[[ScheduleTx], T]) -> T:
    with o._write() as deltas:  # noqa: SLF001
        return fn(_Tx(o, deltas, now_us))


class SQLiteScheduleMethods(ScheduleMethods):
    """The Store protocol's schedule methods for :class:`SQLiteStore` (a mixin)."""

    async def _run(self, now_us: int, fn: Callable[[ScheduleTx], T], *, write: bool = True) -> T:
        store = cast("SQLiteStore", self)
        if write:
            return await store._call(lambda o: _write(o, now_us, fn))  # noqa: SLF001
        return await store._call(lambda o: fn(_Tx(o, None, now_us)))  # noqa: SLF001
