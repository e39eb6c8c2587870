"""The event types of :mod:`tickwork.events` and the chunks they are built from.

A chunk is one batch's transitions as the actors publish them (the instances they
already have, and the moves); :class:`TransitionEvent` objects or :class:`EventRun` views
are made from it only when a subscriber reads it. The public types are re-exported, and
documented, as :mod:`tickwork.events`.
"""

from __future__ import annotations

from itertools import repeat
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, NamedTuple, final

import attrs

from tickwork._time import from_us

if TYPE_CHECKING:
    from datetime import datetime

    from tickwork.model import Instance
    from tickwork.state import State

__all__ = ["Chunk", "EventRun", "EventsLost", "TransitionEvent"]


class TransitionEvent(NamedTuple):
    """One instance moved from one state to another on a node.

    A named tuple (immutable): a subscriber may read three for every instance the node
    runs, and a tuple is built in a fraction of a frozen class's time.
    """

    instance_id: int
    task: str
    from_state: State
    to_state: State
    at_us: int
    node: str
    #: when the instance was due (its ``run_at``), and its schedule, if any
    run_at_us: int = 0
    schedule_id: str | None = None
    #: how it ended, for an instance that ended FAILED, ABORTED or MISSED: the error, or
    #: the reason it was aborted or missed (:func:`tickwork.schedules.missed.reason_of`
    #: sorts a MISSED reason into a few kinds)
    error: str | None = None

    @property
    def at(self) -> datetime:
        return from_us(self.at_us)


@final
@attrs.frozen(slots=True)
class EventsLost:
    """``count`` events were dropped because this subscriber fell behind."""

    count: int


_new = tuple.__new__


@final
class Chunk:
    """Events not built yet: ``instances[k]`` moved from ``froms[k]`` (or ``froms``, one
    state for all) to ``tos[k]`` at ``ats[k]`` (or ``ats``), with ``errors[k]``; or
    events a publisher built (``made``)."""

    __slots__ = ("ats", "errors", "froms", "instances", "made", "node", "tos")

    def __init__(
        self,
        instances: list[Instance],
        froms: list[State] | State,
        tos: list[State] | State,
        ats: list[int] | int,
        node: str,
        *,
        errors: list[str | None] | None = None,
        made: list[TransitionEvent] | None = None,
    ) -> None:
        self.instances, self.froms, self.tos, self.ats = instances, froms, tos, ats
        self.node, self.errors, self.made = node, errors, made

    def __len__(self) -> int:
        return len(self.instances) if self.made is None else len(self.made)

    def events(self, start: int, stop: int) -> list[TransitionEvent]:
        """The events ``start`` to ``stop`` (excluded)."""
        if self.made is not None:
            return self.made[start:stop]
        froms, tos, ats, errors = self.froms, self.tos, self.ats, self.errors
        return [
            _new(TransitionEvent, (i.id, i.task, f, t, a, self.node, i.run_at_us,
                                   i.schedule_id, e))
            for i, f, t, a, e in zip(
                self.instances[start:stop],
                froms[start:stop] if isinstance(froms, list) else repeat(froms),
                tos[start:stop] if isinstance(tos, list) else repeat(tos),
                ats[start:stop] if isinstance(ats, list) else repeat(ats),
                repeat(None) if errors is None else errors[start:stop],
                strict=False,  # the repeats are endless: the instances are the events
            )
        ]  # fmt: skip

    def runs(self, start: int, stop: int) -> list[EventRun]:
        """The events ``start`` to ``stop`` (excluded), as runs that share their move."""
        if self.made is not None:
            return _made_runs(self, self.made, start, stop)
        n = stop - start
        froms = self.froms[start:stop] if isinstance(self.froms, list) else [self.froms] * n
        tos = self.tos[start:stop] if isinstance(self.tos, list) else [self.tos] * n
        if froms.count(froms[0]) == n and tos.count(tos[0]) == n:  # one move (C loops)
            return [self._run(start, stop, froms[0], tos[0])]
        # mixed moves (a recorded batch with failures among the successes): split
        runs: list[EventRun] = []
        first = start
        for k, f, t in zip(range(start, stop), froms, tos, strict=True):
            if f is not froms[first - start] or t is not tos[first - start]:
                runs.append(self._run(first, k, froms[first - start], tos[first - start]))
                first = k
        runs.append(self._run(first, stop, froms[first - start], tos[first - start]))
        return runs

    def _run(self, start: int, stop: int, from_state: State, to_state: State) -> EventRun:
        at = self.ats if isinstance(self.ats, int) else None
        return EventRun(self, start, stop, move=(from_state, to_state, self.node), at_us=at)


def _made_runs(chunk: Chunk, made: list[TransitionEvent], start: int, stop: int) -> list[EventRun]:
    """Events a publisher built, as runs that share their move, node and time."""
    runs: list[EventRun] = []
    first = start
    for k in range(start + 1, stop + 1):
        a = made[first]
        if k == stop or made[k][2:6] != a[2:6]:
            move = (a.from_state, a.to_state, a.node)
            runs.append(EventRun(chunk, first, k, move=move, at_us=a.at_us))
            first = k
    return runs


_ID = attrgetter("id")
_TASK = attrgetter("task")
_RUN_AT = attrgetter("run_at_us")
_SCHEDULE = attrgetter("schedule_id")


@final
class EventRun:
    """Consecutive events of a subscription that share their move and node, read as
    columns: event ``k`` of the run says that instance ``instance_ids()[k]`` (of task
    ``tasks()[k]``) went from :attr:`from_state` to :attr:`to_state` on :attr:`node` at
    ``times_us()[k]``; :meth:`events` gives the same as :class:`TransitionEvent` objects.

    What :meth:`Subscription.receive_runs` returns, for a reader that handles events in
    bulk (the HTTP event stream formats a run's frames together): a column is read off
    the instances when asked for, and no event object is built unless :meth:`events` is
    called. A run is a view of the node's chunk: read it before the next
    ``receive_runs``, and do not keep it for long.
    """

    __slots__ = ("_chunk", "_start", "_stop", "at_us", "from_state", "node", "to_state")

    def __init__(
        self,
        chunk: Chunk,
        start: int,
        stop: int,
        *,
        move: tuple[State, State, str],
        at_us: int | None,
    ) -> None:
        self._chunk, self._start, self._stop = chunk, start, stop
        #: the move every event of the run made, and the node it was made on
        self.from_state, self.to_state, self.node = move
        #: the time of every event of the run when they share one (a claim's batch, a
        #: recorded batch), else None (runs started one by one): see :meth:`times_us`
        self.at_us = at_us

    def __len__(self) -> int:
        return self._stop - self._start

    def __repr__(self) -> str:
        return (
            f"<EventRun of {len(self)}: {self.from_state.name} -> {self.to_state.name} "
            f"on {self.node!r}>"
        )

    def events(self) -> list[TransitionEvent]:
        """The run's events, built."""
        return self._chunk.events(self._start, self._stop)

    def _column(self, get: attrgetter[object], field: int) -> list[object]:
        chunk = self._chunk
        if chunk.made is not None:
            return list(map(itemgetter(field), chunk.made[self._start : self._stop]))
        return list(map(get, chunk.instances[self._start : self._stop]))

    def instance_ids(self) -> list[int]:
        return self._column(_ID, 0)  # type: ignore[return-value]

    def tasks(self) -> list[str]:
        return self._column(_TASK, 1)  # type: ignore[return-value]

    def run_at_us(self) -> list[int]:
        """When each instance was due."""
        return self._column(_RUN_AT, 6)  # type: ignore[return-value]

    def schedule_ids(self) -> list[str | None]:
        return self._column(_SCHEDULE, 7)  # type: ignore[return-value]

    def times_us(self) -> list[int]:
        """When each event happened (microseconds since the epoch, UTC)."""
        chunk = self._chunk
        if chunk.made is not None:
            return list(map(itemgetter(4), chunk.made[self._start : self._stop]))
        ats = chunk.ats
        return [ats] * len(self) if isinstance(ats, int) else ats[self._start : self._stop]

    def errors(self) -> list[str | None]:
        """How each instance ended, for a run to FAILED, ABORTED or MISSED (as
        :attr:`TransitionEvent.error`), else Nones."""
        chunk = self._chunk
        if chunk.made is not None:
            return list(map(itemgetter(8), chunk.made[self._start : self._stop]))
        if chunk.errors is None:
            return [None] * len(self)
        return chunk.errors[self._start : self._stop]
