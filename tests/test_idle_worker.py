"""The Executor's place for one idle worker (``actors/_idle.py``), on trio's virtual clock."""

from __future__ import annotations

import trio
import trio.testing

from tickwork.actors._idle import IdleWorker


async def test_one_task_waits_a_second_is_turned_away_and_wake_resumes_the_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    idle = IdleWorker()
    got: list[bool] = []

    async def worker() -> None:
        got.append(await idle.wait())

    assert not idle.wake()  # nobody waits: nothing to do
    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker)
        await trio.sleep(1)
        assert idle.waiting
        assert await idle.wait() is False  # taken: returns at once
        assert idle.wake()
        assert not idle.waiting
    assert got == [True]


async def test_a_cancelled_waiter_leaves_the_place_free(
    autojump_clock: trio.testing.MockClock,
) -> None:
    idle = IdleWorker()
    with trio.move_on_after(1) as scope:
        await idle.wait()
    assert scope.cancelled_caught
    assert not idle.waiting
    assert not idle.wake()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(idle.wait)
        await trio.sleep(1)
        assert idle.waiting  # the place was free for the next one
        idle.wake()
