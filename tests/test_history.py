"""Run history (every attempt, readable by ``scheduler.history`` and ``tickwork show``) and
retention (``open_scheduler(retention=...)``: the janitor prunes in small batches)."""

from __future__ import annotations

import itertools
import json
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

import tickwork
from tests.support.cli import tw
from tests.support.faults import FaultyStore
from tests.support.helpers import settle, wait_until
from tickwork import State
from tickwork.actors import janitor as janitor_mod
from tickwork.errors import InvalidArgument
from tickwork.model import Attempt, Finish, NewRow
from tickwork.stores.sqlite._schema import MIGRATIONS, SCHEMA_VERSION
from tickwork.testing import VirtualClock

if TYPE_CHECKING:
    from pathlib import Path

S = 1_000_000


class Flaky(tickwork.Task):
    """Fails twice with a long message, then returns a big result; each run takes 2 s."""

    name = "flaky"
    max_attempts = 3
    backoff_base = timedelta(seconds=1)
    backoff_cap = timedelta(seconds=1)

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, params: bytes) -> Any:
        self.runs += 1
        await trio.sleep(2)
        if self.runs < 3:
            raise ConnectionError("refused " + "x" * 5_000)
        return {"rows": list(range(1_000))}


@pytest.fixture(params=["memory", "sqlite"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def trio_clock(kind: str) -> trio.testing.MockClock:
    # no virtual-time jump while a SQLite call is in flight on the store's thread
    return trio.testing.MockClock(autojump_threshold=0 if kind == "memory" else 0.01)


def _store(kind: str, tmp_path: Path) -> tickwork.Store:
    if kind == "memory":
        return tickwork.MemoryStore()
    return tickwork.SQLiteStore(tmp_path / "history.db")


QUIET: dict[str, Any] = {"poll_interval": timedelta(minutes=10), "lease": timedelta(hours=1)}


async def test_every_attempt_is_recorded(trio_clock, kind, tmp_path):
    clock = VirtualClock()
    async with tickwork.open_scheduler(
        _store(kind, tmp_path), tasks=[Flaky()], clock=clock, **QUIET
    ) as sched:
        iid = await sched.schedule("flaky", at=clock.now())
        await wait_until(lambda: sched.statistics().counts["SUCCEEDED"] == 1)
        history = await sched.history(iid)
        inst = await sched.get(iid)
        node = sched.node_id
    assert [(a.instance_id, a.attempt, a.node) for a in history] == [
        (iid, 1, node),
        (iid, 2, node),
        (iid, 3, node),
    ]
    assert [a.state for a in history] == [State.FAILED, State.FAILED, State.SUCCEEDED]
    assert [a.duration for a in history] == [timedelta(seconds=2)] * 3
    for earlier, later in itertools.pairwise(history):
        assert earlier.finished_us <= later.started_us
    failed = history[0]
    assert failed.error_type == "ConnectionError"
    assert failed.error is not None
    assert failed.error.startswith("ConnectionError: refused xxx")
    assert len(failed.error) == 2_000  # bounded
    assert failed.result is None
    ok = history[2]
    assert (ok.error_type, ok.error) == (None, None)
    assert ok.result is not None
    assert ok.result.startswith("{'rows': [0, 1, 2")
    assert len(ok.result) == 500  # a bounded summary of the result
    assert ok.result.endswith("…")
    assert inst.attempts == 3


async def test_tickwork_show_prints_the_history(tmp_path: Path) -> None:
    db = tmp_path / "show.db"
    task = Flaky()
    task.runs = 2  # succeeds at once
    async with tickwork.open_scheduler(tickwork.SQLiteStore(db), tasks=[task]) as sched:
        iid = await sched.schedule("flaky", at=sched.now())
        with trio.fail_after(10):
            while not (await sched.get(iid)).state.terminal:
                await trio.sleep(0.05)
    doc = json.loads(tw(db, "show", str(iid), "--json").stdout)
    [attempt] = doc["history"]
    assert attempt["attempt"] == 1
    assert attempt["state"] == "SUCCEEDED"
    assert attempt["node"] == sched.node_id
    assert 2 <= attempt["duration"] < 3
    assert attempt["result"].startswith("{'rows': [0, 1")
    text = tw(db, "show", str(iid)).stdout
    assert "history:" in text
    assert "SUCCEEDED" in text.split("history:")[1]


# -- retention ------------------------------------------------------------------------------


class Quick(tickwork.Task):
    name = "quick"

    async def run(self, params: bytes) -> None:
        return None


async def test_retention_prunes_ended_instances_and_history_in_batches(
    trio_clock, kind, tmp_path, monkeypatch
):
    monkeypatch.setattr(janitor_mod, "BATCH", 100)
    clock = VirtualClock()
    store = FaultyStore(_store(kind, tmp_path))
    limits: list[int] = []
    prune = store.prune

    async def spy(before_us: int, limit: int) -> int:
        limits.append(limit)
        return await prune(before_us, limit)

    store.prune = spy  # type: ignore[method-assign]
    async with tickwork.open_scheduler(
        store, tasks=[Quick()], clock=clock, retention=timedelta(days=1), **QUIET
    ) as sched:
        old = await sched.schedule_many(
            [tickwork.NewInstance("quick", clock.now()) for _ in range(250)]
        )
        far = await sched.schedule("quick", at=clock.now() + timedelta(days=5))
        await settle(sched)
        assert await sched.count(state=State.SUCCEEDED) == 250
        await trio.sleep(20 * 3600)  # not a day old yet: kept
        assert await sched.count() == 251
        await trio.sleep(6 * 3600)
        fresh = await sched.schedule("quick", at=clock.now())
        await wait_until(lambda: sched.statistics().janitor.pruned >= 500, step=60)  # type: ignore[union-attr]
        await settle(sched)
        stats = sched.statistics().janitor
        assert stats is not None
        assert stats.retention == 86_400
        assert await sched.count() == 2  # the pending far one, and the fresh one
        assert (await sched.get(far)).state is State.PENDING
        assert (await sched.get(fresh)).state is State.SUCCEEDED
        assert await sched.history(old[0]) == []
        assert await sched.history(fresh) != []
        with pytest.raises(tickwork.NotFound):
            await sched.get(old[0])
        assert await sched.count(state=State.SUCCEEDED) == 1
    # 250 instances + 250 history rows, at most 100 of each per call
    assert stats.pruned == 500
    assert set(limits) == {100}
    assert store.calls["prune"] >= 4


async def test_without_retention_nothing_is_pruned(autojump_clock):
    clock = VirtualClock()
    store = FaultyStore(tickwork.MemoryStore())
    async with tickwork.open_scheduler(store, tasks=[Quick()], clock=clock, **QUIET) as sched:
        await sched.schedule("quick", at=clock.now())
        await trio.sleep(40 * 86_400)
        assert await sched.count(state=State.SUCCEEDED) == 1
        assert sched.statistics().janitor is None
    assert store.calls["prune"] == 0


@pytest.mark.parametrize("bad", [timedelta(0), timedelta(days=-1), 30])
async def test_retention_must_be_a_positive_timedelta(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="retention"):
        async with tickwork.open_scheduler(tickwork.MemoryStore(), retention=bad):  # type: ignore[arg-type]
            pass


async def test_a_version_1_sqlite_database_is_migrated_for_retention(tmp_path: Path) -> None:
    db = tmp_path / "v1.db"
    with sqlite3.connect(db, isolation_level=None) as conn:
        conn.executescript(MIGRATIONS[0])
        conn.execute("PRAGMA application_id = 0x7469636B")
        conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO tickwork_meta VALUES ('schema_version', 1)")
        conn.execute(
            "INSERT INTO instances (id, task, run_at, params, state, created, updated) "
            "VALUES (1, 't', 0, x'', 3, 0, 5)"
        )
        conn.execute("INSERT INTO counts VALUES ('t', 3, 1)")
        conn.execute(
            "INSERT INTO history (instance_id, attempt, started, finished, state) "
            "VALUES (1, 1, 0, 5, 3)"
        )
    conn.close()
    store = tickwork.SQLiteStore(db)
    await store.open()
    try:
        assert await store.count() == 1
        assert await store.prune(10, 100) == 2
        assert await store.count() == 0
    finally:
        await store.aclose()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    conn.close()
    assert {"ix_instances_ended_at", "ix_history_finished"} <= names


def test_tickwork_run_retention_prunes_old_rows(tmp_path: Path) -> None:
    db = tmp_path / "run.db"

    async def seed() -> None:
        from tickwork.model import NewRow, to_us

        store = tickwork.SQLiteStore(db)
        await store.open()
        now = to_us(datetime.now(UTC))
        old = now - 3 * 86_400 * S
        await store.insert([NewRow("bash", old, b"", state=State.SUCCEEDED)], old)
        await store.insert([NewRow("bash", now, b"", state=State.SUCCEEDED)], now)
        await store.aclose()

    trio.run(seed)
    node = subprocess.Popen(
        [sys.executable, "-m", "tickwork", "run", "--db", str(db), "--retention", "1d"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while _query(db, "SELECT count(*) FROM instances") != [(1,)]:
            assert time.monotonic() < deadline, "not pruned"
            time.sleep(0.1)
    finally:
        node.send_signal(signal.SIGTERM)
        assert node.wait(10) == 0
    assert _query(db, "SELECT id FROM instances") == [(2,)]


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


async def test_history_reads_attempts_kept_in_rows_and_in_history_after_a_migration(
    tmp_path: Path,
) -> None:
    """Schema 5 keeps an ended instance's last attempt in its row; a version 4 file has it
    in ``history``. After the migration both kinds read the same, each attempt once."""
    db = tmp_path / "v4.db"
    with sqlite3.connect(db, isolation_level=None) as conn:
        for script in MIGRATIONS[:4]:
            conn.executescript(script)
        conn.execute("PRAGMA application_id = 0x7469636B")
        conn.execute("PRAGMA user_version = 4")
        conn.execute("INSERT INTO tickwork_meta VALUES ('schema_version', 4)")
        conn.execute("UPDATE tickwork_meta SET value = 1 WHERE key = 'last_id'")
        conn.execute(
            "INSERT INTO instances (id, task, run_at, params, state, attempts, owner, "
            "created, updated) VALUES (1, 't', 0, x'', 3, 1, 'old-node', 0, 5)"
        )
        conn.execute("INSERT INTO counts VALUES ('t', 3, 1)")
        conn.execute(
            "INSERT INTO history (instance_id, attempt, node, started, finished, state, result) "
            "VALUES (1, 1, 'old-node', 1, 5, 3, 'r1')"
        )
    conn.close()
    store = tickwork.SQLiteStore(db)
    await store.open()
    try:
        assert await store.history(1) == [
            Attempt(1, 1, "old-node", 1, 5, State.SUCCEEDED, None, None, "r1")
        ]
        # a new instance: a retried attempt (history row), then the last one (its row)
        (new,) = await store.insert([NewRow(task="t", run_at_us=10, params=b"")], 10)
        (c,) = await store.claim("n", 10, 10, 10, 60 * S)
        fail = Finish(
            id=new, claim_token=c.claim_token or 0, state=State.PENDING, attempts=1,
            error="boom", error_type="ValueError", started_us=11, finished_us=12, run_at_us=20,
        )  # fmt: skip
        assert await store.finish("n", [fail], 12) == [True]
        (c,) = await store.claim("n", 20, 10, 20, 60 * S)
        ok = Finish(
            id=new, claim_token=c.claim_token or 0, state=State.SUCCEEDED, attempts=2,
            started_us=21, finished_us=22, result="r2",
        )  # fmt: skip
        assert await store.finish("n", [ok], 22) == [True]
        assert await store.history(new) == [
            Attempt(new, 1, "n", 11, 12, State.FAILED, "ValueError", "boom", None),
            Attempt(new, 2, "n", 21, 22, State.SUCCEEDED, None, None, "r2"),
        ]
        # pruned with its row: both instances and their three attempts
        assert await store.prune(100, 100) == 5
        assert await store.history(1) == await store.history(new) == []
    finally:
        await store.aclose()
