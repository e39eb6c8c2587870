"""kill -9 with at-most-once tasks: nothing runs twice, what was running fails as interrupted.

Real processes and the real clock, as ``test_kill9.py``. An at-most-once instance is
RUNNING in the database before its task starts; after the kill, the next node on the file
turns each such row into FAILED "interrupted" instead of running it again. Instances that
were only claimed run normally.
"""

from __future__ import annotations

import signal
import sqlite3
import textwrap
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import trio

import tickwork
from tests.support.node_process import CONCURRENCY, runs, start_node, states, wait
from tickwork.stores.base import INTERRUPTED

if TYPE_CHECKING:
    from pathlib import Path

TASKS = textwrap.dedent(
    """
    import os, trio, tickwork

    class Slow(tickwork.Task):
        name = "slow"
        delivery = "at_most_once"

        async def run(self, params: bytes) -> None:
            with open(os.environ["RUNS_FILE"], "a") as f:
                f.write(f"{int(params)} {os.getpid()}\\n")
            await trio.sleep(0.3)
            with open(os.environ["RUNS_FILE"] + ".ended", "a") as f:
                f.write(f"{int(params)}\\n")

    TASKS = [Slow()]
    """
)

N = 160
S = tickwork.State


def test_killed_at_most_once_node_never_runs_anything_twice(tmp_path: Path) -> None:
    (tmp_path / "killtasks.py").write_text(TASKS)
    db = tmp_path / "kill.db"

    async def seed() -> None:
        store = tickwork.SQLiteStore(db)
        await store.open()
        from tickwork.model import NewRow, to_us

        now = to_us(datetime.now(UTC))
        await store.insert([NewRow("slow", now, str(i).encode()) for i in range(N)], now)
        await store.aclose()

    trio.run(seed)
    node = start_node(db, tmp_path)
    try:
        wait(lambda: sum(runs(tmp_path).values()) >= 20, 20)
    finally:
        node.send_signal(signal.SIGKILL)
        node.wait(10)
    ran_before = runs(tmp_path)
    at_kill = states(db)
    assert at_kill[S.RUNNING.value] > 0, "nothing was running at the kill: nothing tested"
    # RUNNING is written just before each run, not for a whole due batch: the rows RUNNING
    # at the kill are the runs that had started and were not recorded yet (in progress, at
    # most one per worker, or ended with their outcome waiting for its commit), and at most
    # one per worker whose start was written but whose task had not begun yet
    ended_file = tmp_path / "runs.ended"
    ended = {int(line) for line in ended_file.read_text().split()} if ended_file.exists() else set()
    with sqlite3.connect(db) as conn:
        running = {int(p) for (p,) in conn.execute(
            "SELECT params FROM instances WHERE state = ?", (S.RUNNING.value,)
        )}  # fmt: skip
    assert len(running - set(ran_before)) <= CONCURRENCY
    assert len(set(ran_before) - ended) <= CONCURRENCY
    assert running >= set(ran_before) - ended

    node = start_node(db, tmp_path)
    try:
        wait(lambda: set(states(db)) <= {S.SUCCEEDED.value, S.FAILED.value}, 30)
    finally:
        node.send_signal(signal.SIGTERM)
        assert node.wait(20) == 0
    final = runs(tmp_path)
    assert max(final.values()) == 1, "an at-most-once instance ran twice"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT params, state, error FROM instances").fetchall()
    by_state: Counter[int] = Counter(state for _, state, _ in rows)
    assert by_state[S.FAILED.value] == at_kill[S.RUNNING.value]
    assert by_state[S.SUCCEEDED.value] == N - at_kill[S.RUNNING.value]
    for params, state, error in rows:
        key = int(params)
        if state == S.FAILED.value:
            assert error == INTERRUPTED
            assert key not in final or key in ran_before  # not run again by the new node
        else:
            assert final[key] == 1
    # the ones that were running at the kill ran once, and only then
    assert {int(p) for p, s, _ in rows if s == S.FAILED.value} & set(ran_before)
