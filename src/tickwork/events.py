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
class Subscription:
    """A bounded stream of :class:`TransitionEvent` (and :class:`EventsLost`) items.

    Iterate it with ``async for``, or call :meth:`receive`. Close it (or leave its
    ``with`` block) to unsubscribe.
    """

    def __init__(self, hub: EventHub, buffer: int) -> None:
        self._hub = hub
        self._events: deque[TransitionEvent] = deque()
        self._buffer = buffer
        self._lost = 0
        self._ready = trio.Event()
        self.total_lost = 0
        self.closed = False

    def _put(self, event: TransitionEvent) -> None:
        if len(self._events) >= self._buffer:
            self._events.popleft()
            self._lost += 1
            self.total_lost += 1
        self._events.append(event)
        self._ready.set()

    async def receive(self) -> TransitionEvent | EventsLost:
        """The next item; raises ``trio.EndOfChannel`` once closed and drained."""
        while True:
            if self._lost:
                lost, self._lost = self._lost, 0
                return EventsLost(lost)
            if self._events:
                return self._events.popleft()
            if self.closed:
                raise trio.EndOfChannel
            self._ready = trio.Event()
            await self._ready.wait()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._hub.remove(self)
            self._ready.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> TransitionEvent | EventsLost:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


@final
class EventHub:
    """Fans transition events out to the subscriptions."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []

    @property
    def active(self) -> bool:
        return bool(self._subs)

    def subscribe(self, buffer: int) -> Subscription:
        sub = Subscription(self, buffer)
        self._subs.append(sub)
        return sub

    def remove(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def publish(self, event: TransitionEvent) -> None:
        for sub in self._subs:
            sub._put(event)  # noqa: SLF001 - the hub is the subscription's only producer

    def close(self) -> None:
        for sub in list(self._subs):
            sub.close()
