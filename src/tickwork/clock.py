"""Clocks: the scheduler's source of wall time and of sleeping until a wall time.

Persisted times are UTC microseconds. A clock's ``sleep_until_us`` must never return
before the wall clock reads the deadline, and must notice a wall-clock jump (NTP step,
suspended laptop) within a bounded time so nothing fires early or is stranded.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Protocol, runtime_checkable

import trio

from tickwork._time import from_us, to_us


@runtime_checkable
class Clock(Protocol):
    """What the scheduler needs of a clock."""

    def now_us(self) -> int:
        """Wall time now, UTC microseconds since the epoch."""
        ...

    async def sleep_until_us(self, deadline_us: int) -> None:
        """Return once the wall clock reads at least ``deadline_us``."""
        ...


class SystemClock:
    """The system's wall clock (``time.time_ns``).

    Sleeps on trio's monotonic clock in naps of at most ``max_nap`` seconds and reads the
    wall clock again after each, so a wall-clock jump is noticed within ``max_nap``: a
    jump backward never fires anything early, a jump forward strands nothing.
    """

    def __init__(self, max_nap: float = 1.0) -> None:
        self.max_nap = max_nap

    def now_us(self) -> int:
        return time.time_ns() // 1_000

    def now(self) -> datetime:
        return from_us(self.now_us())

    async def sleep_until_us(self, deadline_us: int) -> None:
        while True:
            remaining = deadline_us - self.now_us()
            if remaining <= 0:
                return
            await trio.sleep(min(remaining / 1_000_000, self.max_nap))

    async def sleep_until(self, when: datetime) -> None:
        await self.sleep_until_us(to_us(when))
