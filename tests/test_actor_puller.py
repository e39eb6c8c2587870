"""The Puller alone, driven through its inbox on trio's virtual clock (no node)."""

from __future__ import annotations

import trio

from tests.support.actors import LEASE_US, OWNER, SECOND, open_store, pending
from tickwork.actors.capacity import Capacity
from tickwork.actors.messages import (
    Claimed,
    Evict,
    PendingAt,
    PullerMsg,
    RoomFreed,
    TimekeeperMsg,
)
from tickwork.actors.puller import Puller
from tickwork.model import NewRow
from tickwork.testing import VirtualClock

WINDOW_US = 10 * SECOND


def _puller(
    clock: VirtualClock, store: object, *, limit: int = 100, batch: int = 100
) -> tuple[Puller, trio.MemorySendChannel[PullerMsg], trio.MemoryReceiveChannel[TimekeeperMsg]]:
    to_tk, tk_in = trio.open_memory_channel[TimekeeperMsg](4)
    to_puller, puller_in = trio.open_memory_channel[PullerMsg](16)
    low_water = limit - min(batch, max(limit // 2, 1))
    puller = Puller(
        store=store,  # type: ignore[arg-type]
        clock=clock,
        capacity=Capacity(limit, low_water),
        to_timekeeper=to_tk,
        owner=OWNER,
        window_us=WINDOW_US,
        batch_size=batch,
        lease_us=LEASE_US,
        inbox=puller_in,
    )
    return puller, to_puller, tk_in


async def _insert(store: object, clock: VirtualClock, *offsets_s: float) -> list[int]:
    now = clock.now_us()
    rows = [NewRow(task="t", run_at_us=now + int(s * SECOND), params=b"") for s in offsets_s]
    return await store.insert(rows, now)  # type: ignore[attr-defined, no-any-return]


async def test_it_claims_what_the_window_holds_then_sleeps_until_the_next_enters(
    autojump_clock: object,
) -> None:
    clock = VirtualClock()
    store = await open_store()
    start = clock.now_us()
    near, far = await _insert(store, clock, 5, 25)
    puller, _, tk_in = _puller(clock, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(puller.run)
        first = await tk_in.receive()
        assert isinstance(first, Claimed)
        assert [i.id for i in first.instances] == [near]
        assert clock.now_us() == start
        # the far one enters the window 25 - 10 = 15 s from now: claimed then, exactly
        second = await tk_in.receive()
        assert isinstance(second, Claimed)
        assert [i.id for i in second.instances] == [far]
        assert clock.now_us() == start + 15 * SECOND
        assert puller.statistics().claimed == 2
        puller.stop()
    # stopping closes its channel to the Timekeeper
    assert pending(tk_in) == []


async def test_a_stored_instance_inside_the_window_wakes_it_at_once(autojump_clock: object) -> None:
    clock = VirtualClock()
    store = await open_store()
    puller, to_puller, tk_in = _puller(clock, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(puller.run)
        await trio.sleep(100)  # nothing stored: it sleeps
        assert pending(tk_in) == []
        before = clock.now_us()
        (iid,) = await _insert(store, clock, 3)
        await to_puller.send(PendingAt(before + 3 * SECOND))
        msg = await tk_in.receive()
        assert isinstance(msg, Claimed)
        assert [i.id for i in msg.instances] == [iid]
        assert clock.now_us() == before  # at once, not at the next poll
        puller.stop()


async def test_it_claims_no_more_than_it_may_hold_until_room_is_freed(
    autojump_clock: object,
) -> None:
    clock = VirtualClock()
    store = await open_store()
    await _insert(store, clock, *[1] * 10)
    puller, to_puller, tk_in = _puller(clock, store, limit=4, batch=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(puller.run)
        got = [len((await tk_in.receive()).instances) for _ in range(2)]  # type: ignore[union-attr]
        assert got == [2, 2]
        await trio.sleep(60)
        assert pending(tk_in) == []  # full: it waits
        assert puller.capacity_statistics().held == 4
        # one place freed: above the low-water mark (2), no pull yet
        await to_puller.send(RoomFreed(1))
        await trio.sleep(1)
        assert pending(tk_in) == []
        # down to the low-water mark: it pulls again, a batch
        await to_puller.send(RoomFreed(1))
        msg = await tk_in.receive()
        assert isinstance(msg, Claimed)
        assert len(msg.instances) == 2
        assert puller.capacity_statistics().held == 4
        puller.stop()


async def test_a_full_window_makes_room_for_an_earlier_instance(autojump_clock: object) -> None:
    clock = VirtualClock()
    store = await open_store()
    await _insert(store, clock, 8, 9)
    puller, to_puller, tk_in = _puller(clock, store, limit=2, batch=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(puller.run)
        assert isinstance(await tk_in.receive(), Claimed)
        now = clock.now_us()
        await _insert(store, clock, 1)
        await to_puller.send(PendingAt(now + SECOND))
        assert await tk_in.receive() == Evict(after_us=now + SECOND, count=2)
        puller.stop()
