"""Dispatchers (tickwork.Dispatcher): where runs go, with the node's guarantees kept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import attrs
import pytest
import trio

import tickwork
from tests.support.helpers import Recording, settle, wait_until
from tickwork import State
from tickwork.stores.base import INTERRUPTED
from tickwork.testing import VirtualClock


class Logged(tickwork.Dispatcher):
    """Runs each task here (the default) and notes what it saw, and its lifespan."""

    def __init__(self) -> None:
        self.log: list[str] = []

    async def dispatch(self, run: tickwork.RunContext) -> Any:
        self.log.append(f"dispatch {run.instance.id} {run.task.name}")
        return await super().dispatch(run)

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        self.log.append("open")
        yield
        self.log.append("close")

    def lifespan(self) -> Any:
        return self._lifespan()


async def test_dispatcher_gets_every_run_inside_its_lifespan_and_middleware(autojump_clock):
    clock = VirtualClock()
    task = Recording(clock)
    dispatcher = Logged()

    async def around(run: tickwork.RunContext, call_next: tickwork.CallNext) -> Any:
        dispatcher.log.append("middleware")
        return await call_next()

    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task], clock=clock, dispatcher=dispatcher,
        middleware=[around],
    ) as sched:  # fmt: skip
        assert dispatcher.log == ["open"]
        iid = await sched.schedule("rec", at=clock.now() + timedelta(seconds=1))
        await settle(sched)
        assert (await sched.get(iid)).state is State.SUCCEEDED
    assert dispatcher.log == ["open", "middleware", f"dispatch {iid} rec", "close"]
    assert len(task.runs) == 1


async def test_dispatcher_must_be_a_dispatcher():
    with pytest.raises(
        tickwork.InvalidArgument, match=r"dispatcher must be a tickwork\.Dispatcher"
    ):
        async with tickwork.open_scheduler(tickwork.MemoryStore(), dispatcher=object()):  # type: ignore[arg-type]
            pass  # pragma: no cover


@attrs.define
class _Slot:
    done: trio.Event = attrs.Factory(trio.Event)
    value: Any = None
    error: BaseException | None = None


class Held(tickwork.Dispatcher):
    """Hands every run to the test, which plays the remote pool and answers when it likes."""

    def __init__(self) -> None:
        self.pending: dict[tuple[int, int], _Slot] = {}
        self.dispatched: list[tuple[int, int]] = []
        self.cancelled: list[tuple[int, int]] = []
        self.most_in_flight = 0

    async def dispatch(self, run: tickwork.RunContext) -> Any:
        key = (run.instance.id, run.instance.attempts + 1)
        slot = self.pending[key] = _Slot()
        self.dispatched.append(key)
        self.most_in_flight = max(self.most_in_flight, len(self.pending))
        try:
            await slot.done.wait()
        except trio.Cancelled:
            self.cancelled.append(key)  # a real one tells the pool here
            raise
        finally:
            del self.pending[key]
        if slot.error is not None:
            raise slot.error
        return slot.value

    def answer(
        self, key: tuple[int, int], value: Any = None, error: Exception | None = None
    ) -> bool:
        """The pool's reply; False when nobody waits for it any more (dropped)."""
        slot = self.pending.get(key)
        if slot is None:
            return False
        slot.value, slot.error = value, error
        slot.done.set()
        return True


class Remote(Recording):
    """Policy only: its runs go to the pool, so ``run`` here is never called."""

    def __init__(self, clock: VirtualClock, name: str = "remote", **policy: Any) -> None:
        super().__init__(clock, name)
        self.results: list[Any] = []
        for attr, value in policy.items():
            setattr(self, attr, value)

    async def on_success(self, instance: tickwork.Instance, result: Any) -> None:
        self.results.append(result)


async def test_outcome_comes_back_later_and_the_claim_is_renewed_meanwhile(autojump_clock):
    clock = VirtualClock()
    task, pool = Remote(clock), Held()
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task], clock=clock, dispatcher=pool,
        lease=timedelta(seconds=30),
    ) as sched:  # fmt: skip
        iid = await sched.schedule("remote", at=clock.now() + timedelta(seconds=1))
        await wait_until(lambda: pool.pending)
        await trio.sleep(600)  # the pool takes ten minutes
        inst = await sched.get(iid)
        assert inst.state in {State.CLAIMED, State.RUNNING}
        assert inst.lease_until_us is not None
        assert inst.lease_until_us > clock.now_us()  # renewed 30 times over
        assert pool.answer((iid, 1), value={"thumbnail": "a.png"})
        await settle(sched)
        inst = await sched.get(iid)
    assert inst.state is State.SUCCEEDED
    assert task.results == [{"thumbnail": "a.png"}]
    assert task.runs == []  # nothing ran in the node


async def test_abort_cancels_the_dispatch_and_a_late_reply_is_dropped(autojump_clock):
    clock = VirtualClock()
    task, pool = Remote(clock), Held()
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task], clock=clock, dispatcher=pool
    ) as sched:
        iid = await sched.schedule("remote", at=clock.now() + timedelta(seconds=1))
        await wait_until(lambda: pool.pending)
        await sched.abort(iid)
        await settle(sched)
        assert pool.cancelled == [(iid, 1)]
        assert not pool.answer((iid, 1), value="too late")
        assert (await sched.get(iid)).state is State.ABORTED
    assert task.aborts == [iid]


async def test_timeout_cancels_the_dispatch(autojump_clock):
    clock = VirtualClock()
    task, pool = Remote(clock, timeout=timedelta(seconds=5)), Held()
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task], clock=clock, dispatcher=pool
    ) as sched:
        iid = await sched.schedule("remote", at=clock.now() + timedelta(seconds=1))
        await settle(sched)
        inst = await sched.get(iid)
    assert inst.state is State.FAILED
    assert inst.error == "TaskTimeout: task 'remote' exceeded its timeout of 5 s"
    assert pool.cancelled == [(iid, 1)]


async def test_remote_failure_is_retried_with_the_next_attempt(autojump_clock):
    clock = VirtualClock()
    task, pool = Remote(clock, max_attempts=2), Held()
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task], clock=clock, dispatcher=pool
    ) as sched:
        iid = await sched.schedule("remote", at=clock.now() + timedelta(seconds=1))
        await wait_until(lambda: pool.pending)
        pool.answer((iid, 1), error=ConnectionError("worker lost"))
        await wait_until(lambda: (iid, 2) in pool.pending)
        assert (await sched.get(iid)).error == "ConnectionError: worker lost"
        pool.answer((iid, 2), value="ok")
        await settle(sched)
        inst = await sched.get(iid)
    assert (inst.state, inst.attempts) == (State.SUCCEEDED, 2)
    assert pool.dispatched == [(iid, 1), (iid, 2)]


async def test_max_concurrency_bounds_the_runs_in_flight_at_the_pool(autojump_clock):
    clock = VirtualClock()
    task, pool = Remote(clock), Held()
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task], clock=clock, dispatcher=pool, max_concurrency=2
    ) as sched:
        at = clock.now() + timedelta(seconds=1)
        ids = [await sched.schedule("remote", at=at) for _ in range(5)]
        answered = 0
        while answered < len(ids):
            await wait_until(lambda: pool.pending)
            await trio.sleep(1)  # whatever may start has started
            for key in list(pool.pending):
                answered += pool.answer(key, value=key[0])
        await settle(sched)
    assert pool.most_in_flight == 2
    assert sorted(task.results) == ids


async def test_shutdown_grace_then_interrupted_runs_go_back_or_fail(autojump_clock):
    clock = VirtualClock()
    store = tickwork.MemoryStore()
    pool = Held()
    tasks = [Remote(clock), Remote(clock, "once", delivery="at_most_once")]
    async with trio.open_nursery() as remote:
        async with tickwork.open_scheduler(
            store, tasks=tasks, clock=clock, dispatcher=pool,
            shutdown_grace=timedelta(seconds=10),
        ) as sched:  # fmt: skip
            at = clock.now() + timedelta(seconds=1)
            answered = await sched.schedule("remote", at=at)
            unanswered = await sched.schedule("remote", at=at)
            once = await sched.schedule("once", at=at)
            await wait_until(lambda: len(pool.pending) == 3)
            # at-most-once: RUNNING in the store before it was handed over
            assert (await sched.get(once)).state is State.RUNNING

            async def reply_in_grace() -> None:
                await trio.sleep(5)
                assert pool.answer((answered, 1), value="in time")

            remote.start_soon(reply_in_grace)
            stopping = trio.current_time()
        assert trio.current_time() - stopping == pytest.approx(10, abs=0.1)
    assert sorted(pool.cancelled) == sorted([(unanswered, 1), (once, 1)])
    await store.open(node_id="check")
    try:
        got = {iid: await store.get(iid) for iid in (answered, unanswered, once)}
    finally:
        await store.aclose()
    states = {iid: (inst.state, inst.error) for iid, inst in got.items() if inst is not None}
    assert states == {
        answered: (State.SUCCEEDED, None),
        unanswered: (State.PENDING, "interrupted by shutdown"),  # runs again later
        once: (State.FAILED, INTERRUPTED),
    }
