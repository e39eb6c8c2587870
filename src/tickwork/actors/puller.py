"""The Puller: claims PENDING instances due inside the look-ahead window.

It owns PENDING -> CLAIMED. It claims in batches, at most what the window's capacity
allows, and sends each claimed batch to the Timekeeper as one message. Between pulls it
sleeps until the earliest unclaimed instance enters the window, and wakes earlier for:

* ``PendingAt`` on its inbox: an instance was just stored due inside the window (by the
  API, a retry the Recorder wrote, or another process: the Leases actor heard of it);
* ``RoomFreed`` from the Recorder or the Timekeeper: held instances left the node and
  the count it holds fell to the low-water mark (the count is the Puller's own);
* ``Wake`` or ``Rearm`` from the Leases actor (``actors/leases.py``): a change committed
  by another process (the CLI, another node), or, in cluster mode, a new time at which
  another node's lease lapses.

It renews no lease: the Leases actor does, from before the Puller starts until after the
node's last outcome is written (so a graceful stop keeps its claims).

In cluster mode (a :class:`~tickwork.actors.cluster_link.ClusterLink` given) the window it
claims into is the short claim horizon, and it differs in three ways (see
``docs/clustering.md``): pulls that the horizon's advance alone calls for happen in the
node's own time slots (``horizon / 4`` apart, the nodes' slots interleaved: see
``ClusterLink.slot_at``), so each node in turn takes what became due since the previous
one pulled, an equal share; a claim takes the node's fair share of a batch, then comes
back for more, so nodes woken together interleave; and it pulls when another node's
lease lapses, to take that node's work over.
"""

from __future__ import annotations

import logging
from typing import final

import attrs
import trio

from tickwork.actors._alarm import Alarm
from tickwork.actors.capacity import Capacity, CapacityStatistics
from tickwork.actors.cluster_link import ClusterLink
from tickwork.actors.messages import (
    Claimed,
    Evict,
    PendingAt,
    PullerMsg,
    Rearm,
    RoomFreed,
    TimekeeperMsg,
)
from tickwork.actors.transitions import Transitions
from tickwork.clock import Clock
from tickwork.model import Instance
from tickwork.stores.base import Store

log = logging.getLogger("tickwork.puller")

#: In cluster mode: the smallest claim of a fair share, and the nodes' round of pull
#: slots as a fraction of the horizon.
_MIN_SHARE = 100
_ROUNDS_PER_HORIZON = 4


@final
@attrs.frozen
class PullerStatistics:
    pulls: int
    claimed: int
    next_pull_us: int | None
    next_pending_us: int | None


@final
class Puller:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        capacity: Capacity,
        to_timekeeper: trio.MemorySendChannel[TimekeeperMsg],
        owner: str,
        window_us: int,
        batch_size: int,
        lease_us: int,
        inbox: trio.MemoryReceiveChannel[PullerMsg],
        events: Transitions | None = None,
        cluster: ClusterLink | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._capacity = capacity
        self._send = to_timekeeper
        self._owner = owner
        self._window_us = window_us
        self._batch_size = batch_size
        self._lease_us = lease_us
        self._inbox = inbox
        self._events = events
        self._cluster = cluster
        self._last_pull_us: int | None = None  # cluster mode only
        self._slot_us: int | None = None  # cluster mode: the slot the next pull is for
        self.cancel_scope = trio.CancelScope()
        self._woken = False
        self._alarm = Alarm(clock)
        self._next_pending_us: int | None = None
        # earliest run_at scheduled inside the window since the last pull
        self._urgent_us: int | None = None
        self._next_pull_us: int | None = None
        self._pulls = 0
        self._claimed = 0

    def _wake(self) -> None:
        """Pull again as soon as possible (cheap; many wake-ups coalesce into one pull)."""
        self._woken = True
        self._alarm.ring()

    def _rearm(self) -> None:
        """Work out again when to pull next (a takeover time changed), without pulling."""
        self._alarm.ring()

    def _note_pending(self, run_at_us: int) -> None:
        """An instance due at ``run_at_us`` was stored; wake if it is inside the window."""
        if run_at_us <= self._clock.now_us() + self._window_us:
            if self._urgent_us is None or run_at_us < self._urgent_us:
                self._urgent_us = run_at_us
            self._wake()
        elif self._next_pending_us is None or run_at_us < self._next_pending_us:
            self._next_pending_us = run_at_us
            self._wake()  # re-aim the sleep at the earlier time

    def capacity_statistics(self) -> CapacityStatistics:
        """How many instances the node holds, against its bound."""
        return self._capacity.statistics()

    def statistics(self) -> PullerStatistics:
        return PullerStatistics(
            pulls=self._pulls,
            claimed=self._claimed,
            next_pull_us=self._next_pull_us,
            next_pending_us=self._next_pending_us,
        )

    def stop(self) -> None:
        """Stop claiming (shutdown); closes the channel to the Timekeeper."""
        self.cancel_scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.cancel_scope:
            await self._run(task_status)

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        async with self._send, trio.open_nursery() as nursery:
            nursery.start_soon(self._read_inbox, self._inbox)
            task_status.started()
            while True:
                self._woken = False
                urgent, self._urgent_us = self._urgent_us, None
                limited = await self._pull()
                if limited and urgent is not None:
                    # The window is full but something due sooner than what it holds was
                    # just scheduled: ask the Timekeeper to give back its latest-due
                    # instances so the new one gets a place and fires on time.
                    await self._send.send(Evict(after_us=urgent, count=self._batch_size))
                    continue
                await self._sleep(limited=limited)

    async def _pull(self) -> bool:
        """Claim everything due inside the window that fits; True if capacity ran out."""
        self._pulls += 1
        # In cluster mode a pull in the node's slot takes what is due by the slot's
        # horizon, even if it runs late: what became due since is the next node's share.
        base, self._slot_us = self._slot_us, None
        now = self._clock.now_us()
        horizon = (now if base is None else min(base, now)) + self._window_us
        while True:
            room = self._capacity.room()
            if room <= 0:
                return True
            want = min(room, self._batch_size)
            if self._cluster is not None:
                want = self._cluster.fair_share(want, _MIN_SHARE)
            now = self._clock.now_us()
            sent = trio.current_time()
            claimed = await self._store.claim(self._owner, horizon, want, now, self._lease_us)
            if self._cluster is not None:
                self._last_pull_us = self._clock.now_us()
                self._cluster.pulled(sent)
                if claimed:
                    self._cluster.leases.claimed(claimed[0].claim_token, sent)
            if claimed:
                self._capacity.take(len(claimed))
                self._claimed += len(claimed)
                if self._events is not None and self._events.active:
                    self._events.claimed(claimed, self._clock.now_us())
                await self._send.send(Claimed(claimed))
            if len(claimed) < want:
                self._next_pending_us = await self._store.next_pending_at()
                return False
            if self._cluster is not None and self._share_taken(claimed):
                return False

    def _share_taken(self, claimed: list[Instance]) -> bool:
        """Cluster mode, after a full claim: stop for this slot unless what it took is due
        within a round of slots (a backlog to catch up on: keep claiming). A burst due
        later is thus split between the nodes, a share per slot."""
        last = claimed[-1].run_at_us
        if self._cluster is None or self._cluster.nodes <= 1:
            return False
        if last <= self._clock.now_us() + self._window_us // _ROUNDS_PER_HORIZON:
            return False
        self._next_pending_us = last  # more is due from there on
        return True

    async def _sleep(self, *, limited: bool) -> None:
        """Sleep until the next reason to pull: the window reaches the next pending
        instance, or a wake-up (from the node, or a change elsewhere: see the inbox)."""
        while not self._woken:
            now = self._clock.now_us()
            due = self._due_us(limited=limited)
            if due is not None and due <= now:
                self._slot_us = due if self._cluster is not None else None
                return
            self._next_pull_us = due
            await self._alarm.sleep_until_us(due)
            if self._was_woken():
                return
            if due is not None and self._clock.now_us() >= due:
                self._slot_us = due if self._cluster is not None else None
                return

    def _was_woken(self) -> bool:
        """Whether ``wake()`` came during the sleep (a call, so the type checker does not
        take ``_woken`` for the value it had before the sleep)."""
        return self._woken

    def _due_us(self, *, limited: bool) -> int | None:
        """When to pull without a wake-up: when the window reaches the next pending
        instance (in cluster mode: in the node's next pull slot after that), or when
        another node's lease lapses."""
        due = None
        if not limited and self._next_pending_us is not None:
            due = self._next_pending_us - self._window_us
            if self._cluster is not None and self._last_pull_us is not None:
                after = max(due, self._last_pull_us + 1)
                due = self._cluster.slot_at(after, self._window_us // _ROUNDS_PER_HORIZON)
        takeover = self._takeover_us()
        if takeover is not None:
            due = takeover if due is None else min(due, takeover)
        return due

    def _takeover_us(self) -> int | None:
        """When another node's lease lapses (its work becomes ours to take), once."""
        cluster = self._cluster
        if cluster is None or cluster.takeover_at is None:
            return None
        return self._clock.now_us() + int((cluster.takeover_at - trio.current_time()) * 1e6)

    async def _read_inbox(self, inbox: trio.MemoryReceiveChannel[PullerMsg]) -> None:
        """Act on the wake-ups the others send (closed when the Puller stops, so those
        that outlive it, the Leases actor and the Recorder, know nobody is listening)."""
        async with inbox:
            async for msg in inbox:
                if isinstance(msg, RoomFreed):
                    if self._capacity.give(msg.count) or msg.wake:
                        self._wake()
                elif isinstance(msg, PendingAt):
                    self._note_pending(msg.run_at_us)
                elif isinstance(msg, Rearm):
                    self._rearm()
                else:
                    self._wake()
