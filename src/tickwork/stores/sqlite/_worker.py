"""One thread that runs blocking calls in order, and hands each result back to trio.

The SQLite store owns one of these: every call on its connection runs here, one at a
time, so the connection never crosses threads. A call, once submitted, always runs to the
end: the waiting trio task cannot be cancelled out of it (its abort function refuses),
so a cancelled caller never leaves a transaction half-recorded or its outcome unknown.

A small call may instead run on the trio thread itself (:meth:`Worker.run_here`), when no
call is queued or running on the thread: see ``SQLiteStore`` for why and when.
"""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, TypeVar

import outcome
import trio

from tickwork.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

_Job = tuple["Callable[[], object]", "Callable[[outcome.Outcome[object]], None]"]


class Worker:
    """A dedicated thread consuming a queue of calls; :meth:`call` awaits one."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._stopped = False
        #: calls submitted whose caller has not resumed yet (trio thread only)
        self._in_flight = 0
        # A daemon thread: a program that forgets aclose() must still be able to exit.
        # Every commit is already durable when its call returns, so nothing is lost.
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, deliver = job
            deliver(outcome.capture(fn))

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the thread and return its result (or raise its exception).

        Cancellation is honoured before the call is submitted, never during it: the
        result of a started call is always delivered.

        Raises:
            StoreError: the worker was stopped.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._stopped:  # checked with no await before the put: nothing queues after stop
            raise StoreError("the store is closed")
        task = trio.lowlevel.current_task()
        token = trio.lowlevel.current_trio_token()

        def deliver(result: outcome.Outcome[object]) -> None:
            token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        self._jobs.put((fn, deliver))
        self._in_flight += 1
        try:
            result: T = await trio.lowlevel.wait_task_rescheduled(
                lambda _: trio.lowlevel.Abort.FAILED
            )
        finally:
            self._in_flight -= 1
        return result

    @property
    def idle(self) -> bool:
        """No call is queued or running on the thread: the connection is free."""
        return self._in_flight == 0 and not self._stopped

    async def run_here(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the calling (trio) thread, at once, if the thread is idle;
        otherwise queue it as :meth:`call` does, behind the calls before it.

        Either way the call, once started, runs to its end; a checkpoint follows it so a
        caller looping over small calls still lets other tasks run.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self.idle:  # keep the order of calls: never overtake a queued one
            return await self.call(fn)
        try:
            return fn()
        finally:
            await trio.lowlevel.cancel_shielded_checkpoint()

    def stop(self) -> None:
        """Let the thread finish the calls already queued, then end it, and wait for that."""
        self._stopped = True
        self._jobs.put(None)
        self._thread.join()
