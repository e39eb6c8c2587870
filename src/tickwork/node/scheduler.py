"""The Scheduler: what ``open_scheduler`` yields; the public face of a running node."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, final

import attrs
import trio

from tickwork._time import from_us, to_us
from tickwork.actors.capacity import Capacity, CapacityStatistics
from tickwork.actors.cluster_link import ClusterLink, ClusterStatistics
from tickwork.actors.executor import Executor, ExecutorStatistics
from tickwork.actors.janitor import Janitor, JanitorStatistics
from tickwork.actors.messages import Abort
from tickwork.actors.puller import Puller, PullerStatistics, TimekeeperMsg
from tickwork.actors.recorder import Recorder, RecorderStatistics
from tickwork.actors.timekeeper import Timekeeper, TimekeeperStatistics
from tickwork.clock import Clock
from tickwork.errors import InvalidArgument, NotFound, SchedulerClosed
from tickwork.events import EventHub, Subscription
from tickwork.model import (
    DEFAULT_MAX_PARAMS_BYTES,
    Attempt,
    Instance,
    InstanceFilter,
    NewInstance,
    validate_new,
)
from tickwork.node._operator_methods import OperationMethods
from tickwork.node._schedule_methods import ScheduleMethods
from tickwork.node.listing import list_instances
from tickwork.node.resilience import CallLatency, ResilientStore, StoreHealth
from tickwork.state import State
from tickwork.task import Task, TaskRegistry

log = logging.getLogger("tickwork")

_ABORT_RECHECK = 1.0  # seconds between store checks while waiting for a local abort
#: schedule_many validates this many items between checkpoints (~2 ms on the reference machine)
_VALIDATE_SLICE = 500


@final
@attrs.frozen
class SchedulerStatistics:
    """A snapshot of a node (``scheduler.statistics()``)."""

    node_id: str
    #: instances held in memory now (claimed, not yet recorded) and the bound
    in_memory: int
    max_in_memory: int
    #: held and waiting for their time / ready to start / running
    waiting: int
    ready: int
    running: int
    max_concurrency: int
    #: per state name: CLAIMED and RUNNING held now; the others recorded since start
    counts: Mapping[str, int]
    #: how late the most recent start was, and a moving mean, in seconds
    lag: float
    mean_lag: float
    #: per second since the node started: instances started and recorded
    rates: Mapping[str, float]
    uptime: float
    puller: PullerStatistics
    timekeeper: TimekeeperStatistics
    executor: ExecutorStatistics
    recorder: RecorderStatistics
    capacity: CapacityStatistics
    #: whether store calls are failing (and being retried) right now
    store: StoreHealth
    #: retention (None when ``retention`` is not set)
    janitor: JanitorStatistics | None = None
    #: heartbeats, leases and the nodes seen (None unless the store is a cluster store)
    cluster: ClusterStatistics | None = None
    #: per kind of store call, how long its calls took (live histograms: copy to keep)
    store_calls: Mapping[str, CallLatency] = attrs.field(factory=dict)


@final
class Scheduler(ScheduleMethods, OperationMethods):
    """A running node. Obtain one from ``open_scheduler``; do not construct it."""

    def __init__(
        self,
        *,
        store: ResilientStore,
        registry: TaskRegistry,
        clock: Clock,
        node_id: str,
        window_us: int,
        puller: Puller,
        timekeeper: Timekeeper,
        executor: Executor,
        recorder: Recorder,
        capacity: Capacity,
        hub: EventHub,
        abort_marks: set[int],
        aborts_out: trio.MemorySendChannel[TimekeeperMsg],
        publish: Callable[[Instance, State, State, int], None],
        janitor: Janitor | None = None,
        cluster: ClusterLink | None = None,
        max_params_bytes: int = DEFAULT_MAX_PARAMS_BYTES,
    ) -> None:
        #: the largest params this node accepts (``open_scheduler(max_params_bytes=...)``)
        self.max_params_bytes = max_params_bytes
        self._store = store
        self._registry = registry
        self._clock = clock
        self.node_id = node_id
        self._window_us = window_us
        self._puller = puller
        self._timekeeper = timekeeper
        self._executor = executor
        self._recorder = recorder
        self._capacity = capacity
        self._hub = hub
        self._abort_marks = abort_marks
        self._aborts_out = aborts_out
        self._publish = publish
        self._janitor = janitor
        self._cluster = cluster
        self._closed = False
        self._started_at = trio.current_time()
        self._abort_waiters: dict[int, tuple[trio.Event, list[State]]] = {}

    @property
    def tasks(self) -> Mapping[str, Task]:
        """The tasks this node runs, by name."""
        return self._registry

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

    async def schedule_many(self, instances: Iterable[NewInstance]) -> list[int]:
        """Store many instances in one transaction; returns their ids in order.

        Every item is validated first: one bad item refuses the whole call and stores
        nothing.
        """
        self._check_open()
        rows = []
        known: set[str] = set()
        for k, new in enumerate(instances):
            if k and k % _VALIDATE_SLICE == 0:
                await trio.lowlevel.checkpoint()  # a big batch does not hold up due runs
            if not isinstance(new, NewInstance):
                raise InvalidArgument(
                    f"schedule_many takes tickwork.NewInstance items, got {new!r}"
                )
            if new.task not in known:
                self._registry.require(new.task)
                known.add(new.task)
            row = validate_new(new, self.max_params_bytes)
            check = self._registry.validators.get(row.task)
            if check is not None:
                check(row.params)
            rows.append(row)
        if not rows:
            return []
        ids = await self._store.insert(rows, self._clock.now_us())
        self._puller.note_pending(min(row.run_at_us for row in rows))
        return ids

    # -- aborting -----------------------------------------------------------------

    async def abort(self, instance_id: int) -> State:
        """Abort an instance: pending, claimed or running (a running one is cancelled).

        Returns the state after the abort: ABORTED, or the terminal state it had already
        reached. An instance held by another node (cluster) is aborted by that node; then
        the state returned is its current one (CLAIMED or RUNNING) and the abort follows.
        The task's ``on_abort`` hook is called once, on the node (under
        ``hook_concurrency``, like every hook): ``abort`` does not wait for it.

        Raises:
            NotFound: no instance has this id.
        """
        self._check_open()
        if not isinstance(instance_id, int) or isinstance(instance_id, bool):
            raise InvalidArgument(f"instance id must be an integer, got {instance_id!r}")
        # Register before asking the store: the outcome may be recorded before we resume.
        waiter = self._abort_waiters.get(instance_id)
        if waiter is None:
            waiter = self._abort_waiters[instance_id] = (trio.Event(), [])
        try:
            result = await self._store.request_abort(instance_id, self._clock.now_us())
            if not result.found:
                raise NotFound(f"no instance with id {instance_id}")
            if result.requested and result.owner == self.node_id:
                await self._carry_out_aborts([instance_id])
                return await self._wait_recorded(instance_id, waiter)
            if result.previous is State.PENDING and result.state is State.ABORTED:
                await self._aborted_pending(instance_id)
            assert result.state is not None  # noqa: S101 - found implies a state
            return result.state
        finally:
            self._abort_waiters.pop(instance_id, None)

    async def _aborted_pending(self, instance_id: int) -> None:
        inst = await self._store.get(instance_id)
        if inst is None:
            return
        self._publish(inst, State.PENDING, State.ABORTED, self._clock.now_us())
        await self._recorder.aborted_pending(inst)  # the hook runs on the node

    async def _carry_out_aborts(self, ids: list[int]) -> None:
        for iid in ids:
            self._abort_marks.add(iid)
            if not self._closed:
                await self._aborts_out.send(Abort(iid))

    async def _wait_recorded(
        self, instance_id: int, waiter: tuple[trio.Event, list[State]]
    ) -> State:
        event, states = waiter
        while True:
            with trio.move_on_after(_ABORT_RECHECK):
                await event.wait()
            if states and states[-1].terminal:
                return states[-1]
            # Not recorded by this node (given back, or taken over): ask the store.
            inst = await self._store.get(instance_id)
            if inst is None:
                raise NotFound(f"no instance with id {instance_id}")
            if inst.state.terminal or inst.owner != self.node_id:
                return inst.state
            if event.is_set():
                event = trio.Event()
                waiter = self._abort_waiters[instance_id] = (event, states)

    def _recorded(self, instance_id: int, state: State) -> None:
        waiter = self._abort_waiters.get(instance_id)
        if waiter is not None:
            waiter[1].append(state)
            waiter[0].set()

    # -- reading ------------------------------------------------------------------

    async def get(self, instance_id: int) -> Instance:
        """One instance as stored.

        Raises:
            NotFound: no instance has this id.
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
        if state is not None and not isinstance(state, State):
            raise InvalidArgument(f"state must be a tickwork.State, got {state!r}")
        if not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise InvalidArgument(f"limit must be an integer in 1..10000, got {limit!r}")
        if before_id is not None and (
            not isinstance(before_id, int) or isinstance(before_id, bool)
        ):
            raise InvalidArgument(f"before_id must be an integer, got {before_id!r}")
        if schedule_id is not None and not isinstance(schedule_id, str):
            raise InvalidArgument(f"schedule_id must be a string, got {schedule_id!r}")
        where = InstanceFilter(
            schedule_id=schedule_id,
            due_from_us=None if due_after is None else to_us(due_after, what="due_after"),
            due_until_us=None if due_before is None else to_us(due_before, what="due_before"),
            ended_from_us=None if ended_after is None else to_us(ended_after, what="ended_after"),
            ended_until_us=(
                None if ended_before is None else to_us(ended_before, what="ended_before")
            ),
        )
        if upcoming is not None and not isinstance(upcoming, bool):
            raise InvalidArgument(f"upcoming must be True, False or None, got {upcoming!r}")
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
        if state is not None and not isinstance(state, State):
            raise InvalidArgument(f"state must be a tickwork.State, got {state!r}")
        return await self._store.count(state=state, task=task)

    async def history(self, instance_id: int) -> builtins.list[Attempt]:
        """The recorded attempts of one instance, oldest first."""
        self._check_open()
        return await self._store.history(instance_id)

    def subscribe(self, *, buffer: int = 10_000) -> Subscription:
        """A bounded stream of this node's transition events (see ``tickwork.events``)."""
        self._check_open()
        if not isinstance(buffer, int) or buffer < 1:
            raise InvalidArgument(f"buffer must be an integer >= 1, got {buffer!r}")
        return self._hub.subscribe(buffer)

    def statistics(self) -> SchedulerStatistics:
        """Counts per state, in-memory size, lag and rates of this node, from memory."""
        ex = self._executor.statistics()
        tk = self._timekeeper.statistics()
        rec = self._recorder.statistics()
        cap = self._capacity.statistics()
        counts: dict[str, Any] = {s.name: 0 for s in State}
        counts.update(rec.recorded)
        counts["RUNNING"] = ex.running
        counts["CLAIMED"] = cap.held - ex.running
        counts["PENDING"] = rec.recorded.get("PENDING", 0)
        uptime = max(trio.current_time() - self._started_at, 1e-9)
        recorded = sum(v for k, v in rec.recorded.items() if k != "PENDING")
        return SchedulerStatistics(
            node_id=self.node_id,
            in_memory=cap.held,
            max_in_memory=cap.limit,
            waiting=tk.waiting,
            ready=ex.ready,
            running=ex.running,
            max_concurrency=ex.max_concurrency,
            counts=counts,
            lag=ex.last_lateness_us / 1e6,
            mean_lag=ex.mean_lateness_us / 1e6,
            rates={"started": ex.started / uptime, "recorded": recorded / uptime},
            uptime=uptime,
            puller=self._puller.statistics(),
            timekeeper=tk,
            executor=ex,
            recorder=rec,
            capacity=cap,
            store=self._store.health(),
            janitor=None if self._janitor is None else self._janitor.statistics(),
            cluster=None if self._cluster is None else self._cluster.statistics(),
            store_calls=self._store.latency(),
        )

    def now(self) -> datetime:
        """The scheduler clock's wall time."""
        return from_us(self._clock.now_us())

    def _check_open(self) -> None:
        if self._closed:
            raise SchedulerClosed("the scheduler was used after its open_scheduler block ended")

    def _close(self) -> None:
        self._closed = True
        for event, _ in self._abort_waiters.values():
            event.set()
