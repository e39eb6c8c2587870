"""Delivery modes across a crash: at-least-once runs again, at-most-once never does.

A crash is the process dying without a graceful shutdown: the FaultyStore refuses every
call from that moment on (nothing more reaches the database) and the node's task tree is
cancelled. The store is then opened again by a new node, as after a restart. SQLite gets
a real ``kill -9`` too: ``tests/test_kill9.py`` and ``tests/test_kill9_at_most_once.py``.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

import tickwork
from tests.support.faults import FaultyStore, Node
from tests.support.helpers import wait_until
from tickwork import State
from tickwork.stores.base import INTERRUPTED
from tickwork.testing import VirtualClock

if TYPE_CHECKING:
    from pathlib import Path


#: few wake-ups of an idle node, so that virtual time moves in few, long jumps
QUIET: dict[str, Any] = {"lease": timedelta(minutes=30), "poll_interval": timedelta(minutes=5)}


class AtLeastOnce(tickwork.Task):
    name = "alo"

    def __init__(self, store: FaultyStore) -> None:
        self.store = store
        self.runs: Counter[bytes] = Counter()
        #: the durable state of the instance seen from inside each run
        self.seen: list[State] = []
        self.sleep = 60.0
        self.look = True

    async def run(self, params: bytes) -> Any:
        self.runs[params] += 1
        if self.look:
            inst = await self.store.inner.get(int(params))
            assert inst is not None
            self.seen.append(inst.state)
        await trio.sleep(self.sleep)


class AtMostOnce(AtLeastOnce):
    name = "amo"
    delivery = "at_most_once"


@pytest.fixture(params=["memory", "sqlite"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(kind: str, tmp_path: Path) -> FaultyStore:
    if kind == "memory":
        return FaultyStore(tickwork.MemoryStore())
    return FaultyStore(tickwork.SQLiteStore(tmp_path / "crash.db"))


@pytest.fixture
def trio_clock(kind: str) -> trio.testing.MockClock:
    """Virtual time. It must not jump while a SQLite call is in flight on the store's
    thread (trio sees every task blocked then): jump only after a real pause."""
    return trio.testing.MockClock(autojump_threshold=0 if kind == "memory" else 0.01)


async def _schedule(sched: tickwork.Scheduler, task: str, at: Any) -> int:
    """One instance whose params are its own id (so a run can look itself up)."""
    (iid,) = await sched.schedule_many([tickwork.NewInstance(task, at, b"")])
    return iid


def _holds(sched: tickwork.Scheduler, n: int) -> bool:
    return sched.statistics().in_memory == n


async def _peek(store: FaultyStore, iid: int) -> tickwork.Instance:
    await store.open()
    try:
        inst = await store.get(iid)
        assert inst is not None
        return inst
    finally:
        await store.aclose()


async def test_crash_while_running(trio_clock, store):
    got, _ = await _run_crash(store, running=True)
    alo_id, amo_id = got["ids"]
    # while running: at-most-once was RUNNING in the store before it started; at-least-once
    # CLAIMED as it starts, RUNNING once the Recorder's next batch recorded it
    assert sorted(got["seen_first"]) == sorted([State.CLAIMED, State.RUNNING])
    alo = got["crashed"][alo_id]  # left behind by the dead node
    assert (alo.state, alo.started_us) == (State.RUNNING, alo.run_at_us)
    assert got["crashed"][amo_id].state is State.RUNNING
    # at-least-once: runs again and succeeds
    assert got["after"][alo_id].state is State.SUCCEEDED
    assert got["runs"]["alo"] == 2
    # at-most-once: FAILED "interrupted", never run again
    amo = got["after"][amo_id]
    assert (amo.state, amo.error, amo.attempts) == (State.FAILED, INTERRUPTED, 1)
    assert got["runs"]["amo"] == 1
    assert got["history"][amo_id] == []  # the interrupted run never reported back


async def test_crash_while_claimed_loses_nothing(trio_clock, store):
    got, _ = await _run_crash(store, running=False)
    alo_id, amo_id = got["ids"]
    # claimed into the dead node's window, not started: both recover and run once, on time
    assert got["crashed"][alo_id].state is State.CLAIMED
    assert got["crashed"][amo_id].state is State.CLAIMED
    assert got["after"][alo_id].state is State.SUCCEEDED
    assert got["after"][amo_id].state is State.SUCCEEDED
    assert got["runs"] == {"alo": 1, "amo": 1}
    for iid in got["ids"]:
        [attempt] = got["history"][iid]
        assert attempt.started_us == got["after"][iid].run_at_us


async def _run_crash(store: FaultyStore, *, running: bool) -> tuple[dict[str, Any], VirtualClock]:
    clock = VirtualClock()
    alo, amo = AtLeastOnce(store), AtMostOnce(store)
    opts = {"tasks": [alo, amo], "clock": clock, **QUIET}
    delay = timedelta(0) if running else timedelta(minutes=10)
    async with trio.open_nursery() as nursery:
        node = Node(store, **opts)
        sched = await node.start(nursery)
        at = clock.now() + delay
        ids = [await _own_id_instance(sched, store, "alo", at)]
        ids.append(await _own_id_instance(sched, store, "amo", at))
        if running:
            await wait_until(lambda: len(alo.seen) + len(amo.seen) == 2, step=0.001)
            await trio.sleep(1)  # the Recorder's next batch (the runs take 60 s)
        else:
            await wait_until(lambda: sched.statistics().in_memory == 2, step=0.001)
        seen_first = list(alo.seen + amo.seen)
        await node.crash()
        crashed = {i: await _peek(store, i) for i in ids}
        sched = await node.start(nursery)
        await trio.sleep(delay.total_seconds() + 3 * 60)
        after = {i: await sched.get(i) for i in ids}
        history = {i: await sched.history(i) for i in ids}
        await node.stop()
    runs = {"alo": sum(alo.runs.values()), "amo": sum(amo.runs.values())}
    return {
        "ids": ids,
        "seen_first": seen_first,
        "crashed": crashed,
        "after": after,
        "history": history,
        "runs": runs,
    }, clock


async def _own_id_instance(
    sched: tickwork.Scheduler, store: FaultyStore, task: str, at: Any
) -> int:
    """Schedule one instance whose params are its own id (the next id the store gives)."""
    last = max((i.id for i in await sched.list(limit=1)), default=0)
    iid = await sched.schedule(task, at=at, params=str(last + 1).encode())
    assert iid == last + 1
    return iid


async def test_at_most_once_never_runs_twice_even_if_the_store_refuses_start(trio_clock, store):
    # the crash lands on the durable RUNNING write itself: before it commits, the task
    # never starts; after it commits (the reply lost), it fails as interrupted
    for apply in (False, True):
        clock = VirtualClock()
        amo = AtMostOnce(store)
        amo.sleep = 1
        async with trio.open_nursery() as nursery:
            node = Node(store, tasks=[amo], clock=clock, **QUIET)
            sched = await node.start(nursery)
            iid = await _own_id_instance(sched, store, "amo", clock.now() + timedelta(seconds=5))
            await wait_until(partial(_holds, sched, 1), step=0.001)
            store.arm_crash(1, apply=apply, method="start")
            await node.wait_crashed()
            assert store.calls["start"] >= 1
            sched = await node.start(nursery)
            await trio.sleep(60)
            inst = await sched.get(iid)
            await node.stop()
        if apply:
            assert (inst.state, inst.error) == (State.FAILED, INTERRUPTED)
            assert sum(amo.runs.values()) == 0
        else:
            assert inst.state is State.SUCCEEDED
            assert sum(amo.runs.values()) == 1


async def test_a_crash_in_a_burst_fails_only_the_at_most_once_runs_in_progress(trio_clock, store):
    clock = VirtualClock()
    amo = AtMostOnce(store)
    amo.sleep = 10
    amo.look = False
    async with trio.open_nursery() as nursery:
        node = Node(store, tasks=[amo], clock=clock, max_concurrency=5, **QUIET)
        sched = await node.start(nursery)
        ids = await sched.schedule_many(
            [tickwork.NewInstance("amo", clock.now(), str(i).encode()) for i in range(60)]
        )
        await wait_until(lambda: sum(amo.runs.values()) >= 5, step=0.001, timeout=60)
        assert sum(amo.runs.values()) == 5
        await trio.sleep(1)
        # durable starts are grouped: far fewer store calls than runs
        assert store.calls["start"] < 5
        await node.crash()
        sched = await node.start(nursery)
        await trio.sleep(10 * 60)
        states = Counter([(await sched.get(i)).state for i in ids])
        await node.stop()
    assert states == {State.FAILED: 5, State.SUCCEEDED: 55}
    assert max(amo.runs.values()) == 1
    assert len(amo.runs) == 60
