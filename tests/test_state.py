"""The state table, exhaustively, with no event loop (as h11 tests its own)."""

from __future__ import annotations

import itertools

import pytest

from tickwork import IllegalTransition, State, TickworkError
from tickwork.state import TERMINAL, TRANSITIONS, can_transition, transition

LEGAL = {
    (State.PENDING, State.CLAIMED),
    (State.PENDING, State.ABORTED),
    (State.PENDING, State.MISSED),
    (State.CLAIMED, State.RUNNING),
    (State.CLAIMED, State.PENDING),
    (State.CLAIMED, State.ABORTED),
    (State.CLAIMED, State.MISSED),
    (State.CLAIMED, State.SUCCEEDED),  # RUNNING is durable only for at-most-once tasks
    (State.CLAIMED, State.FAILED),
    (State.RUNNING, State.SUCCEEDED),
    (State.RUNNING, State.FAILED),
    (State.RUNNING, State.ABORTED),
    (State.RUNNING, State.PENDING),
    (State.RUNNING, State.CLAIMED),  # an at-least-once run whose node's lease lapsed: taken over
}


def test_every_state_has_a_row():
    assert set(TRANSITIONS) == set(State)


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(State, State)))
def test_each_pair_is_legal_exactly_when_listed(src, dst):
    if (src, dst) in LEGAL:
        assert can_transition(src, dst)
        assert transition(src, dst) is dst
    else:
        assert not can_transition(src, dst)
        with pytest.raises(IllegalTransition) as info:
            transition(src, dst)
        assert f"{src.name} -> {dst.name}" in str(info.value)


def test_terminal_states_have_no_way_out():
    assert {State.SUCCEEDED, State.FAILED, State.ABORTED, State.MISSED} == TERMINAL
    for state in State:
        assert state.terminal is (state in TERMINAL)
        assert (not TRANSITIONS[state]) is state.terminal


def test_illegal_transition_is_a_tickwork_error_and_says_why():
    with pytest.raises(TickworkError, match="SUCCEEDED is terminal"):
        transition(State.SUCCEEDED, State.PENDING)
    with pytest.raises(IllegalTransition, match="PENDING may only move to ABORTED, CLAIMED"):
        transition(State.PENDING, State.RUNNING)


def test_every_terminal_state_is_reachable_from_pending():
    reachable = {State.PENDING}
    frontier = [State.PENDING]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    assert reachable == set(State)


def test_stored_values_never_change():
    # the integers are on disk in every store: renumbering would corrupt databases
    assert [s.value for s in State] == [0, 1, 2, 3, 4, 5, 6]
    assert [s.name for s in State] == [
        "PENDING",
        "CLAIMED",
        "RUNNING",
        "SUCCEEDED",
        "FAILED",
        "ABORTED",
        "MISSED",
    ]


def test_a_state_prints_its_name_and_stays_an_int():
    state = State.SUCCEEDED
    # what users of enums expect (the README's embed example prints one)
    assert str(state) == "State.SUCCEEDED"
    assert f"{state}" == "State.SUCCEEDED"
    assert f"{state:>16}" == " State.SUCCEEDED"
    assert repr(state) == "<State.SUCCEEDED: 3>"
    # ... while code that stores states as ints keeps working
    assert state == 3
    assert int(state) == 3
    assert state.value == 3
    assert f"{state:d}" == "3"
    assert f"{state:03d}" == "003"
    assert "%d" % state == "3"  # noqa: UP031 - the old-style form is what is tested
    assert State(3) is state


def test_a_state_is_stored_as_its_number():
    import json
    import sqlite3

    from tickwork import pack, unpack

    assert json.dumps({"state": State.FAILED}) == '{"state": 4}'
    assert unpack(pack(State.FAILED)) == 4
    with sqlite3.connect(":memory:") as db:
        assert db.execute("SELECT ?, typeof(?)", (State.MISSED, State.MISSED)).fetchone() == (
            6,
            "integer",
        )
