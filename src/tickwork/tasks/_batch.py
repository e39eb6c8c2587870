"""Batcher: many concurrent runs' hand-offs sent as one pipelined batch.

Each run submits its request and waits for its own answer; one sender task takes every
request waiting (up to ``max_batch``) and sends them together (a Redis pipeline, a burst
of AMQP publishes confirmed together), so the round trip and the per-call overhead are
paid per batch, not per run. A run that is cancelled after its request was taken may
still be handed off: the hand-off is at least once, as the idempotency key expects.

:class:`BatchedHandoff` is the part of a hand-off task (AmqpTask, RedisTask) that runs a
Batcher for the task's lifespan and refuses a run outside it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

import attrs
import trio

from tickwork.errors import TickworkError

__all__ = ["BatchedHandoff", "Batcher"]

Req = TypeVar("Req")
Res = TypeVar("Res")

#: what a batch sender returns per request: the answer, or the exception to raise in it
SendBatch = Callable[[list[Req]], Awaitable[Sequence[Res | BaseException]]]


@attrs.define
class _Slot(Generic[Req, Res]):
    request: Req
    done: trio.Event = attrs.Factory(trio.Event)
    result: Res | None = None
    error: BaseException | None = None


class Batcher(Generic[Req, Res]):
    """Send requests in batches of at most ``max_batch`` through ``send_batch``.

    ``send_batch`` must answer every request (an exception for those that failed) and
    must not raise; :meth:`serve` runs in the nursery of the task's lifespan.
    """

    def __init__(self, send_batch: SendBatch[Req, Res], *, max_batch: int = 512) -> None:
        self._send_batch = send_batch
        self._max_batch = max_batch
        self._in, self._out = trio.open_memory_channel[_Slot[Req, Res]](max_batch)

    async def submit(self, request: Req) -> Res:
        """Send ``request`` with the next batch and return its answer (or raise its error)."""
        slot: _Slot[Req, Res] = _Slot(request)
        await self._in.send(slot)
        await slot.done.wait()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value] # set with done when no error

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Take what is waiting and send it, batch after batch, until cancelled."""
        task_status.started()
        async for first in self._out:
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._out.receive_nowait())
                except trio.WouldBlock:
                    break
            answers = await self._send_batch([slot.request for slot in batch])
            for slot, answer in zip(batch, answers, strict=True):
                if isinstance(answer, BaseException):
                    slot.error = answer
                else:
                    slot.result = answer
                slot.done.set()


class BatchedHandoff(Generic[Req, Res]):
    """A hand-off task's Batcher, served for the task's lifespan.

    Args:
        task: the task's class name, for the error of a run outside the lifespan.
        max_batch: the most requests sent in one batch.
    """

    def __init__(self, task: str, *, max_batch: int) -> None:
        self._task = task
        self._max_batch = max_batch
        self._batcher: Batcher[Req, Res] | None = None

    @asynccontextmanager
    async def serving(self, send_batch: SendBatch[Req, Res]) -> AsyncIterator[None]:
        """Send the runs' requests through ``send_batch`` until the block ends."""
        async with trio.open_nursery() as nursery:
            batcher: Batcher[Req, Res] = Batcher(send_batch, max_batch=self._max_batch)
            await nursery.start(batcher.serve)
            self._batcher = batcher
            try:
                yield
            finally:
                self._batcher = None
                nursery.cancel_scope.cancel()

    def running(self) -> Batcher[Req, Res]:
        """The Batcher to submit to.

        Raises:
            TickworkError: the task's lifespan is not running.
        """
        if self._batcher is None:
            raise TickworkError(
                f"{self._task} runs inside open_scheduler (or `async with task.lifespan()`)"
            )
        return self._batcher
