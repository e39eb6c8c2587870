"""The EventHub's chunks: a batch is published as one chunk and becomes events when a
subscriber reads it; the buffer bound, EventsLost, order and partial reads hold across
chunks of every kind (a claim's batch, a recorded batch, single moves, made events)."""

from __future__ import annotations

import pytest
import trio

from tickwork.events import EventHub, EventsLost, TransitionEvent
from tickwork.model import Instance
from tickwork.state import State

P, C, R, S, F, M = (
    State.PENDING, State.CLAIMED, State.RUNNING, State.SUCCEEDED, State.FAILED, State.MISSED
)  # fmt: skip


def inst(i: int, task: str = "t", schedule_id: str | None = None) -> Instance:
    return Instance(i, task, 1000 + i, b"", P, schedule_id=schedule_id)


def publish_all(hub: EventHub) -> list[TransitionEvent]:
    """Every kind of publication, in order; the events a subscriber should read."""
    hub.moved_together([inst(1), inst(2, schedule_id="s")], P, C, 10)
    hub.moved(inst(1), C, R, 11)
    hub.moved(inst(2, schedule_id="s"), C, R, 12)
    hub.recorded([inst(1), inst(2, schedule_id="s")], [R, R], [S, M], [None, "why"], 13)
    made = TransitionEvent(3, "u", P, State.ABORTED, 14, "other")
    hub.publish(made)
    hub.moved(inst(4), C, R, 15)  # single, still pending when the reader comes
    return [
        TransitionEvent(1, "t", P, C, 10, "n", 1001),
        TransitionEvent(2, "t", P, C, 10, "n", 1002, "s"),
        TransitionEvent(1, "t", C, R, 11, "n", 1001),
        TransitionEvent(2, "t", C, R, 12, "n", 1002, "s"),
        TransitionEvent(1, "t", R, S, 13, "n", 1001),
        TransitionEvent(2, "t", R, M, 13, "n", 1002, "s", "why"),
        made,
        TransitionEvent(4, "t", C, R, 15, "n", 1004),
    ]


async def test_chunks_read_whole_one_at_a_time_and_in_parts() -> None:
    hub = EventHub("n")
    whole, single, parts = hub.subscribe(100), hub.subscribe(100), hub.subscribe(100)
    expected = publish_all(hub)
    assert await whole.receive_batch() == expected
    assert [await single.receive() for _ in expected] == expected
    got: list[TransitionEvent] = []
    while len(got) < len(expected):
        batch = await parts.receive_batch(3)
        assert isinstance(batch, list)
        assert 1 <= len(batch) <= 3
        got += batch
    assert got == expected
    hub.close()
    for sub in (whole, single, parts):
        with pytest.raises(trio.EndOfChannel):
            await sub.receive_batch()


@pytest.mark.parametrize("buffer", [1, 2, 3, 5, 7])
async def test_a_full_buffer_drops_the_oldest_events_and_says_how_many(buffer: int) -> None:
    hub = EventHub("n")
    sub = hub.subscribe(buffer)
    expected = publish_all(hub)
    hub.flush()
    first = await sub.receive_batch()
    assert first == EventsLost(len(expected) - buffer)
    assert sub.total_lost == len(expected) - buffer
    assert await sub.receive_batch() == expected[-buffer:]


async def test_a_subscriber_sees_only_what_is_published_after_it_subscribed() -> None:
    hub = EventHub("n")
    early = hub.subscribe(100)
    hub.moved(inst(1), C, R, 11)  # pending, not yet handed out
    late = hub.subscribe(100)
    hub.moved(inst(2), C, R, 12)
    assert [e.instance_id for e in await early.receive_batch()] == [1, 2]
    assert [e.instance_id for e in await late.receive_batch()] == [2]


async def test_nothing_is_kept_without_subscribers() -> None:
    hub = EventHub("n")
    hub.moved(inst(1), C, R, 11)
    hub.moved_together([inst(2)], P, C, 10)
    sub = hub.subscribe(10)
    with trio.move_on_after(0.01) as waited:
        await sub.receive()
    assert waited.cancelled_caught


async def test_a_reader_waiting_is_woken_by_a_single_move() -> None:
    hub = EventHub("n")
    sub = hub.subscribe(10)
    async with trio.open_nursery() as nursery:
        got: list[object] = []

        async def read() -> None:
            got.append(await sub.receive())

        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        hub.moved(inst(7), C, R, 11)
    assert got == [TransitionEvent(7, "t", C, R, 11, "n", 1007)]
