"""The Executor's outbox: outcomes on their way to the Recorder, one message per batch.

Bounded: a worker whose outcome fills it waits for room (``wait_room``), so a slow
Recorder slows the workers (backpressure). It also carries the notes of at-least-once
runs in progress (``Kind.STARTED``): each flush adds one for every such run that started
since the last flush and still runs; a run that ends before the next flush never costs a
note, and a slow run's note leaves within ``NOTE_DELAY`` even when no outcome does.
"""

from __future__ import annotations

from typing import final

import trio

from tickwork.actors.messages import Kind, Outcome, Outcomes, RecorderMsg
from tickwork.model import Instance

#: notes of at-least-once runs in progress wait at most this long (seconds) for outcomes
#: to travel with: a burst of starts costs one extra flush per this time, not one each
NOTE_DELAY = 0.02


@final
class Outbox:
    def __init__(self, send: trio.MemorySendChannel[RecorderMsg], limit: int) -> None:
        self._send = send
        self._limit = limit
        self._items: list[Outcome] = []
        # at-least-once runs in progress not yet reported to the Recorder: id -> start
        self._unreported: dict[int, tuple[Instance, int]] = {}
        self._note_timer = False  # a flush of the notes alone is on its way
        self._nonempty = trio.Event()
        self._room = trio.Event()

    def put(self, outcome: Outcome) -> None:
        self._items.append(outcome)
        self._nonempty.set()

    def started(self, inst: Instance, started_us: int, nursery: trio.Nursery | None) -> None:
        """An at-least-once run started: the next flush reports it, if it still runs."""
        self._unreported[inst.id] = (inst, started_us)
        if not self._note_timer and nursery is not None:
            self._note_timer = True
            nursery.start_soon(self._notes_soon)

    def ended(self, instance_id: int) -> None:
        """A run ended: if it was never reported, it never is (its outcome says all)."""
        self._unreported.pop(instance_id, None)

    async def _notes_soon(self) -> None:
        """Flush the notes of runs in progress within ``NOTE_DELAY``, if no outcome's
        flush has taken them meanwhile (in a burst, outcomes carry them)."""
        try:
            await trio.sleep(NOTE_DELAY)
        finally:
            self._note_timer = False
        if self._unreported:
            self._nonempty.set()

    async def wait_room(self) -> None:
        while len(self._items) >= self._limit:
            # One event per full episode, shared by every waiting worker: the flusher
            # sets it when it takes the outbox.
            if self._room.is_set():
                self._room = trio.Event()
            await self._room.wait()

    async def flusher(self) -> None:
        while True:
            await self._nonempty.wait()
            if not self._items and not self._unreported:  # the runs ended unreported
                self._nonempty = trio.Event()
                continue
            await self.flush_all()

    async def flush_all(self) -> None:
        while self._items or self._unreported:
            batch, self._items = self._items, []
            if self._unreported:  # runs in progress: after any outcome, never before theirs
                batch.extend(
                    Outcome(inst, Kind.STARTED, started_us=started)
                    for inst, started in self._unreported.values()
                )
                self._unreported.clear()
            self._nonempty = trio.Event()
            self._room.set()
            await self._send.send(Outcomes(batch))
