"""The Janitor: retention. Prunes ended instances and run history older than a cut-off.

It runs only when ``open_scheduler(retention=...)`` is set. Every ``interval`` (passes
start on a drift-free grid: ``trio_util.periodic``) it deletes,
in batches of ``batch`` rows per store call (one short transaction each) with a ``pause``
between, the terminal instances that ended before ``now - retention`` and the history
rows that finished before it, until a call finds nothing left. The pause leaves the
store's write lock to the actors on the hot path (on SQLite, one writer at a time), so
pruning a backlog of millions of rows never stalls claims or outcome writes for long.
"""

from __future__ import annotations

import logging
from contextlib import aclosing
from typing import final

import attrs
import trio
from trio_util import periodic

from tickwork.clock import Clock
from tickwork.stores.base import Store

log = logging.getLogger("tickwork.janitor")

#: rows per prune call (each call is one transaction)
BATCH = 1_000
#: seconds between two batches of one pass
PAUSE = 0.05
#: the longest time between two passes
MAX_INTERVAL = 3600.0
#: seconds from the node's start to the first pass
FIRST_PASS_AFTER = 5.0


@final
@attrs.frozen
class JanitorStatistics:
    #: instances older than this many seconds (since they ended) are pruned
    retention: float
    #: passes done, and rows (instances + history rows) deleted, since the node started
    passes: int
    pruned: int
    #: the scheduler clock's wall time of the last pass's cut-off (µs), None before the first
    last_cutoff_us: int | None


@final
class Janitor:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        retention_us: int,
        batch: int | None = None,
        pause: float = PAUSE,
        interval: float | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._retention_us = retention_us
        self._batch = batch or BATCH
        self._pause = pause
        # often enough that the backlog of one interval is small, at most hourly
        self._interval = interval or min(MAX_INTERVAL, max(retention_us / 1e6 / 10, 1.0))
        self.cancel_scope = trio.CancelScope()
        self._passes = 0
        self._pruned = 0
        self._last_cutoff: int | None = None

    def statistics(self) -> JanitorStatistics:
        return JanitorStatistics(
            retention=self._retention_us / 1e6,
            passes=self._passes,
            pruned=self._pruned,
            last_cutoff_us=self._last_cutoff,
        )

    def stop(self) -> None:
        """Stop pruning (shutdown). A batch in progress completes (one transaction)."""
        self.cancel_scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.cancel_scope:
            task_status.started()
            # The first pass soon after start (a node restarted more often than the
            # interval must still prune), not at once: start-up has work of its own.
            await trio.sleep(min(self._interval, FIRST_PASS_AFTER))
            # Intervals on trio's monotonic clock; the cut-off on the wall clock. A pass
            # that overruns the interval is followed at once by the next.
            async with aclosing(periodic(self._interval)) as passes:
                async for _ in passes:
                    await self.prune_once()

    async def prune_once(self) -> int:
        """One pass: prune in batches until nothing older than the cut-off is left."""
        cutoff = self._clock.now_us() - self._retention_us
        self._last_cutoff = cutoff
        total = 0
        while True:
            n = await self._store.prune(cutoff, self._batch)
            total += n
            self._pruned += n
            if n == 0:
                break
            await trio.sleep(self._pause)
        self._passes += 1
        if total:
            log.info("retention: pruned %d rows that ended before the cut-off", total)
        return total
