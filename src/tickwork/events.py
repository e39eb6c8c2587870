"""Transition events and subscriptions (``scheduler.subscribe()``).

Every subscriber has a bounded buffer. Publishing never blocks and never slows the
actors: when a subscriber's buffer is full its oldest events are dropped and counted,
and the subscriber receives an :class:`EventsLost` saying how many before the next event.

The actors publish a batch's events together (a claim's CLAIMED events, a recorded
batch's outcomes, the starts since a subscriber last read): one chunk per batch, which
holds the instances the actors already have, not an event object per transition. A
chunk becomes events when a subscriber reads it, so the events live only as long as
the reader keeps them: a node streaming 30,000 transitions a second to a slow page
buffers no per-event objects for Python's garbage collector to walk again and again. A
subscriber reads one event at a time (:meth:`Subscription.receive`) or everything
waiting at once (:meth:`Subscription.receive_batch`, what the metrics use), or everything
waiting as runs of events that share their move (:meth:`Subscription.receive_runs`, what
the HTTP event stream uses: a run's columns are read off the instances, no event object is
built at all).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, final

import trio

from tickwork._event_runs import Chunk, EventRun, EventsLost, TransitionEvent

if TYPE_CHECKING:
    from tickwork.model import Instance
    from tickwork.state import State

__all__ = ["EventHub", "EventRun", "EventsLost", "Subscription", "TransitionEvent"]

for _public in (EventRun, EventsLost, TransitionEvent):
    _public.__module__ = __name__  # documented here (as trio does for its re-exports)


@final
class Subscription(trio.abc.ReceiveChannel[TransitionEvent | EventsLost]):
    """A bounded stream of :class:`TransitionEvent` (and :class:`EventsLost`) items: a
    ``trio.abc.ReceiveChannel``.

    Read it with ``async for``, :meth:`receive` or :meth:`receive_nowait`, or take
    everything waiting at once with :meth:`receive_batch`; any number of tasks may read
    one subscription (each item goes to one of them, as with a trio memory channel).
    When the node stops, the stream ends: what is buffered can still be read, then
    ``trio.EndOfChannel`` (``async for`` ends) -- also when the node was cancelled or
    crashed. Close it (:meth:`aclose`, :meth:`close`, or leave its ``async with`` /
    ``with`` block) to unsubscribe: reading a closed subscription, or waiting to read
    when another task closes it, raises ``trio.ClosedResourceError``.

    Like trio's memory channels, :meth:`receive` is a cancellation point; it yields to
    other tasks only when it has to wait, so a reader keeps up with a burst of events.
    """

    def __init__(self, hub: EventHub, buffer: int) -> None:
        self._hub = hub
        self._buffer = max(buffer, 1)
        #: chunks waiting, oldest first; the first one's events before ``_skip`` are read
        self._chunks: deque[Chunk] = deque()
        self._skip = 0
        self._waiting = 0  # events in _chunks, less _skip
        self._lost = 0
        self._readers = trio.lowlevel.ParkingLot()
        #: events dropped since subscribing because this subscriber fell behind
        self.total_lost = 0
        self._closed = False  # by a reader: ClosedResourceError
        self._ended = False  # by the node: EndOfChannel once drained

    @property
    def closed(self) -> bool:
        """Whether nothing more will arrive (closed by a reader, or the node stopped)."""
        return self._closed or self._ended

    def _put(self, chunk: Chunk) -> None:
        self._chunks.append(chunk)
        self._waiting += len(chunk)
        over = self._waiting - self._buffer
        if over > 0:  # full: the oldest events are dropped and counted
            self._drop(over)
        self._wake()

    def _wake(self) -> None:
        if self._readers:
            self._readers.unpark_all()

    def _drop(self, n: int) -> None:
        self._lost += n
        self.total_lost += n
        self._waiting -= n
        chunks = self._chunks
        while n:
            left = len(chunks[0]) - self._skip
            if left > n:
                self._skip += n
                return
            chunks.popleft()
            self._skip = 0
            n -= left

    def _end(self) -> None:
        self._ended = True
        self._readers.unpark_all()

    def _slices(self, max_items: int) -> list[tuple[Chunk, int, int]]:
        """Take up to ``max_items`` waiting events, as (chunk, start, stop) slices."""
        out: list[tuple[Chunk, int, int]] = []
        chunks = self._chunks
        taken = 0
        while chunks and taken < max_items:
            head, start = chunks[0], self._skip
            room = max_items - taken
            if len(head) - start > room:
                out.append((head, start, start + room))
                self._skip += room
                taken += room
                break
            out.append((head, start, len(head)))
            taken += len(head) - start
            chunks.popleft()
            self._skip = 0
        self._waiting -= taken
        return out

    def _take(self, max_items: int) -> list[TransitionEvent]:
        out: list[TransitionEvent] = []
        for chunk, start, stop in self._slices(max_items):
            out += chunk.events(start, stop)
        return out

    def _take_runs(self, max_items: int) -> list[EventRun]:
        out: list[EventRun] = []
        for chunk, start, stop in self._slices(max_items):
            out += chunk.runs(start, stop)
        return out

    def _ready(self) -> EventsLost | None:
        """The count lost, if events were lost since the last read.

        Raises:
            trio.WouldBlock: nothing is waiting. trio.EndOfChannel: the node stopped and
            everything was read. trio.ClosedResourceError: this subscription was closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("this subscription was closed")
        self._hub.flush()  # the single moves published so far are waiting too
        if self._lost:
            lost, self._lost = self._lost, 0
            return EventsLost(lost)
        if self._waiting:
            return None
        if self._ended:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    def _next(self, max_items: int) -> list[TransitionEvent] | EventsLost:
        """Up to ``max_items`` events waiting, or the count lost before them (raises as
        :meth:`_ready`)."""
        lost = self._ready()
        return self._take(max_items) if lost is None else lost

    def receive_nowait(self) -> TransitionEvent | EventsLost:
        """The next item if one is waiting.

        Raises:
            trio.WouldBlock: nothing is waiting. trio.EndOfChannel: the node stopped and
            everything was read. trio.ClosedResourceError: this subscription was closed.
        """
        got = self._next(1)
        return got if isinstance(got, EventsLost) else got[0]

    async def receive(self) -> TransitionEvent | EventsLost:
        """The next item, waiting for one if need be (raises as :meth:`receive_nowait`,
        except that it waits instead of raising ``trio.WouldBlock``)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                return self.receive_nowait()
            except trio.WouldBlock:
                await self._readers.park()

    async def receive_batch(self, max_items: int = 10_000) -> list[TransitionEvent] | EventsLost:
        """Every event waiting, oldest first (at most ``max_items``), waiting for one if
        need be; or an :class:`EventsLost` when events were dropped before them. Raises
        as :meth:`receive`."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                return self._next(max(max_items, 1))
            except trio.WouldBlock:
                await self._readers.park()

    async def receive_runs(self, max_items: int = 10_000) -> list[EventRun] | EventsLost:
        """Every event waiting, oldest first (at most ``max_items``), as runs of events
        that share their move (:class:`EventRun`, read as columns: no event object is
        built), waiting for one if need be; or an :class:`EventsLost` when events were
        dropped before them. Raises as :meth:`receive`."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                lost = self._ready()
            except trio.WouldBlock:
                await self._readers.park()
            else:
                return self._take_runs(max(max_items, 1)) if lost is None else lost

    def close(self) -> None:
        """Unsubscribe (idempotent); tasks waiting in :meth:`receive` get
        ``trio.ClosedResourceError``."""
        if not self._closed:
            self._closed = True
            self._hub.remove(self)
            self._chunks.clear()
            self._waiting = self._skip = 0
            self._readers.unpark_all()

    async def aclose(self) -> None:
        """:meth:`close`, as ``trio.abc.AsyncResource`` asks (a checkpoint)."""
        self.close()
        await trio.lowlevel.checkpoint()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@final
class EventHub:
    """Fans transition events out to the subscriptions, a chunk per batch; the node's end
    of the stream.

    ``async with hub`` (or :meth:`close`) ends every subscription, however the node
    stops, so that readers in other tasks see ``EndOfChannel`` instead of waiting for
    ever.
    """

    def __init__(self, node: str = "") -> None:
        self._node = node
        self._subs: list[Subscription] = []
        self._closed = False
        # single moves published since the last flush (the runs' starts), kept as
        # parallel lists: no object per event until a subscriber reads them
        self._insts: list[Instance] = []
        self._froms: list[State] = []
        self._tos: list[State] = []
        self._ats: list[int] = []

    @property
    def active(self) -> bool:
        return bool(self._subs)

    def subscribe(self, buffer: int) -> Subscription:
        self.flush()  # a new subscriber sees only what is published from now on
        sub = Subscription(self, buffer)
        if self._closed:
            sub._end()  # noqa: SLF001 - the hub is the subscription's only producer
        else:
            self._subs.append(sub)
        return sub

    def remove(self, sub: Subscription) -> None:
        if sub in self._subs:
            self.flush()
            self._subs.remove(sub)

    def publish(self, event: TransitionEvent) -> None:
        """Publish one event (made by the caller)."""
        if self._subs:
            self._send(Chunk([], event.from_state, event.to_state, 0, "", made=[event]))

    def moved(self, inst: Instance, from_state: State, to_state: State, at_us: int) -> None:
        """Publish one instance's move. It waits with the others published one at a time
        until a subscriber reads (or a batch is published): the subscribers are woken
        once for a run of them (each run's start, for example), not once per event."""
        if self._subs:
            self._insts.append(inst)
            self._froms.append(from_state)
            self._tos.append(to_state)
            self._ats.append(at_us)
            if len(self._insts) == 1:
                for sub in self._subs:
                    sub._wake()  # noqa: SLF001

    def moved_together(
        self, instances: list[Instance], from_state: State, to_state: State, at_us: int
    ) -> None:
        """Publish the same move of a batch of instances (a claim's)."""
        if instances and self._subs:
            self._send(Chunk(instances, from_state, to_state, at_us, self._node))

    def recorded(
        self,
        instances: list[Instance],
        froms: list[State],
        tos: list[State],
        errors: list[str | None],
        at_us: int,
    ) -> None:
        """Publish a recorded batch: ``instances[k]`` went from ``froms[k]`` to ``tos[k]``
        with ``errors[k]``."""
        if instances and self._subs:
            self._send(Chunk(instances, froms, tos, at_us, self._node, errors=errors))

    def _send(self, chunk: Chunk) -> None:
        self.flush()
        for sub in self._subs:
            sub._put(chunk)  # noqa: SLF001

    def flush(self) -> None:
        """Hand the moves published one at a time since the last flush to every
        subscriber, as one chunk."""
        if self._insts:
            chunk = Chunk(self._insts, self._froms, self._tos, self._ats, self._node)
            self._insts, self._froms, self._tos, self._ats = [], [], [], []
            for sub in self._subs:
                sub._put(chunk)  # noqa: SLF001

    def close(self) -> None:
        """End every subscription (idempotent): readers drain, then ``EndOfChannel``."""
        self.flush()
        self._closed = True
        subs, self._subs = self._subs, []
        for sub in subs:
            sub._end()  # noqa: SLF001

    async def __aenter__(self) -> EventHub:
        return self

    async def __aexit__(self, *exc: object) -> None:
        # No checkpoint here: when the node stops by an error, a Cancelled raised on the
        # way out would replace it.
        self.close()
