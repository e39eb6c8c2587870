"""The transition table decides: its rows, its documentation, and who writes states.

Static checks over the sources (no event loop): the table in ``docs/architecture.md`` is
the code's; no store statement names a state by a bare number; no Python write of a store
sets a state but through the table; each event's owner is the actor whose module makes the
store call that carries it out. ``tests/test_state_table_stores.py`` drives the stores.
"""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pytest

from tickwork.errors import IllegalTransition
from tickwork.state import (
    HELD,
    TABLE,
    TERMINAL,
    TRANSITIONS,
    Actor,
    Event,
    State,
    apply,
    lookup,
    sources,
    table_markdown,
    target,
)
from tickwork.stores import Store
from tickwork.stores._sql import states

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "tickwork"
STORES = SRC / "stores"

#: The store calls that write a state (every ``via`` of the table).
WRITERS = frozenset(m for e in Event for m in e.via)

#: Which actor each module outside the stores belongs to (the API: the user's calls).
MODULE_ACTORS = {
    "actors/puller.py": Actor.PULLER,
    "actors/timekeeper.py": Actor.TIMEKEEPER,
    "actors/executor.py": Actor.EXECUTOR,
    "actors/overlap.py": Actor.EXECUTOR,
    "actors/_overlap_policy.py": Actor.EXECUTOR,
    "actors/_runs.py": Actor.EXECUTOR,
    "actors/_outbox.py": Actor.EXECUTOR,
    "actors/recorder.py": Actor.RECORDER,
    "actors/_outcomes.py": Actor.RECORDER,
    "actors/leases.py": Actor.LEASES,
    "actors/janitor.py": Actor.JANITOR,
    "node/scheduler.py": Actor.API,
    "node/_schedule_methods.py": Actor.API,
    "cli/_main.py": Actor.API,
    "cli/_cron.py": Actor.API,
    "cli/_cron_import.py": Actor.API,
}

#: Store calls an actor makes that carry out another owner's event, with the reason.
BORROWED = {
    # cancel_previous asks for the abort of another node's running occurrence: a request
    # recorded on a held row, carried out by that row's node (CANCEL); ABORT applies only
    # if the row went back to PENDING meanwhile, as a user's abort() would.
    (Actor.EXECUTOR, "request_abort"),
}


def test_docs_table_is_the_code_table():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    found = re.search(
        r"<!-- state-table: generated from tickwork.state.table_markdown\(\) -->\n"
        r"(.*?)<!-- /state-table -->",
        doc,
        re.DOTALL,
    )
    assert found is not None, "docs/architecture.md lost its state-table markers"
    assert found.group(1) == table_markdown(), "regenerate the table: state.table_markdown()"


def test_every_event_has_rows_an_owner_and_real_store_calls():
    protocol = {name for name in dir(Store) if not name.startswith("_")}
    for event in Event:
        assert sources(event), f"{event.name} has no row"
        assert isinstance(event.owner, Actor)
        assert set(event.via) <= protocol, f"{event.name} names a call Store lacks"
    # one owner per (from, to) and store call would be h11's shape; ours may share a
    # (from, to) between events, but never a (from, event)
    assert len(TABLE) == len(set(TABLE))


@pytest.mark.parametrize(("state", "event"), list(itertools.product(State, Event)))
def test_apply_follows_the_table_and_raises_on_anything_else(state, event):
    if (state, event) in TABLE:
        assert apply(state, event) is TABLE[state, event]
        assert lookup(state, event) is TABLE[state, event]
    else:
        assert lookup(state, event) is None
        with pytest.raises(IllegalTransition, match=f"illegal event {event.name} in state"):
            apply(state, event)


def test_terminal_states_have_no_event_and_transitions_derive_from_the_table():
    for (src, _), dst in TABLE.items():
        assert not src.terminal
        if dst is not src:
            assert dst in TRANSITIONS[src]
    pairs = {(s, d) for (s, _), d in TABLE.items() if s is not d}
    assert pairs == {(s, d) for s, ds in TRANSITIONS.items() for d in ds}


def test_sql_placeholders_come_from_the_table():
    assert states("state = {PENDING} {MISSED}") == "state = 0 6"
    assert states("{CLAIM} {CLAIM.from} {GIVE_BACK@RUNNING} {HELD} {LIVE}") == "1 0 4 1, 2 0, 1, 2"
    assert states("{s}.instances {p}state {COLS}") == "{s}.instances {p}state {COLS}"
    assert target(Event.DETACH) is State.ABORTED
    with pytest.raises(IllegalTransition):
        states("{START@PENDING}")
    with pytest.raises(ValueError, match="not one state"):
        states("{GIVE_BACK}")


def test_the_states_below_succeeded_are_exactly_the_unfinished_ones():
    """SQL names the unfinished states as ``state < {SUCCEEDED}`` and the ended ones as
    ``state >= {SUCCEEDED}`` (partial indexes, whose conditions SQLite tests on every
    write: a range costs less than an IN list); a new state must keep that order."""
    assert {s for s in State if s < State.SUCCEEDED} == {State.PENDING, *HELD}
    assert {s for s in State if s >= State.SUCCEEDED} == TERMINAL


# -- the sources ------------------------------------------------------------------------------


def _strings(path: Path) -> list[tuple[int, str]]:
    """Every string constant of a module (f-string parts included), with its line."""
    tree = ast.parse(path.read_text())
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


#: A state compared with, listed against or assigned a number, in SQL text.
_BARE = [
    re.compile(r"\bstate\s*(?:\+\s*0\s*)?(?:=|<>|!=|>=|<=|>|<)\s*\d", re.IGNORECASE),
    re.compile(r"\bstate\s*(?:\+\s*0\s*)?IN\s*\(\s*\d", re.IGNORECASE),
    re.compile(r"\bstate\s+BETWEEN\s+\d", re.IGNORECASE),
    re.compile(
        r"\bstate\s*=\s*CASE\b(?:(?!\bEND\b).)*?\b(?:THEN|ELSE)\s+\d", re.IGNORECASE | re.DOTALL
    ),
    re.compile(r"\?\d\s*=\s*\d\s+THEN", re.IGNORECASE),
]


def _bare_numbers(path: Path) -> list[str]:
    return [
        f"{path.name}:{line}: {m.group(0)!r}"
        for line, text in _strings(path)
        for pattern in _BARE
        for m in pattern.finditer(text)
    ]


def test_no_store_statement_names_a_state_by_number():
    modules = sorted(STORES.rglob("*.py"))
    assert len(modules) > 20
    found = [hit for path in modules for hit in _bare_numbers(path)]
    assert found == []


def test_the_bare_number_check_can_fail(tmp_path):
    probe = tmp_path / "probe.py"
    for sql in [
        "UPDATE instances SET state = 5 WHERE id = ?",
        "SELECT id FROM t WHERE state IN (1, 2)",
        "UPDATE t SET state = CASE WHEN a THEN 5 WHEN state = {RUNNING} THEN 4 ELSE 0 END",
        "WHERE i.state + 0 IN (1, 2)",
        "CHECK (state BETWEEN 0 AND 6)",
        "owner = CASE WHEN ?1 = 0 THEN NULL ELSE owner END",
    ]:
        probe.write_text(f"X = {sql!r}\n")
        assert _bare_numbers(probe), sql
    probe.write_text('X = "attempts + CASE WHEN state = {RUNNING} THEN 1 ELSE 0 END"\n')
    assert _bare_numbers(probe) == []


def _state_writes(path: Path) -> list[str]:
    """``state=State.X`` keywords, ``"state": ...State.X`` entries and ``.state = State.X``
    assignments: a state written without the table."""
    tree = ast.parse(path.read_text())
    out = []

    def named(value: ast.expr) -> bool:
        text = ast.unparse(value)
        return re.search(r"\bState\.[A-Z]+\b", text) is not None

    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "state" and named(node.value):
            out.append(f"{path.name}:{node.value.lineno}: state={ast.unparse(node.value)}")
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "state" and named(value):
                    out.append(f"{path.name}:{value.lineno}: 'state': {ast.unparse(value)}")
        elif isinstance(node, ast.Assign) and named(node.value):
            out.extend(
                f"{path.name}:{node.lineno}: {ast.unparse(node)}"
                for t in node.targets
                if isinstance(t, ast.Attribute) and t.attr == "state"
            )
    return out


def test_stores_write_states_only_through_the_table(tmp_path):
    found = [w for path in sorted(STORES.rglob("*.py")) for w in _state_writes(path)]
    assert found == []
    probe = tmp_path / "probe.py"
    probe.write_text(
        "attrs.evolve(row, state=State.ABORTED)\nrow.state = State.PENDING\n"
        "x = {'state': int(State.MISSED)}\n"
    )
    assert len(_state_writes(probe)) == 3  # the check can fail


def _store_calls(path: Path) -> set[str]:
    """The state-writing store calls a module makes (``<...store...>.method(...)``)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in WRITERS
            and re.search(r"store|resilient", ast.unparse(node.func.value), re.IGNORECASE)
        ):
            out.add(node.func.attr)
    return out


def test_each_owner_makes_its_moves_and_nobody_else_writes():
    made: set[tuple[Actor, str]] = set()
    strangers = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("stores/"):
            continue  # the stores themselves
        calls = _store_calls(path)
        if not calls:
            continue
        actor = MODULE_ACTORS.get(rel)
        if actor is None:
            strangers.append((rel, sorted(calls)))
            continue
        made |= {(actor, call) for call in calls}
    assert strangers == [], (
        "a state-writing store call outside the actors and the API (a module of an actor "
        "split off? name its actor in MODULE_ACTORS)"
    )
    owned = {(e.owner, call) for e in Event for call in e.via}
    # every event's owner makes its calls; no actor makes a call it owns no event through
    assert owned - made == set()
    assert made - owned == BORROWED
