"""Everything that decides the life of an instance lives in this module.

The legal moves are one table, as in h11's ``_state.py``: :data:`TABLE` maps
``(state, event)`` to the next state, each :class:`Event` owned by exactly one
:class:`Actor` (or the API). :func:`apply` is the one function that moves an instance; it
raises :class:`IllegalTransition` on anything the table does not list. Every state write
of every store goes through it, or, in SQL, through constants generated from the table.
The module is pure: no I/O, no clock, no event loop.
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

#: States in which a node holds an instance (owner, claim token and lease set).
HELD: Final = frozenset({State.CLAIMED, State.RUNNING})

#: The states a new instance may be stored in: PENDING, or terminal at once (an occurrence
#: a schedule's misfire policy records MISSED as it writes it). A birth, not a move.
NEW_STATES: Final = TERMINAL | {State.PENDING}


class Actor(enum.Enum):
    """Who makes a move: one of the node's actors, or the API (a user's call)."""

    API = "API"
    PULLER = "Puller"
    TIMEKEEPER = "Timekeeper"
    EXECUTOR = "Executor"
    RECORDER = "Recorder"
    LEASES = "Leases"
    JANITOR = "Janitor"


class Event(enum.Enum):
    """What causes a move. Each event has exactly one owner, the actor whose code makes
    the store call (``via``) that carries it out; the value is ``(owner, via, cause)``."""

    owner: Actor
    via: tuple[str, ...]
    cause: str

    def __init__(self, owner: Actor, via: tuple[str, ...], cause: str) -> None:
        self.owner = owner
        self.via = via
        self.cause = cause

    CLAIM = (Actor.PULLER, ("claim",), "due within the window: claimed with owner and lease")
    TAKE_OVER = (
        Actor.PULLER,
        ("claim",),
        "another node's lease lapsed on a due instance (or at-least-once run): claimed anew",
    )
    LAPSE = (
        Actor.PULLER,
        ("claim",),
        (
            "another node's lease lapsed: a claim not yet due goes back (PostgreSQL), "
            "an at-most-once run fails as interrupted"
        ),
    )
    CLAIM_ABORT = (
        Actor.PULLER,
        ("claim",),
        "the claim meets an abort requested (lapsed lease, or left PENDING): carried out",
    )
    MISFIRE = (
        Actor.PULLER,
        ("claim",),
        "a late schedule occurrence skipped by its misfire policy, in the claim",
    )
    EVICT = (
        Actor.TIMEKEEPER,
        ("release",),
        "the Timekeeper gives back what no longer fits (an at-most-once run fails)",
    )
    EVICT_ABORT = (
        Actor.TIMEKEEPER,
        ("release",),
        "the Timekeeper gives back an instance with an abort requested",
    )
    START = (Actor.EXECUTOR, ("start",), "an at-most-once run starts: RUNNING made durable")
    RUN = (
        Actor.RECORDER,
        ("finish",),
        (
            "an at-least-once run in progress: RUNNING written with the Recorder's next "
            "batch (a row already RUNNING stays as it is)"
        ),
    )
    SUCCEED = (Actor.RECORDER, ("finish",), "the task returned")
    FAIL = (Actor.RECORDER, ("finish",), "the task raised on its last attempt, or timed out")
    RETRY = (
        Actor.RECORDER,
        ("finish",),
        (
            "the task raised with attempts left (run again after a backoff), "
            "or a due instance was not started before the node stopped"
        ),
    )
    CANCEL = (
        Actor.RECORDER,
        ("finish",),
        "an abort carried out by the node (also a retry whose abort was requested)",
    )
    SKIP = (
        Actor.RECORDER,
        ("finish",),
        "skipped at due time by its schedule's overlap policy, or its schedule is paused",
    )
    GIVE_BACK = (
        Actor.LEASES,
        ("release", "recover"),
        (
            "the node stops (or starts after a crash): claims go back, "
            "an at-most-once run fails as interrupted"
        ),
    )
    RERUN = (
        Actor.LEASES,
        ("release", "recover"),
        "the node stops (or starts after a crash) during an at-least-once run: it runs again",
    )
    GIVE_BACK_ABORT = (
        Actor.LEASES,
        ("release", "recover"),
        "the node stops (or starts after a crash) holding an instance with an abort requested",
    )
    ABORT = (Actor.API, ("request_abort",), "abort() of an instance no node holds")
    DETACH = (
        Actor.API,
        ("remove_schedule", "add_schedule"),
        "its schedule is removed or replaced",
    )
    SKIP_LATE = (
        Actor.API,
        ("resume_schedule",),
        "its schedule is resumed after the occurrence came due (while it was paused)",
    )


_P, _C, _R = State.PENDING, State.CLAIMED, State.RUNNING

#: The legal moves: ``(from state, event) -> to state``. Nothing else is ever written.
TABLE: Final[dict[tuple[State, Event], State]] = {
    (_P, Event.CLAIM): _C,
    (_C, Event.TAKE_OVER): _C,
    (_R, Event.TAKE_OVER): _C,
    (_C, Event.LAPSE): _P,
    (_R, Event.LAPSE): State.FAILED,
    (_P, Event.CLAIM_ABORT): State.ABORTED,
    (_C, Event.CLAIM_ABORT): State.ABORTED,
    (_R, Event.CLAIM_ABORT): State.ABORTED,
    (_P, Event.MISFIRE): State.MISSED,
    (_C, Event.MISFIRE): State.MISSED,
    (_C, Event.EVICT): _P,
    (_R, Event.EVICT): State.FAILED,
    (_C, Event.EVICT_ABORT): State.ABORTED,
    (_R, Event.EVICT_ABORT): State.ABORTED,
    (_C, Event.START): _R,
    (_C, Event.RUN): _R,
    (_R, Event.RUN): _R,
    (_C, Event.SUCCEED): State.SUCCEEDED,
    (_R, Event.SUCCEED): State.SUCCEEDED,
    (_C, Event.FAIL): State.FAILED,
    (_R, Event.FAIL): State.FAILED,
    (_C, Event.RETRY): _P,
    (_R, Event.RETRY): _P,
    (_C, Event.CANCEL): State.ABORTED,
    (_R, Event.CANCEL): State.ABORTED,
    (_C, Event.SKIP): State.MISSED,
    (_C, Event.GIVE_BACK): _P,
    (_R, Event.GIVE_BACK): State.FAILED,
    (_R, Event.RERUN): _P,
    (_C, Event.GIVE_BACK_ABORT): State.ABORTED,
    (_R, Event.GIVE_BACK_ABORT): State.ABORTED,
    (_P, Event.ABORT): State.ABORTED,
    (_P, Event.DETACH): State.ABORTED,
    (_P, Event.SKIP_LATE): State.MISSED,
}

#: The legal transitions, derived from :data:`TABLE`: from-state -> the states it may move
#: to (a take-over, CLAIMED -> CLAIMED, changes the owner, not the state).
TRANSITIONS: Final[dict[State, frozenset[State]]] = {
    s: frozenset(t for (f, _), t in TABLE.items() if f is s and t is not s) for s in State
}


def lookup(state: State, event: Event) -> State | None:
    """The state ``event`` moves an instance in ``state`` to, or None if it may not."""
    return TABLE.get((state, event))


def apply(state: State, event: Event) -> State:
    """Apply ``event`` to an instance in ``state``; return the new state.

    Every state write of every store goes through this function (or, in SQL, through
    constants generated from :data:`TABLE`: see ``tickwork.stores._sql``).

    Raises:
        IllegalTransition: the table has no row for ``(state, event)``.
    """
    new = TABLE.get((state, event))
    if new is None:
        sources = ", ".join(sorted(f.name for f, e in TABLE if e is event))
        msg = (
            f"illegal event {event.name} in state {state.name}: "
            f"{event.name} applies only to {sources}"
        )
        raise IllegalTransition(msg)
    return new


def target(event: Event) -> State:
    """The one state every row of ``event`` moves to (for a statement over many rows).

    Raises:
        ValueError: the rows of ``event`` move to different states.
    """
    targets = {t for (_, e), t in TABLE.items() if e is event}
    if len(targets) != 1:
        msg = f"{event.name} moves to {sorted(s.name for s in targets)}, not one state"
        raise ValueError(msg)
    return targets.pop()


def sources(event: Event) -> frozenset[State]:
    """The states ``event`` applies to."""
    return frozenset(f for f, e in TABLE if e is event)


def can_transition(from_state: State, to_state: State) -> bool:
    """Whether some event of the table moves ``from_state`` to ``to_state``."""
    return to_state in TRANSITIONS[from_state]


def transition(from_state: State, to_state: State) -> State:
    """Check that some event of the table makes ``from_state -> to_state``; return it.

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


def table_markdown() -> str:
    """:data:`TABLE` as the Markdown table of ``docs/architecture.md`` (checked by a test)."""
    lines = [
        "| from | event | to | owner | store call | cause |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (src, event), dst in TABLE.items():
        via = ", ".join(f"`{m}`" for m in event.via)
        lines.append(
            f"| {src.name} | {event.name} | {dst.name} | {event.owner.value} | {via} "
            f"| {event.cause} |"
        )
    return "\n".join(lines) + "\n"
