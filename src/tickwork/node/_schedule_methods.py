"""The Scheduler's recurring-schedule calls (see ``docs/schedules.md``): a mixin of
:class:`tickwork.Scheduler`, whose public methods they are.

Each call is one store transaction, so the CLI (a store client without a node) makes the
same ones. A call that wrote an occurrence wakes the Puller, as ``schedule()`` does.
"""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from tickwork._time import from_us
from tickwork.errors import InvalidArgument, NotFound
from tickwork.node import operations as _operations
from tickwork.node._arguments import check_limit, schedule_allowed
from tickwork.notify import Notify
from tickwork.schedules.schedule import (
    DEFAULT_CATCHUP_LIMIT,
    DEFAULT_GRACE,
    Misfire,
    Overlap,
    Schedule,
    ScheduleWrite,
    check_schedule_id,
    new_schedule,
)
from tickwork.schedules.triggers import Cron, Interval

if TYPE_CHECKING:
    from tickwork.clock import Clock
    from tickwork.node.context import NodeContext
    from tickwork.node.resilience import ResilientStore
    from tickwork.task import TaskRegistry

__all__ = ["RecurringSchedules"]


class RecurringSchedules:
    """``add_schedule`` and the other schedule calls of :class:`tickwork.Scheduler`."""

    if TYPE_CHECKING:  # the Scheduler's, which these methods use
        _node: NodeContext
        _store: ResilientStore
        _registry: TaskRegistry
        _clock: Clock
        max_params_bytes: int

        def _check_open(self) -> None: ...

    async def add_schedule(
        self,
        task: str,
        trigger: Cron | Interval,
        *,
        params: object = b"",
        schedule_id: str | None = None,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        jitter: timedelta | None = None,
        misfire: Misfire | str = "run_once",
        grace: timedelta = DEFAULT_GRACE,
        catchup_limit: int = DEFAULT_CATCHUP_LIMIT,
        overlap: Overlap | str = "skip",
        paused: bool = False,
        replace: bool = False,
        notify: Notify | None = None,
    ) -> str:
        """Store a recurring schedule of ``task`` and its next occurrence; returns its id.

        Args:
            trigger: ``tickwork.Cron(expr, timezone)`` or ``tickwork.Interval(every)``.
            params: bytes, or an object packed with msgpack, given to every occurrence.
            schedule_id: makes the call idempotent: the same id with the same definition
                changes nothing. Default: derived from task, trigger and params.
            start_at, end_at: no fire time before / after them (aware datetimes).
            jitter: delay each occurrence by a deterministic amount in ``[0, jitter)``.
            misfire: ``"run_once"``, ``"run_all"`` or ``"skip"``: what a catch-up does
                with occurrences due more than ``grace`` before they were claimed.
            catchup_limit: the most occurrences ``"run_all"`` runs per catch-up.
            overlap: ``"skip"``, ``"allow"``, ``"queue"`` or ``"cancel_previous"``: what
                happens when one comes due while the previous one still runs.
            paused: store it paused (no occurrence until ``resume_schedule``).
            replace: replace a schedule with this id and another definition (its pending
                occurrences are aborted) instead of refusing.
            notify: ``tickwork.Notify(url=...)``: post a notice when an occurrence fails
                for good, is missed or runs overdue; stored with the schedule, and used
                instead of the task's ``notify`` for its occurrences.

        Raises:
            InvalidArgument: a bad argument (the message names it and the accepted forms),
                or the id exists with another definition and ``replace`` is False.
            UnknownTask: no task of that name is registered on this node.
        """
        self._check_open()
        schedule = new_schedule(
            task,
            trigger,
            params=params,
            schedule_id=schedule_id,
            start_at=start_at,
            end_at=end_at,
            jitter=jitter,
            misfire=misfire,
            grace=grace,
            catchup_limit=catchup_limit,
            overlap=overlap,
            paused=paused,
            notify=notify,
        )
        if not isinstance(replace, bool):
            raise InvalidArgument(f"replace must be True or False, got {replace!r}")
        schedule_allowed(self._registry, schedule, self.max_params_bytes)
        notices = self._node.notices
        if notices is not None:
            notices.storing(schedule)  # the notifier runs before its first occurrence can
        write = await self._store.add_schedule(schedule, self._clock.now_us(), replace=replace)
        if notices is not None:
            notices.stored(write.schedule.id)  # its next occurrence uses the new setting
        await self._woken(write)
        return write.schedule.id

    async def get_schedule(self, schedule_id: str) -> Schedule:
        """One schedule as stored.

        Raises ``NotFound`` if no schedule has this id.
        """
        self._check_open()
        found = await self._store.get_schedule(check_schedule_id(schedule_id))
        if found is None:
            raise NotFound(f"no schedule with id {schedule_id!r}")
        return found

    async def list_schedules(
        self, *, limit: int = 1000, after_id: str | None = None
    ) -> builtins.list[Schedule]:
        """Stored schedules in id order; page with ``after_id`` (the last id seen)."""
        self._check_open()
        check_limit(limit)
        return await self._store.list_schedules(limit=limit, after_id=after_id)

    async def pause_schedule(self, schedule_id: str) -> Schedule:
        """Pause a schedule: no occurrence is written for it, and one that comes due while
        it is paused is recorded MISSED. Pausing a paused schedule changes nothing.

        Raises ``NotFound`` if no schedule has this id.
        """
        self._check_open()
        sid = check_schedule_id(schedule_id)
        found = await self._store.pause_schedule(sid, self._clock.now_us())
        if found is None:
            raise NotFound(f"no schedule with id {schedule_id!r}")
        return found

    async def resume_schedule(self, schedule_id: str) -> Schedule:
        """Resume a paused schedule from now on: its next fire time after now is written
        (times it was paused through are not caught up).

        Raises ``NotFound`` if no schedule has this id.
        """
        self._check_open()
        sid = check_schedule_id(schedule_id)
        write = await self._store.resume_schedule(sid, self._clock.now_us())
        if write is None:
            raise NotFound(f"no schedule with id {schedule_id!r}")
        await self._woken(write)
        return write.schedule

    async def run_schedule_now(self, schedule_id: str) -> int:
        """Run a schedule's task with its params now, once, outside its fire times.

        Stores a one-off PENDING instance due now and returns its id. The schedule's next
        fire times and policies are unchanged; a paused schedule can be run this way too.

        Raises:
            NotFound: no schedule has this id.
            UnknownTask: the schedule's task is not registered on this node.
        """
        schedule = await self.get_schedule(schedule_id)
        self._registry.require(schedule.task)
        now = self._clock.now_us()
        iid = await _operations.run_now(self._store, schedule, now)
        await self._node.stored_pending(now)
        return iid

    async def next_fire_times(self, schedule_id: str, n: int = 5) -> builtins.list[datetime]:
        """The next ``n`` fire times of a schedule after now, as aware UTC datetimes.

        Fewer when its trigger or ``end_at`` runs out (none once it ended). A paused
        schedule's are those it would have if resumed now. Jitter is not included: an
        occurrence is due at its fire time plus the schedule's jitter.

        Raises:
            NotFound: no schedule has this id.
            InvalidArgument: ``n`` is not in 1..1000.
        """
        schedule = await self.get_schedule(schedule_id)
        fires = _operations.next_fire_times(schedule, self._clock.now_us(), n)
        return [from_us(f) for f in fires]

    async def remove_schedule(self, schedule_id: str) -> None:
        """Delete a schedule. Its pending occurrences end ABORTED; one that is running
        finishes; nothing new is created.

        Raises ``NotFound`` if no schedule has this id.
        """
        self._check_open()
        sid = check_schedule_id(schedule_id)
        removed = await self._store.remove_schedule(sid, self._clock.now_us())
        if self._node.notices is not None:
            self._node.notices.stored(sid)
        if not removed:
            raise NotFound(f"no schedule with id {schedule_id!r}")

    async def _woken(self, write: ScheduleWrite | None) -> None:
        if write is not None and write.next_run_us is not None:
            await self._node.stored_pending(write.next_run_us)
