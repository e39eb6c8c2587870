"""Test helpers that ship with tickwork: a virtual wall clock on trio's clock.

Under ``trio.testing.MockClock(autojump_threshold=0)`` a :class:`VirtualClock` lets a
schedule that spans days run in milliseconds, with every instance firing at its exact
virtual time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import trio

from tickwork._time import from_us, td_us, to_us

_DEFAULT_START = datetime(2030, 1, 1, tzinfo=UTC)


class VirtualClock:
    """Wall time = ``start`` + (trio's current time - its time at creation) + jumps.

    ``jump(delta)`` steps the wall clock like an NTP step would (negative for a jump back);
    sleepers notice at once and re-aim at their wall deadline.
    """

    def __init__(self, start: datetime = _DEFAULT_START) -> None:
        self._start_us = to_us(start, what="start")
        self._t0 = trio.current_time()
        self._offset_us = 0
        self._jumped = trio.Event()

    def now_us(self) -> int:
        return self._start_us + self._offset_us + round((trio.current_time() - self._t0) * 1e6)

    def now(self) -> datetime:
        return from_us(self.now_us())

    def jump(self, delta: timedelta) -> None:
        self._offset_us += td_us(delta)
        self._jumped.set()
        self._jumped = trio.Event()

    async def sleep_until_us(self, deadline_us: int) -> None:
        while True:
            remaining = deadline_us - self.now_us()
            if remaining <= 0:
                return
            jumped = self._jumped
            with trio.move_on_after(remaining / 1e6):
                await jumped.wait()

    async def sleep_until(self, when: datetime) -> None:
        await self.sleep_until_us(to_us(when))

    async def advance_to(self, when: datetime) -> None:
        """Sleep until the wall clock reads ``when`` (convenience for tests)."""
        await self.sleep_until(when)
