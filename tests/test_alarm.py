"""The Puller's and the Timekeeper's alarm, alone, on trio's virtual clock."""

from __future__ import annotations

import trio

from tickwork.actors._alarm import Alarm
from tickwork.testing import VirtualClock

SECOND = 1_000_000


async def _sleep_and_note(
    alarm: Alarm, clock: VirtualClock, until_us: int | None, woke: list[int]
) -> None:
    await alarm.sleep_until_us(until_us)
    woke.append(clock.now_us())


async def test_it_wakes_at_its_time(autojump_clock: object) -> None:
    clock = VirtualClock()
    start = clock.now_us()
    await Alarm(clock).sleep_until_us(start + 5 * SECOND)
    assert clock.now_us() == start + 5 * SECOND


async def test_ring_ends_a_timed_or_endless_sleep_at_once(autojump_clock: object) -> None:
    clock = VirtualClock()
    start = clock.now_us()
    for until in (start + 100 * SECOND, None):
        alarm, woke = Alarm(clock), []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_sleep_and_note, alarm, clock, until, woke)
            await trio.sleep(2)
            alarm.ring()
        assert woke == [start + 2 * SECOND]
        start = clock.now_us()


async def test_ring_before_ends_only_a_sleep_that_would_last_longer(autojump_clock: object) -> None:
    clock = VirtualClock()
    start = clock.now_us()
    alarm, woke = Alarm(clock), []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_sleep_and_note, alarm, clock, start + 10 * SECOND, woke)
        await trio.sleep(1)
        alarm.ring_before(start + 20 * SECOND)  # later than the sleep's end: no effect
        alarm.ring_before(start + 10 * SECOND)  # the same time: no effect
        await trio.sleep(1)
        assert woke == []
        alarm.ring_before(start + 5 * SECOND)
    assert woke == [start + 2 * SECOND]
    # an endless sleep ends for any time at all
    alarm, woke = Alarm(clock), []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_sleep_and_note, alarm, clock, None, woke)
        await trio.sleep(1)
        alarm.ring_before(start + 10**9 * SECOND)
    assert woke == [start + 3 * SECOND]


async def test_ringing_with_no_sleep_is_a_no_op_and_is_not_remembered(
    autojump_clock: object,
) -> None:
    clock = VirtualClock()
    alarm = Alarm(clock)
    alarm.ring()
    alarm.ring_before(clock.now_us())
    start = clock.now_us()
    await alarm.sleep_until_us(start + 3 * SECOND)  # a ring before the sleep does not end it
    assert clock.now_us() == start + 3 * SECOND
