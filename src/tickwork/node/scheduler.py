"""The Scheduler: what ``open_scheduler`` yields; the public face of a running node.

One class. It reaches its node only through a :class:`~tickwork.node.context.NodeContext`
(two channels into the actors, the store, their statistics); argument checks and the
operations shared with the CLI are helper functions of other modules.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import final

import trio

from tickwork._time import from_us
from tickwork.errors import InvalidArgument, NotFound, SchedulerClosed
from tickwork.events import Subscription
from tickwork.model import Attempt, Instance, NewInstance
from tickwork.node import operations as _operations
from tickwork.node._abort_waiters import aborted_pending
from tickwork.node._arguments import (
    check_limit,
    check_state,
    instance_filter,
    new_rows,
    schedule_allowed,
)
from tickwork.node.context import NodeContext
from tickwork.node.listing import list_instances
from tickwork.node.statistics import SchedulerStatistics, node_statistics, this_node
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
from tickwork.state import State
from tickwork.stores.cluster import ClusterStore, NodeInfo, NodeRegistry
from tickwork.stores.tokens import Token, create_token, find_token, list_tokens, revoke_token
from tickwork.task import Task

__all__ = ["Scheduler", "SchedulerStatistics"]


@final
class Scheduler:
    """A running node. ``open_scheduler`` builds it over the node's context."""

    def __init__(self, node: NodeContext) -> None:
        self._node = node
        self._store = node.store
        self._registry = node.registry
        self._clock = node.clock
        #: this node's name in the store
        self.node_id = node.settings.node_id
        #: the largest params this node accepts (``open_scheduler(max_params_bytes=...)``)
        self.max_params_bytes = node.settings.max_params_bytes
        self._closed = False

    @property
    def tasks(self) -> Mapping[str, Task]:
        """The tasks this node runs, by name."""
        return self._registry

    @property
    def closed(self) -> bool:
        """Whether the ``open_scheduler`` block has ended (the node is stopped)."""
        return self._closed

    # -- creating instances -------------------------------------------------------

    async def schedule(
        self,
        task: str,
        *,
        at: datetime,
        params: object = b"",
        dedup_key: str | None = None,
        max_attempts: int | None = None,
        timeout: timedelta | None = None,  # noqa: ASYNC109 - the run's timeout, not this call's
    ) -> int:
        """Store one instance of ``task`` due ``at`` (aware datetime) and return its id.

        ``params`` is stored as given if bytes, else packed with msgpack. ``dedup_key``
        makes the call idempotent. ``max_attempts`` and ``timeout`` override the task's.

        Raises:
            UnknownTask, InvalidArgument: refused before anything is stored.
        """
        new = NewInstance(
            task, at, params, dedup_key=dedup_key, max_attempts=max_attempts, timeout=timeout
        )
        (iid,) = await self.schedule_many([new])
        return iid

    async def schedule_many(self, instances: Iterable[NewInstance]) -> builtins.list[int]:
        """Store many instances in one transaction; returns their ids in order.

        Every item is validated first: one bad item refuses the whole call and stores
        nothing.
        """
        self._check_open()
        rows = await new_rows(self._registry, instances, self.max_params_bytes)
        if not rows:
            return []
        ids = await self._store.insert(rows, self._clock.now_us())
        await self._node.stored_pending(min(row.run_at_us for row in rows))
        return ids

    async def retry(self, instance_id: int) -> int:
        """Run a FAILED, ABORTED or MISSED instance again: returns the id of a new PENDING
        instance, due now, with the same task, params, ``max_attempts`` and timeout.

        The new instance's ``retry_of`` is ``instance_id``. Retrying one instance twice
        (or from two nodes at once) stores one retry: the second call returns its id.

        Raises:
            NotFound: no instance has this id.
            InvalidState: the instance has not ended in FAILED, ABORTED or MISSED.
            UnknownTask: its task is not registered on this node.
        """
        self._check_open()
        old = await self._store.get(_operations.check_id(instance_id))
        if old is not None:
            self._registry.require(old.task)
        now = self._clock.now_us()
        _, new_id = await _operations.retry(self._store, instance_id, now)
        await self._node.stored_pending(now)
        return new_id

    # -- aborting -----------------------------------------------------------------

    async def abort(self, instance_id: int) -> State:
        """Abort an instance: pending, claimed or running (a running one is cancelled).

        Returns the state after the abort: ABORTED, or the terminal state it had already
        reached. An instance held by another node (cluster) is aborted by that node; then
        the state returned is its current one (CLAIMED or RUNNING) and the abort follows.
        The task's ``on_abort`` hook is called once, on the node (under
        ``hook_concurrency``, like every hook): ``abort`` does not wait for it.

        Raises ``NotFound`` if no instance has this id.
        """
        self._check_open()
        if not isinstance(instance_id, int) or isinstance(instance_id, bool):
            raise InvalidArgument(f"instance id must be an integer, got {instance_id!r}")
        waiters = self._node.actors.abort_waiters
        waiters.register(instance_id)  # before asking the store: see AbortWaiters
        try:
            result = await self._store.request_abort(instance_id, self._clock.now_us())
            if not result.found:
                raise NotFound(f"no instance with id {instance_id}")
            if result.requested and result.owner == self.node_id:
                await self._node.abort_held((instance_id,))
                return await waiters.wait(self._store, instance_id, self.node_id)
            if result.previous is State.PENDING and result.state is State.ABORTED:
                await aborted_pending(self._node, instance_id)
            assert result.state is not None  # noqa: S101 - found implies a state
            return result.state
        finally:
            waiters.forget(instance_id)

    # -- reading ------------------------------------------------------------------

    async def get(self, instance_id: int) -> Instance:
        """One instance as stored.

        Raises ``NotFound`` if no instance has this id.
        """
        self._check_open()
        inst = await self._store.get(instance_id)
        if inst is None:
            raise NotFound(f"no instance with id {instance_id}")
        return inst

    async def list(
        self,
        *,
        state: State | None = None,
        task: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
        schedule_id: str | None = None,
        due_after: datetime | None = None,
        due_before: datetime | None = None,
        ended_after: datetime | None = None,
        ended_before: datetime | None = None,
        upcoming: bool | None = None,
    ) -> builtins.list[Instance]:
        """Stored instances, newest first (by id), optionally filtered.

        Args:
            state, task, schedule_id: only instances with this state, task, schedule.
            due_after, due_before: only those due in ``[due_after, due_before)``.
            ended_after, ended_before: only ended (terminal) instances that ended in
                ``[ended_after, ended_before)``.
            limit: at most this many (1..10000).
            before_id: keyset pagination: only ids below it (pass the last id of the
                previous page).
            upcoming: True: only what is still to come (PENDING or CLAIMED, due from
                now); False: only the rest, the history (ended, running, overdue);
                None: both.

        A listing never loads big params: those over 4 KiB are left out (``params`` is
        ``b""`` and ``params_size`` their size); :meth:`get` returns them whole.

        Raises:
            InvalidArgument: a bad filter (naive datetime, limit out of range...).
        """
        self._check_open()
        check_state(state)
        check_limit(limit)
        where = instance_filter(
            before_id=before_id,
            schedule_id=schedule_id,
            due_after=due_after,
            due_before=due_before,
            ended_after=ended_after,
            ended_before=ended_before,
            upcoming=upcoming,
        )
        return await list_instances(
            self._store,
            state=state,
            task=task,
            limit=limit,
            before_id=before_id,
            where=where,
            upcoming=upcoming,
            now_us=self._clock.now_us(),
        )

    async def count(self, *, state: State | None = None, task: str | None = None) -> int:
        """How many stored instances match (a durable count, from the store)."""
        self._check_open()
        check_state(state)
        return await self._store.count(state=state, task=task)

    async def counts(self) -> dict[State, int]:
        """Stored instances per state (every state, zero where none), from the store.

        On SQLite a lookup of maintained counts; on PostgreSQL exact up to 10,000 rows per
        state and the planner's estimate beyond (no full scan). Callers that ask often
        should still cache it (the HTTP layer counts at most every few seconds).
        """
        self._check_open()
        return await self._store.count_by_state()

    async def history(self, instance_id: int) -> builtins.list[Attempt]:
        """The recorded attempts of one instance, oldest first."""
        self._check_open()
        return await self._store.history(instance_id)

    def subscribe(self, *, buffer: int = 10_000) -> Subscription:
        """A bounded stream of this node's transition events (see ``tickwork.events``)."""
        self._check_open()
        if not isinstance(buffer, int) or buffer < 1:
            raise InvalidArgument(f"buffer must be an integer >= 1, got {buffer!r}")
        return self._node.hub.subscribe(buffer)

    def statistics(self) -> SchedulerStatistics:
        """Counts per state, in-memory size, lag and rates of this node, from memory."""
        return node_statistics(self._node)

    def now(self) -> datetime:
        """The scheduler clock's wall time."""
        return from_us(self._clock.now_us())

    # -- recurring schedules (see docs/schedules.md) ---------------------------------

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

    # -- operators: API tokens (see tickwork.stores.tokens) and nodes ---------------

    async def add_token(self, scope: str, name: str = "") -> tuple[Token, str]:
        """Make an API token with ``scope`` (``"read"`` or ``"admin"``).

        Returns the stored token and its text: the text is not kept (only its hash), so
        this is the one time it can be shown.

        Raises:
            InvalidArgument: a bad scope or name, or a store that keeps no tokens.
        """
        self._check_open()
        return await create_token(self._store.inner, scope, name, self._clock.now_us())

    async def tokens(self) -> builtins.list[Token]:
        """The stored API tokens (never their text), oldest first."""
        self._check_open()
        return await list_tokens(self._store.inner)

    async def remove_token(self, token_id: str) -> None:
        """Revoke an API token by id.

        Raises ``NotFound`` if no token has this id.
        """
        self._check_open()
        if not await revoke_token(self._store.inner, token_id):
            raise NotFound(f"no token with id {token_id!r}")

    async def authenticate(self, text: str) -> Token | None:
        """The stored token whose text is ``text``, or None (wrong, revoked, malformed)."""
        self._check_open()
        return await find_token(self._store.inner, text)

    async def nodes(self) -> builtins.list[NodeInfo]:
        """The nodes that use this store, most recently started first.

        On a cluster store, every node that ever opened it (from its nodes table); on a
        single-node store, this node (its lock proves it is the only one, and its figures
        are live), then the nodes that ran on it before, from the store's nodes table.
        """
        self._check_open()
        inner = self._store.inner
        if isinstance(inner, ClusterStore):
            return await inner.nodes()
        before = await inner.nodes() if isinstance(inner, NodeRegistry) else []
        await trio.lowlevel.checkpoint()
        return [this_node(self._node), *(n for n in before if n.node_id != self.node_id)]

    def _check_open(self) -> None:
        if self._closed:
            raise SchedulerClosed("the scheduler was used after its open_scheduler block ended")

    def _close(self) -> None:
        self._closed = True
        self._node.close()
