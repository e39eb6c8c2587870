"""Overlap policies across nodes, the store's part, held against every store.

``check_occurrences(ids, now, admit=...)`` admits at most one occurrence per schedule
(overlap policy other than ``allow``) across all owners: the second owner to ask is told
which occurrence of the other owner still runs (``in_flight``). Owners ``a`` and ``b``
stand for two nodes; they call ``claim`` / ``finish`` / ``release`` directly. PostgreSQL
also gets a real race between two connections and the READ COMMITTED case the schedule
row lock exists for.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import trio

from tickwork._time import to_us
from tickwork.model import Finish, Instance
from tickwork.schedules.plan import PAUSED, InFlight
from tickwork.schedules.schedule import Schedule, new_schedule
from tickwork.schedules.triggers import Interval
from tickwork.state import State
from tickwork.stores import Store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

S = 1_000_000
MIN = 60 * S
HOUR = 3600 * S
T0 = to_us(datetime(2031, 6, 2, tzinfo=UTC))
#: the fire times of the schedule below: every 10 minutes after T0
N1, N2, N3 = T0 + 10 * MIN, T0 + 20 * MIN, T0 + 30 * MIN


@pytest.fixture(params=["memory", "sqlite", "postgres", "dict"])
def kind(request: pytest.FixtureRequest) -> str:
    """Every store, and a store of one's own (``tests/support/dict_store.py``)."""
    return str(request.param)


def every10(overlap: str = "skip", **kw: Any) -> Schedule:
    return new_schedule(
        "t", Interval(timedelta(minutes=10)), schedule_id="s", overlap=overlap, **kw
    )


async def take(store: Store, owner: str, fire_us: int, *, lease: int = HOUR) -> Instance:
    """``owner`` claims the occurrence due at ``fire_us`` (the claim writes the next)."""
    [inst] = await store.claim(owner, fire_us, 10, fire_us, lease)
    assert inst.fire_at_us == fire_us
    return inst


async def admit(store: Store, inst: Instance, now_us: int | None = None) -> InFlight | None:
    """Ask to admit ``inst``: None if admitted, else the occurrence that still runs."""
    now = inst.run_at_us if now_us is None else now_us
    [check] = await store.check_occurrences([inst.id], now, admit=[inst.id])
    assert check.run
    return check.in_flight


async def succeed(store: Store, owner: str, inst: Instance) -> None:
    assert inst.claim_token is not None
    done = Finish(inst.id, inst.claim_token, State.SUCCEEDED, 1)
    assert await store.finish(owner, [done], inst.run_at_us + S) == [True]


async def test_another_owners_running_occurrence_is_in_flight_until_it_ends(store: Store) -> None:
    await store.add_schedule(every10(), T0)
    first = await take(store, "a", N1)
    assert await admit(store, first) is None
    second = await take(store, "b", N2)
    # b is told which occurrence runs, and where; it is not admitted
    assert await admit(store, second) == InFlight(first.id, "a", N1)
    assert await admit(store, second) == InFlight(first.id, "a", N1)
    # a check without admit reports nothing about overlap (and changes nothing)
    [plain] = await store.check_occurrences([second.id], N2)
    assert (plain.run, plain.in_flight) == (True, None)
    # once the outcome is written, the slot is free: nothing needs writing at finish
    await succeed(store, "a", first)
    assert await admit(store, second) is None
    third = await take(store, "a", N3)
    assert await admit(store, third) == InFlight(second.id, "b", N2)


async def test_each_policy_but_allow_is_admitted_once(store: Store) -> None:
    for policy, blocked in [("queue", True), ("cancel_previous", True), ("allow", False)]:
        await store.add_schedule(every10(policy), T0, replace=True)
        first = await take(store, "a", N1)
        second = await take(store, "b", N2)
        assert await admit(store, first) is None
        other = await admit(store, second)
        assert (other is not None) == blocked, policy
        [check] = await store.check_occurrences([second.id], N2, admit=[second.id])
        assert check.overlap.value == policy
        await store.release("a", N2)
        await store.release("b", N2)
        await store.remove_schedule("s", N2)


async def test_an_owner_decides_about_its_own_occurrences(store: Store) -> None:
    await store.add_schedule(every10(), T0)
    first = await take(store, "a", N1)
    assert await admit(store, first) is None
    # a's own next occurrence: a's overlap guard knows whether the first still runs (it
    # may have ended with its outcome not yet written), so the store admits it
    second = await take(store, "a", N2)
    assert await admit(store, second) is None
    # ... and it is now the one another owner sees
    third = await take(store, "b", N3)
    assert await admit(store, third) == InFlight(second.id, "a", N2)


async def test_asking_again_for_the_admitted_occurrence_keeps_it(store: Store) -> None:
    await store.add_schedule(every10(), T0)
    first = await take(store, "a", N1)
    assert await admit(store, first) is None
    assert await admit(store, first) is None
    second = await take(store, "b", N2)
    assert await admit(store, second) == InFlight(first.id, "a", N1)


async def test_a_given_back_or_reclaimed_occurrence_does_not_count(store: Store) -> None:
    await store.add_schedule(every10(), T0)
    first = await take(store, "a", N1)
    assert await admit(store, first) is None
    assert await store.release("a", N1, [first.id]) == 1  # back to PENDING
    # claimed again by a under a new claim, and not admitted again: it does not count
    again = await take(store, "a", N1)
    assert again.id == first.id
    assert again.claim_token != first.claim_token
    second = await take(store, "b", N2)
    early = N1 - S  # (before the first is due again: see the next test)
    assert await admit(store, second, early) is None
    assert await admit(store, again, early) == InFlight(second.id, "b", N2)


async def test_an_older_occurrence_due_on_another_node_goes_first(store: Store) -> None:
    await store.add_schedule(every10("queue"), T0)
    first = await take(store, "a", N1)  # due, held by a, not admitted (yet)
    second = await take(store, "b", N2)
    # b's occurrence is newer: the older one, due on a, goes first (it waits there for
    # its turn, or is being checked)
    assert await admit(store, second) == InFlight(first.id, "a", N1, waiting=True)
    # before the older one is due it does not count
    assert await admit(store, second, N1 - 1) is None
    assert await admit(store, first) == InFlight(second.id, "b", N2)
    await succeed(store, "b", second)
    assert await admit(store, first) is None
    # an owner's own older occurrences are its own business
    third = await take(store, "a", N3)
    assert await admit(store, third) is None


async def test_an_occurrence_taken_over_after_its_lease_lapsed_stops_counting(
    store: Store,
) -> None:
    await store.add_schedule(every10(), T0)
    first = await take(store, "a", N1, lease=1)  # a's lease lapses at once: a "died"
    assert await admit(store, first) is None
    [rerun] = await store.claim("b", N1, 10, N1 + 2, HOUR)  # b takes it over
    assert (rerun.id, rerun.owner) == (first.id, "b")
    # held under b's claim now, not the one it was admitted with: b may admit it again
    # (a rerun), and then it counts for a third owner
    assert await admit(store, rerun) is None
    third = await take(store, "c", N2)
    assert await admit(store, third) == InFlight(rerun.id, "b", N1)


async def test_only_occurrences_that_may_run_are_admitted(store: Store) -> None:
    await store.add_schedule(every10(), T0)
    first = await take(store, "a", N1)
    await store.pause_schedule("s", N1)
    [check] = await store.check_occurrences([first.id], N1, admit=[first.id])
    assert (check.run, check.reason, check.in_flight) == (False, PAUSED, None)
    assert first.claim_token is not None
    missed = Finish(first.id, first.claim_token, State.MISSED, 0, error=PAUSED)
    assert await store.finish("a", [missed], N1) == [True]
    await store.resume_schedule("s", N1)
    second = await take(store, "b", N2)
    assert await admit(store, second) is None  # the paused one was not admitted


async def test_two_owners_asking_at_once_admit_one(store: Store) -> None:
    await store.add_schedule(every10(), T0)
    first = await take(store, "a", N1)
    second = await take(store, "b", N2)
    got: dict[str, InFlight | None] = {}

    async def ask(owner: str, inst: Instance) -> None:
        got[owner] = await admit(store, inst, N2)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, "a", first)
        nursery.start_soon(ask, "b", second)
    # whichever asks first, the older one is admitted and the newer one names it
    assert got["a"] is None
    other = got["b"]
    assert other is not None
    assert (other.id, other.node, other.fire_us) == (first.id, "a", N1)


# -- PostgreSQL: two connections racing, and what READ COMMITTED would let through ---------


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[tuple[Store, Store, str, str]]:

    from tests.support.pg_support import drop_schema, fresh_schema, require_pg
    from tickwork.stores.postgres import PostgresStore

    dsn = require_pg()
    schema = fresh_schema()
    a, b = PostgresStore(dsn, schema=schema), PostgresStore(dsn, schema=schema)
    await a.open(node_id="a")
    await b.open(node_id="b")
    try:
        yield a, b, dsn, schema
    finally:
        await a.aclose()
        await b.aclose()
        drop_schema(dsn, schema)


async def test_postgres_nodes_racing_for_many_schedules_admit_one_each(
    two: tuple[Store, Store, str, str],
) -> None:
    a, b, _, _ = two
    count = 40
    for k in range(count):
        s = new_schedule(
            "t", Interval(timedelta(minutes=10)), schedule_id=f"s{k:02}", overlap="skip"
        )
        await a.add_schedule(s, T0)
    firsts = await a.claim("a", N1, 1000, N1, HOUR)
    seconds = await b.claim("b", N2, 1000, N2, HOUR)
    assert len(firsts) == len(seconds) == count
    results: dict[str, list[Any]] = {}

    async def ask(name: str, store: Store, insts: list[Instance]) -> None:
        # one at a time per node, each its own transaction, interleaved with the other
        out = []
        for inst in insts:
            [check] = await store.check_occurrences([inst.id], N2, admit=[inst.id])
            out.append((inst.schedule_id, check.in_flight))
        results[name] = out

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, "a", a, firsts)
        nursery.start_soon(ask, "b", b, list(reversed(seconds)))
    admitted: dict[str | None, int] = {}
    for name in ("a", "b"):
        for sid, other in results[name]:
            if other is None:
                admitted[sid] = admitted.get(sid, 0) + 1
            else:
                assert other.node != name
    assert admitted == {f"s{k:02}": 1 for k in range(count)}


async def test_postgres_admission_reads_what_the_previous_lock_holder_committed(
    two: tuple[Store, Store, str, str],
) -> None:
    """The admitting transaction waits for the schedule row lock, then reads the row it
    names with a snapshot taken *after* the lock was granted: a row claimed and admitted
    by a transaction that committed while it waited counts (a single statement would
    recheck the schedule row but read that instance row as of before it waited)."""
    import psycopg

    a, _, dsn, schema = two
    await a.add_schedule(every10(), T0)
    first = await take(a, "a", N1)  # the next one (N2) is PENDING, claimed by nobody yet
    [pending] = [i for i in await a.list(limit=10) if i.fire_at_us == N2]
    assert pending.state is State.PENDING
    got: list[InFlight | None] = []
    with psycopg.connect(dsn) as conn:
        conn.execute(f'SELECT 1 FROM "{schema}".schedules WHERE id = %s FOR UPDATE', ("s",))

        async def ask() -> None:
            got.append(await admit(a, first, N2))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            with trio.fail_after(10):  # until the admission waits for the lock
                while not _waiting_for_a_lock(dsn, schema):
                    await trio.sleep(0.01)
            # meanwhile "b" claims and admits the second occurrence, and commits
            conn.execute(
                f'UPDATE "{schema}".instances SET state = 1, owner = %s, claim_token = 77 '
                "WHERE id = %s",
                ("b", pending.id),
            )
            conn.execute(
                f'UPDATE "{schema}".schedules SET active_id = %s, active_token = 77 WHERE id = %s',
                (pending.id, "s"),
            )
            conn.commit()
    assert got == [InFlight(pending.id, "b", N2)]


def _waiting_for_a_lock(dsn: str, schema: str) -> bool:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE %s",
            (f"%{schema}%schedules%FOR UPDATE%",),
        ).fetchone()
    return row is not None and row[0] > 0


# -- migrations: an older file or schema gets the admitted occurrence -------------------------


async def test_sqlite_file_of_the_previous_schema_version_is_migrated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tickwork.stores.sqlite import SQLiteStore
    from tickwork.stores.sqlite import _schema as _sqlite_schema

    db = tmp_path / "old.db"
    full = _sqlite_schema.MIGRATIONS
    monkeypatch.setattr(_sqlite_schema, "MIGRATIONS", full[:3])  # before version 4's slots
    monkeypatch.setattr(_sqlite_schema, "SCHEMA_VERSION", 3)
    old = SQLiteStore(db)
    await old.open()
    with sqlite3.connect(db) as c:  # the column this code writes, dropped again below
        c.execute("ALTER TABLE schedules ADD COLUMN notify TEXT")
    await old.add_schedule(every10(), T0)
    first = await take(old, "a", N1)
    await old.aclose()
    with sqlite3.connect(db) as c:
        c.execute("ALTER TABLE schedules DROP COLUMN notify")
    monkeypatch.setattr(_sqlite_schema, "MIGRATIONS", full)
    monkeypatch.setattr(_sqlite_schema, "SCHEMA_VERSION", len(full))
    new = SQLiteStore(db)
    await new.open()
    try:
        assert await admit(new, first) is None
        second = await take(new, "b", N2)
        assert await admit(new, second) == InFlight(first.id, "a", N1)
    finally:
        await new.aclose()


async def test_postgres_schema_of_the_previous_version_is_migrated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psycopg

    from tests.support.pg_support import drop_schema, fresh_schema, require_pg
    from tickwork.stores.postgres import PostgresStore
    from tickwork.stores.postgres import _migrations as _pg_migrations

    dsn = require_pg()
    schema = fresh_schema()
    full = _pg_migrations.MIGRATIONS
    monkeypatch.setattr(_pg_migrations, "MIGRATIONS", tuple(m for m in full if m[0] < 5))
    try:
        old = PostgresStore(dsn, schema=schema)
        await old.open(node_id="a")
        # the columns this code writes (PostgreSQL schemas 9 and 10), dropped again before
        # the migration
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f'ALTER TABLE "{schema}".schedules ADD COLUMN notify text')
            c.execute(
                f'ALTER TABLE "{schema}".instances ADD COLUMN started_us bigint, '
                "ADD COLUMN repeatable boolean NOT NULL DEFAULT false"
            )
        await old.add_schedule(every10(), T0)
        first = await take(old, "a", N1)
        await old.aclose()
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f'ALTER TABLE "{schema}".schedules DROP COLUMN notify')
            c.execute(
                f'ALTER TABLE "{schema}".instances DROP COLUMN started_us, DROP COLUMN repeatable'
            )
        monkeypatch.setattr(_pg_migrations, "MIGRATIONS", full)
        new = PostgresStore(dsn, schema=schema)
        await new.open(node_id="b")
        try:
            assert await admit(new, first) is None
            second = await take(new, "b", N2)
            assert await admit(new, second) == InFlight(first.id, "a", N1)
        finally:
            await new.aclose()
    finally:
        drop_schema(dsn, schema)
