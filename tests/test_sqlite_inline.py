"""Small SQLite store calls run on the trio thread (``INLINE_ROWS``, off by default; on
here): what must still hold.

A call on the trio thread never overtakes a call queued on the store's thread, never makes
the trio thread wait for another connection's write lock, and gives the same answers.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from tickwork.model import NewRow
from tickwork.stores import SQLiteStore
from tickwork.stores.sqlite import _store as sqlite_store
from tickwork.stores.sqlite._open import BUSY_TIMEOUT_MS
from tickwork.stores.sqlite._worker import Worker

NOW = 1_900_000_000_000_000


@pytest.fixture(autouse=True)
def inline_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store, "INLINE_ROWS", 256)


async def test_a_small_call_runs_on_the_trio_thread_when_the_store_thread_is_idle(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    await store.open(node_id="n1")
    try:
        seen: list[int] = []
        conn = store._conn
        assert conn is not None
        conn.set_trace_callback(lambda _sql: seen.append(threading.get_ident()))
        await store.insert([NewRow(task="t", run_at_us=NOW, params=b"")], NOW)
        big = [NewRow(task="t", run_at_us=NOW, params=b"") for _ in range(2_000)]
        assert len(big) > sqlite_store.INLINE_ROWS
        here = set(seen)
        seen.clear()
        await store.insert(big, NOW)
        conn.set_trace_callback(None)
        assert here == {threading.get_ident()}
        assert threading.get_ident() not in seen  # the big one went to the store thread
        assert await store.count() == 2_001
    finally:
        await store.aclose()


async def test_a_small_call_never_overtakes_one_queued_on_the_thread() -> None:
    worker = Worker("test-worker")
    order: list[str] = []
    release = threading.Event()

    def slow() -> None:
        release.wait()
        order.append("queued first")

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.call, slow)
            await trio.testing.wait_all_tasks_blocked()
            assert not worker.idle
            nursery.start_soon(worker.run_here, lambda: order.append("small"))
            await trio.testing.wait_all_tasks_blocked()
            assert order == []  # it waits behind the queued call, on the thread
            release.set()
        assert order == ["queued first", "small"]
        assert worker.idle
        assert await worker.run_here(threading.get_ident) == threading.get_ident()
    finally:
        worker.stop()


async def test_a_small_call_does_not_hold_the_trio_thread_while_another_connection_writes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    store = SQLiteStore(path)
    await store.open(node_id="n1")
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")  # a client (the CLI, say) holds the write lock
        ids: list[int] = []
        ticks = 0

        async def insert_one() -> None:
            ids.extend(await store.insert([NewRow(task="t", run_at_us=NOW, params=b"")], NOW))

        t0 = time.monotonic()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(insert_one)
            # The insert is refused at once on the trio thread and handed to the store
            # thread, which waits for the lock: the trio thread keeps running tasks
            # (it would otherwise sit in SQLite's busy handler for the whole timeout).
            for _ in range(3):
                await trio.testing.wait_all_tasks_blocked()
                ticks += 1
            assert time.monotonic() - t0 < BUSY_TIMEOUT_MS / 1e3 / 2
            assert ids == []
            other.execute("COMMIT")
        assert ticks == 3
        assert len(ids) == 1
        assert await store.count() == 1
    finally:
        other.close()
        await store.aclose()
