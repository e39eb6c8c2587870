"""Stored instances per state, counted at most every few seconds (one store call however
many scrapes and pages ask): at 10 million rows a count is not free on every store."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from tickwork._time import from_us
from tickwork.schedules.missed import REASONS, reason_of
from tickwork.state import State

if TYPE_CHECKING:
    from tickwork.node.scheduler import Scheduler

__all__ = ["MISSED_READ", "CachedCounts", "recent_missed"]

#: Missed counts by reason read the newest this many MISSED instances (an index range
#: however many were ever missed), those that ended within the window.
MISSED_READ = 500


class CachedCounts:
    """``Scheduler.counts()`` cached for ``max_age`` seconds, refreshed by one caller."""

    def __init__(self, scheduler: Scheduler, max_age: float = 5.0) -> None:
        self._scheduler = scheduler
        self._max_age = max_age
        self._value: dict[State, int] | None = None
        self._at = -float("inf")
        self._at_us: int | None = None
        self._lock = trio.Lock()

    @property
    def counted_at(self) -> str | None:
        """When the counts were taken (RFC 3339), None before the first."""
        if self._at_us is None:
            return None
        return from_us(self._at_us).isoformat().replace("+00:00", "Z")

    async def get(self) -> dict[State, int]:
        """The counts, at most ``max_age`` seconds old."""
        if self._value is not None and trio.current_time() - self._at < self._max_age:
            return self._value
        async with self._lock:  # one refresh at a time; the others take its result
            if self._value is None or trio.current_time() - self._at >= self._max_age:
                self._value = await self._scheduler.counts()
                self._at = trio.current_time()
                self._at_us = int(self._scheduler.now().timestamp() * 1_000_000)
            return self._value


async def recent_missed(scheduler: Scheduler, since_us: int) -> tuple[dict[str, int], bool]:
    """Instances recorded MISSED since ``since_us``, by reason kind
    (:data:`tickwork.schedules.missed.REASONS`), among the newest :data:`MISSED_READ`;
    and whether there may be more (all of those read ended in the window)."""
    newest = await scheduler.list(state=State.MISSED, limit=MISSED_READ)
    counts = dict.fromkeys(REASONS, 0)
    recent = 0
    for inst in newest:
        if inst.updated_us >= since_us:
            counts[reason_of(inst.error)] += 1
            recent += 1
    return counts, recent == MISSED_READ
