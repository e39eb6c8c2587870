"""The Recorder alone, driven through its channels on trio's virtual clock (no node)."""

from __future__ import annotations

import random
from datetime import timedelta

import trio

import tickwork
from tests.support.actors import OWNER, SECOND, claimed, open_store, pending
from tickwork.actors.messages import (
    AbortRecorded,
    AbortRequested,
    Kind,
    Outcome,
    Outcomes,
    PendingAborted,
    PendingAt,
    PullerMsg,
    RecorderMsg,
    RoomFreed,
)
from tickwork.actors.recorder import Recorder
from tickwork.state import State
from tickwork.testing import VirtualClock


class _Flaky(tickwork.Task):
    name = "t"
    max_attempts = 3
    backoff_base = timedelta(seconds=10)
    backoff_cap = timedelta(seconds=10)

    def __init__(self) -> None:
        self.aborted: list[int] = []

    async def run(self, params: bytes) -> None:
        raise RuntimeError("boom")

    async def on_abort(self, instance: tickwork.Instance) -> None:
        self.aborted.append(instance.id)


def _recorder(
    clock: VirtualClock, store: object, task: tickwork.Task, linger: float = 0.0
) -> tuple[
    Recorder,
    trio.MemorySendChannel[RecorderMsg],
    trio.MemoryReceiveChannel[PullerMsg],
    trio.MemoryReceiveChannel[AbortRecorded],
]:
    to_rec, rec_in = trio.open_memory_channel[RecorderMsg](4)
    to_puller, puller_in = trio.open_memory_channel[PullerMsg](16)
    to_waiters, waiters_in = trio.open_memory_channel[AbortRecorded](16)
    recorder = Recorder(
        clock=clock,
        store=store,  # type: ignore[arg-type]
        owner=OWNER,
        tasks={task.name: task},
        receive=rec_in,
        to_puller=to_puller,
        max_batch=100,
        hook_concurrency=4,
        linger=linger,
        to_abort_waiters=to_waiters,
        rng=random.Random(1),  # noqa: S311 - jitter, not cryptography
    )
    return recorder, to_rec, puller_in, waiters_in


async def test_outcomes_are_written_and_their_places_freed(autojump_clock: object) -> None:
    clock = VirtualClock()
    store = await open_store()
    a, b = await claimed(store, clock, 0, 0)
    rec, to_rec, puller_in, _ = _recorder(clock, store, _Flaky())
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        now = clock.now_us()
        await to_rec.send(
            Outcomes(
                [Outcome(a, Kind.OK, started_us=now, finished_us=now), Outcome(b, Kind.ABORTED)]
            )
        )
        assert await puller_in.receive() == RoomFreed(2)
        await to_rec.aclose()  # the Executor ends: the Recorder writes the rest and ends
    assert (await store.get(a.id)).state is State.SUCCEEDED  # type: ignore[union-attr]
    assert (await store.get(b.id)).state is State.ABORTED  # type: ignore[union-attr]
    assert rec.statistics().recorded == {"SUCCEEDED": 1, "ABORTED": 1}
    assert rec.statistics().batches == 1


async def test_a_retry_tells_the_puller_when_it_is_due(autojump_clock: object) -> None:
    clock = VirtualClock()
    store = await open_store()
    (inst,) = await claimed(store, clock, 0)
    rec, to_rec, puller_in, _ = _recorder(clock, store, _Flaky())
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        now = clock.now_us()
        error = RuntimeError("boom")
        await to_rec.send(Outcomes([Outcome(inst, Kind.ERROR, None, error, now, now)]))
        retry = await puller_in.receive()
        assert isinstance(retry, PendingAt)
        assert now <= retry.run_at_us <= now + 10 * SECOND  # full jitter under the cap
        assert await puller_in.receive() == RoomFreed(1)
        await to_rec.aclose()
    stored = await store.get(inst.id)
    assert stored is not None
    assert stored.state is State.PENDING
    assert stored.run_at_us == retry.run_at_us
    assert rec.statistics().retried == 1


async def test_an_abort_requested_first_wins_over_the_retry_and_is_reported(
    autojump_clock: object,
) -> None:
    clock = VirtualClock()
    store = await open_store()
    (inst,) = await claimed(store, clock, 0)
    task = _Flaky()
    rec, to_rec, _, waiters_in = _recorder(clock, store, task)
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        await store.request_abort(inst.id, clock.now_us())
        await to_rec.send(AbortRequested((inst.id,)))
        now = clock.now_us()
        await to_rec.send(Outcomes([Outcome(inst, Kind.ERROR, None, RuntimeError(), now, now)]))
        assert await waiters_in.receive() == AbortRecorded(inst.id, State.ABORTED)
        await to_rec.aclose()
    assert (await store.get(inst.id)).state is State.ABORTED  # type: ignore[union-attr]
    assert task.aborted == [inst.id]  # its on_abort hook, once
    assert rec.statistics().recorded == {"ABORTED": 1}


async def test_a_small_batch_lingers_for_more_then_is_written_as_one(
    autojump_clock: object,
) -> None:
    clock = VirtualClock()
    store = await open_store()
    a, b = await claimed(store, clock, 0, 0)
    rec, to_rec, puller_in, _ = _recorder(clock, store, _Flaky(), linger=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        t0 = trio.current_time()
        await to_rec.send(Outcomes([Outcome(a, Kind.ABORTED)]))
        await trio.sleep(0.02)
        await to_rec.send(Outcomes([Outcome(b, Kind.ABORTED)]))
        assert await puller_in.receive() == RoomFreed(2)  # one write of both
        assert trio.current_time() - t0 >= 0.05  # after the whole linger
        assert rec.statistics().batches == 1
        await to_rec.aclose()


async def test_a_pending_abort_runs_its_hook_on_the_recorder(autojump_clock: object) -> None:
    clock = VirtualClock()
    store = await open_store()
    (inst,) = await claimed(store, clock, 0)
    task = _Flaky()
    rec, to_rec, puller_in, _ = _recorder(clock, store, task)
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        await to_rec.send(PendingAborted(inst))
        await trio.sleep(0)
        await to_rec.aclose()
    assert task.aborted == [inst.id]
    assert pending(puller_in) == []  # it held nothing: no place to free
