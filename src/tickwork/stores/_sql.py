"""States in SQL text, generated from :mod:`tickwork.state`: no state is a bare number.

The SQLite and PostgreSQL stores write their statements with named placeholders that
:func:`states` fills in from the enum and from :data:`tickwork.state.TABLE`, once, when
the module defining the statement is imported (the text the database sees is the same as
if the numbers were written out, so prepared statements and partial indexes are unchanged):

``{PENDING}`` ... ``{MISSED}``
    a state's stored number;
``{CLAIM}``
    the one state an event moves to (:func:`tickwork.state.target`);
``{GIVE_BACK@RUNNING}``
    the state an event moves a row in the named state to (:func:`tickwork.state.apply`);
``{CLAIM.from}``
    the states an event applies to, as a list for ``IN (...)``;
``{HELD}``, ``{LIVE}``
    CLAIMED and RUNNING; PENDING, CLAIMED and RUNNING (lists for ``IN (...)``).

Other braces (``{s}``, a schema placeholder rendered later) are left alone.
``tests/test_state_table.py`` checks that no statement of a store compares or assigns a
state as a bare number.
"""

from __future__ import annotations

import re
from typing import Final

from tickwork.state import HELD, Event, State, apply, sources, target

__all__ = ["states"]

_NAME: Final = re.compile(r"\{([A-Z_]+)(?:@([A-Z]+)|\.(from))?\}")


def _numbers(found: frozenset[State] | set[State]) -> str:
    return ", ".join(f"{s:d}" for s in sorted(found))


_SETS: Final = {
    "HELD": _numbers(HELD),
    "LIVE": _numbers({State.PENDING, *HELD}),
}


def _fill(m: re.Match[str]) -> str:
    name, at, from_ = m.group(1), m.group(2), m.group(3)
    if name in _SETS and at is None and from_ is None:
        return _SETS[name]
    if name in State.__members__ and at is None and from_ is None:
        return f"{State[name]:d}"
    if name not in Event.__members__:
        return m.group(0)  # not ours (e.g. a placeholder rendered later)
    event = Event[name]
    if at is not None:
        return f"{apply(State[at], event):d}"
    if from_ is not None:
        return _numbers(sources(event))
    return f"{target(event):d}"


def states(sql: str) -> str:
    """``sql`` with its state placeholders filled in (see the module docstring).

    Raises:
        IllegalTransition: an ``{EVENT@STATE}`` the table does not list.
        ValueError: an ``{EVENT}`` whose rows move to different states.
    """
    return _NAME.sub(_fill, sql)
