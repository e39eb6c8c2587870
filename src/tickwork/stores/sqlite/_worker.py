"""One thread that runs blocking calls in order, and hands each result back to trio.

The SQLite store owns one of these: every call on its connection runs here, one at a
time, so the connection never crosses threads. A call, once submitted, always runs to the
end: the waiting trio task cannot be cancelled out of it (its abort function refuses),
so a cancelled caller never leaves a transaction half-recorded or its outcome unknown.
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
        result: T = await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        return result

    def stop(self) -> None:
        """Let the thread finish the calls already queued, then end it, and wait for that."""
        self._stopped = True
        self._jobs.put(None)
        self._thread.join()
