"""What only the SQLite store does: the file, its schema, the node lock, its own thread.

The behaviour every store shares is in ``test_store_conformance.py``; here a random
workload also runs on the memory store and the SQLite store side by side and must give
identical answers.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

import tickwork
from tests.support.lock_holder import LOCK_HOLDER
from tickwork.errors import (
    NotATickworkDatabase,
    SchemaTooNew,
    StoreError,
    StoreLocked,
    StoreUnavailable,
)
from tickwork.model import Finish, Instance, NewRow
from tickwork.state import State
from tickwork.stores import MemoryStore, SQLiteStore
from tickwork.stores.sqlite import _open as _sqlite_open
from tickwork.stores.sqlite import _reads as _sqlite_reads
from tickwork.stores.sqlite._schema import SCHEMA_VERSION

NOW = 1_900_000_000_000_000
S = 1_000_000


def rows(n: int, at: int = NOW, task: str = "t") -> list[NewRow]:
    return [NewRow(task=task, run_at_us=at + i, params=b"x") for i in range(n)]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "tickwork.db"


async def opened(path: Path, node_id: str | None = "node-1") -> SQLiteStore:
    store = SQLiteStore(path)
    await store.open(node_id=node_id)
    return store


# -- the file ------------------------------------------------------------------------------


async def test_everything_survives_a_reopen(db: Path) -> None:
    store = await opened(db)
    ids = await store.insert([*rows(3), NewRow("t", NOW, b"k", dedup_key="k")], NOW)
    [c] = await store.claim("n", NOW, 1, NOW, 60 * S)
    done = Finish(c.id, c.claim_token or 0, State.SUCCEEDED, attempts=1, started_us=NOW)
    await store.finish("n", [done], NOW + 1)
    before = [await store.get(i) for i in ids]
    await store.aclose()

    store = await opened(db)
    try:
        assert [await store.get(i) for i in ids] == before
        assert len(await store.history(c.id)) == 1
        assert await store.count() == 4
        assert await store.count(state=State.SUCCEEDED) == 1
        # ids and claim tokens go on from where they were, never reused
        assert await store.insert([NewRow("t", NOW, b"k", dedup_key="k")], NOW) == [ids[3]]
        [new_id] = await store.insert(rows(1), NOW)
        assert new_id == ids[-1] + 1
        [again] = await store.claim("n", NOW, 1, NOW, 60 * S)
        assert (again.claim_token or 0) > (c.claim_token or 0)
    finally:
        await store.aclose()


async def test_the_journal_is_wal(db: Path) -> None:
    store = await opened(db)
    await store.aclose()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_text_file_is_refused_and_left_alone(db: Path) -> None:
    db.write_text("name,when\ngreet,now\n" * 100)
    before = db.read_bytes()
    with pytest.raises(NotATickworkDatabase, match="not a SQLite database"):
        await opened(db)
    assert db.read_bytes() == before
    assert not Path(f"{db}-wal").exists()


async def test_another_applications_database_is_refused(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    with pytest.raises(NotATickworkDatabase, match=r"another application.*customers"):
        await opened(db, node_id=None)
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert tables == ["customers"]


async def test_another_application_id_is_refused(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA application_id = 1234")
    with pytest.raises(NotATickworkDatabase, match="0x4d2"):
        await opened(db)


async def test_an_empty_file_becomes_a_tickwork_database(db: Path) -> None:
    db.touch()
    store = await opened(db)
    await store.aclose()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        meta = dict(conn.execute("SELECT key, value FROM tickwork_meta").fetchall())
    assert meta["application"] == "tickwork"
    assert meta["schema_version"] == SCHEMA_VERSION


async def test_a_newer_schema_is_refused(db: Path) -> None:
    store = await opened(db)
    await store.aclose()
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaTooNew, match="newer tickwork"):
        await opened(db)
    # the refused open released the node lock and its thread
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    store = await opened(db)
    await store.aclose()


async def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        await opened(tmp_path / "nope" / "tickwork.db")


async def test_an_in_memory_database_works(db: Path) -> None:
    store = SQLiteStore(":memory:")
    await store.open(node_id="n")
    try:
        [iid] = await store.insert(rows(1), NOW)
        [inst] = await store.claim("n", NOW, 1, NOW, S)
        assert inst.id == iid
        assert await store.recover(NOW) == 1
    finally:
        await store.aclose()
    assert not Path(":memory:.lock").exists()


async def test_open_close_life(db: Path) -> None:
    store = SQLiteStore(db)
    with pytest.raises(StoreError, match="not open"):
        await store.count()
    await store.open()
    with pytest.raises(StoreError, match="already open"):
        await store.open()
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(StoreError, match="not open"):
        await store.get(1)
    await store.open()  # and it can be opened again
    await store.aclose()


# -- the node lock -------------------------------------------------------------------------


async def test_one_node_at_a_time_but_clients_are_welcome(db: Path) -> None:
    node = await opened(db, "node-1")
    try:
        with pytest.raises(StoreLocked, match=rf"already used .*pid {os.getpid()}.*another --db"):
            await opened(db, "node-2")
        client = await opened(db, node_id=None)
        try:
            [iid] = await client.insert(rows(1), NOW)
            seen = await node.get(iid)
            assert seen is not None
            await node.request_abort(iid, NOW)
            aborted = await client.get(iid)
            assert aborted is not None
            assert aborted.state is State.ABORTED
        finally:
            await client.aclose()
    finally:
        await node.aclose()
    # the lock went with aclose
    again = await opened(db, "node-2")
    await again.aclose()


async def test_only_a_node_may_recover(db: Path) -> None:
    client = await opened(db, node_id=None)
    try:
        await client.insert(rows(1), NOW)
        await client.claim("someone", NOW, 1, NOW, S)
        with pytest.raises(StoreError, match="node lock"):
            await client.recover(NOW)
        assert await client.count(state=State.CLAIMED) == 1
    finally:
        await client.aclose()


async def test_the_lock_dies_with_its_process(db: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(tickwork.__file__).parents[1]))
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(db)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLocked, match=rf"pid {proc.pid}, node doomed"):
            await opened(db)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    store = await opened(db)
    await store.aclose()


# -- other connections ---------------------------------------------------------------------


async def test_change_token_moves_when_another_connection_commits(db: Path) -> None:
    node = await opened(db)
    client = await opened(db, node_id=None)
    try:
        before = await node.change_token()
        await node.insert(rows(1), NOW)
        assert await node.change_token() == before  # our own commit
        await client.insert(rows(1), NOW)
        after = await node.change_token()
        assert after != before
        assert await node.change_token() == after
        with sqlite3.connect(db) as conn:  # any other writer counts
            conn.execute("UPDATE instances SET error = 'x' WHERE id = 1")
        assert await node.change_token() != after
    finally:
        await client.aclose()
        await node.aclose()


async def test_a_locked_database_is_a_transient_error(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sqlite_open, "BUSY_TIMEOUT_MS", 20)
    store = await opened(db)
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.insert(rows(1), NOW)
        other.execute("ROLLBACK")
        assert len(await store.insert(rows(1), NOW)) == 1  # and it passes
        with pytest.raises(StoreError) as info:
            await store._call(lambda o: o._c.execute("SELECT nope FROM nowhere"))
        assert not isinstance(info.value, StoreUnavailable)  # a bug is not retried
    finally:
        other.close()
        await store.aclose()


# -- the thread ----------------------------------------------------------------------------


async def test_a_cancelled_caller_does_not_lose_its_write(db: Path) -> None:
    store = await opened(db)
    gate = threading.Event()
    written: list[int] = []
    try:
        async with trio.open_nursery() as nursery:
            # occupy the store's thread so the insert below is queued, not yet run
            nursery.start_soon(store._worker.call, gate.wait)  # type: ignore[union-attr]
            await trio.testing.wait_all_tasks_blocked()
            scope = trio.CancelScope()

            async def insert() -> None:
                with scope:
                    written.extend(await store.insert(rows(5), NOW))
                    await trio.sleep_forever()

            nursery.start_soon(insert)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert written == []  # still waiting: the call was not abandoned
            gate.set()
        assert len(written) == 5  # the result came back, then the cancellation
        assert await store.count() == 5
    finally:
        gate.set()
        await store.aclose()


async def test_a_caller_cancelled_before_the_call_writes_nothing(db: Path) -> None:
    store = await opened(db)
    try:
        with trio.CancelScope() as scope:
            scope.cancel()
            await store.insert(rows(5), NOW)
        assert await store.count() == 0
    finally:
        await store.aclose()


async def test_concurrent_callers_are_serialised(db: Path) -> None:
    store = await opened(db)
    got: list[list[int]] = []
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(20):

                async def one() -> None:
                    got.append(await store.insert(rows(50), NOW))

                nursery.start_soon(one)
        every = sorted(i for ids in got for i in ids)
        assert every == list(range(1, 1001))
        assert all(ids == sorted(ids) for ids in got)
        assert await store.count() == 1000
    finally:
        await store.aclose()


# -- the indexes are used ------------------------------------------------------------------


async def _every_statement(store: SQLiteStore) -> list[str]:
    """Run every operation once and return the SQL the store executed."""
    seen: list[str] = []
    conn = store._conn
    assert conn is not None
    await store._worker.call(lambda: conn.set_trace_callback(seen.append))  # type: ignore[union-attr]
    ids = await store.insert(
        [
            NewRow("t", NOW + i, b"", dedup_key=f"k{i}" if i % 2 else None, schedule_id="s")
            for i in range(10)
        ],
        NOW,
    )
    await store.claim("a", NOW + 5, 3, NOW, 1)
    claimed = await store.claim("a", NOW + 9, 3, NOW + 10, 100)
    await store.start("a", [(claimed[0].id, claimed[0].claim_token or 0)], NOW)
    await store.request_abort(claimed[1].id, NOW)
    await store.request_abort(ids[-1], NOW)
    await store.abort_requests("a")
    finishes = [Finish(i.id, i.claim_token or 0, State.PENDING, 1, started_us=NOW) for i in claimed]
    await store.finish("a", finishes, NOW)
    await store.renew("a", NOW, 5)
    await store.release("a", NOW, [1, 2])
    await store.release("a", NOW)
    await store.recover(NOW)
    await store.next_pending_at()
    await store.list()
    await store.list(state=State.PENDING)
    await store.list(task="t")
    await store.list(state=State.PENDING, task="t", before_id=5)
    await store.list(state=State.CLAIMED)
    await store.list(state=State.FAILED, task="t")
    await store.count()
    await store.count(state=State.PENDING, task="t")
    await store.count_by_state()
    await store.history(1)
    await store.get(1)
    await store.change_token()
    await store.prune(NOW + 100, 10)
    await store._worker.call(lambda: conn.set_trace_callback(None))  # type: ignore[union-attr]
    return seen


async def test_no_query_scans_instances_or_sorts_them(db: Path) -> None:
    store = await opened(db)
    try:
        statements = await _every_statement(store)
    finally:
        await store.aclose()
    plans = {}
    with sqlite3.connect(db) as conn:
        for sql in statements:
            if sql.startswith(("SELECT", "UPDATE", "DELETE")):
                plan = " | ".join(str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
                plans[sql] = plan
    assert len(plans) > 20
    for sql, plan in plans.items():
        assert not re.search(r"SCAN (instances|history)(?! USING)", plan), (sql, plan)
        # only PENDING and held rows are sorted for a listing (bounded: see Ops.page)
        sorted_ok = "ORDER BY id DESC" in sql and (
            "BY ix_instances_pending" in sql or "BY ix_instances_held" in sql
        )
        if ("FROM instances" in sql or "FROM history" in sql) and not sorted_ok:
            assert "TEMP B-TREE" not in plan, (sql, plan)
    claims = [p for sql, p in plans.items() if "ORDER BY run_at, id" in sql]
    assert claims
    assert all("ix_instances_pending (run_at<?)" in p for p in claims)


#: The opcodes that end one pass of a loop over rows (a jump back to the loop's body).
_LOOP_ENDS = frozenset({"Next", "Prev", "VNext", "SorterNext"})


def _temp_tables_per_row(conn: sqlite3.Connection, sql: str) -> list[int]:
    """The addresses of the temporary B-trees a statement builds anew for each row it
    visits: an ``OpenEphemeral`` inside a loop's body that no ``Once`` guards."""
    program = conn.execute("EXPLAIN " + sql).fetchall()
    loops = [(r[2], r[0]) for r in program if r[1] in _LOOP_ENDS and r[2] < r[0]]
    return [
        r[0]
        for r in program
        if r[1] == "OpenEphemeral"
        and program[r[0] - 1][1] != "Once"
        and any(start <= r[0] <= end for start, end in loops)
    ]


async def test_no_write_builds_a_temporary_btree_for_each_row(db: Path) -> None:
    """SQLite tests each partial index's condition on the old and the new row of every
    write that changes the columns it names, and codes ``x IN (a, b, c)`` (three values
    or more) as a temporary B-tree built at each test: a sixth of the store's work per
    instance before schema version 12 (``ix_instances_schedule_live``)."""
    store = await opened(db)
    try:
        conn = store._conn
        assert conn is not None
        hot: list[str] = []
        await store._worker.call(lambda: conn.set_trace_callback(hot.append))  # type: ignore[union-attr]
        ids = await store.insert(rows(40), NOW)  # the fire path: plain rows, claimed, ended
        claimed = await store.claim("a", NOW + 40, 40, NOW, S)
        assert sorted(i.id for i in claimed) == ids
        done = [Finish(i.id, i.claim_token or 0, State.SUCCEEDED, 1, None, None, NOW, NOW)
                for i in claimed]  # fmt: skip
        assert await store.finish("a", done, NOW) == [True] * 40
        statements = await _every_statement(store)
    finally:
        await store.aclose()
    writes = [
        sql
        for sql in statements + hot
        if sql.startswith(("INSERT INTO instances", "UPDATE instances", "DELETE FROM instances"))
    ]
    assert any("json_each" in sql for sql in hot if sql.startswith("UPDATE instances"))
    with sqlite3.connect(db) as check:
        found = {sql: _temp_tables_per_row(check, sql) for sql in writes}
    assert len(found) > 10
    assert {sql: at for sql, at in found.items() if at} == {}


async def test_a_version_11_file_gets_the_schedule_index_of_version_12(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index is rebuilt with its new condition, and what it finds is the same: a
    schedule's unfinished occurrences (an ended one and a plain row are not in it)."""
    from tests.test_schedules_store import T0, every
    from tickwork.stores.sqlite import _schema as _sqlite_schema

    full = _sqlite_schema.MIGRATIONS
    monkeypatch.setattr(_sqlite_schema, "MIGRATIONS", full[:11])
    monkeypatch.setattr(_sqlite_schema, "SCHEMA_VERSION", 11)
    old = await opened(db)
    try:
        await old.add_schedule(every(10), T0)  # its first occurrence, PENDING
        [first] = await old.claim("a", T0 + 3600 * S, 10, T0, S)
        ended = Finish(first.id, first.claim_token or 0, State.SUCCEEDED, 1, started_us=T0)
        assert await old.finish("a", [ended], T0) == [True]  # the next one is written
        await old.insert(rows(3), T0)
    finally:
        await old.aclose()
    monkeypatch.setattr(_sqlite_schema, "MIGRATIONS", full)
    monkeypatch.setattr(_sqlite_schema, "SCHEMA_VERSION", len(full))
    new = await opened(db)
    try:
        with sqlite3.connect(db) as c:
            [(version,)] = c.execute("PRAGMA user_version").fetchall()
            [(definition,)] = c.execute(
                "SELECT sql FROM sqlite_master WHERE name = 'ix_instances_schedule_live'"
            ).fetchall()
        assert version == SCHEMA_VERSION >= 12
        assert definition.endswith("WHERE schedule_id IS NOT NULL AND state < 3")
        live = [i for i in await new.list(limit=100) if i.schedule_id == "s"]
        assert [i.state for i in sorted(live, key=lambda i: i.id)] == [
            State.SUCCEEDED,
            State.PENDING,
        ]
        assert await new.remove_schedule("s", T0)  # reads the index (INDEXED BY)
        after = {i.id: i.state for i in await new.list(limit=100)}
        assert after[first.id] is State.SUCCEEDED
        assert list(after.values()).count(State.ABORTED) == 1
        assert list(after.values()).count(State.PENDING) == 3  # the plain rows
    finally:
        await new.aclose()


async def test_many_pending_rows_are_listed_by_walking_ids(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await opened(db)
    try:
        ids = await store.insert(rows(30, task="a") + rows(30, task="b"), NOW)
        await store.claim("n", NOW + 5, 10, NOW, S)
        for i in ids[::7]:
            await store.request_abort(i, NOW)
        sorted_pages = [
            await store.list(state=State.PENDING, limit=7, task=task, before_id=before)
            for task in (None, "a", "b")
            for before in (None, ids[40], ids[3])
        ]
        monkeypatch.setattr(_sqlite_reads, "_SORT_PENDING_MAX", 0)
        walked_pages = [
            await store.list(state=State.PENDING, limit=7, task=task, before_id=before)
            for task in (None, "a", "b")
            for before in (None, ids[40], ids[3])
        ]
        assert walked_pages == sorted_pages
        assert sum(len(p) for p in sorted_pages) > 30
    finally:
        await store.aclose()


async def test_a_tasks_list_walks_the_task_index(db: Path) -> None:
    """A rare task's page is found through ix_instances_task (not by walking every id);
    a task with no rows, or none in the state asked for, reads no instance row at all
    (the maintained counts say so)."""
    store = await opened(db)
    try:
        await store.insert(rows(200, task="common"), NOW)
        rare = await store.insert(rows(3, task="rare"), NOW + 1000 * S)
        await store.insert(rows(200, task="common"), NOW)
        claimed = await store.claim("n", NOW + 10 * S, 3, NOW, 60 * S)
        held_common = sorted((c.id for c in claimed if c.task == "common"), reverse=True)
        assert held_common
        seen: list[str] = []
        conn = store._conn
        assert conn is not None
        await store._worker.call(lambda: conn.set_trace_callback(seen.append))  # type: ignore[union-attr]
        assert [i.id for i in await store.list(task="rare")] == rare[::-1]
        assert [i.id for i in await store.list(task="rare", limit=2, before_id=rare[2])] == [
            rare[1],
            rare[0],
        ]
        by_task = [sql for sql in seen if "FROM instances" in sql]
        held = await store.list(task="common", state=State.CLAIMED)  # 2 rows: their index
        assert [i.id for i in held] == held_common
        seen.clear()
        assert await store.list(task="nobody") == []
        assert await store.list(task="rare", state=State.FAILED) == []
        assert not [sql for sql in seen if "FROM instances" in sql]
        await store._worker.call(lambda: conn.set_trace_callback(None))  # type: ignore[union-attr]
    finally:
        await store.aclose()
    with sqlite3.connect(db) as c:
        for sql in by_task:
            plan = " | ".join(str(r[-1]) for r in c.execute("EXPLAIN QUERY PLAN " + sql))
            assert "USING INDEX ix_instances_task (task=? AND rowid<?)" in plan, plan
            assert "TEMP B-TREE" not in plan, plan


# -- the same answers as the memory store --------------------------------------------------


class _Workload:
    """Random operations on a few instances, several owners, and a moving clock."""

    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
        self.now = NOW
        self.held: dict[str, list[Instance]] = {"a": [], "b": []}

    def op(self) -> tuple[str, tuple[object, ...]]:  # noqa: PLR0911 - one branch per operation
        r = self.rnd
        self.now += r.choice([0, 1, S, 30 * S])
        owner = r.choice(["a", "b"])
        kind = r.choices(
            ["insert", "claim", "start", "finish", "release", "renew", "abort", "recover"],
            [4, 4, 2, 5, 1, 1, 2, 0.3],
        )[0]
        if kind == "insert":
            new = [
                NewRow(
                    task=r.choice(["x", "y"]),
                    run_at_us=self.now + r.randrange(-5, 60) * S,
                    params=b"p",
                    dedup_key=r.choice([None, None, f"k{r.randrange(8)}"]),
                    schedule_id=r.choice([None, "s"]),
                    fire_at_us=NOW + r.randrange(8),
                    state=r.choice([State.PENDING] * 5 + [State.MISSED]),
                )
                for _ in range(r.randrange(1, 5))
            ]
            return "insert", (new, self.now)
        if kind == "claim":
            due = self.now + r.randrange(0, 60) * S
            return "claim", (owner, due, r.randrange(0, 4), self.now, r.choice([1, 10 * S, 60 * S]))
        if kind == "release":
            return "release", (owner, self.now, self._some_ids(owner))
        if kind == "renew":
            return "renew", (owner, self.now, r.choice([S, 60 * S]))
        if kind == "recover":
            return "recover", (self.now,)
        if kind == "abort":
            return "request_abort", (r.randrange(1, 30), self.now)
        held = self.held[owner] or self.held["a" if owner == "b" else "b"]
        picks = r.sample(held, min(len(held), r.randrange(1, 4))) if held else []
        if kind == "start":
            return "start", (
                owner,
                [(i.id, (i.claim_token or 0) + r.choice([0, 0, 1])) for i in picks],
                self.now,
            )
        return "finish", (owner, [self._finish(i) for i in picks], self.now)

    def _some_ids(self, owner: str) -> list[int] | None:
        if self.rnd.random() < 0.5:
            return None
        return [i.id for i in self.held[owner][:2]] + [self.rnd.randrange(1, 30)]

    def _finish(self, inst: Instance) -> Finish:
        r = self.rnd
        state = r.choice(
            [State.SUCCEEDED, State.FAILED, State.ABORTED, State.MISSED, State.PENDING]
        )
        return Finish(
            id=inst.id,
            claim_token=(inst.claim_token or 0) + r.choice([0, 0, 0, 1]),
            state=state,
            attempts=inst.attempts + 1,
            error=r.choice([None, "boom"]),
            run_at_us=r.choice([None, self.now + S]) if state is State.PENDING else None,
            started_us=r.choice([None, self.now - 1]),
            result=r.choice([None, "ok"]),
        )

    def saw(self, name: str, result: object) -> None:
        if name == "claim":
            assert isinstance(result, list)
            for inst in result:
                for held in self.held.values():
                    held[:] = [i for i in held if i.id != inst.id]
                self.held[inst.owner or ""].append(inst)


@pytest.mark.parametrize("seed", range(12))
async def test_same_answers_as_the_memory_store(db: Path, seed: int) -> None:
    memory, sqlite = MemoryStore(), SQLiteStore(db)
    await memory.open(node_id="n")
    await sqlite.open(node_id="n")
    work = _Workload(seed)
    try:
        for step in range(250):
            name, args = work.op()
            expected = await getattr(memory, name)(*args)
            got = await getattr(sqlite, name)(*args)
            assert got == expected, f"step {step}: {name}{args}"
            work.saw(name, got)
        for state in [None, *State]:
            assert await sqlite.list(state=state, limit=10_000) == await memory.list(
                state=state, limit=10_000
            )
            for task in ("x", "y", None):
                assert await sqlite.count(state=state, task=task) == await memory.count(
                    state=state, task=task
                )
        assert await sqlite.count_by_state() == await memory.count_by_state()
        assert await sqlite.next_pending_at() == await memory.next_pending_at()
        for iid in range(1, 40):
            assert await sqlite.history(iid) == await memory.history(iid)
        for owner in ("a", "b"):
            assert await sqlite.abort_requests(owner) == await memory.abort_requests(owner)
    finally:
        await sqlite.aclose()
        await memory.aclose()
    # the maintained counts agree with the rows themselves
    with sqlite3.connect(db) as conn:
        kept = conn.execute("SELECT task, state, n FROM counts WHERE n != 0 ORDER BY 1, 2")
        real = conn.execute(
            "SELECT task, state, count(*) FROM instances GROUP BY task, state ORDER BY 1, 2"
        )
        assert kept.fetchall() == real.fetchall()
