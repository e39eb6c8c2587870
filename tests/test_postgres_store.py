"""PostgresStore beyond the shared contract: schema versions, many nodes, leases on the
database clock, cancellation and connection loss.

The generic Store behaviour is held by ``test_store_conformance.py``. Each test here gets
a fresh schema (dropped after) on the server named by ``TICKWORK_PG_DSN`` and skips
without one. Lease tests wait in real time, because leases run on the database clock:
they use leases of a few hundred milliseconds and bounded waits.
"""

from __future__ import annotations

import random
import time
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import trio

from tests.support.pg_support import drop_schema, fresh_schema, require_pg
from tickwork.errors import (
    InvalidArgument,
    NotATickworkDatabase,
    SchemaTooNew,
    StoreError,
)
from tickwork.model import Finish, Instance, InstanceFilter, NewRow
from tickwork.state import State
from tickwork.stores.postgres import PostgresStore
from tickwork.stores.postgres import _claims as _pg_claims
from tickwork.stores.postgres import _migrations as _pg_migrations

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

pytestmark = pytest.mark.postgres

S = 1_000_000
LEASE = 60 * S


@pytest.fixture
def pg() -> Iterator[tuple[str, str]]:
    dsn = require_pg()
    schema = fresh_schema()
    try:
        yield dsn, schema
    finally:
        drop_schema(dsn, schema)


@asynccontextmanager
async def opened(
    pg: tuple[str, str], node_id: str | None = "node-a", **kw: Any
) -> AsyncIterator[PostgresStore]:
    dsn, schema = pg
    store = PostgresStore(dsn, schema=schema, **kw)
    await store.open(node_id=node_id)
    try:
        yield store
    finally:
        await store.aclose()


def admin(pg: tuple[str, str]) -> psycopg.Connection[Any]:
    return psycopg.connect(pg[0], autocommit=True)


def now_us() -> int:
    return time.time_ns() // 1000


def rows(n: int, at: int, task: str = "t") -> list[NewRow]:
    return [NewRow(task=task, run_at_us=at, params=b"p") for _ in range(n)]


def done(inst: Instance, state: State = State.SUCCEEDED) -> Finish:
    assert inst.claim_token is not None
    return Finish(id=inst.id, claim_token=inst.claim_token, state=state, attempts=1)


# -- schema and migrations ------------------------------------------------------------------


async def test_open_creates_the_schema_and_registers_the_node(pg: tuple[str, str]) -> None:
    async with opened(pg, node_id="node-a") as store:
        assert store.schema == pg[1]
        with admin(pg) as conn:
            version = conn.execute(
                f"SELECT value FROM {pg[1]}.tickwork_meta WHERE key = 'schema_version'"
            ).fetchone()
            assert version == (str(_pg_migrations.current_version()),)
            node = conn.execute(
                f"SELECT stopped IS NULL, pid FROM {pg[1]}.nodes WHERE node_id = 'node-a'"
            ).fetchone()
            assert node is not None
            assert node[0] is True
        # a second node and a client share the schema: nothing is exclusive
        async with opened(pg, node_id="node-b") as other, opened(pg, node_id=None) as client:
            [iid] = await client.insert(rows(1, now_us()), now_us())
            assert (await other.get(iid)) == (await store.get(iid))
    with admin(pg) as conn:
        stopped = conn.execute(f"SELECT node_id FROM {pg[1]}.nodes WHERE stopped IS NOT NULL")
        assert sorted(r[0] for r in stopped) == ["node-a", "node-b"]
    await store.aclose()  # idempotent


async def test_concurrent_openers_of_a_new_schema_migrate_it_once(pg: tuple[str, str]) -> None:
    stores = [PostgresStore(pg[0], schema=pg[1]) for _ in range(6)]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for i, store in enumerate(stores):
                nursery.start_soon(partial(store.open, node_id=f"n{i}"))
    try:
        counts = [await s.count() for s in stores]
        assert counts == [0] * 6
    finally:
        for store in stores:
            await store.aclose()


async def test_a_schema_with_foreign_tables_is_refused(pg: tuple[str, str]) -> None:
    with admin(pg) as conn:
        conn.execute(f"CREATE SCHEMA {pg[1]}")
        conn.execute(f"CREATE TABLE {pg[1]}.invoices (id int)")
    store = PostgresStore(pg[0], schema=pg[1])
    with pytest.raises(NotATickworkDatabase, match="invoices"):
        await store.open()
    with pytest.raises(StoreError, match="not open"):
        await store.count()
    with admin(pg) as conn:  # nothing was created next to the foreign table
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (pg[1],)
        ).fetchone()
        assert tables == (1,)


async def test_a_meta_table_without_a_version_is_refused(pg: tuple[str, str]) -> None:
    with admin(pg) as conn:
        conn.execute(f"CREATE SCHEMA {pg[1]}")
        conn.execute(f"CREATE TABLE {pg[1]}.tickwork_meta (key text, value text)")
    with pytest.raises(NotATickworkDatabase, match="schema_version"):
        await PostgresStore(pg[0], schema=pg[1]).open()


async def test_an_empty_existing_schema_is_adopted(pg: tuple[str, str]) -> None:
    with admin(pg) as conn:
        conn.execute(f"CREATE SCHEMA {pg[1]}")
    async with opened(pg) as store:
        assert await store.count() == 0


async def test_a_newer_schema_is_refused(pg: tuple[str, str]) -> None:
    async with opened(pg):
        pass
    newer = _pg_migrations.current_version() + 1
    with admin(pg) as conn:
        conn.execute(
            f"UPDATE {pg[1]}.tickwork_meta SET value = %s WHERE key = 'schema_version'",
            (str(newer),),
        )
    with pytest.raises(SchemaTooNew, match=f"version {newer}"):
        await PostgresStore(pg[0], schema=pg[1]).open()


async def test_an_older_schema_is_migrated_on_open(
    pg: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(pg) as store:
        [iid] = await store.insert(rows(1, now_us()), now_us())
    v2 = (_pg_migrations.current_version() + 1, ("ALTER TABLE {s}.nodes ADD COLUMN zone text",))
    monkeypatch.setattr(_pg_migrations, "MIGRATIONS", (*_pg_migrations.MIGRATIONS, v2))
    async with opened(pg) as store:
        assert (await store.get(iid)) is not None  # the data survived the migration
    with admin(pg) as conn:
        version = conn.execute(
            f"SELECT value FROM {pg[1]}.tickwork_meta WHERE key = 'schema_version'"
        ).fetchone()
        assert version == (str(v2[0]),)
        conn.execute(f"SELECT zone FROM {pg[1]}.nodes")


def test_bad_arguments_are_refused() -> None:
    for bad in ("", "1abc", "pg_catalog", "has space", "quote'd", "x" * 64):
        with pytest.raises(InvalidArgument):
            PostgresStore("postgresql://localhost/x", schema=bad)
    with pytest.raises(InvalidArgument):
        PostgresStore("postgresql://localhost/x", lease=timedelta(0))
    with pytest.raises(InvalidArgument):
        PostgresStore("postgresql://localhost/x", connect_attempts=0)


async def test_open_twice_and_use_before_open_are_errors(pg: tuple[str, str]) -> None:
    store = PostgresStore(pg[0], schema=pg[1])
    with pytest.raises(StoreError, match="not open"):
        await store.get(1)
    await store.open()
    try:
        with pytest.raises(StoreError, match="already open"):
            await store.open()
    finally:
        await store.aclose()


# -- many nodes -----------------------------------------------------------------------------


async def test_two_nodes_claiming_concurrently_never_share_a_row(pg: tuple[str, str]) -> None:
    now = now_us()
    n = 2000
    async with opened(pg, node_id="a") as a, opened(pg, node_id="b") as b:
        # spread over due times so claims overlap in (run_at, id) order
        ids = await a.insert(
            [NewRow(task="t", run_at_us=now - (i % 97) * S, params=b"") for i in range(n)], now
        )
        taken: dict[str, list[Instance]] = {"a": [], "b": []}
        rng = random.Random(7)  # noqa: S311 - a reproducible mix of batch sizes

        async def loop(store: PostgresStore, owner: str) -> None:
            while True:
                got = await store.claim(owner, now, rng.randint(1, 60), now, LEASE)
                if not got:
                    return
                assert all(i.owner == owner and i.state is State.CLAIMED for i in got)
                taken[owner].extend(got)
                await trio.sleep(0)

        # two claim loops per store: each store serialises its own calls, the two
        # stores (two connections) really race in the database
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for store, owner in ((a, "a"), (b, "b"), (a, "a"), (b, "b")):
                    nursery.start_soon(loop, store, owner)
        got_a = [i.id for i in taken["a"]]
        got_b = [i.id for i in taken["b"]]
        assert len(got_a) + len(got_b) == n
        assert not set(got_a) & set(got_b)
        assert sorted(got_a + got_b) == sorted(ids)
        assert got_a  # both really took part
        assert got_b
        # every claim is fenced to its holder
        assert await a.finish("a", [done(i) for i in taken["b"][:10]], now) == [False] * 10
        assert all(await a.finish("a", [done(i) for i in taken["a"]], now))
        assert all(await b.finish("b", [done(i) for i in taken["b"]], now))
        assert await a.count(state=State.SUCCEEDED) == n


async def test_claim_skips_rows_another_transaction_holds(pg: tuple[str, str]) -> None:
    now = now_us()
    async with opened(pg) as store:
        ids = await store.insert(rows(4, now), now)
        with admin(pg) as conn, conn.transaction():
            conn.execute(
                f"SELECT 1 FROM {pg[1]}.instances WHERE id = ANY(%s) FOR UPDATE", (ids[:2],)
            )
            with trio.fail_after(5):  # SKIP LOCKED: no waiting on the locked rows
                got = await store.claim("a", now, 10, now, LEASE)
        assert [i.id for i in got] == ids[2:]
        assert [i.id for i in await store.claim("a", now, 10, now, LEASE)] == ids[:2]


async def test_concurrent_inserts_of_one_dedup_key_agree_on_the_id(pg: tuple[str, str]) -> None:
    now = now_us()
    keys = [f"k{i}" for i in range(300)]
    results: list[list[int]] = []
    async with opened(pg, node_id="a") as a, opened(pg, node_id="b") as b:

        async def add(store: PostgresStore, order: list[str]) -> None:
            batch = [NewRow(task="t", run_at_us=now, params=b"", dedup_key=k) for k in order]
            ids = await store.insert(batch, now)
            results.append([ids[order.index(k)] for k in keys])

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(add, a, keys)
                nursery.start_soon(add, b, keys[::-1])
        assert results[0] == results[1]
        assert await a.count() == len(keys)


# -- leases on the database clock ------------------------------------------------------------


async def wait_for_takeover(store: PostgresStore, owner: str, now: int) -> list[Instance]:
    with trio.fail_after(5):
        while True:
            got = await store.claim(owner, now, 100, now, LEASE)
            if got:
                return got
            await trio.sleep(0.05)


async def test_a_lapsed_lease_is_taken_over_and_the_old_holder_fenced(
    pg: tuple[str, str],
) -> None:
    now = now_us()
    short = timedelta(milliseconds=200)
    async with opened(pg, node_id="a", lease=short) as a, opened(pg, node_id="b") as b:
        ids = await a.insert(rows(5, now), now)
        mine = await a.claim("a", now, 10, now, LEASE)  # the store's lease wins: 200 ms
        assert len(mine) == 5
        lease_until = mine[0].lease_until_us
        assert lease_until is not None
        assert abs(lease_until - (now_us() + 200_000)) < 5 * S  # the database clock
        assert await b.claim("b", now, 10, now, LEASE) == []  # still held
        t0 = trio.current_time()
        theirs = await wait_for_takeover(b, "b", now)
        assert trio.current_time() - t0 < 2
        assert sorted(i.id for i in theirs) == ids
        assert {i.claim_token for i in theirs}.isdisjoint({i.claim_token for i in mine})
        # node a lost its lease: its writes are refused, it renews nothing
        assert await a.finish("a", [done(i) for i in mine], now) == [False] * 5
        assert await a.start("a", [(i.id, i.claim_token or 0) for i in mine], now) == [False] * 5
        assert await a.renew("a", now, LEASE) == 0
        assert await a.release("a", now) == 0
        assert await b.finish("b", [done(i) for i in theirs], now) == [True] * 5


async def test_renewed_leases_are_not_taken_over(pg: tuple[str, str]) -> None:
    now = now_us()
    short = timedelta(milliseconds=800)
    async with opened(pg, node_id="a", lease=short) as a, opened(pg, node_id="b") as b:
        await a.insert(rows(3, now), now)
        assert len(await a.claim("a", now, 10, now, LEASE)) == 3
        with trio.fail_after(10):
            for _ in range(10):  # 1.5 s: well past one lease, renewed every 150 ms
                await trio.sleep(0.15)
                assert await a.renew("a", now, LEASE) == 3
                assert await b.claim("b", now, 10, now, LEASE) == []
        with admin(pg) as conn:
            heartbeat = conn.execute(
                f"SELECT now() - last_heartbeat FROM {pg[1]}.nodes WHERE node_id = 'a'"
            ).fetchone()
            assert heartbeat is not None
            assert heartbeat[0] < timedelta(seconds=1)


async def test_a_dead_nodes_running_rows_end_interrupted(pg: tuple[str, str]) -> None:
    now = now_us()
    short = timedelta(milliseconds=100)
    async with opened(pg, node_id="a", lease=short) as a, opened(pg, node_id="b") as b:
        [run_once, plain] = await a.insert(rows(2, now), now)
        got = await a.claim("a", now, 10, now, LEASE)
        first = next(i for i in got if i.id == run_once)
        assert await a.start("a", [(run_once, first.claim_token or 0)], now) == [True]
        [taken] = await wait_for_takeover(b, "b", now)
        assert taken.id == plain
        ended = await b.get(run_once)
        assert ended is not None
        assert (ended.state, ended.attempts) == (State.FAILED, 1)
        assert ended.error is not None
        assert ended.error.startswith("interrupted")


# -- cancellation -------------------------------------------------------------------------


async def active_queries(conn: psycopg.Connection[Any], pid: int | None) -> list[str]:
    found = conn.execute(
        "SELECT query FROM pg_stat_activity WHERE pid = %s AND state = 'active'", (pid,)
    )
    return [r[0] for r in found]


async def test_cancelling_a_blocked_claim_stops_it_on_the_server(pg: tuple[str, str]) -> None:
    now = now_us()
    async with opened(pg) as store:
        await store.insert(rows(3, now), now)
        with admin(pg) as conn:
            with conn.transaction():
                conn.execute(f"LOCK TABLE {pg[1]}.instances IN ACCESS EXCLUSIVE MODE")
                t0 = trio.current_time()
                with trio.move_on_after(0.3) as scope:
                    await store.claim("a", now, 10, now, LEASE)
                assert scope.cancelled_caught
                assert trio.current_time() - t0 < 3
                # the statement is gone from the server, not left waiting on the lock
                assert await active_queries(conn, store._conn_pid) == []
            assert store.statistics().cancels == 1
        # rolled back: nothing was claimed; the connection serves the next call
        assert await store.count(state=State.PENDING) == 3
        assert len(await store.claim("a", now, 10, now, LEASE)) == 3


async def test_a_cancelled_finish_is_rolled_back_whole(pg: tuple[str, str]) -> None:
    now = now_us()
    async with opened(pg) as store:
        ids = await store.insert(rows(3, now), now)
        got = await store.claim("a", now, 10, now, LEASE)
        with admin(pg) as conn:
            with conn.transaction():
                # the last row is locked: the finish writes the first two, then waits
                conn.execute(
                    f"SELECT 1 FROM {pg[1]}.instances WHERE id = %s FOR UPDATE", (ids[-1],)
                )
                with trio.move_on_after(0.3) as scope:
                    await store.finish("a", [done(i) for i in got], now)
                assert scope.cancelled_caught
            assert await active_queries(conn, store._conn_pid) == []
        assert await store.count(state=State.CLAIMED) == 3  # not half applied
        assert await store.finish("a", [done(i) for i in got], now) == [True] * 3


async def test_a_call_cancelled_before_it_starts_does_nothing(pg: tuple[str, str]) -> None:
    now = now_us()
    async with opened(pg) as store:
        with trio.CancelScope() as scope:
            scope.cancel()
            await store.insert(rows(1, now), now)
        assert await store.count() == 0


async def test_a_read_that_ends_despite_a_cancel_returns_its_result(pg: tuple[str, str]) -> None:
    async with opened(pg) as store:

        def slow_read(session: Any) -> int:
            time.sleep(0.3)  # the cancel request finds the backend idle: nothing to stop
            return 42

        with trio.move_on_after(0.1) as scope:
            assert await store._call(slow_read, write=False) == 42
            await trio.sleep(0)  # the cancellation is delivered at the next checkpoint
        assert scope.cancelled_caught


async def test_a_cancelled_write_stops_before_its_commit(pg: tuple[str, str]) -> None:
    async with opened(pg) as store:
        insert = _pg_migrations.render(
            "INSERT INTO {s}.nodes (node_id, started, last_heartbeat) VALUES ('x', now(), now())",
            pg[1],
        )

        def write_then_dawdle(session: Any) -> None:
            session.execute(insert)
            time.sleep(0.3)

        with trio.move_on_after(0.1) as scope:
            await store._call(write_then_dawdle, write=True)
        assert scope.cancelled_caught
        with admin(pg) as conn:
            found = conn.execute(f"SELECT count(*) FROM {pg[1]}.nodes WHERE node_id = 'x'")
            assert found.fetchone() == (0,)


# -- connection loss ----------------------------------------------------------------------


def terminate(pg: tuple[str, str], pid: int | None) -> None:
    with admin(pg) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


async def test_a_killed_connection_is_reopened_by_the_next_call(pg: tuple[str, str]) -> None:
    now = now_us()
    async with opened(pg) as store:
        [iid] = await store.insert(rows(1, now), now)
        old_pid = store._conn_pid
        terminate(pg, old_pid)
        got = await store.claim("a", now, 10, now, LEASE)  # a write: retried once reopened
        assert [i.id for i in got] == [iid]
        assert store._conn_pid != old_pid
        terminate(pg, store._conn_pid)
        assert await store.count(state=State.CLAIMED) == 1  # a read, likewise
        stats = store.statistics()
        assert (stats.reconnects, stats.retries) == (2, 2)


async def test_an_unreachable_server_raises_store_error_after_bounded_tries(
    pg: tuple[str, str],
) -> None:
    store = PostgresStore(
        "postgresql://postgres@127.0.0.1:1/test", schema=pg[1], connect_attempts=3
    )
    with trio.fail_after(10), pytest.raises(StoreError, match="3 attempts"):
        await store.open()
    # and a store that loses its server mid-life gives up the same way, then recovers
    async with opened(pg, connect_attempts=2) as store:
        good_dsn = store._dsn
        store._dsn = "postgresql://postgres@127.0.0.1:1/test"
        terminate(pg, store._conn_pid)
        with trio.fail_after(10), pytest.raises(StoreError, match="2 attempts"):
            await store.count()
        store._dsn = good_dsn
        assert await store.count() == 0


class CommitFault:
    """Breaks the node connection at its next COMMIT, after or before the commit lands."""

    def __init__(self, pg: tuple[str, str], store: PostgresStore, *, lands: bool) -> None:
        self.pg, self.store, self.lands = pg, store, lands

    def arm(self) -> None:
        conn = self.store._conn
        assert conn is not None
        real = conn.execute

        def execute(query: Any, params: Any = None, **kw: Any) -> Any:
            if query != "COMMIT":
                return real(query, params, **kw)
            del conn.execute  # fire once
            if self.lands:  # committed, but the client never hears so
                real(query)
                conn.close()
                raise psycopg.OperationalError("simulated loss after COMMIT")
            terminate(self.pg, self.store._conn_pid)  # dies before the commit
            return real(query)

        conn.execute = execute  # type: ignore[method-assign]


@pytest.mark.parametrize("lands", [True, False])
async def test_a_connection_lost_during_commit_is_resolved_exactly_once(
    pg: tuple[str, str], lands: bool
) -> None:
    now = now_us()
    async with opened(pg) as store:
        CommitFault(pg, store, lands=lands).arm()
        ids = await store.insert(rows(3, now), now)
        assert len(set(ids)) == 3
        assert await store.count() == 3  # neither lost nor written twice
        assert sorted(i.id for i in await store.list()) == sorted(ids)
        assert store.statistics().reconnects == 1
        CommitFault(pg, store, lands=lands).arm()
        got = await store.claim("a", now, 10, now, LEASE)
        assert sorted(i.id for i in got) == sorted(ids)  # the claim is not orphaned


# -- change token ---------------------------------------------------------------------------


async def token_changes(store: PostgresStore, before: int) -> bool:
    with trio.move_on_after(2):
        while await store.change_token() == before:
            await trio.sleep(0.02)
        return True
    return False


async def test_change_token_moves_on_other_nodes_inserts_and_aborts(
    pg: tuple[str, str],
) -> None:
    now = now_us()
    async with opened(pg, node_id="a") as a, opened(pg, node_id=None) as cli:
        base = await a.change_token()
        await a.insert(rows(1, now), now)  # our own: not a change
        await trio.sleep(0.2)
        assert await a.change_token() == base
        [iid] = await cli.insert(rows(1, now), now)
        assert await token_changes(a, base)
        base = await a.change_token()
        await cli.request_abort(iid, now)
        assert await token_changes(a, base)
        # another schema's notifications are not ours
        other = (pg[0], fresh_schema())
        try:
            base = await a.change_token()
            async with opened(other) as stranger:
                await stranger.insert(rows(1, now), now)
            await trio.sleep(0.2)
            assert await a.change_token() == base
        finally:
            drop_schema(*other)


async def test_change_token_moves_when_another_node_gives_work_back(
    pg: tuple[str, str],
) -> None:
    now = now_us()
    async with opened(pg, node_id="a") as a, opened(pg, node_id="b") as b:
        await b.insert(rows(2, now), now)
        assert len(await b.claim("b", now, 10, now, LEASE)) == 2
        base = await a.change_token()
        assert await b.release("b", now) == 2  # b shuts down: its work is a's to take
        assert await token_changes(a, base)
        assert len(await a.claim("a", now, 10, now, LEASE)) == 2


async def test_change_token_survives_a_lost_listener(pg: tuple[str, str]) -> None:
    now = now_us()
    async with opened(pg, node_id="a") as a, opened(pg, node_id=None) as cli:
        base = await a.change_token()
        assert a._listener is not None
        terminate(pg, a._listener.info.backend_pid)
        await trio.sleep(0.1)
        assert await a.change_token() != base  # a change may have been missed: say so
        base = await a.change_token()
        await cli.insert(rows(1, now), now)
        assert await token_changes(a, base)


# -- costs ----------------------------------------------------------------------------------


async def test_the_claim_plan_is_an_ordered_index_scan_even_without_statistics(
    pg: tuple[str, str],
) -> None:
    now = now_us()
    async with opened(pg) as store:
        for _ in range(4):  # never analyzed: the planner guesses few PENDING rows
            await store.insert(rows(5000, now - S), now)
        params = {
            "owner": "a",
            "due": now,
            "limit": 100,
            "now": now,
            "lease": timedelta(seconds=30),
            "interrupted": "x",
        }
        with admin(pg) as conn, conn.transaction():
            for setting in _pg_claims.CLAIM_SETTINGS:
                conn.execute(setting)
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + store._q.claim_sql, params))
        pend = plan[plan.index("CTE pend") : plan.index("CTE lapsed")]
        assert "Index Scan using instances_due" in pend
        assert "Sort" not in pend
        assert "JIT" not in plan


async def test_a_batch_is_one_transaction_of_a_few_statements(pg: tuple[str, str]) -> None:
    now = now_us()
    async with opened(pg) as store:
        before = store.statistics()
        await store.insert(rows(1000, now), now)
        got = await store.claim("a", now, 1000, now, LEASE)
        assert all(await store.finish("a", [done(i) for i in got], now))
        after = store.statistics()
        assert after.commits - before.commits == 3
        # each: BEGIN + xid (one round trip), its statement, COMMIT; the insert adds a
        # NOTIFY, the claim two SET LOCALs (sent with its BEGIN)
        assert after.statements - before.statements <= 3 * 4 + 1 + 2


async def test_a_schedule_with_few_rows_is_listed_through_its_index(pg: tuple[str, str]) -> None:
    """A schedule's listing (the UI's schedules page asks one per schedule) reads the
    (schedule_id, id) index, not every id from the newest down for a schedule with none."""
    now = now_us()
    async with opened(pg) as store:
        await store.insert(rows(20_000, now - S), now)
        busy = [
            NewRow("t", now - S, b"", schedule_id="busy", fire_at_us=now - S + i) for i in range(50)
        ]
        await store.insert(busy, now)
        with admin(pg) as conn:
            conn.execute(f'ANALYZE "{pg[1]}".instances')
            terms, values = InstanceFilter(schedule_id="idle", history_at_us=now).sql(
                ("run_at_us", "updated_us"), "%(f{n})s"
            )
            query = store._q.list_sql + " WHERE " + " AND ".join(terms)
            query += " ORDER BY id DESC LIMIT 11"
            params = {f"f{n}": v for n, v in enumerate(values)}
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + query, params))  # type: ignore[arg-type]
        assert "using instances_schedule on" in plan, plan
        assert "instances_pkey" not in plan
        listed = await store.list(where=InstanceFilter(schedule_id="busy"))
        assert len(listed) == 50
        assert await store.list(where=InstanceFilter(schedule_id="idle")) == []
