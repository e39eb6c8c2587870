"""The Executor: runs due instances with bounded concurrency; owns RUNNING.

Due batches go into a ready queue served by a pool of worker tasks, at most
``max_concurrency`` of them (a ``trio.CapacityLimiter``: each worker holds one token).
A worker runs instances one after another; a new worker is spawned only while the ready
queue is not empty and no spawned worker is still waiting to start, so a burst of quick
tasks costs a few spawns per batch instead of one per instance, and slow tasks still get
one worker each up to the limit. A worker that empties the queue waits for the next
instance instead of ending (one such worker at most), so a steady rate, where instances
come due one or a few at a time, does not cost a task spawn per run either. Each run has
its own ``CancelScope``: an abort or a timeout cancels exactly that run.

Outcomes collect in an outbox that a flusher sends to the Recorder as one message per
batch; the outbox is bounded, so a slow Recorder slows the workers (backpressure).

The RUNNING of an at-most-once run is written before it starts (``Store.start``, see
``_start_durably``). An at-least-once run's is reported instead: once it has run
``NOTE_DELAY`` (20 ms), the next flush adds a ``Kind.STARTED`` note for it, and the
Recorder writes RUNNING for it in its next group commit. A run that ends sooner never
costs a note: a burst of quick runs (or of hand-offs that wait a few milliseconds for an
ack) adds no work, and a slow run shows RUNNING within about ``NOTE_DELAY`` and one
Recorder batch (``_outbox.py``).
Notes never wake the flusher at once: in a burst they travel with the outcomes, so the
Recorder (and an ``abort()`` waiting for it) is not flooded with a flush per start.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping
from typing import final

import attrs
import trio

from tickwork.actors._idle import IdleWorker
from tickwork.actors._outbox import Outbox
from tickwork.actors._runs import DurableStarts, timeout_error, timeout_us_of
from tickwork.actors._task_slots import TaskSlots
from tickwork.actors.cluster_link import LeaseBook
from tickwork.actors.messages import (
    Cancelled,
    Due,
    ExecutorMsg,
    Kind,
    Outcome,
    RecorderMsg,
)
from tickwork.actors.overlap import OverlapGuard
from tickwork.actors.transitions import Transitions
from tickwork.clock import Clock
from tickwork.extend._run import Runner
from tickwork.model import Instance
from tickwork.state import State
from tickwork.stores.base import Store
from tickwork.task import CURRENT_INSTANCE, Task

log = logging.getLogger("tickwork.executor")

#: a worker yields to the scheduler at least this often, so a run of quick tasks that
#: never block cannot starve the other actors
_YIELD_EVERY = 64


@final
@attrs.frozen
class ExecutorStatistics:
    running: int
    ready: int
    waiting_for_task_slot: int
    workers: int
    max_concurrency: int
    started: int
    #: lateness of the most recent start (start - due), microseconds
    last_lateness_us: int
    #: exponentially weighted mean lateness, microseconds
    mean_lateness_us: float
    #: total time instances waited for a per-task slot, microseconds
    slot_wait_us: int


@final
class Executor:
    def __init__(
        self,
        *,
        clock: Clock,
        store: Store,
        owner: str,
        tasks: Mapping[str, Task],
        receive: trio.MemoryReceiveChannel[ExecutorMsg],
        to_recorder: trio.MemorySendChannel[RecorderMsg],
        max_concurrency: int,
        outbox_limit: int,
        shutdown_grace: float,
        events: Transitions | None = None,
        runner: Runner | None = None,
        leases: LeaseBook | None = None,
    ) -> None:
        self._clock = clock
        self._store = store
        self._owner = owner
        self._tasks = tasks
        self._receive = receive
        self._send = to_recorder
        self._limiter = trio.CapacityLimiter(max_concurrency)
        # outcomes and notes of runs in progress, to the Recorder in batches (_outbox.py)
        self._outbox = Outbox(to_recorder, outbox_limit)
        self._grace = shutdown_grace
        # Aborts that found the instance nowhere here: on its way in (being admitted, or
        # its durable start in flight); it does not start when it gets here.
        self._aborted: set[int] = set()
        self._events = events
        # Extensions (middleware, a dispatcher): what a run awaits instead of task.run.
        self._runner = runner
        # Cluster mode: whether the claim of an instance may still be counted on; one that
        # may have lapsed is given back instead of started (actors/cluster_link.py).
        self._leases = leases
        self._ready: deque[Instance] = deque()
        # per-task concurrency: runs in progress, instances parked for a slot (_task_slots.py)
        self._slots = TaskSlots()
        self._running: dict[int, tuple[trio.CancelScope, Instance]] = {}
        self._cancel_reason: dict[int, Kind] = {}
        self._spawn_pending = False
        # the worker waiting for the next ready instance, if any (_idle.py)
        self._idle = IdleWorker()
        self._nursery: trio.Nursery | None = None
        self._workers_done = trio.Event()
        # at-most-once runs: RUNNING made durable right before each starts (_runs.py)
        self._durable = DurableStarts(store, owner, clock)
        self._draining = False
        self._started = 0
        self._last_lateness = 0
        self._mean_lateness = 0.0
        self._debug = False
        # Schedule occurrences: still wanted when due, and the overlap policy (overlap.py).
        self._overlap = OverlapGuard(
            store=store,
            clock=clock,
            emit=self._emit,
            supersede=lambda iid: self._abort(iid, Kind.SUPERSEDED),
        )

    def statistics(self) -> ExecutorStatistics:
        return ExecutorStatistics(
            running=len(self._running),
            ready=len(self._ready),
            waiting_for_task_slot=self._slots.waiting,
            workers=self._limiter.borrowed_tokens - self._idle.waiting,
            max_concurrency=int(self._limiter.total_tokens),
            started=self._started,
            last_lateness_us=self._last_lateness,
            mean_lateness_us=self._mean_lateness,
            slot_wait_us=int(self._slots.wait_total * 1e6),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self._send, trio.open_nursery() as flusher_nursery:
            flusher_nursery.start_soon(self._outbox.flusher)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                # occurrences waiting for another node's to end ask again (overlap.py)
                nursery.start_soon(self._overlap.recheck, self._admit)
                task_status.started()
                async with self._receive:
                    async for msg in self._receive:
                        await self._handle(msg)
                await self._drain(nursery)
            self._nursery = None
            # every worker is gone: the flusher sends what they produced, then returns
            self._outbox.close()

    async def _handle(self, msg: ExecutorMsg) -> None:
        if isinstance(msg, Due):
            await self._admit(msg.instances)
        elif isinstance(msg, Cancelled):
            for inst in msg.instances:
                self._emit(Outcome(inst, Kind.ABORTED))
        else:
            self._abort(msg.instance_id)

    async def _admit(self, due: list[Instance]) -> None:
        # once per batch, not per start: with DEBUG off a start builds no log message
        self._debug = log.isEnabledFor(logging.DEBUG)
        due = await self._overlap.admit(due)
        if self._leases is not None:
            due = self._keep_leased(due, self._leases)
        self._ready.extend(due)
        self._spawn()

    def _keep_leased(self, due: list[Instance], leases: LeaseBook) -> list[Instance]:
        kept = []
        for inst in due:
            if leases.valid(inst.claim_token):
                kept.append(inst)
            else:
                self._emit(Outcome(inst, Kind.LOST))
        return kept

    def _spawn(self) -> None:
        if self._ready and not self._spawn_pending and self._nursery is not None:
            if self._idle.wake():  # a worker waited for work: it takes this, no spawn
                self._spawn_pending = True
                return
            token = object()
            try:
                self._limiter.acquire_on_behalf_of_nowait(token)
            except trio.WouldBlock:
                return  # every worker is busy; one of them takes the next instance
            self._spawn_pending = True
            self._nursery.start_soon(self._worker, token)

    async def _worker(self, token: object) -> None:
        self._spawn_pending = False
        try:
            count = 0
            while True:
                # One cancel scope serves a run of instances (entering a scope costs
                # more than a no-op task): only the instance in progress is inside it,
                # so cancelling it (abort, timeout) hits exactly that run. After a cancel
                # a fresh scope serves the next ones.
                with trio.CancelScope() as scope:
                    while not scope.cancel_called:
                        if not self._ready:
                            if not await self._linger():
                                return
                            continue
                        inst = self._ready.popleft()
                        self._spawn()
                        await self._run_one(inst, trio.current_time(), scope)
                        count += 1
                        if count % _YIELD_EVERY == 0:
                            await trio.lowlevel.checkpoint()
        finally:
            self._limiter.release_on_behalf_of(token)
            if self._limiter.borrowed_tokens == 0:
                self._workers_done.set()

    async def _linger(self) -> bool:
        """The ready queue is empty: wait for the next instance instead of ending
        (``_idle.py``). False when the worker is to end: another one waits, or the node
        is stopping."""
        if self._draining or not await self._idle.wait():
            return False
        self._spawn_pending = False
        return True

    async def _run_one(self, inst: Instance, ready_since: float, scope: trio.CancelScope) -> None:
        if self._aborted and inst.id in self._aborted:
            self._emit(Outcome(inst, Kind.ABORTED))
            return
        if self._leases is not None and not self._leases.valid(inst.claim_token):
            self._emit(Outcome(inst, Kind.LOST))
            return
        task = self._tasks.get(inst.task)
        if task is None:
            self._emit(Outcome(inst, Kind.UNKNOWN_TASK))
            return
        limit = task.max_concurrent
        if limit is not None and not self._slots.take(task.name, limit, inst, ready_since):
            return  # parked without holding a worker: a noisy task cannot starve others
        try:
            if task.delivery == "at_most_once" and not await self._start_durably(inst):
                return
            await self._execute(inst, task, scope)
        finally:
            waiting = self._slots.give_back(task.name) if limit is not None else None
            if waiting is not None:
                self._ready.appendleft(waiting)
                self._spawn()

    async def _start_durably(self, inst: Instance) -> bool:
        """Make RUNNING durable right before an at-most-once run (``DurableStarts``).
        Returns False (the outcome already emitted) when the instance must not run: the
        claim was lost, an abort came, or the node is stopping."""
        accepted = await self._durable.start(inst)
        if not accepted:
            log.warning("instance %d: lost its claim before it started; not run", inst.id)
            self._emit(Outcome(inst, Kind.LOST))
        elif inst.id in self._aborted:
            self._emit(Outcome(inst, Kind.ABORTED))
        elif self._draining:
            self._emit(Outcome(inst, Kind.INTERRUPTED))  # never ran: back to PENDING
        else:
            return True
        return False

    def _started_now(self, inst: Instance) -> int:
        """Count a start: lateness statistics and the RUNNING event. Returns the time."""
        started = self._clock.now_us()
        lateness = started - inst.run_at_us
        self._last_lateness = lateness
        self._mean_lateness += (lateness - self._mean_lateness) * 0.01
        self._started += 1
        if inst.schedule_id is not None:
            self._overlap.started(inst, started)
        if self._debug:
            log.debug(
                "instance %d (task %r): started, %.3f s after its time",
                inst.id, inst.task, lateness / 1e6,
            )  # fmt: skip
        if self._events is not None and self._events.active:
            self._events.publish(inst, State.CLAIMED, State.RUNNING, started)
        return started

    def _report(self, inst: Instance, task: Task, started: int) -> None:
        """An at-least-once run started: the next flush reports it, if it still runs."""
        if task.delivery != "at_most_once":
            self._outbox.started(inst, started, self._nursery)

    async def _execute(self, inst: Instance, task: Task, scope: trio.CancelScope) -> None:
        timeout_us = timeout_us_of(inst, task)
        if timeout_us is not None:
            scope.deadline = trio.current_time() + timeout_us / 1e6
        started = self._started_now(inst)
        self._running[inst.id] = (scope, inst)
        self._report(inst, task, started)
        kind = Kind.OK
        result: object = None
        error: BaseException | None = None
        cancelled: trio.Cancelled | None = None
        current = CURRENT_INSTANCE.set(inst)
        try:
            if self._runner is None:
                result = await task.run(inst.params)
            else:
                result = await self._runner(inst, task, started)
        except trio.Cancelled as exc:
            if not scope.cancel_called:
                raise  # not this run's cancel: the node itself is being torn down
            cancelled = exc  # ours (abort, timeout, shutdown): record, then re-raise
        except Exception as exc:  # noqa: BLE001 - any failure of user code is an outcome
            kind, error = Kind.ERROR, exc
        finally:
            CURRENT_INSTANCE.reset(current)
            del self._running[inst.id]
            self._outbox.ended(inst.id)
            hit = scope.cancel_called
            if timeout_us is not None and not hit:
                scope.deadline = math.inf  # the next run in this scope has its own
        reason = self._cancel_reason.pop(inst.id, None)
        if reason is not None:  # aborted, superseded or interrupted by shutdown
            kind, error, result = reason, None, None
        elif hit:
            kind, result, error = Kind.ERROR, None, timeout_error(task, timeout_us)
        self._emit(Outcome(inst, kind, result, error, started, self._clock.now_us()))
        if cancelled is not None:
            raise cancelled  # absorbed by the worker's scope, which is then replaced
        await self._outbox.wait_room()

    def _abort(self, instance_id: int, kind: Kind = Kind.ABORTED) -> None:
        running = self._running.get(instance_id)
        if running is not None:
            self._cancel_reason[instance_id] = kind
            running[0].cancel()
            return
        for i, inst in enumerate(self._ready):
            if inst.id == instance_id:
                del self._ready[i]
                self._emit(Outcome(inst, kind))
                return
        parked = self._slots.remove(instance_id)
        if parked is not None:
            self._emit(Outcome(parked, kind))
            return
        waiting = self._overlap.remove(instance_id)
        if waiting is not None:  # a schedule occurrence waiting for the previous one
            self._emit(Outcome(waiting, kind))
            return
        # Not here: on its way in (being admitted, or its durable start in flight), or
        # already on its way to the Recorder (which was told of the abort first).
        if kind is Kind.ABORTED:
            self._aborted.add(instance_id)

    def _emit(self, outcome: Outcome) -> None:
        if self._aborted:
            self._aborted.discard(outcome.instance.id)
        self._outbox.put(outcome)
        if outcome.instance.schedule_id is not None:
            self._occurrence_ended(outcome.instance)

    def _occurrence_ended(self, inst: Instance) -> None:
        """A schedule occurrence ended here: the one waiting for it may start."""
        nxt = self._overlap.done(inst)
        if nxt is not None and self._nursery is not None:
            self._nursery.start_soon(self._admit, [nxt])

    async def _drain(self, nursery: trio.Nursery) -> None:
        """Shutdown: run nothing new, give running instances ``shutdown_grace`` to finish,
        then cancel them; they are recorded as interrupted (back to PENDING, or FAILED
        for at-most-once)."""
        # Never started: back to PENDING through the Recorder (no at-most-once one of
        # them is RUNNING in the store yet: see _start_durably).
        self._draining = True
        for inst in self._overlap.drain():  # waiting for the previous occurrence
            self._emit(Outcome(inst, Kind.INTERRUPTED))
        for inst in self._ready:
            self._emit(Outcome(inst, Kind.INTERRUPTED))
        for inst in self._slots.drain():
            self._emit(Outcome(inst, Kind.INTERRUPTED))
        self._ready.clear()
        self._idle.wake()  # the waiting worker sees _draining and ends
        if self._limiter.borrowed_tokens:
            self._workers_done = trio.Event()
            with trio.move_on_after(self._grace):
                await self._workers_done.wait()
        for iid, (scope, _) in list(self._running.items()):
            self._cancel_reason[iid] = Kind.INTERRUPTED
            scope.cancel()
        del nursery  # the caller's nursery block waits for the workers to finish
