"""The window's capacity: how many instances the node may hold in memory at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import final

import attrs


@final
@attrs.frozen
class CapacityStatistics:
    held: int
    limit: int
    low_water: int


@final
class Capacity:
    """Counts held instances against ``max_in_memory``.

    The Puller ``take``s what it claims; the Recorder (or whoever gives an instance back)
    ``give``s. When the count drops to the low-water mark, ``on_room`` is called (the
    Puller's wake-up), so the Timekeeper refills in batches, not one instance at a time.
    """

    def __init__(self, limit: int, low_water: int) -> None:
        self.limit = limit
        self.low_water = low_water
        self.held = 0
        self.on_room: Callable[[], None] | None = None

    def room(self) -> int:
        return self.limit - self.held

    def take(self, n: int) -> None:
        self.held += n

    def give(self, n: int, *, wake: bool = False) -> None:
        """Return ``n`` places; ``wake`` calls ``on_room`` even above the low-water mark."""
        before = self.held
        self.held -= n
        crossed = before > self.low_water >= self.held
        if (crossed or wake) and self.on_room is not None:
            self.on_room()

    def statistics(self) -> CapacityStatistics:
        return CapacityStatistics(held=self.held, limit=self.limit, low_water=self.low_water)
