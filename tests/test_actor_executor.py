"""The Executor alone, driven through its channels on trio's virtual clock (no node)."""

from __future__ import annotations

from datetime import timedelta

import attrs
import trio

import tickwork
from tests.support.actors import OWNER, claimed, open_store
from tickwork.actors.executor import Executor
from tickwork.actors.messages import (
    Abort,
    Cancelled,
    Due,
    ExecutorMsg,
    Kind,
    Outcome,
    RecorderMsg,
)
from tickwork.errors import TaskTimeout
from tickwork.testing import VirtualClock


class _Sleepy(tickwork.Task):
    name = "t"
    timeout = timedelta(seconds=30)

    async def run(self, params: bytes) -> str:
        await trio.sleep(float(params or b"1"))
        return "done"


def _executor(
    clock: VirtualClock,
    store: object,
    *,
    concurrency: int = 10,
    grace: float = 5.0,
    recorder_buffer: int = 4,
) -> tuple[Executor, trio.MemorySendChannel[ExecutorMsg], trio.MemoryReceiveChannel[RecorderMsg]]:
    to_ex, ex_in = trio.open_memory_channel[ExecutorMsg](4)
    to_rec, rec_in = trio.open_memory_channel[RecorderMsg](recorder_buffer)
    executor = Executor(
        clock=clock,
        store=store,  # type: ignore[arg-type]
        owner=OWNER,
        tasks={"t": _Sleepy()},
        receive=ex_in,
        to_recorder=to_rec,
        max_concurrency=concurrency,
        outbox_limit=100,
        shutdown_grace=grace,
    )
    return executor, to_ex, rec_in


async def _outcomes(rec_in: trio.MemoryReceiveChannel[RecorderMsg], n: int) -> list[Outcome]:
    """The next ``n`` outcomes (the notes of at-least-once runs in progress left out)."""
    out: list[Outcome] = []
    while len(out) < n:
        msg = await rec_in.receive()
        out.extend(o for o in msg.outcomes if o.kind is not Kind.STARTED)  # type: ignore[union-attr]
    return out


async def test_runs_go_at_most_max_concurrency_at_once(autojump_clock: object) -> None:
    clock = VirtualClock()
    store = await open_store()
    due = await claimed(store, clock, 0, 0, 0, 0, 0)
    ex, to_ex, rec_in = _executor(clock, store, concurrency=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        t0 = trio.current_time()
        await to_ex.send(Due(due))
        got = await _outcomes(rec_in, 5)
        # five runs of 1 s, two at a time: 3 s
        assert trio.current_time() - t0 == 3
        assert {o.kind for o in got} == {Kind.OK}
        assert all(o.finished_us - o.started_us == 1_000_000 for o in got)  # type: ignore[operator]
        await to_ex.aclose()


async def test_a_run_past_its_timeout_fails_at_that_exact_time(autojump_clock: object) -> None:
    clock = VirtualClock()
    store = await open_store()
    due = await claimed(store, clock, 0)
    due = [attrs.evolve(d, params=b"100") for d in due]
    ex, to_ex, rec_in = _executor(clock, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        await to_ex.send(Due(due))
        (out,) = await _outcomes(rec_in, 1)
        assert out.kind is Kind.ERROR
        assert isinstance(out.error, TaskTimeout)
        assert out.finished_us - out.started_us == 30_000_000  # type: ignore[operator]
        await to_ex.aclose()


async def test_an_abort_cancels_the_run_and_a_cancelled_batch_is_recorded_aborted(
    autojump_clock: object,
) -> None:
    clock = VirtualClock()
    store = await open_store()
    running, waiting = await claimed(store, clock, 0, 0)
    ex, to_ex, rec_in = _executor(clock, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        await to_ex.send(Due([running]))
        await trio.sleep(0.5)
        assert ex.statistics().running == 1
        await to_ex.send(Abort(running.id))
        await to_ex.send(Cancelled([waiting]))
        got = {o.instance.id: o for o in await _outcomes(rec_in, 2)}
        assert got[running.id].kind is Kind.ABORTED
        assert got[running.id].started_us is not None  # it ran: an attempt
        assert got[waiting.id].kind is Kind.ABORTED
        assert got[waiting.id].started_us is None  # it never ran
        await to_ex.aclose()


async def test_an_abort_that_comes_first_stops_the_run_before_it_starts(
    autojump_clock: object,
) -> None:
    clock = VirtualClock()
    store = await open_store()
    (inst,) = await claimed(store, clock, 0)
    ex, to_ex, rec_in = _executor(clock, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        await to_ex.send(Abort(inst.id))  # it is on its way in
        await to_ex.send(Due([inst]))
        (out,) = await _outcomes(rec_in, 1)
        assert out.kind is Kind.ABORTED
        assert out.started_us is None
        await to_ex.aclose()


async def test_a_graceful_stop_waits_the_grace_then_interrupts(autojump_clock: object) -> None:
    clock = VirtualClock()
    store = await open_store()
    quick, slow = await claimed(store, clock, 0, 0)
    quick, slow = attrs.evolve(quick, params=b"2"), attrs.evolve(slow, params=b"20")
    ex, to_ex, rec_in = _executor(clock, store, grace=5.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        await to_ex.send(Due([quick, slow]))
        await trio.sleep(0.1)
        t0 = trio.current_time()
        await to_ex.aclose()  # the Timekeeper ended: drain
        got = {o.instance.id: o.kind for o in await _outcomes(rec_in, 2)}
        assert trio.current_time() - t0 == 5  # the grace, exactly
    assert got == {quick.id: Kind.OK, slow.id: Kind.INTERRUPTED}


async def test_outcomes_waiting_for_a_slow_recorder_at_shutdown_all_arrive(
    autojump_clock: object,
) -> None:
    # The Recorder takes nothing while the runs end (an unbuffered channel nobody reads):
    # the outbox's flusher holds their batch in a blocked send when intake ends. That
    # batch must still reach the Recorder (it once was cancelled with the flusher: the
    # runs ended, their outcomes were never written, the claims were given back).
    clock = VirtualClock()
    store = await open_store()
    # runs of 10 ms: over before any note of a run in progress is due
    due = [attrs.evolve(d, params=b"0.01") for d in await claimed(store, clock, 0, 0, 0)]
    ex, to_ex, rec_in = _executor(clock, store, recorder_buffer=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        await to_ex.send(Due(due))
        await trio.sleep(2)  # the runs ended; their batch waits in the flusher's send
        await to_ex.aclose()
        await trio.sleep(1)  # a Recorder busy with an earlier write
        got = [o async for msg in rec_in for o in msg.outcomes]  # type: ignore[union-attr]
    assert sorted(o.instance.id for o in got if o.kind is Kind.OK) == sorted(d.id for d in due)


async def test_one_worker_serves_instances_due_one_at_a_time(
    autojump_clock: object, monkeypatch: object
) -> None:
    """At a steady rate instances come due one at a time: the worker that ran one waits
    for the next instead of ending, so the Executor spawns one worker task for all of them
    (a task spawn and a cancel scope per run was most of its cost at 10,000/s); a burst
    still gets more workers, and a stop ends the waiting one at once (no grace spent)."""
    clock = VirtualClock()
    store = await open_store()
    ex, to_ex, rec_in = _executor(clock, store, concurrency=10)
    spawned = 0
    worker = Executor._worker

    async def counted(self: Executor, token: object) -> None:
        nonlocal spawned
        spawned += 1
        await worker(self, token)

    monkeypatch.setattr(Executor, "_worker", counted)  # type: ignore[attr-defined]
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        for _ in range(20):
            [inst] = await claimed(store, clock, 0)
            await to_ex.send(Due([attrs.evolve(inst, params=b"0.001")]))
            [got] = await _outcomes(rec_in, 1)
            assert got.kind is Kind.OK
            await trio.sleep(1)
        assert spawned == 1
        assert ex.statistics().workers == 0  # waiting for work is not working
        burst = await claimed(store, clock, 0, 0, 0)
        await to_ex.send(Due(burst))  # three runs of 1 s: three workers, 1 s in all
        t0 = trio.current_time()
        assert {o.kind for o in await _outcomes(rec_in, 3)} == {Kind.OK}
        assert trio.current_time() - t0 == 1
        assert spawned == 3
        t1 = trio.current_time()
        await to_ex.aclose()  # the stop: the waiting worker ends, no grace is waited for
    assert trio.current_time() == t1
