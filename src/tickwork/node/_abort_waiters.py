"""The API's side of an abort carried out on this node: ``abort()`` calls waiting for
the outcome the Recorder writes.

The Recorder sends an :class:`~tickwork.actors.messages.AbortRecorded` for each instance
whose abort it was told of; :meth:`AbortWaiters.run` (a task of the node) hands it to the
``abort()`` calls waiting for that instance. A waiter also asks the store every second:
an instance given back or taken over is recorded by no one here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, final

import trio

from tickwork.actors.messages import AbortRecorded, PendingAborted
from tickwork.errors import NotFound
from tickwork.node.resilience import ResilientStore
from tickwork.state import State
from tickwork.task import Task

if TYPE_CHECKING:
    from tickwork.node.context import NodeContext

log = logging.getLogger("tickwork")

__all__ = ["AbortWaiters", "aborted_pending"]

_RECHECK = 1.0  # seconds between store checks while waiting for a local abort


@final
class _Waiter:
    __slots__ = ("event", "states")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.states: list[State] = []


@final
class AbortWaiters:
    def __init__(self, receive: trio.MemoryReceiveChannel[AbortRecorded]) -> None:
        self._receive = receive
        self._waiters: dict[int, _Waiter] = {}

    def register(self, instance_id: int) -> None:
        """Wait for ``instance_id`` (before asking the store: the outcome may be recorded
        before the caller resumes)."""
        if instance_id not in self._waiters:
            self._waiters[instance_id] = _Waiter()

    def forget(self, instance_id: int) -> None:
        self._waiters.pop(instance_id, None)

    async def wait(self, store: ResilientStore, instance_id: int, node_id: str) -> State:
        """The state the abort of ``instance_id`` ended in (registered before)."""
        waiter = self._waiters[instance_id]
        while True:
            with trio.move_on_after(_RECHECK):
                await waiter.event.wait()
            if waiter.states and waiter.states[-1].terminal:
                return waiter.states[-1]
            # Not recorded by this node (given back, or taken over): ask the store.
            inst = await store.get(instance_id)
            if inst is None:
                raise NotFound(f"no instance with id {instance_id}")
            if inst.state.terminal or inst.owner != node_id:
                return inst.state
            if waiter.event.is_set():
                waiter.event = trio.Event()

    def close(self) -> None:
        """The node stops: every waiter asks the store."""
        for waiter in self._waiters.values():
            waiter.event.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hand each recorded outcome to its waiters, until the Recorder ends."""
        async with self._receive:
            task_status.started()
            async for msg in self._receive:
                waiter = self._waiters.get(msg.instance_id)
                if waiter is not None:
                    waiter.states.append(msg.state)
                    waiter.event.set()


async def aborted_pending(node: NodeContext, instance_id: int) -> None:
    """The API aborted a PENDING instance (no actor held it): publish the transition; its
    task's ``on_abort`` hook runs on the node, in the Recorder's hook nursery (under
    ``hook_concurrency``), or here if the node stopped meanwhile (still once)."""
    inst = await node.store.get(instance_id)
    if inst is None:
        return
    node.events.publish(inst, State.PENDING, State.ABORTED, node.clock.now_us())
    task = node.registry.get(inst.task)
    if task is None or type(task).on_abort is Task.on_abort:
        return
    try:
        await node.actors.to_aborts.send(PendingAborted(inst))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        try:
            await task.on_abort(inst)
        except Exception:
            log.exception("task %r: on_abort hook raised for %d", task.name, instance_id)
