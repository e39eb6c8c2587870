"""The store-side rules every backend shares: which writes a store may apply.

A store moves instances only along :data:`tickwork.state.TRANSITIONS`. Two facts make the
durable view differ from the in-memory one, and both are decided here once:

* RUNNING is written at once (``Store.start``, its own commit) only for at-most-once tasks;
  an at-least-once run's RUNNING rides on the Recorder's next group commit (a finish to
  RUNNING), and a quick run's outcome usually arrives first. So a finish may find the row
  CLAIMED while the node knows it RUNNING: the durable move is CLAIMED -> (RUNNING ->)
  outcome. A RUNNING row is *repeatable* when it was written for an at-least-once run:
  given back, it runs again; an at-most-once one never does.
* A retry is written as PENDING, but the attempt that led to it failed: its history row
  says FAILED.
"""

from __future__ import annotations

from typing import Final

from tickwork.errors import IllegalTransition
from tickwork.state import TERMINAL, State, can_transition

#: States in which a node holds an instance (owner, claim token and lease set).
HELD: Final = frozenset({State.CLAIMED, State.RUNNING})


def check_finish_state(target: State) -> None:
    """Refuse a finish whose target no held instance could ever move to.

    Raises:
        IllegalTransition: ``target`` is CLAIMED.
    """
    if target not in TERMINAL and target not in {State.PENDING, State.RUNNING}:
        msg = (
            f"illegal finish to {target.name}: a finish writes a terminal state, PENDING or RUNNING"
        )
        raise IllegalTransition(msg)


def finish_allowed(current: State, target: State) -> bool:
    """Whether a finish may move a held row from its durable ``current`` state to ``target``.

    A CLAIMED row may have been RUNNING in memory (at-least-once), so both hops count.
    A finish to RUNNING (an at-least-once run's start) applies to a CLAIMED row, and to a
    RUNNING one as a no-op.
    """
    if target is State.RUNNING:
        return current in HELD
    if current is State.RUNNING:
        return can_transition(State.RUNNING, target)
    if current is State.CLAIMED:
        return can_transition(State.CLAIMED, target) or can_transition(State.RUNNING, target)
    return False


def finished_state(target: State, abort_requested: bool) -> State:
    """The state a fenced finish to ``target`` writes.

    An abort that was requested wins at once: a retry or a give-back (PENDING) of a row
    with an abort requested is written ABORTED by the finish itself, so that every store
    answers ``get`` and ``count`` alike right after it (not only at the next claim). The
    attempt that led to it is still recorded FAILED in the history (:func:`history_state`).
    """
    if target is State.PENDING and abort_requested:
        return State.ABORTED
    return target


def history_state(target: State) -> State:
    """The state recorded in run history for an attempt that ended in a finish to ``target``.

    A finish to PENDING is a retry (or a give-back) of an attempt that did not succeed.
    """
    return target if target in TERMINAL else State.FAILED


def released_state(current: State, abort_requested: bool, repeatable: bool = False) -> State:
    """Where ``release`` (and ``recover``, and a lease takeover) moves a held row.

    An abort requested wins; a durable RUNNING at-most-once run cannot be repeated, so it
    fails as interrupted; a CLAIMED row, and a RUNNING one that is ``repeatable`` (an
    at-least-once run), go back to PENDING (not an attempt: the run is done again).
    """
    if abort_requested:
        return State.ABORTED
    if current is State.RUNNING and not repeatable:
        return State.FAILED
    return State.PENDING
