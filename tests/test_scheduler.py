"""The whole scheduler on a virtual clock: days of schedule run in milliseconds."""

from __future__ import annotations

from datetime import timedelta

import pytest
import trio

import tickwork
from tests.support.helpers import Recording, settle, wait_until
from tickwork import State
from tickwork.testing import VirtualClock


@pytest.fixture
def store() -> tickwork.MemoryStore:
    return tickwork.MemoryStore()


async def test_each_instance_fires_at_its_exact_virtual_time(autojump_clock, store):
    clock = VirtualClock()
    task = Recording(clock)
    start = clock.now()
    offsets = [
        timedelta(seconds=5),
        timedelta(minutes=59),
        timedelta(hours=7),
        timedelta(days=1, seconds=3),
        timedelta(days=3),
    ]
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock) as sched:
        ids = [
            await sched.schedule("rec", at=start + off, params=str(i).encode())
            for i, off in enumerate(offsets)
        ]
        await clock.advance_to(start + timedelta(days=3, seconds=1))
        await settle(sched)
        for iid in ids:
            assert (await sched.get(iid)).state is State.SUCCEEDED
        assert await sched.count(state=State.SUCCEEDED) == 5
    fired = dict(task.runs)
    for i, off in enumerate(offsets):
        expected = clock.now_us() - clock.now_us() + (start + off).timestamp() * 1e6
        assert abs(fired[str(i).encode()] - expected) <= 1_000, off
    assert sorted(task.successes) == sorted(ids)


async def test_instance_scheduled_inside_window_fires_without_waiting_for_pull(
    autojump_clock, store
):
    clock = VirtualClock()
    task = Recording(clock)
    async with tickwork.open_scheduler(
        store, tasks=[task], clock=clock, poll_interval=timedelta(hours=1)
    ) as sched:
        await trio.sleep(60)  # the Puller is asleep now, next poll in an hour
        at = clock.now() + timedelta(seconds=2)
        await sched.schedule("rec", at=at)
        await wait_until(lambda: task.runs)
        assert task.runs[0][1] == pytest.approx(at.timestamp() * 1e6, abs=1_000)


async def test_instance_beyond_the_window_is_claimed_when_it_enters(autojump_clock, store):
    clock = VirtualClock()
    task = Recording(clock)
    async with tickwork.open_scheduler(
        store, tasks=[task], clock=clock, window=timedelta(minutes=10)
    ) as sched:
        at = clock.now() + timedelta(hours=5)
        iid = await sched.schedule("rec", at=at)
        await trio.sleep(3600)
        assert (await sched.get(iid)).state is State.PENDING
        assert sched.statistics().in_memory == 0
        await wait_until(lambda: task.runs)
        assert task.runs[0][1] == pytest.approx(at.timestamp() * 1e6, abs=1_000)


async def test_failure_is_final_without_retries_and_hook_sees_it(autojump_clock, store):
    clock = VirtualClock()
    task = Recording(clock)
    task.fail = ValueError("boom")
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock) as sched:
        iid = await sched.schedule("rec", at=clock.now())
        await settle(sched)
        inst = await sched.get(iid)
    assert inst.state is State.FAILED
    assert inst.attempts == 1
    assert inst.error == "ValueError: boom"
    assert task.failures == [(iid, "boom")]
    assert len(task.runs) == 1


class HookRaises(tickwork.Task):
    name = "hook-raises"

    async def run(self, params: bytes) -> None:
        return None

    async def on_success(self, instance, result) -> None:
        raise RuntimeError("hook bug")


async def test_a_raising_hook_is_logged_and_never_loses_the_state(autojump_clock, store, caplog):
    clock = VirtualClock()
    async with tickwork.open_scheduler(store, tasks=[HookRaises()], clock=clock) as sched:
        iid = await sched.schedule("hook-raises", at=clock.now())
        await settle(sched)
        assert (await sched.get(iid)).state is State.SUCCEEDED
        assert sched.statistics().recorder.hooks_failed == 1
    assert "on_success hook raised" in caplog.text


async def test_abort_pending_claimed_and_running(autojump_clock, store):
    clock = VirtualClock()
    task = Recording(clock)
    task.sleep = timedelta(hours=1)
    now = clock.now()
    async with tickwork.open_scheduler(
        store, tasks=[task], clock=clock, window=timedelta(minutes=30)
    ) as sched:
        pending = await sched.schedule("rec", at=now + timedelta(hours=2))
        claimed = await sched.schedule("rec", at=now + timedelta(minutes=20))
        running = await sched.schedule("rec", at=now + timedelta(seconds=1))
        await wait_until(lambda: sched.statistics().running == 1)
        assert (await sched.get(claimed)).state is State.CLAIMED
        assert await sched.abort(pending) is State.ABORTED
        assert await sched.abort(claimed) is State.ABORTED
        assert await sched.abort(running) is State.ABORTED
        # terminal: nothing changes
        assert await sched.abort(running) is State.ABORTED
        with pytest.raises(tickwork.NotFound):
            await sched.abort(123456)
        await settle(sched)
        for iid in (pending, claimed, running):
            assert (await sched.get(iid)).state is State.ABORTED
        assert sched.statistics().running == 0
    assert sorted(task.aborts) == sorted([pending, claimed, running])
    assert len(task.runs) == 1  # only the running one had started


async def test_memory_is_bounded_by_max_in_memory(autojump_clock, store):
    clock = VirtualClock()
    peak = 0

    class Probe(tickwork.Task):
        name = "probe"

        async def run(self, params: bytes) -> None:
            nonlocal peak
            peak = max(peak, sched.statistics().in_memory)
            await trio.sleep(0.5)

    now = clock.now()
    async with tickwork.open_scheduler(
        store, tasks=[Probe()], clock=clock, max_in_memory=50, max_concurrency=20
    ) as sched:
        await sched.schedule_many([tickwork.NewInstance("probe", now, b"") for _ in range(2_000)])
        await settle(sched)
        assert await sched.count(state=State.SUCCEEDED) == 2_000
    assert 20 <= peak <= 50


async def test_near_instance_gets_a_place_in_a_full_window(autojump_clock, store):
    clock = VirtualClock()
    task = Recording(clock)
    now = clock.now()
    async with tickwork.open_scheduler(
        store, tasks=[task], clock=clock, max_in_memory=10, batch_size=5
    ) as sched:
        await sched.schedule_many(
            [tickwork.NewInstance("rec", now + timedelta(minutes=50), b"late") for _ in range(10)]
        )
        await wait_until(lambda: sched.statistics().in_memory == 10)
        at = now + timedelta(minutes=1)
        await sched.schedule("rec", at=at, params=b"urgent")
        await wait_until(lambda: task.runs)
        assert task.runs[0] == (b"urgent", pytest.approx(at.timestamp() * 1e6, abs=1_000))
        await clock.advance_to(now + timedelta(minutes=51))
        await settle(sched)
        assert await sched.count(state=State.SUCCEEDED) == 11


async def test_leaving_the_block_returns_claims_and_a_new_node_finishes(autojump_clock, store):
    clock = VirtualClock()
    task = Recording(clock)
    now = clock.now()
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock) as sched:
        ids = await sched.schedule_many(
            [tickwork.NewInstance("rec", now + timedelta(minutes=30), b"") for _ in range(5)]
        )
        await wait_until(lambda: sched.statistics().in_memory == 5)
    await store.open()
    assert await store.count(state=State.PENDING) == 5  # given back, not lost
    await store.aclose()
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock) as sched:
        await clock.advance_to(now + timedelta(minutes=31))
        await settle(sched)
        assert [(await sched.get(i)).state for i in ids] == [State.SUCCEEDED] * 5
    assert len(task.runs) == 5


async def test_subscribe_sees_each_transition(autojump_clock, store):
    clock = VirtualClock()
    task = Recording(clock)
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock) as sched:
        with sched.subscribe() as sub:
            iid = await sched.schedule("rec", at=clock.now() + timedelta(seconds=1))
            seen = []
            async for ev in sub:
                assert isinstance(ev, tickwork.TransitionEvent)
                seen.append((ev.instance_id, ev.from_state, ev.to_state))
                if ev.to_state.terminal:
                    break
    assert seen == [
        (iid, State.PENDING, State.CLAIMED),
        (iid, State.CLAIMED, State.RUNNING),
        (iid, State.RUNNING, State.SUCCEEDED),
    ]


async def test_a_slow_subscriber_is_told_how_many_events_it_lost(autojump_clock, store):
    clock = VirtualClock()
    task = Recording(clock)
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock) as sched:
        sub = sched.subscribe(buffer=5)
        await sched.schedule_many(
            [tickwork.NewInstance("rec", clock.now(), b"") for _ in range(10)]
        )
        await settle(sched)
        first = await sub.receive()
        assert isinstance(first, tickwork.EventsLost)
        assert first.count == 30 - 5
        rest = [await sub.receive() for _ in range(5)]
        assert all(isinstance(e, tickwork.TransitionEvent) for e in rest)
        sub.close()


async def test_unknown_task_in_store_fails_with_a_clear_error(autojump_clock, store):
    clock = VirtualClock()
    await store.open()
    from tickwork.model import NewRow

    (iid,) = await store.insert([NewRow("ghost", clock.now_us(), b"")], clock.now_us())
    await store.aclose()
    async with tickwork.open_scheduler(store, tasks=[Recording(clock)], clock=clock) as sched:
        await settle(sched)
        inst = await sched.get(iid)
    assert inst.state is State.FAILED
    assert "unknown task 'ghost'" in (inst.error or "")


async def test_statistics_report_counts_and_rates(autojump_clock, store):
    clock = VirtualClock()
    task = Recording(clock)
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock) as sched:
        await sched.schedule_many([tickwork.NewInstance("rec", clock.now(), b"") for _ in range(7)])
        await settle(sched)
        stats = sched.statistics()
    assert stats.counts["SUCCEEDED"] == 7
    assert stats.in_memory == 0
    assert stats.rates["recorded"] > 0
    assert stats.executor.started == 7


async def test_a_full_outbox_slows_workers_and_releases_them_all(autojump_clock, store):
    # the outbox to the Recorder holds max(batch_size, max_concurrency) outcomes: many
    # quick runs fill it; every waiting worker must be woken when it drains
    clock = VirtualClock()
    task = Recording(clock)
    async with tickwork.open_scheduler(
        store, tasks=[task], clock=clock, batch_size=10, max_concurrency=10
    ) as sched:
        await sched.schedule_many(
            [tickwork.NewInstance("rec", clock.now(), b"") for _ in range(3_000)]
        )
        await settle(sched)
        assert await sched.count(state=State.SUCCEEDED) == 3_000
        await wait_until(lambda: sched.statistics().executor.workers == 0)


async def test_a_big_schedule_many_lets_other_tasks_run_while_it_validates(autojump_clock, store):
    """schedule_many checkpoints between slices of its validation, so a big batch does
    not hold up due runs (the other tasks run before the store is even called)."""
    clock = VirtualClock()
    ticks = 0
    ticks_at_insert: list[int] = []
    insert = store.insert

    async def spy(rows, now_us):  # type: ignore[no-untyped-def]
        ticks_at_insert.append(ticks)
        return await insert(rows, now_us)

    store.insert = spy  # type: ignore[method-assign]

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with tickwork.open_scheduler(store, tasks=[Recording(clock)], clock=clock) as sched:
        later = clock.now() + timedelta(hours=2)
        news = [tickwork.NewInstance("rec", later, b"") for _ in range(2_000)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            await trio.lowlevel.checkpoint()  # the ticker is running
            before = ticks
            await sched.schedule_many(news)
            nursery.cancel_scope.cancel()
    # 2,000 items in slices of 500: three checkpoints before the insert. Trio may run the
    # ticker before or after this task within a batch, so at least two of them show as
    # ticks (with no checkpoint at all there would be none: the spy runs in the same step).
    assert ticks_at_insert[0] - before >= 2
