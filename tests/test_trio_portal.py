"""The portal the state machines drive a node through: time moves only when the test says,
every timer fires at its own time, and a call on a thread is waited for, never jumped over.

Both were wrong once, and the SQLite machines reported instances "left RUNNING" that the
node had run on time (stop 19): 10 s steps held a 1 s run's worker until the next step,
and the model's own reads went to SQLite's thread unseen while the clock moved.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import trio

from tests.support.trio_portal import TrioPortal


@pytest.fixture
def portal() -> Iterator[TrioPortal]:
    p = TrioPortal()
    try:
        yield p
    finally:
        p.close()


def test_advance_wakes_each_sleeper_at_its_own_time(portal: TrioPortal) -> None:
    woke: list[float] = []

    async def start() -> float:
        async def sleeper(period: float) -> None:
            while True:
                await trio.sleep(period)
                woke.append(trio.current_time() - t0)

        t0 = trio.current_time()
        portal.nursery.start_soon(sleeper, 1.0)
        portal.nursery.start_soon(sleeper, 7.0)
        return t0

    t0 = portal.run(start)
    portal.advance(15)
    assert woke == pytest.approx([1, 2, 3, 4, 5, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 14, 15])

    async def elapsed() -> float:
        return trio.current_time() - t0

    assert portal.run(elapsed) == pytest.approx(15)


def test_time_does_not_move_while_a_busy_call_runs_on_a_thread(portal: TrioPortal) -> None:
    release = threading.Event()
    busy = [0]
    portal.busy = lambda: busy[0] > 0

    async def on_a_thread() -> float:
        before = trio.current_time()
        busy[0] += 1
        try:
            await trio.to_thread.run_sync(release.wait)
        finally:
            busy[0] -= 1
        return trio.current_time() - before

    threading.Timer(0.2, release.set).start()  # the thread's work takes real time
    assert portal.run(on_a_thread) == 0


def test_a_call_blocked_on_time_gets_virtual_time(portal: TrioPortal) -> None:
    async def wait(seconds: float) -> float:
        before = trio.current_time()
        await trio.sleep(seconds)
        return trio.current_time() - before

    assert portal.run(wait, 30) == pytest.approx(30)
    with pytest.raises(TimeoutError):
        portal.run(wait, 30, max_wait=10)
