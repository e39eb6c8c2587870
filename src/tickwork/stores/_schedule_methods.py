"""The Store protocol's schedule methods, written once for every store.

Each method is one operation of :mod:`tickwork.stores._schedule_ops` run in one
transaction of the store. A store mixes :class:`ScheduleMethods` in and says how it runs a
function in a transaction (:meth:`ScheduleMethods._run`): on the SQLite store's thread,
on a PostgreSQL connection, or in the memory store's own dicts.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Sequence
from typing import TypeVar

from tickwork.model import DEFAULT_MAX_PARAMS_BYTES, NewRow, check_params_size
from tickwork.schedules.plan import OccurrenceCheck
from tickwork.schedules.schedule import Schedule, ScheduleWrite
from tickwork.stores import _schedule_ops as ops
from tickwork.stores._schedule_admission import check_occurrences
from tickwork.stores._schedule_ops import ScheduleTx

__all__ = ["ScheduleMethods"]

T = TypeVar("T")


class ScheduleMethods:
    """A mixin: the schedule methods of :class:`~tickwork.stores.base.Store`."""

    #: The largest params this store accepts, in bytes (``insert`` and ``add_schedule``
    #: refuse larger ones with InvalidArgument). Set by the store's constructor, and by
    #: ``open_scheduler(max_params_bytes=...)`` for the node that runs on it.
    max_params_bytes: int = DEFAULT_MAX_PARAMS_BYTES

    def _check_params(self, rows: Sequence[NewRow]) -> None:
        """Refuse the whole batch if one row's params are over the limit (nothing written).

        Raises:
            InvalidArgument: naming the limit.
        """
        limit = self.max_params_bytes
        for row in rows:
            check_params_size(len(row.params), limit)

    async def _run(self, now_us: int, fn: Callable[[ScheduleTx], T], *, write: bool = True) -> T:
        """Run ``fn`` in one transaction of the store (read-only if not ``write``)."""
        raise NotImplementedError

    async def add_schedule(
        self, schedule: Schedule, now_us: int, *, replace: bool = False
    ) -> ScheduleWrite:
        check_params_size(len(schedule.params), self.max_params_bytes, "schedule params")
        return await self._run(now_us, lambda tx: ops.add(tx, schedule, now_us, replace=replace))

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        load = lambda tx: tx.load([schedule_id], lock=False).get(schedule_id)  # noqa: E731
        return await self._run(0, load, write=False)

    async def list_schedules(
        self, *, limit: int = 1000, after_id: str | None = None
    ) -> builtins.list[Schedule]:
        return await self._run(0, lambda tx: tx.page(limit, after_id), write=False)

    async def pause_schedule(self, schedule_id: str, now_us: int) -> Schedule | None:
        return await self._run(now_us, lambda tx: ops.pause(tx, schedule_id, now_us))

    async def resume_schedule(self, schedule_id: str, now_us: int) -> ScheduleWrite | None:
        return await self._run(now_us, lambda tx: ops.resume(tx, schedule_id, now_us))

    async def remove_schedule(self, schedule_id: str, now_us: int) -> bool:
        return await self._run(now_us, lambda tx: ops.remove(tx, schedule_id, now_us))

    async def check_occurrences(
        self, ids: Sequence[int], now_us: int, *, admit: Collection[int] = ()
    ) -> builtins.list[OccurrenceCheck]:
        check = check_occurrences
        # Admitting locks the schedules and may record their admitted occurrences: a write.
        write = bool(admit)
        return await self._run(now_us, lambda tx: check(tx, ids, now_us, admit), write=write)
