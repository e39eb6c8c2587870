"""Graceful shutdown: leaving open_scheduler, and SIGTERM / SIGINT to ``tickwork run``.

The node stops claiming, lets running instances finish within ``shutdown_grace``, then
cancels the rest and gives them back (PENDING; FAILED "interrupted" for an at-most-once
run that had started). Nothing is half-recorded: after the node is gone, no instance is
CLAIMED or RUNNING. A second SIGINT (after the 1 s in which a repeat is the same request)
stops at once, still without losing anything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import trio

import tickwork
from tests.support.faults import FaultyStore
from tests.support.helpers import Recording, wait_until
from tests.support.node_process import runs, states, wait
from tickwork import State
from tickwork.stores.base import INTERRUPTED
from tickwork.testing import VirtualClock

if TYPE_CHECKING:
    from pathlib import Path

S = 1_000_000


class Sleeps(tickwork.Task):
    """Sleeps ``int(params)`` seconds."""

    name = "sleeps"

    def __init__(self) -> None:
        self.started: list[int] = []
        self.finished: list[int] = []

    async def run(self, params: bytes) -> Any:
        self.started.append(int(params))
        await trio.sleep(int(params))
        self.finished.append(int(params))


class SleepsOnce(Sleeps):
    name = "sleeps-once"
    delivery = "at_most_once"


async def test_leaving_the_block_drains_within_the_grace_and_gives_back_the_rest(
    autojump_clock,
):
    clock = VirtualClock()
    task = Sleeps()
    store = tickwork.MemoryStore()
    now = clock.now()
    async with tickwork.open_scheduler(
        store, tasks=[task], clock=clock, shutdown_grace=timedelta(seconds=10)
    ) as sched:
        quick, slow, later = await sched.schedule_many(
            [
                tickwork.NewInstance("sleeps", now, b"5"),
                tickwork.NewInstance("sleeps", now, b"60"),
                tickwork.NewInstance("sleeps", now + timedelta(minutes=5), b"1"),
            ]
        )
        await wait_until(lambda: len(task.started) == 2, step=0.001)
        leaving = trio.current_time()
    took = trio.current_time() - leaving
    assert 10 <= took < 10.01  # the whole grace: the slow one did not finish
    await store.open()
    got = {i: await store.get(i) for i in (quick, slow, later)}
    history = await store.history(slow)
    by_state = await store.count_by_state()
    await store.aclose()
    assert got[quick].state is State.SUCCEEDED  # finished within the grace
    slow_inst = got[slow]
    assert (slow_inst.state, slow_inst.attempts, slow_inst.owner) == (State.PENDING, 0, None)
    assert slow_inst.run_at_us == got[quick].run_at_us  # due as before: it runs again first
    [attempt] = history  # the interrupted attempt is in the history
    assert (attempt.state, attempt.error_type) == (State.FAILED, "Interrupted")
    assert timedelta(seconds=10) <= attempt.duration < timedelta(seconds=10.01)
    assert got[later].state is State.PENDING  # claimed into the window, given back
    assert by_state[State.CLAIMED] == by_state[State.RUNNING] == 0
    assert task.finished == [5]


async def test_a_node_that_finishes_within_the_grace_leaves_at_once(autojump_clock):
    clock = VirtualClock()
    task = Sleeps()
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task], clock=clock, shutdown_grace=timedelta(minutes=5)
    ) as sched:
        iid = await sched.schedule("sleeps", at=clock.now(), params=b"3")
        await wait_until(lambda: task.started, step=0.001)
        leaving = trio.current_time()
    assert 2.99 <= trio.current_time() - leaving <= 3
    assert task.finished == [3]
    del iid


async def test_shutdown_stops_claiming_and_starts_nothing_new(autojump_clock):
    clock = VirtualClock()
    task = Sleeps()
    store = FaultyStore(tickwork.MemoryStore())
    now = clock.now()
    async with tickwork.open_scheduler(
        store, tasks=[task], clock=clock, shutdown_grace=timedelta(seconds=30)
    ) as sched:
        await sched.schedule("sleeps", at=now, params=b"20")
        # due during the grace: already claimed, must not start
        await sched.schedule("sleeps", at=now + timedelta(seconds=10), params=b"1")
        await wait_until(lambda: task.started, step=0.001)
        claims = store.calls["claim"]
    assert store.calls["claim"] == claims
    assert task.started == [20]
    assert task.finished == [20]


async def test_at_most_once_shutdown_fails_only_what_had_started(autojump_clock):
    clock = VirtualClock()
    task = SleepsOnce()
    store = tickwork.MemoryStore()
    async with tickwork.open_scheduler(
        store,
        tasks=[task],
        clock=clock,
        max_concurrency=1,
        shutdown_grace=timedelta(seconds=1),
    ) as sched:
        ids = await sched.schedule_many(
            [tickwork.NewInstance("sleeps-once", clock.now(), b"60") for _ in range(3)]
        )
        await wait_until(lambda: task.started, step=0.001)
    await store.open()
    got = [await store.get(i) for i in ids]
    await store.aclose()
    assert [(i.state, i.error) for i in got if i is not None] == [
        (State.FAILED, INTERRUPTED),  # had started: at most once, so never again
        (State.PENDING, None),  # waiting for a worker: never started, runs later
        (State.PENDING, None),
    ]


async def test_a_retrying_instance_keeps_its_error_when_given_back(autojump_clock):
    clock = VirtualClock()
    task = Recording(clock)
    task.fail = ConnectionError("down")

    class Retried(Recording):
        max_attempts = 3
        backoff_base = timedelta(seconds=1)
        backoff_cap = timedelta(seconds=1)

    retried = Retried(clock, "retried")
    retried.fail = ConnectionError("down")
    store = tickwork.MemoryStore()
    async with tickwork.open_scheduler(store, tasks=[retried], clock=clock) as sched:
        iid = await sched.schedule("retried", at=clock.now())
        await wait_until(lambda: sched.statistics().recorder.retried == 1, step=0.001)
    await store.open()
    inst = await store.get(iid)
    await store.aclose()
    assert inst is not None
    assert (inst.state, inst.attempts, inst.error) == (State.PENDING, 1, "ConnectionError: down")


# -- tickwork run: real signals, a real SQLite file -----------------------------------------

BURST_TASKS = textwrap.dedent(
    """
    import os, trio, tickwork

    class Burst(tickwork.Task):
        name = "burst"

        def __init__(self):
            self.log = open(os.environ["RUNS_FILE"], "a", buffering=1)

        async def run(self, params: bytes) -> None:
            await trio.sleep(float(os.environ.get("TASK_SLEEP", "0.01")))
            self.log.write(params.decode() + "\\n")

    TASKS = [Burst()]
    """
)


TASKS = "bursttasks:TASKS"


def _node(db: Path, tmp_path: Path, *args: str, sleep: str = "0.01") -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "RUNS_FILE": str(tmp_path / "runs"),
        "TASK_SLEEP": sleep,
    }
    with (tmp_path / "node.log").open("ab") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, "-m", "tickwork", "run", "--db", str(db), "--tasks", TASKS, *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def _seed(db: Path, n: int) -> None:
    async def seed() -> None:
        store = tickwork.SQLiteStore(db)
        await store.open()
        from tickwork.model import NewRow, to_us

        now = to_us(datetime.now(UTC))
        await store.insert([NewRow("burst", now, str(i).encode()) for i in range(n)], now)
        await store.aclose()

    trio.run(seed)


def _count(db: Path, state: State) -> int:
    return states(db).get(state.value, 0)


def test_sigterm_during_a_burst_loses_nothing_and_a_restart_finishes(tmp_path: Path) -> None:
    n = 20_000
    (tmp_path / "bursttasks.py").write_text(BURST_TASKS)
    db = tmp_path / "burst.db"
    _seed(db, n)
    node = _node(db, tmp_path, "--max-concurrency", "200", "--max-in-memory", "5000")
    try:
        wait(lambda: _count(db, State.SUCCEEDED) >= 2_000, 20)
        node.send_signal(signal.SIGTERM)
        assert node.wait(20) == 0
    finally:
        node.kill()
    after_stop = states(db)
    done = after_stop.get(State.SUCCEEDED.value, 0)
    assert done < n, "the burst was over before the signal: nothing tested"
    # nothing half-recorded: every instance is SUCCEEDED or back to PENDING
    assert after_stop == Counter({State.SUCCEEDED.value: done, State.PENDING.value: n - done}), (
        after_stop
    )
    assert sum(runs(tmp_path).values()) == done  # the grace let every run finish

    node = _node(db, tmp_path, "--max-concurrency", "200", "--max-in-memory", "5000")
    try:
        wait(lambda: _count(db, State.SUCCEEDED) == n, 30)
        node.send_signal(signal.SIGTERM)
        assert node.wait(20) == 0
    finally:
        node.kill()
    final = runs(tmp_path)
    assert set(final) == set(range(n))
    assert max(final.values()) == 1  # a graceful stop repeats nothing


def test_a_second_sigint_stops_at_once_and_loses_nothing(tmp_path: Path) -> None:
    n = 40
    (tmp_path / "bursttasks.py").write_text(BURST_TASKS)
    db = tmp_path / "burst.db"
    _seed(db, n)
    node = _node(db, tmp_path, "--max-concurrency", "10", "--shutdown-grace", "60s", sleep="3600")
    try:
        # the first runs are under way, and shown RUNNING (at-least-once: the Recorder's batch)
        wait(lambda: (_count(db, State.CLAIMED), _count(db, State.RUNNING)) == (n - 10, 10), 20)
        node.send_signal(signal.SIGINT)
        # past the window in which the same signal is the same request (docs/operations.md)
        time.sleep(1.2)
        assert node.poll() is None  # the first SIGINT waits for the runs (60 s grace)
        stopping = time.monotonic()
        node.send_signal(signal.SIGINT)
        assert node.wait(10) == 130
        assert time.monotonic() - stopping < 5
    finally:
        node.kill()
    stderr = (tmp_path / "node.log").read_text()
    assert "stopping at once" in stderr
    # every claim was given back; nothing ran to an outcome, nothing was lost
    assert states(db) == Counter({State.PENDING.value: n}), stderr
