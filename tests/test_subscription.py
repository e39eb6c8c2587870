"""``scheduler.subscribe()`` is a ``trio.abc.ReceiveChannel`` and behaves like trio's own.

Several tasks may read one subscription (each event reaches one of them, none is lost
and none waits for ever); ``aclose``/``async with`` unsubscribe, after which reading
raises ``ClosedResourceError``; when the node stops, however it stops (left, cancelled
from outside, crashed), readers drain what is buffered and then see ``EndOfChannel``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import trio

import tickwork
from tests.support.faults import FaultyStore
from tests.support.helpers import Recording, settle, wait_until
from tickwork import State
from tickwork.events import EventsLost, TransitionEvent
from tickwork.testing import VirtualClock


async def test_a_subscription_is_a_trio_receive_channel(autojump_clock):
    clock = VirtualClock()
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[Recording(clock)], clock=clock
    ) as sched:
        async with sched.subscribe() as sub:
            assert isinstance(sub, trio.abc.ReceiveChannel)
            iid = await sched.schedule("rec", at=clock.now() + timedelta(seconds=1))
            seen = []
            async for ev in sub:
                assert isinstance(ev, TransitionEvent)
                seen.append(ev.to_state)
                if ev.to_state.terminal:
                    break
        assert seen == [State.CLAIMED, State.RUNNING, State.SUCCEEDED]
        assert (await sched.get(iid)).state is State.SUCCEEDED
        with pytest.raises(trio.ClosedResourceError):
            await sub.receive()
        with pytest.raises(trio.ClosedResourceError):
            sub.receive_nowait()


async def test_several_readers_share_one_subscription_without_losing_a_wake_up(
    autojump_clock,
):
    clock = VirtualClock()
    got: dict[str, list[tuple[int, State]]] = {"a": [], "b": [], "c": []}

    async def reader(name: str, sub: tickwork.Subscription) -> None:
        async for ev in sub:
            assert isinstance(ev, TransitionEvent)
            got[name].append((ev.instance_id, ev.to_state))

    with trio.fail_after(3600):  # a reader left waiting fails the test, not hangs it
        async with (
            trio.open_nursery() as readers,
            tickwork.open_scheduler(
                tickwork.MemoryStore(), tasks=[Recording(clock)], clock=clock
            ) as sched,
        ):
            sub = sched.subscribe()
            for name in got:
                readers.start_soon(reader, name, sub)
            await trio.sleep(1)  # all three are waiting now
            ids = []
            for k in range(20):  # one at a time: each event wakes one waiting reader
                at = clock.now() + timedelta(seconds=k + 1)
                ids.append(await sched.schedule("rec", at=at))
            await settle(sched)
            total = 3 * len(ids)  # claimed, running, succeeded
            await wait_until(lambda: sum(map(len, got.values())) == total, timeout=60)
            # the node stopped: every reader's async for ends
    everything = sorted(e for seen in got.values() for e in seen)
    expected = sorted((i, s) for i in ids for s in (State.CLAIMED, State.RUNNING, State.SUCCEEDED))
    assert everything == expected  # each event reached exactly one reader
    assert sum(1 for seen in got.values() if seen) >= 2  # and the readers shared them


async def test_closing_wakes_a_waiting_reader_with_closed_resource_error(autojump_clock):
    clock = VirtualClock()
    async with tickwork.open_scheduler(tickwork.MemoryStore(), clock=clock) as sched:
        sub = sched.subscribe()
        caught: list[BaseException] = []

        async def reader() -> None:
            try:
                await sub.receive()
            except trio.ClosedResourceError as exc:
                caught.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.sleep(1)
            await sub.aclose()
        assert len(caught) == 1


async def _read_until_end(
    sub: tickwork.Subscription, seen: list[object], ended: trio.Event
) -> None:
    async for item in sub:
        seen.append(item)  # noqa: PERF401 - seen as the stream runs, not once it ended
    ended.set()


async def test_the_stream_ends_when_the_node_is_cancelled_from_outside(autojump_clock):
    clock = VirtualClock()
    seen: list[object] = []
    ended = trio.Event()
    async with trio.open_nursery() as outside:
        with trio.CancelScope() as node_scope:
            async with tickwork.open_scheduler(
                tickwork.MemoryStore(), tasks=[Recording(clock)], clock=clock
            ) as sched:
                outside.start_soon(_read_until_end, sched.subscribe(), seen, ended)
                await sched.schedule("rec", at=clock.now() + timedelta(seconds=1))
                await wait_until(lambda: len(seen) == 3, timeout=60)
                node_scope.cancel()
                await trio.sleep_forever()
        with trio.fail_after(60):
            await ended.wait()
    assert [e.to_state for e in seen if isinstance(e, TransitionEvent)] == [
        State.CLAIMED,
        State.RUNNING,
        State.SUCCEEDED,
    ]


async def test_the_stream_ends_when_the_node_crashes(autojump_clock):
    clock = VirtualClock()
    store = FaultyStore(tickwork.MemoryStore())
    seen: list[object] = []
    ended = trio.Event()

    async def node(outside: trio.Nursery) -> None:
        async with tickwork.open_scheduler(store, tasks=[Recording(clock)], clock=clock) as s:
            outside.start_soon(_read_until_end, s.subscribe(), seen, ended)
            store.fail("claim", 1, RuntimeError("bug in a custom store"))
            await s.schedule("rec", at=clock.now())
            await trio.sleep_forever()

    async with trio.open_nursery() as outside:
        with pytest.raises(BaseExceptionGroup):
            await node(outside)
        with trio.fail_after(60):
            await ended.wait()


async def test_what_was_buffered_is_read_before_the_end(autojump_clock):
    clock = VirtualClock()
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[Recording(clock)], clock=clock
    ) as sched:
        sub = sched.subscribe(buffer=2)
        await sched.schedule_many([tickwork.NewInstance("rec", clock.now(), b"")] * 2)
        await settle(sched)
    # 6 events into a buffer of 2: the loss is told first, then the last two, then the end
    lost = sub.receive_nowait()
    assert isinstance(lost, EventsLost)
    assert lost.count == 4
    assert [sub.receive_nowait().to_state for _ in range(2)] == [  # type: ignore[union-attr]
        State.SUCCEEDED,
        State.SUCCEEDED,
    ]
    with pytest.raises(trio.EndOfChannel):
        await sub.receive()
    with pytest.raises(trio.EndOfChannel):
        sub.receive_nowait()
    sub.close()
    with pytest.raises(trio.ClosedResourceError):
        sub.receive_nowait()


async def test_runs_read_a_nodes_transitions_and_end_with_it(autojump_clock):
    """``receive_runs()`` on a real node: the same transitions as the events, as runs
    that share their move; once the node stopped, what was left, then EndOfChannel."""
    clock = VirtualClock()
    moves: list[tuple[int, State, State]] = []
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[Recording(clock)], clock=clock
    ) as sched:
        sub = sched.subscribe()
        ids = await sched.schedule_many(
            [tickwork.NewInstance("rec", clock.now() + timedelta(seconds=1)) for _ in range(3)]
        )
        while len(moves) < 9:
            runs = await sub.receive_runs()
            assert isinstance(runs, list)
            for run in runs:
                assert isinstance(run, tickwork.EventRun)
                assert run.node == sched.node_id
                assert [e.instance_id for e in run.events()] == run.instance_ids()
                moves += [(i, run.from_state, run.to_state) for i in run.instance_ids()]
    with pytest.raises(trio.EndOfChannel):
        await sub.receive_runs()
    assert sorted(moves) == sorted(
        (i, a, b)
        for i in ids
        for a, b in [
            (State.PENDING, State.CLAIMED),
            (State.CLAIMED, State.RUNNING),
            (State.RUNNING, State.SUCCEEDED),
        ]
    )
