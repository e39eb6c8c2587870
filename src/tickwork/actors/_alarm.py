"""An alarm: sleep until a wall time (or until woken), cut short by a call.

The Puller and the Timekeeper each sleep until their next reason to act, and a message
may bring that reason earlier; this is the one place that sleep and its wake-up live.
"""

from __future__ import annotations

import trio

from tickwork.clock import Clock


class Alarm:
    """Sleep until a time on ``clock``, or forever, until :meth:`ring` cuts it short."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._scope: trio.CancelScope | None = None
        self._until_us: int | None = None

    async def sleep_until_us(self, until_us: int | None) -> None:
        """Return when the clock reads ``until_us`` (never, if None) or on :meth:`ring`."""
        with trio.CancelScope() as scope:
            self._scope = scope
            self._until_us = until_us
            try:
                if until_us is None:
                    await trio.sleep_forever()
                else:
                    await self._clock.sleep_until_us(until_us)
            finally:
                self._scope = None
                self._until_us = None

    def ring(self) -> None:
        """End the sleep now, if there is one (a no-op otherwise)."""
        if self._scope is not None:
            self._scope.cancel()

    def ring_before(self, when_us: int) -> None:
        """End the sleep if it would last past ``when_us``."""
        if self._scope is not None and (self._until_us is None or when_us < self._until_us):
            self._scope.cancel()
