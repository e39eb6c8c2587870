"""The Timekeeper alone, driven through its channels on trio's virtual clock.

Like trio-util's ``tests/test_periodic.py``: exact virtual times, no node around it.
"""

from __future__ import annotations

import trio
import trio.testing

from tests.support.actors import OWNER, SECOND, claimed, open_store, pending
from tickwork.actors.messages import (
    Abort,
    Cancelled,
    Claimed,
    Due,
    Evict,
    ExecutorMsg,
    PullerMsg,
    RoomFreed,
    TimekeeperMsg,
)
from tickwork.actors.timekeeper import Timekeeper
from tickwork.state import State
from tickwork.testing import VirtualClock


def _timekeeper(
    clock: VirtualClock, store: object, max_batch: int = 100
) -> tuple[
    Timekeeper,
    trio.MemorySendChannel[TimekeeperMsg],
    trio.MemoryReceiveChannel[ExecutorMsg],
    trio.MemoryReceiveChannel[PullerMsg],
]:
    to_tk, tk_in = trio.open_memory_channel[TimekeeperMsg](4)
    to_ex, ex_in = trio.open_memory_channel[ExecutorMsg](4)
    to_puller, puller_in = trio.open_memory_channel[PullerMsg](16)
    tk = Timekeeper(
        clock=clock,
        store=store,  # type: ignore[arg-type]
        owner=OWNER,
        receive=tk_in,
        to_executor=to_ex,
        to_puller=to_puller,
        max_batch=max_batch,
    )
    return tk, to_tk, ex_in, puller_in


async def test_each_instance_leaves_at_its_exact_time(autojump_clock: object) -> None:
    clock = VirtualClock()
    store = await open_store()
    start = clock.now_us()
    batch = await claimed(store, clock, 3, 1, 2)
    tk, to_tk, ex_in, _ = _timekeeper(clock, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(tk.run)
        await to_tk.send(Claimed(batch))
        for k in (1, 2, 3):
            msg = await ex_in.receive()
            assert isinstance(msg, Due)
            assert clock.now_us() == start + k * SECOND
            assert [i.run_at_us for i in msg.instances] == [start + k * SECOND]
        assert tk.statistics().fired == 3
        await to_tk.aclose()  # the Puller stops: the Timekeeper ends, closing its own
    assert pending(ex_in) == []
    assert tk.statistics().waiting == 0


async def test_an_earlier_batch_cuts_the_sleep_short(autojump_clock: object) -> None:
    clock = VirtualClock()
    store = await open_store()
    start = clock.now_us()
    late, early = await claimed(store, clock, 10), await claimed(store, clock, 2)
    tk, to_tk, ex_in, _ = _timekeeper(clock, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(tk.run)
        await to_tk.send(Claimed(late))
        await trio.sleep(1)
        await to_tk.send(Claimed(early))
        first = await ex_in.receive()
        assert isinstance(first, Due)
        assert first.instances == early
        assert clock.now_us() == start + 2 * SECOND
        second = await ex_in.receive()
        assert isinstance(second, Due)
        assert second.instances == late
        assert clock.now_us() == start + 10 * SECOND
        await to_tk.aclose()


async def test_instances_due_together_leave_as_one_batch_of_at_most_max_batch(
    autojump_clock: object,
) -> None:
    clock = VirtualClock()
    store = await open_store()
    batch = await claimed(store, clock, *[5] * 5)
    tk, to_tk, ex_in, _ = _timekeeper(clock, store, max_batch=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(tk.run)
        await to_tk.send(Claimed(batch))
        sizes = []
        for _ in range(2):
            msg = await ex_in.receive()
            assert isinstance(msg, Due)
            sizes.append(len(msg.instances))
        assert sizes == [3, 2]
        await to_tk.aclose()


async def test_an_abort_of_a_waiting_instance_cancels_it_and_passes_on_the_others(
    autojump_clock: object,
) -> None:
    clock = VirtualClock()
    store = await open_store()
    batch = await claimed(store, clock, 60)
    tk, to_tk, ex_in, _ = _timekeeper(clock, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(tk.run)
        await to_tk.send(Claimed(batch))
        await to_tk.send(Abort(batch[0].id))
        assert await ex_in.receive() == Cancelled(batch)
        # not held (already due, or never here): the Executor may have it
        await to_tk.send(Abort(12345))
        assert await ex_in.receive() == Abort(12345)
        assert tk.statistics().waiting == 0
        await to_tk.aclose()


async def test_an_eviction_gives_back_the_latest_and_tells_the_puller(
    autojump_clock: object,
) -> None:
    clock = VirtualClock()
    store = await open_store()
    start = clock.now_us()
    batch = await claimed(store, clock, 10, 20, 30)
    tk, to_tk, _, puller_in = _timekeeper(clock, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(tk.run)
        await to_tk.send(Claimed(batch))
        await to_tk.send(Evict(after_us=start + 15 * SECOND, count=5))
        assert await puller_in.receive() == RoomFreed(2, wake=True)
        states = [(await store.get(i.id)).state for i in batch]  # type: ignore[union-attr]
        assert states == [State.CLAIMED, State.PENDING, State.PENDING]
        assert tk.statistics().evicted == 2
        assert tk.statistics().waiting == 1
        await to_tk.aclose()


async def test_an_instance_claimed_again_is_held_once_and_its_place_freed(
    autojump_clock: object,
) -> None:
    clock = VirtualClock()
    store = await open_store()
    batch = await claimed(store, clock, 10)
    tk, to_tk, _, puller_in = _timekeeper(clock, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(tk.run)
        await to_tk.send(Claimed(batch))
        await to_tk.send(Claimed(batch))
        assert await puller_in.receive() == RoomFreed(1)
        assert tk.statistics().waiting == 1
        await to_tk.aclose()


async def test_a_big_claimed_batch_is_taken_in_slices_so_a_due_one_fires_meanwhile(
    autojump_clock: object,
) -> None:
    """One due instance at the head of a claimed batch of 1,000 leaves before the rest is
    taken in: the Timekeeper yields between slices of 100 (a due run waits at most one
    slice behind a big claim, not the whole batch)."""
    clock = VirtualClock()
    store = await open_store()
    batch = await claimed(store, clock, 0, *[3600] * 999)
    tk, to_tk, ex_in, _ = _timekeeper(clock, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(tk.run)
        await to_tk.send(Claimed(batch))
        msg = await ex_in.receive()
        assert isinstance(msg, Due)
        assert [i.id for i in msg.instances] == [batch[0].id]
        assert tk.statistics().waiting < 999  # the rest is still being taken in
        await trio.testing.wait_all_tasks_blocked()
        assert tk.statistics().waiting == 999
        nursery.cancel_scope.cancel()
