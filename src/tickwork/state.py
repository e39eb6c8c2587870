"""Everything that decides the life of an instance lives in this module.

The legal transitions are one table, as in h11's ``_state.py``; every actor moves an
instance with :func:`transition`, which raises :class:`IllegalTransition` on any move the
table does not list. The module is pure: no I/O, no clock, no event loop.
"""

from __future__ import annotations

import enum
from typing import Final

from tickwork.errors import IllegalTransition

#: Format types that ask for a number rather than text (see :meth:`State.__format__`).
_NUMERIC_FORMATS: Final = frozenset("bcdoxXneEfFgG%")


class State(enum.IntEnum):
    """The state of one instance. The integer values are stored; never renumber them.

    A State is an int (``State.SUCCEEDED == 3``; ``int()``, ``.value``, ``json``,
    ``sqlite3`` and msgpack see the number), but it prints as an enum does:
    ``str(State.SUCCEEDED)`` and ``f"{state}"`` are ``"State.SUCCEEDED"``. A numeric
    format (``f"{state:d}"``) gives the number; so does ``int(state)`` where text of the
    number is wanted (e.g. a database driver that writes ints as ``str(value)``).
    """

    #: Durable and waiting for its time; no node holds it.
    PENDING = 0
    #: Claimed by a node into its look-ahead window (durable, with owner and lease).
    CLAIMED = 1
    #: Its task is running on a node (durable before the run for at-most-once tasks; for
    #: at-least-once ones with the Recorder's next batch, unless the outcome came first).
    RUNNING = 2
    #: The task returned normally. Terminal.
    SUCCEEDED = 3
    #: The task raised (after its last attempt), or was interrupted at-most-once. Terminal.
    FAILED = 4
    #: Aborted by a user before or while it ran. Terminal.
    ABORTED = 5
    #: Skipped by a schedule's misfire or overlap policy. Terminal.
    MISSED = 6

    def __str__(self) -> str:
        """``State.SUCCEEDED``, as for any enum (IntEnum would print ``3``)."""
        return f"{type(self).__name__}.{self.name}"

    def __format__(self, spec: str) -> str:
        """The name (``str``) for text formats, the number for numeric ones (``:d``)."""
        if spec and spec[-1] in _NUMERIC_FORMATS:
            return int.__format__(self, spec)
        return format(str(self), spec)

    @property
    def terminal(self) -> bool:
        """True for the four states an instance never leaves."""
        return self in TERMINAL


TERMINAL: Final = frozenset({State.SUCCEEDED, State.FAILED, State.ABORTED, State.MISSED})

#: The legal transitions: from-state -> the states it may move to.
TRANSITIONS: Final[dict[State, frozenset[State]]] = {
    State.PENDING: frozenset(
        {
            State.CLAIMED,  # the Puller claims it into its window
            State.ABORTED,  # abort() before any node holds it
            State.MISSED,  # a schedule's misfire policy skips it
        }
    ),
    State.CLAIMED: frozenset(
        {
            State.RUNNING,  # the Executor starts it
            State.PENDING,  # released on shutdown, or a dead node's claim recovered
            State.ABORTED,  # abort() while it waits in the window
            State.MISSED,  # overlap or misfire policy decided at due time
        }
    ),
    State.RUNNING: frozenset(
        {
            State.SUCCEEDED,
            State.FAILED,
            State.ABORTED,
            State.PENDING,  # a retry with backoff, or returned at shutdown (at-least-once)
        }
        # FAILED also covers an at-most-once run interrupted by a crash.
    ),
    State.SUCCEEDED: frozenset(),
    State.FAILED: frozenset(),
    State.ABORTED: frozenset(),
    State.MISSED: frozenset(),
}


def can_transition(from_state: State, to_state: State) -> bool:
    """Whether the table allows ``from_state -> to_state``."""
    return to_state in TRANSITIONS[from_state]


def transition(from_state: State, to_state: State) -> State:
    """Apply one transition and return the new state.

    Raises:
        IllegalTransition: the table does not list this move.
    """
    if to_state not in TRANSITIONS[from_state]:
        if from_state.terminal:
            reason = f"{from_state.name} is terminal"
        else:
            allowed = ", ".join(sorted(s.name for s in TRANSITIONS[from_state]))
            reason = f"{from_state.name} may only move to {allowed}"
        msg = f"illegal transition {from_state.name} -> {to_state.name}: {reason}"
        raise IllegalTransition(msg)
    return to_state
