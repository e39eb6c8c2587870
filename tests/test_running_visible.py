"""An at-least-once run in progress is RUNNING in the store (issue #11 item 11).

The Executor reports the at-least-once runs in progress with each flush; the Recorder
writes their RUNNING in its next group commit, except for runs whose outcome is in the
same batch. So a slow run shows RUNNING (with its start time) to ``list``/``count`` and
every reader of the store, and a burst of quick runs writes no RUNNING at all: no commit
is added per run.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

import tickwork
from tests.support.helpers import Recording, settle
from tickwork import State
from tickwork.actors.messages import Kind, Outcome, Outcomes, PullerMsg, RecorderMsg, RoomFreed
from tickwork.actors.recorder import Recorder
from tickwork.model import NewRow
from tickwork.testing import VirtualClock

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from tickwork.model import Finish


class _Spy:
    """Counts, per call of ``finish``, the states it was asked to write."""

    def __init__(self) -> None:
        self.finishes: list[Counter[State]] = []

    def running_written(self) -> int:
        return sum(c[State.RUNNING] for c in self.finishes)


class SpyMemoryStore(tickwork.MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.spy = _Spy()

    async def finish(self, owner: str, finishes: Sequence[Finish], now_us: int) -> list[bool]:
        self.spy.finishes.append(Counter(f.state for f in finishes))
        return await super().finish(owner, finishes, now_us)


class SpySQLiteStore(tickwork.SQLiteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.spy = _Spy()

    async def finish(self, owner: str, finishes: Sequence[Finish], now_us: int) -> list[bool]:
        self.spy.finishes.append(Counter(f.state for f in finishes))
        return await super().finish(owner, finishes, now_us)


Spied = SpyMemoryStore | SpySQLiteStore


@pytest.fixture(params=["memory", "sqlite"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(kind: str, tmp_path: Path) -> Spied:
    return SpyMemoryStore() if kind == "memory" else SpySQLiteStore(tmp_path / "running.db")


@pytest.fixture
def trio_clock(kind: str) -> trio.testing.MockClock:
    # SQLite calls run on a thread: jump virtual time only after a real pause
    return trio.testing.MockClock(autojump_threshold=0 if kind == "memory" else 0.01)


async def _until_running(sched: tickwork.Scheduler, iid: int) -> None:
    """Wait (virtual time) for the store to say RUNNING."""
    with trio.fail_after(3600):
        while (await sched.get(iid)).state is not State.RUNNING:
            await trio.sleep(1)


class _Once(Recording):
    delivery = "at_most_once"


async def test_a_slow_at_least_once_run_is_running_with_its_start_time(trio_clock, store):
    clock = VirtualClock()
    slow, once = Recording(clock, "slow"), _Once(clock, "once")
    slow.sleep = once.sleep = timedelta(minutes=2)  # past the checks at 60 s
    async with tickwork.open_scheduler(store, tasks=[slow, once], clock=clock) as sched:
        at = clock.now() + timedelta(seconds=1)
        iid = await sched.schedule("slow", at=at)
        other = await sched.schedule("once", at=at)
        await trio.sleep(60)
        # at-most-once: written before the run; at-least-once: with the Recorder's batch
        assert {i.id for i in await sched.list(state=State.RUNNING)} == {iid, other}
        inst = await sched.get(iid)
        assert inst.state is State.RUNNING
        assert inst.started_us == slow.runs[0][1]
        assert inst.started_at is not None
        assert inst.started_at >= at
        assert await sched.count(state=State.RUNNING) == 2
        await trio.sleep(3 * 60)
        await settle(sched)
        done = await sched.get(iid)
        assert (done.state, done.started_us) == (State.SUCCEEDED, None)
        assert await sched.count(state=State.RUNNING) == 0
        [attempt] = await sched.history(iid)
        assert attempt.started_us == inst.started_us


async def test_runs_started_together_share_one_commit_and_quick_ones_write_none(trio_clock, store):
    clock = VirtualClock()
    quick, slow = Recording(clock, "quick"), Recording(clock, "slow")
    slow.sleep = timedelta(minutes=2)  # past the checks at 60 and 120 s
    async with tickwork.open_scheduler(store, tasks=[quick, slow], clock=clock) as sched:
        at = clock.now() + timedelta(seconds=1)
        await sched.schedule_many([tickwork.NewInstance("quick", at, b"") for _ in range(300)])
        await trio.sleep(60)
        assert await sched.count(state=State.SUCCEEDED) == 300
        assert store.spy.running_written() == 0  # quick runs: their outcome came first
        commits = len(store.spy.finishes)
        await sched.schedule_many([tickwork.NewInstance("slow", at, b"") for _ in range(50)])
        await trio.sleep(60)
        assert await sched.count(state=State.RUNNING) == 50
        assert store.spy.running_written() == 50
        assert len(store.spy.finishes) - commits <= 2  # not one commit per run
        await trio.sleep(3 * 60)
        await settle(sched)
        assert await sched.count(state=State.SUCCEEDED) == 350


async def test_runs_shorter_than_the_note_delay_write_no_running_while_others_flush(
    trio_clock, store
):
    # 20 runs of 10 ms (a hand-off waiting for its ack) while quick runs due every
    # millisecond flush outcomes around them: none of the 20 is ever noted; the 5 of
    # 100 ms beside them are
    clock = VirtualClock()
    quick, brief, longer = (
        Recording(clock, "quick"),
        Recording(clock, "brief"),
        Recording(clock, "longer"),
    )
    brief.sleep = timedelta(milliseconds=10)
    longer.sleep = timedelta(milliseconds=100)
    tasks = [quick, brief, longer]
    async with tickwork.open_scheduler(store, tasks=tasks, clock=clock) as sched:
        at = clock.now() + timedelta(seconds=1)
        await sched.schedule_many(
            [tickwork.NewInstance("brief", at, b"") for _ in range(20)]
            + [tickwork.NewInstance("longer", at, b"") for _ in range(5)]
            + [
                tickwork.NewInstance("quick", at + timedelta(milliseconds=ms), b"")
                for ms in range(1, 40)
            ]
        )
        await trio.sleep(60)
        await settle(sched)
        assert await sched.count(state=State.SUCCEEDED) == 64
        assert len(store.spy.finishes) > 2  # outcomes were flushed while the 20 ran
        assert store.spy.running_written() == 5


async def test_a_stop_sends_running_at_least_once_runs_back_to_pending(trio_clock, store):
    clock = VirtualClock()
    slow = Recording(clock, "slow")
    slow.sleep = timedelta(hours=1)
    async with tickwork.open_scheduler(
        store, tasks=[slow], clock=clock, shutdown_grace=timedelta(seconds=1)
    ) as sched:
        iid = await sched.schedule("slow", at=clock.now() + timedelta(seconds=1))
        await _until_running(sched, iid)
    await store.open()
    try:
        back = await store.get(iid)
    finally:
        await store.aclose()
    assert back is not None
    assert (back.state, back.attempts, back.started_us, back.owner) == (
        State.PENDING,
        0,
        None,
        None,
    )


# -- the Recorder alone ----------------------------------------------------------------------


async def test_the_recorder_skips_a_start_whose_outcome_is_in_the_same_batch(autojump_clock):
    clock = VirtualClock()
    store = SpyMemoryStore()
    await store.open(node_id="node")
    now = clock.now_us()
    await store.insert([NewRow("t", now, b"") for _ in range(2)], now)
    a, b = await store.claim("node", now, 10, now, 60_000_000)
    send, receive = trio.open_memory_channel[RecorderMsg](10)
    to_puller, from_recorder = trio.open_memory_channel[PullerMsg](10)
    recorder = Recorder(
        clock=clock,
        store=store,
        owner="node",
        tasks={"t": Recording(clock, "t")},
        receive=receive,
        to_puller=to_puller,
        max_batch=100,
        hook_concurrency=1,
    )
    # Both messages wait in the channel: the Recorder takes them as one batch.
    started = [Outcome(a, Kind.STARTED, started_us=now), Outcome(b, Kind.STARTED, started_us=now)]
    send.send_nowait(Outcomes(started))
    send.send_nowait(Outcomes([Outcome(a, Kind.OK, started_us=now, finished_us=now + 1)]))
    async with trio.open_nursery() as nursery:
        await nursery.start(recorder.run)
        await send.aclose()
    assert store.spy.finishes == [Counter({State.RUNNING: 1, State.SUCCEEDED: 1})]
    got: dict[int, Any] = {i.id: i for i in await store.list()}
    assert (got[a.id].state, got[b.id].state) == (State.SUCCEEDED, State.RUNNING)
    assert got[b.id].started_us == now
    # one place freed in the window: a start frees none, its run is still held
    told = [msg async for msg in from_recorder]  # the Recorder closed its end
    assert told == [RoomFreed(1)]
