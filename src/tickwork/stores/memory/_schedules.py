# ruff: noqa: SLF001 - this module is part of MemoryStore (split off by idea), on its internals
"""Schedules in the MemoryStore: its :class:`ScheduleTx` and the protocol's schedule methods.

:class:`MemoryScheduleMethods` is a mixin of :class:`~tickwork.stores.memory.MemoryStore`;
it works on that store's dicts and indexes through the store's one writer of rows,
``_put``. Each method is atomic, as every MemoryStore call is (no checkpoint inside).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, TypeVar, cast

import attrs
import trio

from tickwork.model import Instance, NewRow
from tickwork.schedules.plan import InFlight, OccurrenceInfo, Slot
from tickwork.state import Event, lookup
from tickwork.stores import _schedule_ops as ops
from tickwork.stores._rules import HELD
from tickwork.stores._schedule_methods import ScheduleMethods
from tickwork.stores._schedule_ops import LiveRow, ScheduleTx

if TYPE_CHECKING:
    from tickwork.schedules.schedule import Schedule
    from tickwork.stores.memory import MemoryStore

__all__ = ["MemoryScheduleMethods"]

T = TypeVar("T")

#: Past this many tracked ids, a schedule's set of unfinished occurrences drops ended ones.
_TIDY_AT: Final = 64


class _Tx:
    """:class:`tickwork.stores._schedule_ops.ScheduleTx` on a MemoryStore."""

    def __init__(self, store: MemoryStore, now_us: int) -> None:
        self._s = store
        self._now = now_us

    def load(self, ids: Sequence[str], *, lock: bool = True) -> dict[str, Schedule]:
        del lock  # one call at a time: nothing to lock
        table = self._s._schedules
        return {sid: table[sid] for sid in ids if sid in table}

    def page(self, limit: int, after_id: str | None) -> builtins.list[Schedule]:
        table = self._s._schedules
        keys = sorted(k for k in table if after_id is None or k > after_id)
        return [table[k] for k in keys[:limit]]

    def save(self, schedules: Sequence[Schedule]) -> None:
        for schedule in schedules:
            self._s._schedules[schedule.id] = schedule

    def delete(self, schedule_id: str) -> None:
        self._s._schedules.pop(schedule_id, None)
        self._s._schedule_slots.pop(schedule_id, None)

    def insert(self, rows: Sequence[NewRow]) -> None:
        s = self._s
        for row in rows:
            if row.schedule_id is None or row.fire_at_us is None:
                continue
            key = (row.schedule_id, row.fire_at_us)
            if key in s._fires:
                continue
            s._last_id += 1
            iid = s._last_id
            # Not MemoryStore.insert's row: an occurrence is found again by its fire time
            # only and writes no dedup key, max_attempts or timeout (nor do SQLite's and
            # PostgreSQL's occurrence INSERTs); it is tracked among its schedule's rows.
            s._put(
                Instance(
                    id=iid,
                    task=row.task,
                    run_at_us=row.run_at_us,
                    params=row.params,
                    state=row.state,
                    error=row.error,
                    schedule_id=row.schedule_id,
                    fire_at_us=row.fire_at_us,
                    created_us=self._now,
                    updated_us=self._now,
                )
            )
            s._fires[key] = iid
            if not row.state.terminal:
                tracked = s._schedule_rows.setdefault(row.schedule_id, set())
                tracked.add(iid)
                if len(tracked) > _TIDY_AT:
                    self.live(row.schedule_id)

    def live(self, schedule_id: str) -> builtins.list[LiveRow]:
        tracked = self._s._schedule_rows.get(schedule_id, set())
        out, done = [], []
        for iid in tracked:
            row = self._s._rows.get(iid)
            if row is None or row.state.terminal or row.fire_at_us is None:
                done.append(iid)
            else:
                out.append(LiveRow(iid, row.state, row.fire_at_us, row.run_at_us))
        tracked.difference_update(done)
        return sorted(out, key=lambda r: (r.fire_us, r.id))

    def _unfire(self, row: Instance) -> None:
        if row.schedule_id is not None and row.fire_at_us is not None:
            self._s._fires.pop((row.schedule_id, row.fire_at_us), None)

    def end(self, items: Sequence[tuple[int, str]], event: Event, *, detach: bool) -> None:
        for iid, reason in items:
            row = self._s._rows.get(iid)
            state = None if row is None else lookup(row.state, event)
            if row is None or state is None:
                continue
            if detach:
                self._unfire(row)
            self._s._put(
                attrs.evolve(
                    row,
                    state=state,
                    error=reason,
                    claim_token=None,
                    lease_until_us=None,
                    fire_at_us=None if detach else row.fire_at_us,
                    updated_us=self._now,
                )
            )

    def detach(self, ids: Sequence[int], error: str) -> None:
        for iid in ids:
            row = self._s._rows.get(iid)
            if row is None or row.state not in HELD:
                continue
            self._unfire(row)
            self._s._put(attrs.evolve(row, fire_at_us=None, error=error, updated_us=self._now))

    def info(self, ids: Sequence[int]) -> dict[int, OccurrenceInfo]:
        out = {}
        for iid in ids:
            row = self._s._rows.get(iid)
            if row is not None and row.schedule_id is not None:
                out[iid] = OccurrenceInfo(
                    iid,
                    row.schedule_id,
                    row.fire_at_us,
                    row.run_at_us,
                    row.error,
                    row.owner if row.state in HELD else None,
                    row.claim_token if row.state in HELD else None,
                )
        return out

    def slots(self, schedule_ids: Sequence[str]) -> dict[str, Slot]:
        table, slots = self._s._schedules, self._s._schedule_slots
        out = {}
        for sid in schedule_ids:
            if sid not in table:
                continue
            iid, token = slots.get(sid, (None, None))
            row = None if iid is None else self._s._rows.get(iid)
            if row is None:
                out[sid] = Slot(iid, token)
            else:
                out[sid] = Slot(iid, token, row.state, row.owner, row.claim_token, row.fire_at_us)
        return out

    def older(
        self, items: Sequence[tuple[str, int, str | None]], now_us: int
    ) -> dict[str, InFlight]:
        out = {}
        for sid, fire_us, owner in items:
            held = [
                row
                for iid in self._s._schedule_rows.get(sid, ())
                if (row := self._s._rows.get(iid)) is not None
                and row.state in HELD
                and row.fire_at_us is not None
                and row.fire_at_us < fire_us
                and row.run_at_us <= now_us
                and row.owner != owner
            ]
            if held:
                first = min(held, key=lambda r: (r.fire_at_us or 0, r.id))
                out[sid] = InFlight(first.id, first.owner, first.fire_at_us, waiting=True)
        return out

    def take(self, items: Sequence[tuple[str, int, int | None]]) -> None:
        slots = self._s._schedule_slots
        for sid, iid, token in items:
            slots[sid] = (iid, token)


class MemoryScheduleMethods(ScheduleMethods):
    """The Store protocol's schedule methods for :class:`MemoryStore` (a mixin)."""

    def _tx(self, now_us: int) -> _Tx:
        store = cast("MemoryStore", self)
        store._check_open()
        return _Tx(store, now_us)

    def _after_claim(self, claimed: list[Instance], now_us: int) -> list[Instance]:
        """The claim's schedule work (next occurrences, misfire policy); see after_claim."""
        return ops.after_claim(self._tx(now_us), claimed, now_us)

    def _after_abort(self, row: Instance, now_us: int) -> None:
        """A PENDING occurrence was aborted: its schedule goes on (see after_abort)."""
        if row.schedule_id is not None and row.fire_at_us is not None:
            ops.after_abort(self._tx(now_us), row.schedule_id, row.fire_at_us, now_us)

    async def _run(
        self,
        now_us: int,
        fn: Callable[[ScheduleTx], T],
        *,
        write: bool = True,  # noqa: ARG002 - every call of this store is atomic
    ) -> T:
        await trio.lowlevel.checkpoint()
        return fn(self._tx(now_us))
