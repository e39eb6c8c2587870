"""The window's capacity: how many instances the node may hold in memory at once."""

from __future__ import annotations

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
    """The Puller's count of held instances against ``max_in_memory``.

    The Puller ``take``s what it claims and ``give``s back what the others tell it left
    the node (:class:`~tickwork.actors.messages.RoomFreed`). It pulls again when the
    count drops to the low-water mark, so the Timekeeper refills in batches, not one
    instance at a time.
    """

    def __init__(self, limit: int, low_water: int) -> None:
        self.limit = limit
        self.low_water = low_water
        self.held = 0

    def room(self) -> int:
        return self.limit - self.held

    def take(self, n: int) -> None:
        self.held += n

    def give(self, n: int) -> bool:
        """Return ``n`` places; True if the count fell to the low-water mark (pull again)."""
        before = self.held
        self.held -= n
        return before > self.low_water >= self.held

    def statistics(self) -> CapacityStatistics:
        return CapacityStatistics(held=self.held, limit=self.limit, low_water=self.low_water)
