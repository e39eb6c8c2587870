"""The Timekeeper: holds claimed instances until their time and hands them over when due.

Its state is one ``SortedList`` of ``(run_at_us, id)`` plus a dict from id to instance:
insert and remove are O(log n), and everything due is a prefix of the list, popped in
one slice and sent to the Executor as one message. It sleeps until the earliest deadline;
a batch with an earlier deadline cancels that sleep. What it gives back (an instance
claimed again, an eviction) it tells the Puller as ``RoomFreed``: the Puller keeps the
count of what the node holds.
"""

from __future__ import annotations

import logging
from typing import final

import attrs
import trio
from sortedcontainers import SortedList

from tickwork.actors._alarm import Alarm
from tickwork.actors.messages import (
    Abort,
    Cancelled,
    Claimed,
    Due,
    Evict,
    ExecutorMsg,
    PullerMsg,
    RoomFreed,
    TimekeeperMsg,
)
from tickwork.clock import Clock
from tickwork.model import Instance
from tickwork.stores.base import Store

log = logging.getLogger("tickwork.timekeeper")


#: Claimed instances taken in per step of ``_add`` (a claim brings up to ``batch_size``):
#: ~0.3 ms on a slow machine, so a due run waits at most that long behind a big claim.
_ADD_SLICE = 100


@final
@attrs.frozen
class TimekeeperStatistics:
    waiting: int
    next_deadline_us: int | None
    fired: int
    evicted: int


@final
class Timekeeper:
    def __init__(
        self,
        *,
        clock: Clock,
        store: Store,
        owner: str,
        receive: trio.MemoryReceiveChannel[TimekeeperMsg],
        to_executor: trio.MemorySendChannel[ExecutorMsg],
        to_puller: trio.MemorySendChannel[PullerMsg],
        max_batch: int,
    ) -> None:
        self._clock = clock
        self._store = store
        self._owner = owner
        self._receive = receive
        self._send = to_executor
        self._to_puller: trio.MemorySendChannel[PullerMsg] | None = to_puller
        self._max_batch = max_batch
        self._deadlines: SortedList = SortedList()
        self._held: dict[int, Instance] = {}
        self._alarm = Alarm(clock)
        self._fired = 0
        self._evicted = 0

    def statistics(self) -> TimekeeperStatistics:
        return TimekeeperStatistics(
            waiting=len(self._held),
            next_deadline_us=self._deadlines[0][0] if self._deadlines else None,
            fired=self._fired,
            evicted=self._evicted,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self._send, trio.open_nursery() as nursery:
            nursery.start_soon(self._fire_loop)
            task_status.started()
            async with self._receive:
                async for msg in self._receive:
                    if isinstance(msg, Claimed):
                        await self._add(msg.instances)
                    elif isinstance(msg, Abort):
                        await self._abort(msg)
                    else:
                        await self._evict(msg)
            nursery.cancel_scope.cancel()
        if self._to_puller is not None:
            await self._to_puller.aclose()

    async def _tell_puller(self, msg: RoomFreed) -> None:
        if self._to_puller is None:
            return
        try:
            await self._to_puller.send(msg)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._to_puller = None  # the Puller stopped: nobody counts any more

    async def _add(self, batch: list[Instance]) -> None:
        held = self._held
        again = 0
        for start in range(0, len(batch), _ADD_SLICE):
            if start:  # a big claim does not hold up the fire loop (or anything else)
                await trio.lowlevel.checkpoint()
            part = batch[start : start + _ADD_SLICE]
            for inst in part:
                old = held.get(inst.id)
                if old is not None:
                    # Claimed again (a new claim token): keep one entry, the newest claim.
                    self._deadlines.remove((old.run_at_us, old.id))
                    again += 1
                held[inst.id] = inst
            # one bulk insert: SortedList merges a sorted batch cheaply
            self._deadlines.update([(inst.run_at_us, inst.id) for inst in part])
            self._alarm.ring_before(min(inst.run_at_us for inst in part))
        if again:
            await self._tell_puller(RoomFreed(again))

    async def _abort(self, msg: Abort) -> None:
        inst = self._held.pop(msg.instance_id, None)
        if inst is None:
            await self._send.send(msg)  # maybe due already: the Executor has it
            return
        self._deadlines.remove((inst.run_at_us, inst.id))
        await self._send.send(Cancelled([inst]))

    async def _evict(self, msg: Evict) -> None:
        evicted: list[Instance] = []
        while self._deadlines and len(evicted) < msg.count:
            run_at_us, iid = self._deadlines[-1]
            if run_at_us <= msg.after_us:
                break
            self._deadlines.pop()
            evicted.append(self._held.pop(iid))
        if not evicted:
            return
        await self._store.release(self._owner, self._clock.now_us(), [inst.id for inst in evicted])
        self._evicted += len(evicted)
        await self._tell_puller(RoomFreed(len(evicted), wake=True))
        log.debug("gave back %d instances to make room for earlier ones", len(evicted))

    async def _fire_loop(self) -> None:
        while True:
            now = self._clock.now_us()
            if self._deadlines and self._deadlines[0][0] <= now:
                end = self._deadlines.bisect_left((now + 1,))
                end = min(end, self._max_batch)
                keys = self._deadlines[:end]
                del self._deadlines[:end]
                held = self._held
                due = [held.pop(iid) for _, iid in keys]
                self._fired += len(due)
                await self._send.send(Due(due))
                continue
            await self._alarm.sleep_until_us(self._deadlines[0][0] if self._deadlines else None)
