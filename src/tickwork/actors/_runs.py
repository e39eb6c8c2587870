"""How the Executor starts one run: its timeout, and for an at-most-once task the durable
start (RUNNING written right before it runs, in group commits)."""

from __future__ import annotations

from typing import final

import attrs
import trio

from tickwork.clock import Clock
from tickwork.errors import TaskTimeout
from tickwork.model import Instance
from tickwork.stores.base import Store
from tickwork.task import Task

__all__ = ["DurableStarts", "timeout_error", "timeout_us_of"]


def timeout_us_of(inst: Instance, task: Task) -> int | None:
    """The run's timeout: the instance's own, else its task's, else none."""
    if inst.timeout_us is not None:
        return inst.timeout_us
    return None if task.timeout is None else int(task.timeout.total_seconds() * 1e6)


def timeout_error(task: Task, timeout_us: int | None) -> TaskTimeout:
    timeout_s = (timeout_us or 0) / 1e6
    return TaskTimeout(f"task {task.name!r} exceeded its timeout of {timeout_s:g} s")


@attrs.define
class _StartBatch:
    """One group commit of durable starts."""

    items: list[tuple[int, int]] = attrs.Factory(list)
    accepted: list[bool] | None = None
    done: trio.Event = attrs.Factory(trio.Event)


@final
class DurableStarts:
    """RUNNING made durable right before at-most-once runs, in group commits.

    After a crash such a row is FAILED "interrupted", never run again. Only what is about
    to run is started, so a crash fails the runs in progress, not a whole due batch that
    had not begun. Every worker that arrives while one ``Store.start`` is in flight joins
    the next call.
    """

    def __init__(self, store: Store, owner: str, clock: Clock) -> None:
        self._store = store
        self._owner = owner
        self._clock = clock
        #: the batch gathering, and the one in flight
        self._batch: _StartBatch | None = None
        self._inflight: trio.Event | None = None

    async def start(self, inst: Instance) -> bool:
        """Whether the store accepted the start of ``inst`` (False: its claim was lost)."""
        batch = self._batch
        leader = batch is None
        if batch is None:
            batch = self._batch = _StartBatch()
        index = len(batch.items)
        batch.items.append((inst.id, inst.claim_token or 0))
        if leader:
            try:
                previous = self._inflight
                try:
                    if previous is None:
                        await trio.lowlevel.checkpoint()  # the workers of this tick join
                    else:
                        await previous.wait()  # gathers every worker that came meanwhile
                finally:
                    self._batch = None  # closed: later ones form the next batch
                self._inflight = batch.done
                batch.accepted = await self._store.start(
                    self._owner, batch.items, self._clock.now_us()
                )
            finally:
                if self._inflight is batch.done:
                    self._inflight = None
                batch.done.set()
        else:
            await batch.done.wait()
        return batch.accepted is not None and batch.accepted[index]
