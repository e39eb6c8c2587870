"""The Leases actor: keeps the node's claims valid for as long as anything of it runs.

``open_scheduler`` starts it first and stops it last: after the Executor has drained and
the Recorder has written every outcome, right before the node gives its claims back (as
hypercorn keeps its lifespan nursery outside the nursery that serves and drains
connections). So a graceful stop whose ``shutdown_grace`` is longer than the lease keeps
renewing what its running instances hold: no other node takes them over and runs them
again, and their outcomes are recorded. It does three things:

* **Renewals**, every ``lease / 3`` on trio's monotonic clock (a lease is a duration: a
  wall-clock jump must not stop them), drift-free (``trio_util.periodic``: a slow
  renewal does not push the next ones later). A single node renews with ``Store.renew``; a
  cluster node sends its :class:`~tickwork.actors.cluster_link.ClusterLink` heartbeat, which
  also tells when another node's lease lapses (the Puller is told to re-aim: ``Rearm``).
* **Changes made elsewhere**: a cluster store pushes notices (new work due soon:
  ``PendingAt``; notices lost: ``Wake``); a single node polls the store's cheap
  ``change_token`` every ``poll_interval`` (a store nothing else writes to, None, is not
  polled) and wakes the Puller when it moved.
* **Remote aborts**: on a notice or a change, the abort requests made elsewhere for what
  the node holds are sent to the Aborts actor (``AbortRequested``), which carries them
  out.
* **Schedules changed elsewhere** (a cluster notice of it, or any change a poll saw): the
  notifier's host is told (``SchedulesChanged``), so a schedule's ``notify`` added or
  replaced by another process applies at once.

What it tells the Puller, the Aborts actor and the notifier travels on channels
(``messages.PullerMsg``, ``messages.AbortRequested``, ``messages.SchedulesChanged``); once
they have stopped (shutdown), there is nobody to tell and the messages are dropped.
"""

from __future__ import annotations

import logging
from contextlib import aclosing, nullcontext
from typing import final

import trio
from trio_util import periodic

from tickwork.actors.cluster_link import ClusterLink
from tickwork.actors.messages import (
    AbortRequested,
    PendingAt,
    PullerMsg,
    Rearm,
    SchedulesChanged,
    Wake,
)
from tickwork.clock import Clock
from tickwork.stores.base import Store

log = logging.getLogger("tickwork.leases")


@final
class Leases:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        owner: str,
        lease_us: int,
        poll_interval_us: int,
        to_puller: trio.MemorySendChannel[PullerMsg],
        to_aborts: trio.MemorySendChannel[AbortRequested],
        cluster: ClusterLink | None = None,
        to_notices: trio.MemorySendChannel[SchedulesChanged] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._owner = owner
        self._lease_us = lease_us
        self._poll_us = poll_interval_us
        self._send = to_puller
        self._aborts_end = to_aborts  # closed when the actor stops
        self._to_aborts: trio.MemorySendChannel[AbortRequested] | None = to_aborts
        self._cluster = cluster
        self._notices_end = to_notices  # closed when the actor stops
        self._to_notices = to_notices
        self._puller_gone = False
        self.cancel_scope = trio.CancelScope()

    def stop(self) -> None:
        """Stop renewing (the node's last step before it gives its claims back)."""
        self.cancel_scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.cancel_scope:
            async with (
                self._send,
                self._aborts_end,
                self._notices_end or nullcontext(),
                trio.open_nursery() as nursery,
            ):
                if self._cluster is None:
                    token = await self._store.change_token()
                    nursery.start_soon(self._renew_forever)
                    if token is not None:
                        nursery.start_soon(self._poll_forever, token)
                else:
                    # The first beat, before the Puller starts, tells how many nodes
                    # share the work.
                    await self._cluster.beat()
                    nursery.start_soon(self._beat_forever, self._cluster)
                    nursery.start_soon(self._listen_forever, self._cluster)
                task_status.started()

    async def _renew_forever(self) -> None:
        period = max(self._lease_us // 3, 1) / 1e6
        async with aclosing(periodic(period)) as beats:
            await anext(beats)  # the first tick is now: the claims were just made
            async for _ in beats:
                await self._store.renew(self._owner, self._clock.now_us(), self._lease_us)

    async def _poll_forever(self, token: int) -> None:
        while True:
            await self._clock.sleep_until_us(self._clock.now_us() + self._poll_us)
            current = await self._store.change_token()
            if current == token:
                continue
            token = current if current is not None else token
            self._schedules_changed()  # first: the notifier may start before a run
            await self._remote_aborts()
            await self._tell(Wake())

    async def _listen_forever(self, cluster: ClusterLink) -> None:
        while True:
            changes = await cluster.next_changes()
            if changes.schedules or changes.lost:
                self._schedules_changed()
            if changes.aborts or changes.lost:
                await self._remote_aborts()
            if changes.lost:
                await self._tell(Wake())
            elif changes.pending_us is not None:
                await self._tell(PendingAt(changes.pending_us))

    async def _remote_aborts(self) -> None:
        aborts = await self._store.abort_requests(self._owner)
        if aborts and self._to_aborts is not None:
            try:
                await self._to_aborts.send(AbortRequested(tuple(aborts)))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._to_aborts = None  # the pipeline stopped: what it held is given back

    def _schedules_changed(self) -> None:
        """Tell the notifier; dropped when a message already waits there (it reads every
        schedule's ``notify`` again anyway) or when there is no notifier's host."""
        if self._to_notices is None:
            return
        try:
            self._to_notices.send_nowait(SchedulesChanged())
        except trio.WouldBlock:
            pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._to_notices = None

    async def _tell(self, msg: PullerMsg) -> None:
        if self._puller_gone:
            return
        try:
            await self._send.send(msg)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._puller_gone = True  # the Puller stopped (shutdown): nothing to wake

    async def _beat_forever(self, cluster: ClusterLink) -> None:
        async with aclosing(cluster.heartbeats()) as beats:
            async for takeover in beats:
                if takeover:
                    self._rearm()

    def _rearm(self) -> None:
        """A heartbeat learnt when another node's lease lapses: the Puller re-aims.
        Dropped when the channel is full: every message there re-aims it anyway."""
        if self._puller_gone:
            return
        try:
            self._send.send_nowait(Rearm())
        except trio.WouldBlock:
            pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._puller_gone = True


async def recover_claims(store: Store, clock: Clock) -> int:
    """At node start, before any actor runs: give back the claims a previous run of this
    node left (GIVE_BACK in the state table; see ``Store.recover``). Returns how many."""
    recovered = await store.recover(clock.now_us())
    if recovered:
        log.info("recovered %d instances left claimed by a previous run", recovered)
    return recovered


async def give_back_claims(store: Store, clock: Clock, owner: str) -> int:
    """The node's last store write, after every actor stopped: give back what ``owner``
    still holds (GIVE_BACK in the state table). Returns how many claims went back."""
    return await store.release(owner, clock.now_us())
