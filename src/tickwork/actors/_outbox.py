"""The Executor's outbox: outcomes on their way to the Recorder, one message per batch.

Bounded: a worker whose outcome fills it waits for room (``wait_room``), so a slow
Recorder slows the workers (backpressure). It also carries the notes of at-least-once
runs in progress (``Kind.STARTED``): a run is noted once it has run ``NOTE_DELAY``, with
the first flush after that (an outcome's, or the note timer's), so a run that ends sooner
never costs a note, even in a burst whose outcomes flush every few milliseconds.
"""

from __future__ import annotations

from typing import final

import trio

from tickwork.actors.messages import Kind, Outcome, Outcomes, RecorderMsg
from tickwork.model import Instance

#: an at-least-once run in progress is noted (RUNNING written) once it has run this long
#: (seconds); one that ends sooner never is
NOTE_DELAY = 0.02
#: the note timer wakes at most this often (seconds): a run's note leaves at most this
#: late after its NOTE_DELAY
_NOTE_TICK = NOTE_DELAY / 4


@final
class Outbox:
    def __init__(self, send: trio.MemorySendChannel[RecorderMsg], limit: int) -> None:
        self._send = send
        self._limit = limit
        self._items: list[Outcome] = []
        # at-least-once runs in progress not yet reported to the Recorder, oldest first:
        # id -> (instance, start on the node's clock, start in trio's time)
        self._unreported: dict[int, tuple[Instance, int, float]] = {}
        self._note_timer = False  # the note timer runs
        self._closing = False  # see close()
        self._nonempty = trio.Event()
        self._room = trio.Event()

    def put(self, outcome: Outcome) -> None:
        self._items.append(outcome)
        self._nonempty.set()

    def started(self, inst: Instance, started_us: int, nursery: trio.Nursery | None) -> None:
        """An at-least-once run started: noted ``NOTE_DELAY`` from now, if it still runs."""
        self._unreported.pop(inst.id, None)  # (kept in start order)
        self._unreported[inst.id] = (inst, started_us, trio.current_time())
        if not self._note_timer and nursery is not None:
            self._note_timer = True
            nursery.start_soon(self._note_timer_task)

    def ended(self, instance_id: int) -> None:
        """A run ended: if it was never reported, it never is (its outcome says all)."""
        self._unreported.pop(instance_id, None)

    def _oldest_start(self) -> float | None:
        for _, _, at in self._unreported.values():
            return at
        return None

    def _notes_due(self) -> bool:
        oldest = self._oldest_start()
        return oldest is not None and oldest <= trio.current_time() - NOTE_DELAY

    async def _note_timer_task(self) -> None:
        """While runs are in progress unreported: flush when the oldest has run
        ``NOTE_DELAY`` (waking at most every ``_NOTE_TICK``), unless an outcome's flush
        took it first."""
        try:
            while (oldest := self._oldest_start()) is not None:
                await trio.sleep_until(max(oldest + NOTE_DELAY, trio.current_time() + _NOTE_TICK))
                if self._notes_due():
                    self._nonempty.set()
        finally:
            self._note_timer = False

    def _take_notes(self) -> list[Outcome]:
        """The notes of the runs that have run ``NOTE_DELAY`` (they leave ``_unreported``)."""
        cutoff = trio.current_time() - NOTE_DELAY
        notes = []
        for inst, started_us, at in self._unreported.values():
            if at > cutoff:
                break
            notes.append(Outcome(inst, Kind.STARTED, started_us=started_us))
        for note in notes:
            del self._unreported[note.instance.id]
        return notes

    async def wait_room(self) -> None:
        while len(self._items) >= self._limit:
            # One event per full episode, shared by every waiting worker: the flusher
            # sets it when it takes the outbox.
            if self._room.is_set():
                self._room = trio.Event()
            await self._room.wait()

    def close(self) -> None:
        """No more outcomes will come (every worker is gone): the flusher sends what is
        left, a batch it is sending included, and returns."""
        self._closing = True
        self._nonempty.set()

    async def flusher(self) -> None:
        """Send the outbox to the Recorder until :meth:`close` and everything is sent.

        Never cancel it to stop it: a batch it is sending (the Recorder busy) would be
        lost, its runs over but never recorded."""
        while True:
            await self._nonempty.wait()
            if self._items or self._notes_due():
                await self._flush()
            elif self._closing:
                return
            else:  # the runs ended unreported
                self._nonempty = trio.Event()

    async def _flush(self) -> None:
        while self._items or self._notes_due():
            batch, self._items = self._items, []
            # runs in progress: after any outcome, never before theirs
            batch.extend(self._take_notes())
            if not self._closing:
                self._nonempty = trio.Event()
            self._room.set()
            await self._send.send(Outcomes(batch))
