"""The store-side rules every backend shares: which event a store call applies to a row.

A store moves instances only by :func:`tickwork.state.apply` (in SQL, through the
constants of :mod:`tickwork.stores._sql`, generated from :data:`tickwork.state.TABLE`).
What it decides is which :class:`~tickwork.state.Event` a call means for one row; the
functions below say it once for the three stores. Two facts make the durable view differ
from the in-memory one:

* RUNNING is written at once (``Store.start``) only for at-most-once tasks; an
  at-least-once run's RUNNING rides on the Recorder's next group commit (a finish to
  RUNNING: RUN), and a quick run's outcome usually comes first. So a finish may find the
  row CLAIMED while the node knows it RUNNING: the table lists each outcome from CLAIMED
  as well. A RUNNING row is *repeatable* when RUN wrote it: given back, it runs again
  (RERUN, or TAKE_OVER by another node); an at-most-once one never does.
* A retry is written as PENDING, but the attempt that led to it failed: its history row
  says FAILED.
"""

from __future__ import annotations

from typing import Final

from tickwork.errors import IllegalTransition
from tickwork.state import HELD, TERMINAL, Event, State, lookup

__all__ = [
    "FINISHED",
    "HELD",
    "finish_event",
    "finish_fence",
    "finished_state",
    "history_state",
    "release_event",
]

#: The event a finish to each target state means (PENDING: see :func:`finish_event`).
_FINISH_EVENTS: Final = {
    State.SUCCEEDED: Event.SUCCEED,
    State.FAILED: Event.FAIL,
    State.ABORTED: Event.CANCEL,
    State.MISSED: Event.SKIP,
    State.PENDING: Event.RETRY,
    State.RUNNING: Event.RUN,
}


def finish_event(target: State, abort_requested: bool) -> Event:
    """The event of a fenced finish to ``target`` (a :class:`~tickwork.model.Finish`).

    An abort that was requested wins at once: a retry or a give-back (PENDING) of a row
    with an abort requested is a CANCEL, written ABORTED by the finish itself, so that
    every store answers ``get`` and ``count`` alike right after it (not only at the next
    claim). The attempt that led to it is still recorded FAILED in the history
    (:func:`history_state`).

    Raises:
        IllegalTransition: ``target`` is CLAIMED.
    """
    event = _FINISH_EVENTS.get(target)
    if event is None:
        msg = (
            f"illegal finish to {target.name}: a finish writes a terminal state, PENDING or RUNNING"
        )
        raise IllegalTransition(msg)
    if event is Event.RETRY and abort_requested:
        return Event.CANCEL
    return event


def finished_state(current: State, target: State, abort_requested: bool) -> State | None:
    """The state a fenced finish to ``target`` writes on a row now ``current``, or None
    when the table has no such move (the finish is refused)."""
    return lookup(current, finish_event(target, abort_requested))


#: :func:`finished_state` for every held state, finish target and abort flag, keyed by
#: their numbers: a store's finish loop looks up one per row (hashing an Event, whose hash
#: is Python code, would cost more than the rest of the lookup).
FINISHED: Final[dict[tuple[int, int, bool], State | None]] = {
    (int(current), int(requested), abort): finished_state(current, requested, abort)
    for current in HELD
    for requested in _FINISH_EVENTS
    for abort in (False, True)
}


def finish_fence() -> frozenset[tuple[State, State]]:
    """The ``(current state, finish target)`` pairs a fenced finish may apply to: those the
    table has a row for (the same with an abort requested: a CANCEL applies wherever a
    RETRY does). For a store that checks them in SQL."""
    return frozenset(
        (current, requested)
        for requested in _FINISH_EVENTS
        for current in HELD
        if finished_state(current, requested, abort_requested=False) is not None
    )


def history_state(target: State) -> State:
    """The state recorded in run history for an attempt that ended in a finish to ``target``.

    A finish to PENDING is a retry (or a give-back) of an attempt that did not succeed.
    """
    return target if target in TERMINAL else State.FAILED


#: The events of a give-back, by who gives back: (plain, abort requested).
_RELEASES: Final = {
    Event.GIVE_BACK: Event.GIVE_BACK_ABORT,
    Event.EVICT: Event.EVICT_ABORT,
    Event.LAPSE: Event.CLAIM_ABORT,
}


def release_event(kind: Event, abort_requested: bool, repeatable: bool = False) -> Event:
    """The event with which a held row is given back: ``kind`` is GIVE_BACK (the node's
    ``release`` of everything, ``recover``), EVICT (``release`` of some ids) or LAPSE
    (another node's lease lapsed, in a claim). An abort requested wins: the row ends
    ABORTED. Otherwise a CLAIMED row goes back to PENDING and a durable RUNNING one
    (at-most-once) cannot be repeated, so it fails as interrupted (see the table); a
    ``repeatable`` RUNNING one (an at-least-once run) goes back to PENDING to run again
    (RERUN; a lapsed one is taken over instead, see the stores' claim)."""
    if abort_requested:
        return _RELEASES[kind]
    if repeatable and kind is not Event.LAPSE:
        return Event.RERUN
    return kind
