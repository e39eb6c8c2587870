"""Every store, driven through every row of the state table, writes nothing else.

Each row ``(state, event) -> next`` of :data:`tickwork.state.TABLE` has a scenario below
that brings an instance to ``state`` and makes the store call of ``event`` (its ``via``),
then checks the instance is ``next``. Every store call of every scenario goes through
:class:`Watched`, which compares the states of all stored instances before and after the
call: a state that changed must have changed along a row of an event that call carries
out, and a call that carries out no event (renew, pause, reads, ...) changes none. So a
write the table does not list, in Python or in SQL, fails here on the store that makes it.
Runs on the memory store, SQLite, PostgreSQL (skipped without a server) and the store of
one's own over plain dicts (``tests/support/dict_store.py``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from tests.support.store_fixtures import NODE
from tickwork._time import to_us
from tickwork.model import Finish, Instance, NewRow
from tickwork.schedules.schedule import Schedule, new_schedule
from tickwork.schedules.triggers import Interval
from tickwork.state import NEW_STATES, TABLE, Event, State
from tickwork.stores import Store
from tickwork.stores.memory import MemoryStore

S = 1_000_000
MIN = 60 * S
LEASE = 60 * S
_P, _C, _R = State.PENDING, State.CLAIMED, State.RUNNING
OTHER = "other-node"

#: Rows a store never takes, with the reason: the single-node stores leave another node's
#: lapsed claim that is not due yet where it is (it is taken over when due).
NOT_TAKEN = {
    "memory": {(_C, Event.LAPSE)},
    "sqlite": {(_C, Event.LAPSE)},
    "postgres": set(),
    "dict": {(_C, Event.LAPSE)},
}


@pytest.fixture(params=["memory", "sqlite", "postgres", "dict"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Watched:
    """A store whose every call is checked against the table (see the module docstring)."""

    def __init__(self, store: Store, kind: str) -> None:
        self.store = store
        self.kind = kind
        self.moves: list[tuple[str, State, State]] = []

    async def states(self) -> dict[int, State]:
        return {i.id: i.state for i in await self.store.list(limit=100_000)}

    async def call(self, method: str, *args: Any, **kw: Any) -> Any:
        before = await self.states()
        result = await getattr(self.store, method)(*args, **kw)
        after = await self.states()
        allowed = {(src, dst) for (src, e), dst in TABLE.items() if method in e.via}
        for iid, new in after.items():
            old = before.get(iid)
            if old is None:
                assert new in NEW_STATES, f"{method} stored a new instance {new.name}"
            elif old is not new:
                assert (old, new) in allowed, f"{method} wrote {old.name} -> {new.name}"
                self.moves.append((method, old, new))
        assert set(before) <= set(after), f"{method} deleted instances"
        return result

    async def get(self, iid: int) -> Instance:
        inst = await self.store.get(iid)
        assert inst is not None
        return inst

    # -- setting up ------------------------------------------------------------------------

    async def pending(self, now: int, at: int | None = None) -> int:
        row = NewRow(task="t", run_at_us=now if at is None else at, params=b"p")
        [iid] = await self.call("insert", [row], now)
        return iid

    async def claim(
        self,
        owner: str,
        now: int,
        *,
        at: int | None = None,
        due: int | None = None,
        lease: int = LEASE,
    ) -> list[Instance]:
        at = now if at is None else at
        due = at + 3600 * S if due is None else due
        got: list[Instance] = await self.call("claim", owner, due, 1000, at, lease)
        return got

    async def claimed(
        self, now: int, *, owner: str = NODE, lease: int = LEASE, at: int | None = None
    ) -> Instance:
        iid = await self.pending(now, at)
        [inst] = [i for i in await self.claim(owner, now, lease=lease) if i.id == iid]
        assert inst.state is _C
        return inst

    async def running(self, now: int, *, owner: str = NODE, lease: int = LEASE) -> Instance:
        inst = await self.claimed(now, owner=owner, lease=lease)
        assert await self.call("start", owner, [(inst.id, inst.claim_token)], now) == [True]
        assert (await self.get(inst.id)).state is _R
        return inst

    async def reported(self, now: int, *, owner: str = NODE, lease: int = LEASE) -> Instance:
        """RUNNING as an at-least-once run is (a finish to RUNNING: RUN)."""
        inst = await self.claimed(now, owner=owner, lease=lease)
        f = Finish(inst.id, inst.claim_token or 0, _R, inst.attempts, started_us=now)
        assert await self.call("finish", owner, [f], now) == [True]
        assert (await self.get(inst.id)).state is _R
        return inst

    async def held(self, source: State, now: int, **kw: Any) -> Instance:
        return await (self.claimed(now, **kw) if source is _C else self.running(now, **kw))

    async def abort_asked(self, iid: int, now: int) -> None:
        assert (await self.call("request_abort", iid, now)).requested

    async def finish(self, inst: Instance, state: State, now: int, owner: str = NODE) -> list[bool]:
        f = Finish(inst.id, inst.claim_token or 0, state, inst.attempts + 1, started_us=now)
        result: list[bool] = await self.call("finish", owner, [f], now)
        return result

    async def force_abort_flag(self, iid: int) -> None:
        """An abort requested on a PENDING row: no call of the protocol leaves one (a
        finish or a release of a row with an abort requested aborts it), but a database
        written by an older version may hold one, and the claim carries it out."""
        if isinstance(self.store, MemoryStore):
            self.store._abort.add(iid)
        elif self.kind == "dict":
            self.store.db["aborts"].add(iid)  # type: ignore[attr-defined]
        elif self.kind == "sqlite":
            with sqlite3.connect(self.store.path) as conn:  # type: ignore[attr-defined]
                conn.execute("UPDATE instances SET abort_requested = 1 WHERE id = ?", (iid,))
        else:
            import psycopg

            from tests.support.pg_support import pg_dsn

            schema = self.store.schema  # type: ignore[attr-defined]
            with psycopg.connect(pg_dsn(), autocommit=True) as conn:
                conn.execute(
                    f'UPDATE "{schema}".instances SET abort_requested = true WHERE id = %s',
                    (iid,),
                )


def every(minutes: int, **kw: Any) -> Schedule:
    kw.setdefault("schedule_id", "s")
    return new_schedule("t", Interval(timedelta(minutes=minutes)), **kw)


async def occurrences(w: Watched) -> list[Instance]:
    return sorted(
        (i for i in await w.store.list(limit=10_000) if i.schedule_id == "s"), key=lambda i: i.id
    )


# -- one scenario per row: returns the instance the row moved ----------------------------------

Scenario = Callable[[Watched, int], Awaitable[int]]
SCENARIOS: dict[tuple[State, Event], Scenario] = {}


def row(source: State, event: Event) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        assert (source, event) not in SCENARIOS
        SCENARIOS[source, event] = fn
        return fn

    return register


@row(_P, Event.CLAIM)
async def _claim(w: Watched, now: int) -> int:
    iid = await w.pending(now)
    await w.claim(NODE, now)
    return iid


@row(_C, Event.TAKE_OVER)
async def _take_over(w: Watched, now: int) -> int:
    inst = await w.claimed(now, owner=OTHER, lease=1)
    [taken] = await w.claim(NODE, now, at=now + 10 * S)
    assert (taken.id, taken.owner) == (inst.id, NODE)
    assert taken.claim_token != inst.claim_token
    return inst.id


@row(_C, Event.LAPSE)
async def _lapse_not_due(w: Watched, now: int) -> int:
    inst = await w.claimed(now, owner=OTHER, lease=1, at=now + 30 * MIN)
    assert await w.claim(NODE, now, at=now + 10 * S, due=now + 10 * S) == []
    return inst.id


@row(_R, Event.LAPSE)
async def _lapse_running(w: Watched, now: int) -> int:
    inst = await w.running(now, owner=OTHER, lease=1)
    assert await w.claim(NODE, now, at=now + 10 * S) == []
    return inst.id


@row(_P, Event.CLAIM_ABORT)
async def _claim_abort_pending(w: Watched, now: int) -> int:
    iid = await w.pending(now)
    await w.force_abort_flag(iid)
    assert await w.claim(NODE, now) == []
    return iid


async def _claim_abort_held(w: Watched, now: int, source: State) -> int:
    inst = await w.held(source, now, owner=OTHER, lease=1)
    await w.abort_asked(inst.id, now)
    assert await w.claim(NODE, now, at=now + 10 * S) == []
    return inst.id


@row(_C, Event.CLAIM_ABORT)
async def _claim_abort_claimed(w: Watched, now: int) -> int:
    return await _claim_abort_held(w, now, _C)


@row(_R, Event.CLAIM_ABORT)
async def _claim_abort_running(w: Watched, now: int) -> int:
    return await _claim_abort_held(w, now, _R)


@row(_P, Event.MISFIRE)
async def _misfire_pending(w: Watched, now: int) -> int:
    await w.call("add_schedule", every(10, misfire="skip"), now)
    [head] = await occurrences(w)
    assert head.state is _P
    # the node was down for hours: every occurrence since is late and skipped
    later = now + 3 * 60 * MIN
    assert head.id not in [i.id for i in await w.claim(NODE, now, at=later, due=later)]
    return head.id


@row(_C, Event.MISFIRE)
async def _misfire_claimed(w: Watched, now: int) -> int:
    await w.call("add_schedule", every(10, misfire="skip"), now)
    [held] = await w.claim(OTHER, now, lease=1, due=now + 15 * MIN)
    # the other node died holding it; when it is taken over it is hours late: skipped
    later = now + 3 * 60 * MIN
    assert held.id not in [i.id for i in await w.claim(NODE, now, at=later, due=later)]
    return held.id


async def _evict(w: Watched, now: int, source: State, *, abort: bool) -> int:
    inst = await w.held(source, now)
    if abort:
        await w.abort_asked(inst.id, now)
    assert await w.call("release", NODE, now, [inst.id]) == 1
    return inst.id


@row(_C, Event.EVICT)
async def _evict_claimed(w: Watched, now: int) -> int:
    return await _evict(w, now, _C, abort=False)


@row(_R, Event.EVICT)
async def _evict_running(w: Watched, now: int) -> int:
    return await _evict(w, now, _R, abort=False)


@row(_C, Event.EVICT_ABORT)
async def _evict_abort_claimed(w: Watched, now: int) -> int:
    return await _evict(w, now, _C, abort=True)


@row(_R, Event.EVICT_ABORT)
async def _evict_abort_running(w: Watched, now: int) -> int:
    return await _evict(w, now, _R, abort=True)


@row(_C, Event.START)
async def _start(w: Watched, now: int) -> int:
    inst = await w.claimed(now)
    assert await w.call("start", NODE, [(inst.id, inst.claim_token)], now) == [True]
    return inst.id


def _finishing(source: State, event: Event, state: State, *, abort: bool = False) -> None:
    async def scenario(w: Watched, now: int) -> int:
        inst = await w.held(source, now)
        if abort:
            await w.abort_asked(inst.id, now)
        assert await w.finish(inst, state, now) == [True]
        return inst.id

    row(source, event)(scenario)


for _source in (_C, _R):
    _finishing(_source, Event.SUCCEED, State.SUCCEEDED)
    _finishing(_source, Event.FAIL, State.FAILED)
    _finishing(_source, Event.RETRY, _P)
    _finishing(_source, Event.CANCEL, State.ABORTED)
_finishing(_C, Event.SKIP, State.MISSED)


async def _give_back(w: Watched, now: int, source: State, *, abort: bool, call: str) -> int:
    inst = await w.held(source, now)
    if abort:
        await w.abort_asked(inst.id, now)
    if call == "recover":
        assert await w.call("recover", now) == 1
    else:
        assert await w.call("release", NODE, now) == 1
    return inst.id


@row(_C, Event.GIVE_BACK)
async def _give_back_claimed(w: Watched, now: int) -> int:
    return await _give_back(w, now, _C, abort=False, call="release")


@row(_R, Event.GIVE_BACK)
async def _give_back_running(w: Watched, now: int) -> int:
    return await _give_back(w, now, _R, abort=False, call="recover")


@row(_C, Event.GIVE_BACK_ABORT)
async def _give_back_abort_claimed(w: Watched, now: int) -> int:
    return await _give_back(w, now, _C, abort=True, call="recover")


@row(_R, Event.GIVE_BACK_ABORT)
async def _give_back_abort_running(w: Watched, now: int) -> int:
    return await _give_back(w, now, _R, abort=True, call="release")


@row(_C, Event.RUN)
async def _run(w: Watched, now: int) -> int:
    inst = await w.reported(now)
    assert (await w.get(inst.id)).started_us == now
    return inst.id


@row(_R, Event.RUN)
async def _run_running(w: Watched, now: int) -> int:
    inst = await w.running(now)  # at-most-once: stays as it is
    f = Finish(inst.id, inst.claim_token or 0, _R, inst.attempts, started_us=now + S)
    assert await w.call("finish", NODE, [f], now + S) == [True]
    return inst.id


@row(_R, Event.RERUN)
async def _rerun(w: Watched, now: int) -> int:
    inst = await w.reported(now)
    assert await w.call("release", NODE, now) == 1
    return inst.id


@row(_R, Event.TAKE_OVER)
async def _take_over_running(w: Watched, now: int) -> int:
    inst = await w.reported(now, owner=OTHER, lease=1)
    [taken] = await w.claim(NODE, now, at=now + 10 * S)
    assert (taken.id, taken.owner) == (inst.id, NODE)
    return inst.id


@row(_P, Event.ABORT)
async def _abort(w: Watched, now: int) -> int:
    iid = await w.pending(now + MIN)
    result = await w.call("request_abort", iid, now)
    assert (result.previous, result.state) == (_P, State.ABORTED)
    return iid


@row(_P, Event.DETACH)
async def _detach(w: Watched, now: int) -> int:
    await w.call("add_schedule", every(10), now)
    [head] = await occurrences(w)
    assert await w.call("remove_schedule", "s", now)
    return head.id


@row(_P, Event.SKIP_LATE)
async def _skip_late(w: Watched, now: int) -> int:
    await w.call("add_schedule", every(10), now)
    [head] = await occurrences(w)
    await w.call("pause_schedule", "s", now)
    await w.call("resume_schedule", "s", now + 65 * MIN)
    return head.id


# -- the tests ----------------------------------------------------------------------------------


def test_every_row_has_a_scenario():
    assert set(SCENARIOS) == set(TABLE)


@pytest.mark.parametrize(("source", "event"), list(TABLE), ids=lambda v: getattr(v, "name", v))
async def test_each_store_makes_each_move_and_no_other(
    store: Store, kind: str, source: State, event: Event
) -> None:
    w = Watched(store, kind)
    now = to_us(datetime.now(UTC))
    iid = await SCENARIOS[source, event](w, now)
    got = (await w.get(iid)).state
    if (source, event) in NOT_TAKEN[kind]:
        assert got is source
    else:
        assert got is TABLE[source, event]
        if got is not source:  # the move was seen, made by the event's store call
            seen = {(old, new) for m, old, new in w.moves if m in event.via}
            assert (source, got) in seen


async def test_a_finish_the_table_refuses_writes_nothing(store: Store, kind: str) -> None:
    w = Watched(store, kind)
    now = to_us(datetime.now(UTC))
    inst = await w.running(now)
    assert await w.finish(inst, State.MISSED, now) == [False]  # no (RUNNING, SKIP) row
    assert (await w.get(inst.id)).state is _R
    # and a retry of a row with an abort requested is a CANCEL
    await w.abort_asked(inst.id, now)
    assert await w.finish(inst, _P, now) == [True]
    assert (await w.get(inst.id)).state is State.ABORTED


async def test_the_watch_catches_a_write_outside_the_table() -> None:
    kind = "memory"
    store = MemoryStore()
    await store.open(node_id=NODE)
    w = Watched(store, kind)
    now = to_us(datetime.now(UTC))
    iid = await w.pending(now)
    real_claim = store.claim

    async def claim_to_running(*args: Any) -> list[Instance]:
        got = await real_claim(*args)
        store._put(attrs.evolve(store._rows[iid], state=State.RUNNING))
        return got

    store.claim = claim_to_running  # type: ignore[method-assign]
    with pytest.raises(AssertionError, match="claim wrote PENDING -> RUNNING"):
        await w.claim(NODE, now, due=now - S)
