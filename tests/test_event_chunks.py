"""The EventHub's chunks: a batch is published as one chunk and becomes events when a
subscriber reads it; the buffer bound, EventsLost, order and partial reads hold across
chunks of every kind (a claim's batch, a recorded batch, single moves, made events)."""

from __future__ import annotations

import pytest
import trio

from tickwork.events import EventHub, EventRun, EventsLost, TransitionEvent
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


def flatten(runs: list[EventRun]) -> list[TransitionEvent]:
    return [e for run in runs for e in run.events()]


async def test_runs_hold_the_same_events_as_a_batch_and_share_their_move() -> None:
    hub = EventHub("n")
    batch, runs = hub.subscribe(100), hub.subscribe(100)
    expected = publish_all(hub)
    assert await batch.receive_batch() == expected
    got = await runs.receive_runs()
    assert isinstance(got, list)
    assert flatten(got) == expected
    # a run: one move on one node; a new run where the move changes (the recorded
    # batch's MISSED after its SUCCEEDED, the made event, the single move after it)
    assert [(r.from_state, r.to_state, r.node, len(r)) for r in got] == [
        (P, C, "n", 2), (C, R, "n", 2), (R, S, "n", 1), (R, M, "n", 1),
        (P, State.ABORTED, "other", 1), (C, R, "n", 1),
    ]  # fmt: skip
    for run in got:
        events = run.events()
        assert run.instance_ids() == [e.instance_id for e in events]
        assert run.tasks() == [e.task for e in events]
        assert run.times_us() == [e.at_us for e in events]
        assert run.run_at_us() == [e.run_at_us for e in events]
        assert run.schedule_ids() == [e.schedule_id for e in events]
        assert run.errors() == [e.error for e in events]
        assert all((e.from_state, e.to_state, e.node) == (run.from_state, run.to_state, run.node)
                   for e in events)  # fmt: skip
        # a shared time where the events were published with one (a batch, a made event)
        if run.at_us is not None:
            assert {e.at_us for e in events} == {run.at_us}
    assert [r.at_us for r in got] == [10, None, 13, 13, 14, None]
    assert "CLAIMED -> RUNNING" in repr(got[1])


async def test_runs_keep_the_buffer_bound_partial_reads_and_the_end() -> None:
    hub = EventHub("n")
    sub = hub.subscribe(5)
    expected = publish_all(hub)
    assert await sub.receive_runs() == EventsLost(len(expected) - 5)
    got: list[TransitionEvent] = []
    while len(got) < 5:
        runs = await sub.receive_runs(2)
        assert isinstance(runs, list)
        assert 1 <= sum(map(len, runs)) <= 2
        got += flatten(runs)
    assert got == expected[-5:]
    hub.close()
    with pytest.raises(trio.EndOfChannel):
        await sub.receive_runs()
    sub.close()
    with pytest.raises(trio.ClosedResourceError):
        await sub.receive_runs()


async def test_a_recorded_batch_is_split_where_its_outcome_changes() -> None:
    hub = EventHub("n")
    sub = hub.subscribe(100)
    batch = [inst(i) for i in range(6)]
    tos = [S, S, F, F, S, M]
    hub.recorded(batch, [R, R, R, C, C, C], tos, [None, None, "x", "y", None, "z"], 9)
    runs = await sub.receive_runs()
    assert isinstance(runs, list)
    assert [(r.from_state, r.to_state, r.instance_ids()) for r in runs] == [
        (R, S, [0, 1]), (R, F, [2]), (C, F, [3]), (C, S, [4]), (C, M, [5]),
    ]  # fmt: skip
    assert [r.errors() for r in runs] == [[None, None], ["x"], ["y"], [None], ["z"]]


async def test_a_reader_waiting_for_runs_is_woken_and_closing_wakes_it() -> None:
    hub = EventHub("n")
    sub = hub.subscribe(10)
    got: list[object] = []
    async with trio.open_nursery() as nursery:

        async def read() -> None:
            got.append(await sub.receive_runs())
            with pytest.raises(trio.ClosedResourceError):
                await sub.receive_runs()

        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        hub.moved(inst(7), C, R, 11)
        await trio.testing.wait_all_tasks_blocked()
        sub.close()
    (runs,) = got
    assert isinstance(runs, list)
    assert flatten(runs) == [TransitionEvent(7, "t", C, R, 11, "n", 1007)]
