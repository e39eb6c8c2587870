"""The Puller: claims PENDING instances due inside the look-ahead window.

It owns PENDING -> CLAIMED. It claims in batches, at most what the window's capacity
allows, and sends each claimed batch to the Timekeeper as one message. Between pulls it
sleeps until the earliest unclaimed instance enters the window, and wakes earlier for:

* ``wake()`` - an instance was just scheduled inside the window, or capacity was freed;
* a change committed by another process (the CLI), noticed by polling the store's cheap
  ``change_token`` every ``poll_interval``; aborts requested from elsewhere are found the
  same way.

It also renews the leases of what the node holds (heartbeat).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import final

import attrs
import trio

from tickwork.actors.capacity import Capacity
from tickwork.actors.messages import Abort, Evict
from tickwork.clock import Clock
from tickwork.model import Instance
from tickwork.stores.base import Store

log = logging.getLogger("tickwork.puller")

TimekeeperMsg = list[Instance] | Abort | Evict


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
        poll_interval_us: int,
        on_remote_aborts: Callable[[list[int]], Awaitable[None]],
        on_claimed: Callable[[list[Instance]], None] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._capacity = capacity
        self._send = to_timekeeper
        self._owner = owner
        self._window_us = window_us
        self._batch_size = batch_size
        self._lease_us = lease_us
        self._poll_us = poll_interval_us
        self._on_remote_aborts = on_remote_aborts
        self._on_claimed = on_claimed
        self.cancel_scope = trio.CancelScope()
        self._woken = False
        self._sleep_scope: trio.CancelScope | None = None
        self._next_pending_us: int | None = None
        # earliest run_at scheduled inside the window since the last pull
        self._urgent_us: int | None = None
        self._next_pull_us: int | None = None
        self._change_token: int | None = None
        self._polling = True
        self._pulls = 0
        self._claimed = 0
        capacity.on_room = self.wake

    def wake(self) -> None:
        """Pull again as soon as possible (cheap; many wake-ups coalesce into one pull)."""
        self._woken = True
        if self._sleep_scope is not None:
            self._sleep_scope.cancel()

    def note_pending(self, run_at_us: int) -> None:
        """An instance due at ``run_at_us`` was stored; wake if it is inside the window."""
        if run_at_us <= self._clock.now_us() + self._window_us:
            if self._urgent_us is None or run_at_us < self._urgent_us:
                self._urgent_us = run_at_us
            self.wake()
        elif self._next_pending_us is None or run_at_us < self._next_pending_us:
            self._next_pending_us = run_at_us
            self.wake()  # re-aim the sleep at the earlier time

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
            nursery.start_soon(self._heartbeat)
            self._change_token = await self._store.change_token()
            # A store that nothing else can write to (None) needs no polling.
            self._polling = self._change_token is not None
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
        horizon = self._clock.now_us() + self._window_us
        while True:
            room = self._capacity.room()
            if room <= 0:
                return True
            want = min(room, self._batch_size)
            now = self._clock.now_us()
            claimed = await self._store.claim(self._owner, horizon, want, now, self._lease_us)
            if claimed:
                self._capacity.take(len(claimed))
                self._claimed += len(claimed)
                if self._on_claimed is not None:
                    self._on_claimed(claimed)
                await self._send.send(claimed)
            if len(claimed) < want:
                self._next_pending_us = await self._store.next_pending_at()
                return False

    async def _sleep(self, *, limited: bool) -> None:
        """Sleep until the next reason to pull: the window reaches the next pending
        instance, a wake-up, or a change committed elsewhere (polled)."""
        while not self._woken:
            now = self._clock.now_us()
            enters_window = None
            if not limited and self._next_pending_us is not None:
                enters_window = self._next_pending_us - self._window_us
                if enters_window <= now:
                    return
            until = now + self._poll_us if self._polling else None
            if enters_window is not None:
                until = enters_window if until is None else min(until, enters_window)
            self._next_pull_us = until
            with trio.CancelScope() as scope:
                self._sleep_scope = scope
                if until is None:
                    await trio.sleep_forever()
                else:
                    await self._clock.sleep_until_us(until)
            self._sleep_scope = None
            if self._woken or (self._polling and await self._changed_elsewhere()):
                return
            if enters_window is not None and self._clock.now_us() >= enters_window:
                return

    async def _changed_elsewhere(self) -> bool:
        token = await self._store.change_token()
        if token == self._change_token:
            return False
        self._change_token = token
        aborts = await self._store.abort_requests(self._owner)
        if aborts:
            await self._on_remote_aborts(aborts)
        return True

    async def _heartbeat(self) -> None:
        period = max(self._lease_us // 3, 1)
        while True:
            # re-read the clock each time: after a wall-clock jump, beat once, not once
            # per missed period
            await self._clock.sleep_until_us(self._clock.now_us() + period)
            await self._store.renew(self._owner, self._clock.now_us(), self._lease_us)
