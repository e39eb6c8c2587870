"""Transition events and subscriptions (``scheduler.subscribe()``).

Every subscriber has a bounded buffer. Publishing never blocks and never slows the
actors: when a subscriber's buffer is full its oldest events are dropped and counted,
and the subscriber receives an :class:`EventsLost` saying how many before the next event.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import final

import attrs
import trio

from tickwork._time import from_us
from tickwork.state import State


@final
@attrs.frozen(slots=True)
class TransitionEvent:
    """One instance moved from one state to another on a node."""

    instance_id: int
    task: str
    from_state: State
    to_state: State
    at_us: int
    node: str
    #: when the instance was due (its ``run_at``), and its schedule, if any
    run_at_us: int = 0
    schedule_id: str | None = None

    @property
    def at(self) -> datetime:
        return from_us(self.at_us)


@final
@attrs.frozen(slots=True)
class EventsLost:
    """``count`` events were dropped because this subscriber fell behind."""

    count: int


@final
class Subscription(trio.abc.ReceiveChannel[TransitionEvent | EventsLost]):
    """A bounded stream of :class:`TransitionEvent` (and :class:`EventsLost`) items: a
    ``trio.abc.ReceiveChannel``.

    Read it with ``async for``, :meth:`receive` or :meth:`receive_nowait`; any number of
    tasks may read one subscription (each item goes to one of them, as with a trio memory
    channel). When the node stops, the stream ends: what is buffered can still be read,
    then ``trio.EndOfChannel`` (``async for`` ends) -- also when the node was cancelled
    or crashed. Close it (:meth:`aclose`, :meth:`close`, or leave its ``async with`` /
    ``with`` block) to unsubscribe: reading a closed subscription, or waiting to read
    when another task closes it, raises ``trio.ClosedResourceError``.

    Like trio's memory channels, :meth:`receive` is a cancellation point; it yields to
    other tasks only when it has to wait, so a reader keeps up with a burst of events.
    """

    def __init__(self, hub: EventHub, buffer: int) -> None:
        self._hub = hub
        # a full deque drops its oldest item on append: the buffer's bound
        self._events: deque[TransitionEvent] = deque(maxlen=buffer)
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

    def _put(self, event: TransitionEvent) -> None:
        events = self._events
        if len(events) == events.maxlen:
            self._lost += 1
            self.total_lost += 1
        events.append(event)
        if self._readers:
            self._readers.unpark()

    def _end(self) -> None:
        self._ended = True
        self._readers.unpark_all()

    def receive_nowait(self) -> TransitionEvent | EventsLost:
        """The next item if one is waiting.

        Raises:
            trio.WouldBlock: nothing is waiting. trio.EndOfChannel: the node stopped and
            everything was read. trio.ClosedResourceError: this subscription was closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("this subscription was closed")
        if self._lost:
            lost, self._lost = self._lost, 0
            return EventsLost(lost)
        if self._events:
            return self._events.popleft()
        if self._ended:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> TransitionEvent | EventsLost:
        """The next item, waiting for one if need be (raises as :meth:`receive_nowait`,
        except that it waits instead of raising ``trio.WouldBlock``)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                return self.receive_nowait()
            except trio.WouldBlock:
                await self._readers.park()

    def close(self) -> None:
        """Unsubscribe (idempotent); tasks waiting in :meth:`receive` get
        ``trio.ClosedResourceError``."""
        if not self._closed:
            self._closed = True
            self._events.clear()
            self._hub.remove(self)
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
    """Fans transition events out to the subscriptions; the node's end of the stream.

    ``async with hub`` (or :meth:`close`) ends every subscription, however the node
    stops, so that readers in other tasks see ``EndOfChannel`` instead of waiting for
    ever.
    """

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._closed = False

    @property
    def active(self) -> bool:
        return bool(self._subs)

    def subscribe(self, buffer: int) -> Subscription:
        sub = Subscription(self, buffer)
        if self._closed:
            sub._end()  # noqa: SLF001 - the hub is the subscription's only producer
        else:
            self._subs.append(sub)
        return sub

    def remove(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def publish(self, event: TransitionEvent) -> None:
        for sub in self._subs:
            sub._put(event)  # noqa: SLF001

    def close(self) -> None:
        """End every subscription (idempotent): readers drain, then ``EndOfChannel``."""
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
