"""A store of one's own (``tests/support/dict_store.py``) needs only the public API, and a
node runs on it. The conformance suites run on it too (``kind`` ``"dict"``)."""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path

import trio

import tickwork
from tests.support import dict_store
from tests.support.dict_store import DictStore
from tests.support.helpers import Recording
from tickwork.testing import VirtualClock


def test_it_imports_only_the_public_api() -> None:
    tree = ast.parse(Path(dict_store.__file__).read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in modules if m and m.startswith("tickwork")} == {"tickwork", "tickwork.stores"}


async def test_a_node_runs_on_it_as_on_the_memory_store(autojump_clock) -> None:
    """The same node's life on a DictStore and on a MemoryStore: the same runs at the
    same times, the same stored states."""
    with trio.fail_after(3600):
        mine = await _life(DictStore())
        builtin = await _life(tickwork.MemoryStore())
    assert mine == builtin
    runs, counts, ran = mine
    assert [at for _, at in runs[:3]] == sorted(at for _, at in runs[:3])
    assert len(ran) == 10  # the schedule's occurrences at 1, 2, ... 10 min
    assert counts[tickwork.State.SUCCEEDED] == 3 + 10
    assert counts[tickwork.State.ABORTED] == 1


async def _life(store: tickwork.Store) -> tuple[object, ...]:
    clock = VirtualClock()
    task = Recording(clock)
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock) as sched:
        ids = await sched.schedule_many(
            [tickwork.NewInstance("rec", clock.now() + timedelta(seconds=s)) for s in (5, 1, 3)]
        )
        aborted = await sched.schedule("rec", at=clock.now() + timedelta(hours=1))
        assert await sched.abort(aborted) is tickwork.State.ABORTED
        await sched.add_schedule("rec", tickwork.Interval(timedelta(minutes=1)), schedule_id="m")
        await trio.sleep(10 * 60 + 30)
        assert [(await sched.get(i)).state for i in ids] == [tickwork.State.SUCCEEDED] * 3
        counts = await sched.counts()
        ran = await sched.list(schedule_id="m", state=tickwork.State.SUCCEEDED)
    start = clock.now_us() - round((10 * 60 + 30) * 1e6)
    runs = [(params, at - start) for params, at in task.runs]  # relative to each clock
    return runs, counts, [(i.id, i.fire_at_us - start) for i in ran]  # type: ignore[operator]
